//! The verdict by identity on a real stack: presses matched in the topic
//! read back by the lab's own consumer are clean; a press produced a
//! second time (the reducer drops the repeat, so every count still agrees)
//! fails it; an undecodable record (a dead letter, never counted) does not.

use button_client::{Api, Ledger, SseListener, press_many, wait_db_covers};
use button_domain::PressRecord;
use button_stack::{Stack, StackConfig};
use loadgen::recorder::AcceptedPress;
use loadgen::topic::{TopicError, high_watermarks, read_range};
use loadgen::verdict::{JudgeInput, Verdict};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;

async fn judge(
    stack: &Stack,
    sse: &mut SseListener,
    accepted: &[AcceptedPress],
    through: &BTreeMap<i32, i64>,
) -> Verdict {
    let newest = button_client::latest_in_db(&stack.database_url())
        .await
        .expect("database")
        .expect("a state");
    assert!(
        through.iter().all(|(p, o)| newest.covers(*p, *o)),
        "applied through {through:?}: {:?}",
        newest.offsets
    );
    let last = sse
        .wait_for(Duration::from_secs(20), |s| s.id >= newest.id)
        .await
        .expect("the stream shows the newest state");
    let topic = read_range(
        &stack.brokers(),
        &stack.config().topic,
        &BTreeMap::new(),
        &newest.offsets,
        Duration::from_secs(30),
    )
    .await
    .expect("the topic reads back");
    Verdict::judge(&JudgeInput {
        gaps_allowed: false,
        repeats_expected: false,
        maybe_twice: &Default::default(),
        accepted,
        topic: Some(&topic),
        topic_error: None,
        offsets_before: &BTreeMap::new(),
        offsets_after: &newest.offsets,
        counter_before: 0,
        counter_after: newest.counter,
        unanswered: 0,
        sse_last_counter: Some(last.counter),
        drained: true,
    })
}

/// Stores `payload` on `partition` of the press topic, as something other
/// than the service would, and waits until the reducer has applied it.
async fn produce_applied(
    stack: &Stack,
    producer: &FutureProducer,
    partition: i32,
    payload: &[u8],
) -> (i32, i64) {
    let (partition, offset) = producer
        .send(
            FutureRecord::<(), _>::to(&stack.config().topic)
                .partition(partition)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map(|d| (d.partition, d.offset))
        .expect("the record is stored");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let newest = button_client::latest_in_db(&stack.database_url())
            .await
            .expect("database");
        if newest.is_some_and(|s| s.covers(partition, offset)) {
            return (partition, offset);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reducer never applied {partition}/{offset}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_produced_twice_fails_the_verdict_though_every_count_agrees() {
    let stack = Stack::start(StackConfig {
        partitions: 2,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let mut sse = SseListener::connect(&api, None).await.expect("stream");
    let mut ledger = Ledger::default();
    let mut accepted = Vec::new();
    for answer in press_many(&api, 60, 8).await {
        let a = answer.expect("every press accepted");
        ledger.record(&a);
        let (partition, offset) = a.position().expect("ingest kafka names a position");
        accepted.push(AcceptedPress {
            partition,
            offset,
            request_id: a.request_id,
            outbox_id: None,
        });
    }
    wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(30))
        .await
        .expect("the reducer applies every press");
    let v = judge(&stack, &mut sse, &accepted, &ledger.high).await;
    assert!(v.clean, "{}", v.describe());
    assert_eq!((v.accepted, v.records_applied), (60, 60));

    // The topic ends where the last 202 said.
    let high = high_watermarks(
        &stack.brokers(),
        &stack.config().topic,
        Duration::from_secs(10),
    )
    .await
    .expect("watermarks");
    let expected: BTreeMap<i32, i64> = ledger.high.iter().map(|(&p, &o)| (p, o + 1)).collect();
    assert_eq!(high, expected);

    // A read past the end of the topic gives up with an error, not a hang.
    let beyond: BTreeMap<i32, i64> = high.iter().map(|(&p, &h)| (p, h + 5)).collect();
    let started = std::time::Instant::now();
    let err = read_range(
        &stack.brokers(),
        &stack.config().topic,
        &ledger.high,
        &beyond,
        Duration::from_secs(2),
    )
    .await
    .expect_err("those offsets do not exist yet");
    assert!(matches!(err, TopicError::Incomplete { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "{err}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .create()
        .expect("producer");
    let first = accepted[0].clone();

    // An undecodable record: applied as a dead letter, never counted, and
    // the verdict stays clean.
    let (p, o) = produce_applied(&stack, &producer, first.partition, b"not a press").await;
    let mut through = ledger.high.clone();
    through.insert(p, o);
    let v = judge(&stack, &mut sse, &accepted, &through).await;
    assert!(v.clean, "{}", v.describe());
    assert_eq!((v.records_applied, v.dead_letters), (61, 1));
    assert_eq!(v.counter_after - v.counter_before, 60);

    // An accepted press, produced again.
    let payload =
        PressRecord::new(first.request_id.clone(), "c-0000000000000000".into(), 1).encode();
    let (p, o) = produce_applied(&stack, &producer, first.partition, &payload).await;
    through.insert(p, o);
    let v = judge(&stack, &mut sse, &accepted, &through).await;
    // The reducer dropped the repeat: the counts agree...
    assert_eq!(v.counter_after - v.counter_before, 60, "{}", v.describe());
    assert_eq!((v.lost, v.duplicated), (0, 0), "{}", v.describe());
    // ...and the verdict still fails, naming the press stored twice.
    assert!(!v.clean, "{}", v.describe());
    assert_eq!(v.duplicated_in_topic, 1, "{}", v.describe());
    assert!(
        v.reasons.iter().any(|r| r.contains("more than once")),
        "{:?}",
        v.reasons
    );
}
