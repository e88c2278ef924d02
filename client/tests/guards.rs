//! Proof of work, rate limits and Idempotency-Key on a running service,
//! each raced by concurrent requests, and what each does with Redis down.

mod common;

use button_client::{Accepted, Api, Ledger, PressAnswer, init_test_logs, wait_db_covers};
use button_stack::{Component, Stack, StackConfig};
use futures::future::join_all;
use rdkafka::Message;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SECRET: &str = "test-secret-0123456789abcdef";

async fn stack(env: &[(&str, &str)]) -> Stack {
    let mut service_env = button_stack::env(env);
    service_env.insert("BUTTON_SECRET".into(), SECRET.into());
    Stack::start(StackConfig {
        reducer: false,
        service_env,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts")
}

/// `n` presses of `body` with `headers`, all sent at once.
async fn at_once(
    api: &Api,
    n: usize,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Vec<PressAnswer> {
    join_all((0..n).map(|_| api.press_raw(body, headers)))
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
async fn a_challenge_is_good_for_one_press_however_many_race_it() {
    init_test_logs();
    let mut stack = stack(&[("BUTTON_POW_DIFFICULTY", "8")]).await;
    let api = Api::new(stack.service_url(0));

    let missing = api.press_raw(&json!({}), &[]).await.expect("answer");
    assert_eq!(
        (missing.status, missing.code()),
        (400, Some("pow_required"))
    );

    // 24 concurrent presses carry the same solved challenge: one wins.
    let pow = api.solved_challenge().await.expect("challenge");
    let body = json!({ "pow": pow });
    let answers = at_once(&api, 24, &body, &[]).await;
    let counts = statuses(&answers);
    assert_eq!(counts.get("202"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("400 pow_replayed"), Some(&23), "{counts:?}");

    // Tampered: the difficulty written down lower than asked.
    let mut easier = api.solved_challenge().await.expect("challenge");
    easier["difficulty"] = json!(0);
    let refused = api
        .press_raw(&json!({ "pow": easier }), &[])
        .await
        .expect("answer");
    assert_eq!((refused.status, refused.code()), (400, Some("pow_invalid")));

    // Redis down: single use cannot be checked, so no press gets in.
    let pow = api.solved_challenge().await.expect("challenge");
    stack.kill(Component::Redis).expect("kill redis");
    let closed = api
        .press_raw(&json!({ "pow": pow }), &[])
        .await
        .expect("answer");
    assert_eq!(
        (closed.status, closed.code()),
        (503, Some("pow_unavailable"))
    );
    stack
        .start_component(Component::Redis)
        .await
        .expect("redis back");
    let mut accepted = false;
    for _ in 0..50 {
        let pow = api.solved_challenge().await.expect("challenge");
        let a = api
            .press_raw(&json!({ "pow": pow }), &[])
            .await
            .expect("answer");
        if a.status == 202 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        accepted,
        "presses with proof of work resume once Redis is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_admits_exactly_the_burst_under_concurrency() {
    init_test_logs();
    // One press per 100 s after a burst of 10: nothing refills during the test.
    let mut stack = stack(&[
        ("BUTTON_RATE_LIMIT_PER_S", "0.01"),
        ("BUTTON_RATE_LIMIT_BURST", "10"),
    ])
    .await;
    let api = Api::new(stack.service_url(0));
    let empty = json!({});
    let answers = at_once(&api, 60, &empty, &[]).await;
    let counts = statuses(&answers);
    assert_eq!(counts.get("202"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("429 rate_limited"), Some(&50), "{counts:?}");
    for a in &answers {
        assert_eq!(a.header("ratelimit-limit"), Some("10"));
        assert!(a.header("ratelimit-remaining").is_some());
        assert!(a.header("ratelimit-reset").is_some());
        if a.status == 429 {
            let retry: u64 = a
                .header("retry-after")
                .expect("Retry-After")
                .parse()
                .expect("seconds");
            assert!((90..=101).contains(&retry), "Retry-After {retry}");
            assert_eq!(a.header("ratelimit-remaining"), Some("0"));
        }
    }
    let mut remaining: Vec<u32> = answers
        .iter()
        .filter(|a| a.status == 202)
        .map(|a| a.header("ratelimit-remaining").unwrap().parse().unwrap())
        .collect();
    remaining.sort();
    assert_eq!(
        remaining,
        (0..10).collect::<Vec<_>>(),
        "each admitted press saw its own count"
    );

    // Redis down: limits fail open (the default), presses go on.
    stack.kill(Component::Redis).expect("kill redis");
    let open = api.press_raw(&json!({}), &[]).await.expect("answer");
    assert_eq!(open.status, 202, "{:?}", open.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_press_with_one_idempotency_key_is_produced_once() {
    init_test_logs();
    let mut stack = stack(&[]).await;
    let api = Api::new(stack.service_url(0));
    let before = api.press_raw(&json!({}), &[]).await.expect("answer");
    assert_eq!(before.status, 202);

    let key = [("idempotency-key", "retry-me-7f3a")];
    let empty = json!({});
    let answers = at_once(&api, 20, &empty, &key).await;
    assert!(
        answers.iter().all(|a| a.status == 202),
        "{:?}",
        statuses(&answers)
    );
    let first = &answers[0].body;
    assert!(
        answers.iter().all(|a| &a.body == first),
        "every retry gets the first answer"
    );
    let replayed = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(
        replayed, 19,
        "one request produced, the others replayed its answer"
    );

    // One partition: the record right after `before`, and the next press
    // right after it, so nothing else was produced in between.
    let after = api.press_raw(&json!({}), &[]).await.expect("answer");
    let offset = |v: &serde_json::Value| v["offset"].as_i64().expect("offset");
    assert_eq!(offset(first), offset(&before.body) + 1);
    assert_eq!(offset(&after.body), offset(first) + 1);

    // A later retry still gets the same answer; another key is another press.
    let again = api.press_raw(&json!({}), &key).await.expect("answer");
    assert_eq!(&again.body, first);
    let other = api
        .press_raw(&json!({}), &[("idempotency-key", "another")])
        .await
        .expect("answer");
    assert_eq!(offset(&other.body), offset(&after.body) + 1);

    let bad = api
        .press_raw(&json!({}), &[("idempotency-key", &"k".repeat(300))])
        .await
        .expect("answer");
    assert_eq!(
        (bad.status, bad.code()),
        (400, Some("invalid_idempotency_key"))
    );

    stack.kill(Component::Redis).expect("kill redis");
    let closed = api.press_raw(&json!({}), &key).await.expect("answer");
    assert_eq!(
        (closed.status, closed.code()),
        (503, Some("idempotency_unavailable"))
    );
    let plain = api.press_raw(&json!({}), &[]).await.expect("answer");
    assert_eq!(plain.status, 202, "presses without a key do not need Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_press_whose_first_attempt_was_cut_off_is_counted_once() {
    init_test_logs();
    // The produce deadline is far past the request deadline: the request
    // deadline cuts the first attempt off while its record is queued.
    let mut service_env = button_stack::env(&[
        ("BUTTON_PRODUCE_TIMEOUT_MS", "15000"),
        ("BUTTON_REQUEST_TIMEOUT_MS", "1000"),
    ]);
    service_env.insert("BUTTON_SECRET".into(), SECRET.into());
    let mut stack = Stack::start(StackConfig {
        service_env,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let database_url = stack.database_url();
    let covered = |accepted: &Accepted| {
        let mut ledger = Ledger::default();
        ledger.record(accepted);
        let database_url = database_url.clone();
        async move {
            wait_db_covers(&database_url, &ledger, Duration::from_secs(60))
                .await
                .expect("the reducer applies the press")
        }
    };
    let before = api.press().await.expect("a press before the freeze");
    let start = covered(&before).await.counter;

    // SIGSTOP: the producer keeps the record queued, waiting for an ack.
    let key = [("idempotency-key", "unknown-outcome-1")];
    stack.pause(Component::Broker).expect("SIGSTOP broker");
    let first = api.press_raw(&json!({}), &key).await.expect("answer");
    stack.resume(Component::Broker).expect("SIGCONT broker");
    assert_eq!(
        (first.status, first.code()),
        (503, Some("request_timeout")),
        "{}",
        first.body
    );

    // The client retries with the same key. The cut-off attempt released
    // its reservation, so the retry neither waits for it to expire nor
    // gets 409; it produces again, with the same request id.
    let cut_off = Instant::now();
    let retry = loop {
        let answer = api.press_raw(&json!({}), &key).await.expect("answer");
        if answer.status == 202 {
            break answer;
        }
        assert!(
            cut_off.elapsed() < Duration::from_secs(10),
            "no 202 within 10 s of the cut-off: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(retry.header("idempotent-replayed"), None, "it produced");
    let retry: Accepted = serde_json::from_value(retry.body).expect("202 body");
    let again = api.press_raw(&json!({}), &key).await.expect("answer");
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (202, Some("true")),
        "later retries replay the answer"
    );

    // Counted once: through the retry's record, and after a later press.
    assert_eq!(
        covered(&retry).await.counter,
        start + 1,
        "the cut-off attempt and its retry count once"
    );
    let after = api.press().await.expect("a press after");
    assert_eq!(covered(&after).await.counter, start + 2, "and only once");

    // The queued first attempt reached the topic too (one partition, the
    // same key, so before the retry's record): the id is there twice.
    let consumer = common::topic_reader(&stack.brokers(), "press_button", 0);
    let retry_offset = retry.offset.expect("offset");
    let mut copies = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("the topic is read back")
            .expect("message");
        let record: serde_json::Value =
            serde_json::from_slice(m.payload().expect("payload")).expect("JSON");
        if record["request_id"] == retry.request_id.as_str() {
            copies += 1;
        }
        if m.offset() >= retry_offset {
            break;
        }
    }
    assert!(
        copies >= 2,
        "the cut-off attempt was delivered, then the retry: {copies} cop(y/ies) of {}",
        retry.request_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_set_to_fail_closed_refuse_presses_while_redis_is_down() {
    init_test_logs();
    let mut stack = stack(&[
        ("BUTTON_RATE_LIMIT_PER_S", "100"),
        ("BUTTON_RATE_LIMIT_BURST", "100"),
        ("BUTTON_RATE_LIMIT_REDIS_DOWN", "closed"),
    ])
    .await;
    let api = Api::new(stack.service_url(0));
    let limited = api.press_raw(&json!({}), &[]).await.expect("answer");
    assert_eq!(limited.status, 202, "{:?}", limited.body);
    assert_eq!(limited.header("ratelimit-limit"), Some("100"));

    stack.kill(Component::Redis).expect("kill redis");
    let closed = api.press_raw(&json!({}), &[]).await.expect("answer");
    assert_eq!(
        (closed.status, closed.code()),
        (503, Some("rate_limit_unavailable")),
        "{:?}",
        closed.body
    );
    assert_eq!(closed.header("retry-after"), Some("1"));

    stack
        .start_component(Component::Redis)
        .await
        .expect("redis back");
    let mut accepted = false;
    for _ in 0..50 {
        if api.press_raw(&json!({}), &[]).await.expect("answer").status == 202 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted, "presses resume once Redis is back");
}
