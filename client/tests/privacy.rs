//! No client address is stored: presses from a (forwarded) address leave
//! no trace of it in the database, on the topic, in Redis or in any log,
//! while its pseudonym is on every record.

mod common;

use button_client::{Api, Ledger, init_test_logs, wait_db_covers};
use button_stack::{Stack, StackConfig};
use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::json;
use std::time::Duration;

const ADDRESS: &str = "203.0.113.77";
/// A public address the country database places in the United States.
const PUBLIC: &str = "8.8.8.8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_address_reaches_the_database_the_topic_redis_or_the_logs() {
    init_test_logs();
    let stack = Stack::start(StackConfig {
        // Everything the binaries can say, said.
        log_filter: "debug".to_owned(),
        service_env: button_stack::env(&[
            ("BUTTON_TRUST_FORWARDED_FOR", "true"),
            ("BUTTON_SECRET", "privacy-secret-0123456789"),
            ("BUTTON_RATE_LIMIT_PER_S", "1000"),
            ("BUTTON_RATE_LIMIT_BURST", "1000"),
        ]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let forwarded = [("x-forwarded-for", ADDRESS)];
    let mut ledger = Ledger::default();
    for i in 0..20 {
        let key = format!("privacy-{i}");
        let mut headers = forwarded.to_vec();
        if i % 2 == 0 {
            headers.push(("idempotency-key", key.as_str()));
        }
        let answer = api.press_raw(&json!({}), &headers).await.expect("answer");
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        ledger.record(&serde_json::from_value(answer.body).expect("accepted"));
    }
    // From a public address: its country is counted, the address is not kept.
    for _ in 0..3 {
        let answer = api
            .press_raw(&json!({}), &[("x-forwarded-for", PUBLIC)])
            .await
            .expect("answer");
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        ledger.record(&serde_json::from_value(answer.body).expect("accepted"));
    }
    // A refused request too: errors are logged.
    let refused = api
        .press_raw(&json!({"client": ADDRESS}), &forwarded)
        .await
        .expect("answer");
    assert_eq!(refused.status, 400);
    wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("persisted");

    // Countries: the documentation address has none, the public one is US.
    let countries: serde_json::Value = api
        .http()
        .get(api.url("/v1/countries"))
        .send()
        .await
        .expect("countries")
        .json()
        .await
        .expect("json");
    assert_eq!(
        countries["countries"],
        json!([{"country": "unknown", "presses": 20}, {"country": "US", "presses": 3}]),
        "{countries}"
    );

    // The database, dumped whole.
    let pg_dump = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL binaries")
        .flatten()
        .map(|v| v.path().join("bin/pg_dump"))
        .find(|p| p.exists())
        .expect("pg_dump");
    let dump = std::process::Command::new(pg_dump)
        .args(["--data-only", "--dbname", &stack.database_url()])
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("global_states"), "the dump has the states");

    // Every record on the topic: keys, values, headers.
    let consumer = common::topic_reader(&stack.brokers(), "press_button", 0);
    let mut topic = Vec::new();
    let mut pseudonyms = std::collections::BTreeSet::new();
    let mut countries_on_topic = std::collections::BTreeMap::new();
    for _ in 0..ledger.accepted {
        let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("every record is read back")
            .expect("message");
        topic.extend_from_slice(m.key().unwrap_or_default());
        topic.extend_from_slice(m.payload().unwrap_or_default());
        if let Some(h) = m.headers() {
            for x in h.iter() {
                topic.extend_from_slice(x.key.as_bytes());
                topic.extend_from_slice(x.value.unwrap_or_default());
            }
        }
        let record: serde_json::Value =
            serde_json::from_slice(m.payload().expect("payload")).expect("JSON");
        pseudonyms.insert(record["client"].as_str().expect("client").to_owned());
        *countries_on_topic
            .entry(record["country"].as_str().expect("country").to_owned())
            .or_insert(0) += 1;
    }
    let topic = String::from_utf8_lossy(&topic).into_owned();
    assert_eq!(
        pseudonyms.len(),
        2,
        "two addresses, two pseudonyms: {pseudonyms:?}"
    );
    let pseudonym = pseudonyms.into_iter().next().expect("one");
    assert!(
        pseudonym.starts_with("c-") && pseudonym.len() == 18,
        "{pseudonym}"
    );

    // Redis: every key (rate limits and idempotency are kept per pseudonym).
    let mut redis = redis::Client::open(stack.redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert!(
        keys.iter().any(|k| k.contains(&pseudonym)),
        "the guards keyed the client by its pseudonym: {keys:?}"
    );
    let keys = keys.join("\n");

    let mut logs = String::new();
    for entry in std::fs::read_dir(stack.root().join("logs"))
        .expect("logs")
        .flatten()
    {
        logs.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry.path()).expect("log"),
        ));
    }
    assert!(
        logs.len() > 10_000,
        "debug logs were written ({} bytes)",
        logs.len()
    );

    for (what, text) in [
        ("database", &dump),
        ("topic", &topic),
        ("redis keys", &keys),
        ("logs", &logs),
    ] {
        assert!(
            !text.contains(ADDRESS),
            "the client address is in the {what}"
        );
    }
}
