//! Ingest `direct`: presses folded from PostgreSQL's `presses` table, with
//! no broker. Ids are handed out before commit and transactions commit in
//! any order; none of that may lose a press or count one twice.

use button_client::{init_test_logs, latest_in_db};
use button_domain::{PressRecord, Snapshot};
use button_stack::{Component, Ingest, Stack, StackConfig};
use button_store::ingest::{insert_press, read_presses};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn payload(request_id: &str) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    PressRecord::new(request_id.to_owned(), "direct-test".to_owned(), now)
        .with_country("unknown".into())
        .encode()
}

async fn direct_stack(reducer: bool, reducer_env: &[(&str, &str)]) -> Stack {
    Stack::start(StackConfig {
        ingest: Ingest::Direct,
        services: 0,
        reducer,
        reducer_env: button_stack::env(reducer_env),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts")
}

/// Migrated (idempotent when the reducer did it already).
async fn pool(stack: &Stack) -> PgPool {
    button_store::connect(&stack.database_url(), 8, Duration::from_secs(5), None)
        .await
        .expect("PostgreSQL answers")
}

/// Starts an insert and leaves its transaction open: its id is taken, its
/// row not yet visible.
async fn insert_held(
    pool: &PgPool,
    request_id: &str,
) -> (sqlx::Transaction<'static, sqlx::Postgres>, i64) {
    let mut tx = pool.begin().await.expect("begin");
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO presses (request_id, payload) VALUES ($1, $2) RETURNING id",
    )
    .bind(request_id)
    .bind(payload(request_id))
    .fetch_one(&mut *tx)
    .await
    .expect("held insert");
    (tx, id)
}

async fn rows(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), coalesce(max(id), 0) FROM presses")
        .fetch_one(pool)
        .await
        .expect("count presses")
}

/// Waits until the newest snapshot has folded every id up to `through`.
async fn wait_applied(stack: &Stack, through: i64, timeout: Duration) -> Snapshot {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let latest = latest_in_db(&stack.database_url()).await.ok().flatten();
        if let Some(s) = &latest
            && s.covers(0, through)
        {
            return latest.expect("checked above");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reducer did not apply through id {through} within {timeout:?}; newest state: {latest:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn country_total(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(presses), 0)::bigint FROM country_counts")
        .fetch_one(pool)
        .await
        .expect("country counts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_waits_for_a_lower_id_still_uncommitted_and_returns_both_rows() {
    init_test_logs();
    let stack = direct_stack(false, &[]).await;
    let pool = pool(&stack).await;

    let (held, low) = insert_held(&pool, "held").await;
    let high = insert_press(&pool, "committed", &payload("committed"))
        .await
        .expect("insert");
    assert!(high > low, "ids come from one sequence: {low} then {high}");

    let read = tokio::spawn({
        let pool = pool.clone();
        async move { read_presses(&pool, 0, 100).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !read.is_finished(),
        "the read returned while id {low} was still uncommitted: it would step over it"
    );
    held.commit().await.expect("commit the held insert");
    let read = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the read returns once the held insert commits")
        .expect("read task")
        .expect("read");
    let ids: Vec<i64> = read.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![low, high], "both rows, in id order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_committed_out_of_order_are_each_counted_once() {
    init_test_logs();
    let stack = direct_stack(true, &[]).await;
    let pool = pool(&stack).await;

    let (held, held_id) = insert_held(&pool, "held").await;
    // These commit first, with higher ids. The reducer's reads time out
    // on the held insert (inserts are not stuck behind them for good).
    for i in 0..40 {
        let id = format!("after-{i}");
        insert_press(&pool, &id, &payload(&id))
            .await
            .expect("insert while another is held");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let meanwhile = latest_in_db(&stack.database_url())
        .await
        .expect("read the newest state");
    assert!(
        !meanwhile.as_ref().is_some_and(|s| s.covers(0, held_id)),
        "the reducer moved past id {held_id} before it committed: {meanwhile:?}"
    );
    held.commit().await.expect("commit the held insert");

    let (count, max_id) = rows(&pool).await;
    assert_eq!(count, 41);
    let newest = wait_applied(&stack, max_id, Duration::from_secs(30)).await;
    assert_eq!(
        newest.counter, count as u64,
        "every row counted exactly once"
    );
    assert_eq!(country_total(&pool).await, count, "countries counted once");

    // A row that does not decode is stepped over, counted by reason, and
    // the rows after it are folded.
    insert_press(&pool, "poison", b"not json")
        .await
        .expect("insert poison");
    insert_press(&pool, "after-poison", &payload("after-poison"))
        .await
        .expect("insert");
    let (_, max_id) = rows(&pool).await;
    let newest = wait_applied(&stack, max_id, Duration::from_secs(30)).await;
    assert_eq!(newest.counter, count as u64 + 1);
    let metrics = reqwest::get(format!("{}/metrics", stack.reducer_url()))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics
            .lines()
            .any(|l| l == "reducer_dead_letters_total{reason=\"malformed_json\"} 1"),
        "the poison row is counted by its reason:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_killed_mid_stream_counts_every_row_once() {
    init_test_logs();
    // Small batches: many transactions for the kill to land between.
    let mut stack = direct_stack(true, &[("BUTTON_BATCH_MAX", "20")]).await;
    let pool = pool(&stack).await;

    // Inserts keep coming until both kills are over.
    let done = Arc::new(AtomicBool::new(false));
    let inserters: Vec<_> = (0..4)
        .map(|w| {
            let (pool, done) = (pool.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    let id = format!("w{w}-{i}");
                    insert_press(&pool, &id, &payload(&id))
                        .await
                        .expect("insert");
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
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
    done.store(true, Ordering::Relaxed);
    for inserter in inserters {
        inserter.await.expect("inserter");
    }

    let (count, max_id) = rows(&pool).await;
    assert!(count >= 200, "inserts went on during the kills ({count})");
    let newest = wait_applied(&stack, max_id, Duration::from_secs(60)).await;
    assert_eq!(
        newest.counter, count as u64,
        "every row counted exactly once across the kills"
    );
    assert_eq!(country_total(&pool).await, count, "countries counted once");
}
