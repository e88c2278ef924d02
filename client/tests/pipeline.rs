//! Presses through the whole pipeline: HTTP → broker → reducer →
//! PostgreSQL → Redis → SSE, and the exactly-once invariant across a
//! reducer crash.

use button_client::{
    Api, Ledger, Presser, SseListener, init_test_logs, press_many, wait_db_covers,
};
use button_stack::{Component, Stack, StackConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_presses_are_counted_and_streamed() {
    init_test_logs();
    let stack = Stack::start(StackConfig {
        partitions: 2,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let mut sse = SseListener::connect(&api, None)
        .await
        .expect("stream opens");

    let mut ledger = Ledger::default();
    for answer in press_many(&api, 1_000, 32).await {
        ledger.record(&answer.expect("every press is accepted"));
    }
    assert_eq!(ledger.accepted, 1_000);
    assert_eq!(ledger.high.len(), 2, "presses spread over both partitions");

    let newest = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("the reducer catches up");
    assert_eq!(
        newest.counter, 1_000,
        "newest snapshot once the lag is zero"
    );

    let shown = sse
        .wait_for(Duration::from_secs(30), |s| s.id >= newest.id)
        .await
        .expect("the stream shows the newest state");
    assert_eq!(shown.counter, 1_000);
    let current = api.current().await.expect("current state");
    assert_eq!(current.counter, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_killed_mid_stream_counts_every_press_once() {
    init_test_logs();
    let mut stack = Stack::start(StackConfig {
        partitions: 2,
        // Small batches and commits every batch: many transactions to land between.
        reducer_env: button_stack::env(&[("BUTTON_BATCH_MAX", "20")]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));

    // Presses keep coming until both crashes are over.
    let presser = Presser::start(api.clone());
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        stack.kill(Component::Reducer(0)).expect("SIGKILL");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack
            .start_component(Component::Reducer(0))
            .await
            .expect("reducer restarts");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ledger, refused) = presser.stop().await;
    assert!(
        refused.is_empty(),
        "presses are accepted whatever the reducer does: {refused:?}"
    );
    assert!(
        ledger.accepted >= 200,
        "presses went on during the crashes ({})",
        ledger.accepted
    );

    let newest = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(90))
        .await
        .expect("the restarted reducer catches up");
    assert_eq!(
        newest.counter, ledger.accepted as u64,
        "every accepted press counted exactly once"
    );

    // SIGTERM: the reducer finishes, commits and exits cleanly.
    stack
        .stop(Component::Reducer(0), Duration::from_secs(15))
        .await
        .expect("stop");
    assert_eq!(
        stack
            .wait_exit(Component::Reducer(0), Duration::from_secs(1))
            .await
            .expect("exit"),
        Some(Some(0))
    );
}

/// Presses in rounds of 50 until `done`; every press must be accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_stops_the_reducer_and_loses_nothing() {
    init_test_logs();
    let mut stack = Stack::start(StackConfig {
        reducer_env: button_stack::env(&[
            ("BUTTON_MAX_ATTEMPTS", "3"),
            ("BUTTON_BACKOFF_INITIAL_MS", "50"),
        ]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    let mut ledger = Ledger::default();
    for answer in press_many(&api, 100, 8).await {
        ledger.record(&answer.expect("press"));
    }
    wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("persisted");

    stack.kill(Component::Postgres).expect("kill postgres");
    for answer in press_many(&api, 100, 8).await {
        ledger.record(&answer.expect("presses need only the broker"));
    }
    // Backoff, then a non-zero exit with nothing committed past PostgreSQL.
    let exit = stack
        .wait_exit(Component::Reducer(0), Duration::from_secs(60))
        .await
        .expect("reducer");
    assert!(
        matches!(exit, Some(Some(code)) if code != 0),
        "reducer exits non-zero after its attempts: {exit:?}"
    );

    stack
        .start_component(Component::Postgres)
        .await
        .expect("postgres restarts");
    stack
        .start_component(Component::Reducer(0))
        .await
        .expect("reducer restarts");
    for answer in press_many(&api, 100, 8).await {
        ledger.record(&answer.expect("press"));
    }
    let newest = wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("caught up");
    assert_eq!(
        newest.counter, 300,
        "every accepted press counted exactly once"
    );
}
