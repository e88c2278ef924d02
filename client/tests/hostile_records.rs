//! Poison of every kind on the press topic, between real presses: the
//! reducer never stalls, counts only the real presses, and sends each
//! poison record to the dead-letter topic with its reason.

mod common;

use button_client::{Api, Ledger, init_test_logs, wait_db_covers};
use button_stack::{Component, Stack, StackConfig};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;

fn record(request_id: &str, v: u64, kind: &str) -> Vec<u8> {
    format!(r#"{{"v":{v},"request_id":"{request_id}","kind":"{kind}","client":"c-0000000000000000","accepted_at_ms":1700000000000}}"#).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_poison_goes_to_the_dead_letter_topic_and_counting_goes_on() {
    init_test_logs();
    let stack = Stack::start(StackConfig::default())
        .await
        .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");

    let mut garbage: Vec<u8> = (0..=255u8).rev().collect();
    garbage.extend_from_slice(b"\xff\xfe{\"v\":");
    let mut huge =
        br#"{"v":1,"kind":"press","request_id":"big","client":"c","accepted_at_ms":1,"pad":""#
            .to_vec();
    huge.extend(std::iter::repeat_n(b'x', 300_000));
    huge.extend(br#""}"#);
    // (payload, expected reason); `None` payload = a record with no value.
    let poison: Vec<(Option<Vec<u8>>, &str)> = vec![
        (None, "empty_payload"),
        (Some(garbage), "malformed_json"),
        (Some(b"[1,2,3]".to_vec()), "malformed_json"),
        (Some(record("r-v2", 2, "press")), "unknown_version"),
        (Some(record("r-kind", 1, "unpress")), "unknown_kind"),
        (Some(br#"{"v":1,"kind":"press"}"#.to_vec()), "invalid_field"),
        (
            Some(br#"{"v":"1","kind":"press"}"#.to_vec()),
            "invalid_field",
        ),
        (Some(huge), "too_large"),
        // The first is a press like any other; its repeat is not.
        (Some(record("r-dup", 1, "press")), ""),
        (Some(record("r-dup", 1, "press")), "duplicate_request_id"),
    ];

    let mut ledger = Ledger::default();
    let mut expected: BTreeMap<i64, (String, Option<Vec<u8>>)> = BTreeMap::new();
    for (payload, reason) in &poison {
        ledger.record(&api.press().await.expect("a real press"));
        let mut r = FutureRecord::<(), [u8]>::to("press_button").partition(0);
        if let Some(p) = payload {
            r = r.payload(p.as_slice());
        }
        let offset = producer
            .send(r, Duration::from_secs(10))
            .await
            .expect("poison stored")
            .offset;
        if !reason.is_empty() {
            expected.insert(offset, ((*reason).to_owned(), payload.clone()));
        }
    }
    ledger.record(&api.press().await.expect("a press after the poison"));

    let newest = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("the reducer goes past every poison record");
    assert_eq!(
        newest.counter,
        ledger.accepted as u64 + 1,
        "the real presses and the first of the two with one request id"
    );

    let consumer = common::topic_reader(&stack.brokers(), "press_button.dlq", 0);
    let mut seen: BTreeMap<i64, (String, Option<Vec<u8>>)> = BTreeMap::new();
    while seen.len() < expected.len() {
        let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("every poison record reaches the dead-letter topic")
            .expect("message");
        let header = |key: &str| {
            m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == key)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let offset: i64 = header("x-source-offset")
            .expect("source offset")
            .parse()
            .expect("number");
        assert_eq!(header("x-source-partition").as_deref(), Some("0"));
        seen.insert(
            offset,
            (
                header("x-dlq-reason").expect("reason"),
                m.payload().map(<[u8]>::to_vec),
            ),
        );
    }
    // Each with its reason and its original bytes.
    assert_eq!(seen, expected);
}

/// A broker restart while the reducer is dead-lettering: every poison
/// record is still stored on the dead-letter topic, once and in order,
/// without the reducer having to fail and restart first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_while_dead_lettering_loses_no_poison_record() {
    init_test_logs();
    let mut stack = Stack::start(StackConfig::default())
        .await
        .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let reducer = stack.pid(Component::Reducer(0)).expect("reducer pid");
    let poison = async |brokers: String, n: usize| {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let sends = (0..n).map(|_| {
            producer.send(
                FutureRecord::<(), [u8]>::to("press_button")
                    .partition(0)
                    .payload(b"not json".as_slice()),
                Duration::from_secs(10),
            )
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.expect("poison stored").offset)
            .collect::<Vec<i64>>()
    };

    let mut ledger = Ledger::default();
    ledger.record(&api.press().await.expect("press"));
    // Dead-lettering one record at a time takes a while: the restart
    // lands in the middle of it.
    let mut sent = poison(stack.brokers(), 400).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack
        .restart(Component::Broker)
        .await
        .expect("broker restarts");
    sent.extend(poison(stack.brokers(), 5).await);
    let press = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match api.press().await {
                Ok(answer) => return answer,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("the service takes presses again");
    ledger.record(&press);
    wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("the reducer goes past every poison record");
    assert_eq!(
        stack.pid(Component::Reducer(0)),
        Some(reducer),
        "the reducer did not have to restart"
    );

    let consumer = common::topic_reader(&stack.brokers(), "press_button.dlq", 0);
    let mut stored = Vec::new();
    while stored.len() < sent.len() {
        let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("every poison record is on the dead-letter topic")
            .expect("message");
        let offset = m
            .headers()
            .and_then(|h| h.iter().find(|x| x.key == "x-source-offset"))
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).parse::<i64>().expect("number"))
            .expect("source offset");
        stored.push(offset);
    }
    assert_eq!(stored, sent, "each poison record once, in order");
}
