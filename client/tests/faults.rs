//! The fault matrix, short: steady presses while one component fails, then
//! every press answered 202 must be counted exactly once. Presses that got
//! no 202 (refused, or cut off by a dying service) may be counted or not.
//! The long versions, with recovery times, are `scenarios/fault-*.toml`.

use button_client::{Api, Presser, SseListener, init_test_logs, wait_db_covers};
use button_stack::{Component, Stack, StackConfig};
use std::time::Duration;

async fn stack(reducer_env: &[(&str, &str)]) -> Stack {
    Stack::start(StackConfig {
        partitions: 2,
        reducer_env: button_stack::env(reducer_env),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts")
}

/// Presses around `fault`, then checks exactly once and that a stream
/// opened afterwards shows the final count.
async fn under_load(stack: &mut Stack, fault: impl AsyncFnOnce(&mut Stack)) {
    let api = Api::new(stack.service_url(0));
    let presser = Presser::start(api.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fault(stack).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ledger, refused) = presser.stop().await;
    tracing::info!(accepted = ledger.accepted, ?refused, "load done");
    assert!(
        ledger.accepted >= 100,
        "presses went on around the fault ({})",
        ledger.accepted
    );

    let newest = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(120))
        .await
        .expect("every press answered 202 is in PostgreSQL's newest state");
    // Offsets start at 0 and no poison was produced: the counter must equal
    // the records applied, each once.
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
    let mut sse = SseListener::connect(&api, None)
        .await
        .expect("stream opens");
    let shown = sse
        .wait_for(Duration::from_secs(30), |s| s.id >= newest.id)
        .await
        .expect("the stream shows the newest state");
    assert_eq!(shown.counter, newest.counter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_killed_three_times_with_kafka_commits_far_behind_counts_each_press_once() {
    init_test_logs();
    // Kafka commits every 1000 batches: every kill lands after database
    // commits Kafka has not seen, so only PostgreSQL's offsets can be right.
    let mut stack = stack(&[
        ("BUTTON_BATCH_MAX", "20"),
        ("BUTTON_COMMIT_EVERY_BATCHES", "1000"),
        ("BUTTON_COMMIT_INTERVAL_MS", "0"),
    ])
    .await;
    under_load(&mut stack, async |stack: &mut Stack| {
        for pause_ms in [450, 800, 650] {
            stack.kill(Component::Reducer(0)).expect("SIGKILL");
            tokio::time::sleep(Duration::from_millis(200)).await;
            stack
                .start_component(Component::Reducer(0))
                .await
                .expect("reducer restarts");
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_frozen_past_its_session_timeout_resumes_without_double_counting() {
    init_test_logs();
    let mut stack = stack(&[("BUTTON_CONSUMER", "session.timeout.ms=6000")]).await;
    under_load(&mut stack, async |stack: &mut Stack| {
        stack.pause(Component::Reducer(0)).expect("SIGSTOP");
        tokio::time::sleep(Duration::from_secs(8)).await;
        stack.resume(Component::Reducer(0)).expect("SIGCONT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_loses_no_accepted_press() {
    init_test_logs();
    let mut stack = stack(&[]).await;
    under_load(&mut stack, async |stack: &mut Stack| {
        stack
            .restart(Component::Broker)
            .await
            .expect("broker restarts");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_restart_under_load_loses_no_accepted_press() {
    init_test_logs();
    let mut stack = stack(&[]).await;
    under_load(&mut stack, async |stack: &mut Stack| {
        stack
            .restart(Component::Service(0))
            .await
            .expect("service restarts");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_with_presses_in_flight_loses_no_accepted_press() {
    init_test_logs();
    let mut stack = stack(&[]).await;
    under_load(&mut stack, async |stack: &mut Stack| {
        stack.kill(Component::Service(0)).expect("SIGKILL");
        tokio::time::sleep(Duration::from_secs(1)).await;
        stack
            .start_component(Component::Service(0))
            .await
            .expect("service restarts");
    })
    .await;
}
