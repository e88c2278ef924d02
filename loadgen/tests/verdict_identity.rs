//! The verdict by identity on a real stack: presses matched in the topic
//! read back by the lab's own consumer are clean; a press produced a
//! second time (the reducer drops the repeat, so every count still agrees)
//! fails it.

use button_client::{Api, Ledger, SseListener, press_many, wait_db_covers};
use button_domain::PressRecord;
use button_stack::{Stack, StackConfig};
use loadgen::recorder::AcceptedPress;
use loadgen::topic::read_range;
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
        accepted.push(AcceptedPress {
            partition: a.partition,
            offset: a.offset,
            request_id: a.request_id,
        });
    }
    wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(30))
        .await
        .expect("the reducer applies every press");
    let v = judge(&stack, &mut sse, &accepted, &ledger.high).await;
    assert!(v.clean, "{}", v.describe());
    assert_eq!((v.accepted, v.records_applied), (60, 60));

    // The press at the lowest offset of partition 0, produced again.
    let first = accepted
        .iter()
        .filter(|a| a.partition == 0)
        .min_by_key(|a| a.offset)
        .expect("a press on partition 0")
        .clone();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .create()
        .expect("producer");
    let payload =
        PressRecord::new(first.request_id.clone(), "c-0000000000000000".into(), 1).encode();
    let (partition, offset) = producer
        .send(
            FutureRecord::<(), _>::to(&stack.config().topic)
                .partition(0)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map(|d| (d.partition, d.offset))
        .expect("the repeat is stored");
    let mut through = ledger.high.clone();
    through.insert(partition, offset);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let newest = button_client::latest_in_db(&stack.database_url())
            .await
            .expect("database");
        if newest.is_some_and(|s| s.covers(partition, offset)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reducer never applied the repeat"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
