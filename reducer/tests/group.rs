//! Two reducers in one consumer group over four partitions, presses
//! flowing: one SIGKILLed, or frozen past its session timeout and then
//! resumed (a zombie that still holds a batch of partitions it lost). The
//! other takes its partitions over, and every press answered 202 is
//! counted exactly once.

use button_client::{Api, Presser, SseListener, init_test_logs, latest_in_db, wait_db_covers};
use button_stack::{Component, Stack, StackConfig};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

async fn group_stack() -> Stack {
    Stack::start(StackConfig {
        partitions: PARTITIONS,
        reducers: 2,
        reducer_env: button_stack::env(&[
            ("BUTTON_ASSIGNMENT", "group"),
            // A lost member is noticed after this; static membership waits
            // for it even when the process is gone.
            ("BUTTON_CONSUMER", "session.timeout.ms=6000"),
            ("BUTTON_BATCH_MAX", "50"),
            // Dynamic membership: with static ids tansu 0.6.0 kept the
            // group rebalancing (each member assigned, then revoked at once,
            // every session timeout) and never settled.
            ("BUTTON_GROUP_INSTANCE_ID", ""),
        ]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts")
}

async fn offsets(stack: &Stack) -> BTreeMap<i32, i64> {
    latest_in_db(&stack.database_url())
        .await
        .ok()
        .flatten()
        .map(|s| s.offsets)
        .unwrap_or_default()
}

/// Waits until every partition has moved past `from` (presses flow to
/// all of them, so a partition nobody reads is the one that stays).
async fn every_partition_moves(
    stack: &Stack,
    from: &BTreeMap<i32, i64>,
    bound: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = offsets(stack).await;
        let moved = (0..PARTITIONS)
            .all(|p| now.get(&p).copied().unwrap_or(-1) > from.get(&p).copied().unwrap_or(-1));
        if moved {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "not every partition was read again within {bound:?}: {from:?} -> {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exactly once: the newest state covers every 202, and its counter equals
/// the records it applied (offsets start at 0, no poison was produced), so
/// none was counted twice; a new stream shows it.
async fn exactly_once(stack: &Stack, api: &Api, ledger: &button_client::Ledger) {
    let newest = wait_db_covers(&stack.database_url(), ledger, Duration::from_secs(120))
        .await
        .expect("every press answered 202 is in PostgreSQL's newest state");
    let records: i64 = newest.offsets.values().map(|o| o + 1).sum();
    assert_eq!(
        newest.counter as i64, records,
        "each record counted exactly once"
    );
    assert!(
        newest.counter >= ledger.accepted as u64,
        "counter {} below the {} presses answered 202",
        newest.counter,
        ledger.accepted
    );
    let mut sse = SseListener::connect(api, None).await.expect("stream opens");
    let shown = sse
        .wait_for(Duration::from_secs(30), |s| s.id >= newest.id)
        .await
        .expect("the stream shows the newest state");
    assert_eq!(shown.counter, newest.counter);
}

/// Whether reducer `i` holds partitions now: its log's last word on
/// assignment (the reducer logs each assignment and revocation).
fn holds_partitions(stack: &Stack, i: usize) -> bool {
    let log = std::fs::read_to_string(stack.log_path(Component::Reducer(i))).unwrap_or_default();
    log.lines()
        .rev()
        .find(|l| l.contains("assigned; starting") || l.contains("partitions revoked"))
        .is_some_and(|l| l.contains("assigned; starting") && l.contains("press_button"))
}

/// Both members read: each holds partitions and every partition moves.
async fn warm_up(stack: &Stack) {
    let started = Instant::now();
    while !(holds_partitions(stack, 0) && holds_partitions(stack, 1)) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the two members did not share the partitions within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let from = offsets(stack).await;
    every_partition_moves(stack, &from, Duration::from_secs(30)).await;
    println!("both members reading after {:?}", started.elapsed());
}

/// Stops the load; presses must have gone on, each counted once.
async fn load_done_and_counted_once(presser: Presser, stack: &Stack, api: &Api) {
    let (ledger, refused) = presser.stop().await;
    tracing::info!(accepted = ledger.accepted, ?refused, "load done");
    assert!(
        ledger.accepted >= 200,
        "presses went on ({})",
        ledger.accepted
    );
    exactly_once(stack, api, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_under_load_hands_its_partitions_over_and_counts_each_press_once() {
    init_test_logs();
    let mut stack = group_stack().await;
    let api = Api::new(stack.service_url(0));
    let presser = Presser::start(api.clone());
    warm_up(&stack).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    stack.kill(Component::Reducer(1)).expect("SIGKILL");
    let at_kill = offsets(&stack).await;
    // Liveness, not speed: session timeout (6 s) plus a rebalance.
    let handover = every_partition_moves(&stack, &at_kill, Duration::from_secs(30)).await;
    println!("handover after SIGKILL: {handover:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    load_done_and_counted_once(presser, &stack, &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_frozen_past_its_session_timeout_wakes_without_counting_twice() {
    init_test_logs();
    let mut stack = group_stack().await;
    let api = Api::new(stack.service_url(0));
    let presser = Presser::start(api.clone());
    warm_up(&stack).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Frozen with whatever batch it holds; its partitions move meanwhile.
    stack.pause(Component::Reducer(1)).expect("SIGSTOP");
    let at_pause = offsets(&stack).await;
    let handover = every_partition_moves(&stack, &at_pause, Duration::from_secs(30)).await;
    println!("handover after SIGSTOP: {handover:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.resume(Component::Reducer(1)).expect("SIGCONT");
    // The zombie writes what it held, rejoins, and the group rebalances.
    tokio::time::sleep(Duration::from_secs(8)).await;

    load_done_and_counted_once(presser, &stack, &api).await;
    assert!(
        stack.is_running(Component::Reducer(1)),
        "the woken member carries on"
    );
}
