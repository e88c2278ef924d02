//! The guards on two service instances at once: what one instance has
//! seen, the other knows, because the state lives in Redis. Each check
//! presses through both instances concurrently and expects exactly what
//! one instance answers (see guards.rs for the single-instance semantics).

use button_client::{Api, PressAnswer, init_test_logs};
use button_stack::{Stack, StackConfig};
use futures::future::join_all;
use serde_json::json;
use std::collections::BTreeMap;

const SECRET: &str = "replicas-secret-0123456789abcdef";

/// Two service instances sharing one Redis and one secret, no reducer.
async fn two_instances(env: &[(&str, &str)]) -> (Stack, Api, Api) {
    let mut service_env = button_stack::env(env);
    service_env.insert("BUTTON_SECRET".into(), SECRET.into());
    let stack = Stack::start(StackConfig {
        services: 2,
        reducer: false,
        service_env,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let a = Api::new(stack.service_url(0));
    let b = Api::new(stack.service_url(1));
    (stack, a, b)
}

/// `n` presses on each of `a` and `b`, all sent at once.
async fn on_both_at_once(
    a: &Api,
    b: &Api,
    n: usize,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Vec<PressAnswer> {
    join_all((0..2 * n).map(|i| {
        let api = if i % 2 == 0 { a } else { b };
        api.press_raw(body, headers)
    }))
    .await
    .into_iter()
    .map(|a| a.expect("answer"))
    .collect()
}

fn statuses(answers: &[PressAnswer]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        let key = format!("{} {}", a.status, a.code().unwrap_or(""));
        *counts.entry(key.trim().to_owned()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_rate_budget_is_shared_by_every_instance() {
    init_test_logs();
    // A burst of 10, then one press per 100 s: nothing refills meanwhile.
    // Forwarded addresses make fresh clients with fresh budgets.
    let (_stack, a, b) = two_instances(&[
        ("BUTTON_RATE_LIMIT_PER_S", "0.01"),
        ("BUTTON_RATE_LIMIT_BURST", "10"),
        ("BUTTON_TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    let empty = json!({});

    // One after another, alternating: the 11th trips, as on one instance,
    // and each instance's answer counts the other's presses.
    let alternating = [("x-forwarded-for", "203.0.113.1")];
    let mut seen = Vec::new();
    for i in 0..12 {
        let api = if i % 2 == 0 { &a } else { &b };
        let answer = api.press_raw(&empty, &alternating).await.expect("answer");
        seen.push((
            answer.status,
            answer
                .header("ratelimit-remaining")
                .map(str::to_owned)
                .unwrap_or_default(),
        ));
    }
    let expected: Vec<(u16, String)> = (0..10)
        .map(|i| (202, (9 - i).to_string()))
        .chain([(429, "0".to_owned()), (429, "0".to_owned())])
        .collect();
    assert_eq!(seen, expected);

    // 30 at once on each instance: still exactly the burst in all.
    let racing = [("x-forwarded-for", "203.0.113.2")];
    let answers = on_both_at_once(&a, &b, 30, &empty, &racing).await;
    let counts = statuses(&answers);
    assert_eq!(counts.get("202"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("429 rate_limited"), Some(&50), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_used_on_one_instance_is_refused_on_the_other() {
    init_test_logs();
    let (_stack, a, b) = two_instances(&[("BUTTON_POW_DIFFICULTY", "8")]).await;

    // Issued by B, accepted on A (one secret), then a replay on B.
    let pow = b.solved_challenge().await.expect("challenge");
    let body = json!({ "pow": pow });
    let first = a.press_raw(&body, &[]).await.expect("answer");
    assert_eq!(first.status, 202, "{:?}", first.body);
    let replay = b.press_raw(&body, &[]).await.expect("answer");
    assert_eq!((replay.status, replay.code()), (400, Some("pow_replayed")));

    // Raced on both instances at once: one press wins, wherever it landed.
    let pow = a.solved_challenge().await.expect("challenge");
    let answers = on_both_at_once(&a, &b, 12, &json!({ "pow": pow }), &[]).await;
    let counts = statuses(&answers);
    assert_eq!(counts.get("202"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("400 pow_replayed"), Some(&23), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_to_both_instances_is_one_press() {
    init_test_logs();
    let (_stack, a, b) = two_instances(&[]).await;
    let empty = json!({});
    let before = a.press_raw(&empty, &[]).await.expect("answer");
    assert_eq!(before.status, 202);

    let key = [("idempotency-key", "across-instances-1")];
    let answers = on_both_at_once(&a, &b, 10, &empty, &key).await;
    assert!(
        answers.iter().all(|x| x.status == 202),
        "{:?}",
        statuses(&answers)
    );
    let first = &answers[0].body;
    assert!(
        answers.iter().all(|x| &x.body == first),
        "every attempt, on either instance, gets the one answer"
    );
    let replayed = answers
        .iter()
        .filter(|x| x.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replayed, 19, "one attempt produced, the others replayed it");

    // One partition: the keyed press is the record right after `before`,
    // and the next press right after it: nothing else was produced.
    let after = b.press_raw(&empty, &[]).await.expect("answer");
    let offset = |v: &serde_json::Value| v["offset"].as_i64().expect("offset");
    assert_eq!(offset(first), offset(&before.body) + 1);
    assert_eq!(offset(&after.body), offset(first) + 1);

    // Later, on the other instance: the same answer, and one request id
    // for the key whichever instance derived it.
    let again = b.press_raw(&empty, &key).await.expect("answer");
    assert_eq!(&again.body, first);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}
