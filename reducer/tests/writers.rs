//! Several writers of the one global state (reducers in a consumer group)
//! queue behind the writers' lock and fold onto the newest snapshot: none
//! loses its batch to another's append, and a batch the newest snapshot
//! already holds (a paused member waking after its partitions moved) is
//! not counted again.

use button_domain::{PressEvent, Ruleset, Snapshot};
use button_reducer::Config;
use button_reducer::persist::{Pending, Persister, Written, nothing_before};
use button_stack::{Ingest, Stack, StackConfig};
use button_store::BatchInfo;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::watch;

/// PostgreSQL and Redis only: no broker, no service, no reducer.
async fn database() -> (Stack, PgPool) {
    let stack = Stack::start(StackConfig {
        ingest: Ingest::Direct,
        services: 0,
        reducer: false,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let pool = button_store::connect(&stack.database_url(), 16, Duration::from_secs(5), None)
        .await
        .expect("PostgreSQL answers");
    (stack, pool)
}

/// A writer that starts from the newest state, as a reducer does.
async fn writer(pool: &PgPool) -> (Persister, Ruleset) {
    let (rules, hash) = button_store::active_ruleset(pool).await.expect("ruleset");
    let persisted = button_store::latest_snapshot(pool)
        .await
        .expect("newest")
        .unwrap_or_else(|| Snapshot::genesis(hash.clone()));
    let config = Config {
        max_attempts: 3,
        ..Config::default()
    };
    let (published, _) = watch::channel(None);
    (
        Persister::new(&config, pool.clone(), hash, published, persisted),
        rules,
    )
}

fn batch(partition: i32, offsets: std::ops::Range<i64>) -> Pending {
    let mut pending = Pending::default();
    for offset in offsets {
        pending.push(
            PressEvent {
                accepted_at_ms: 1_000 + offset,
                partition,
                offset,
            },
            "unknown",
        );
    }
    pending
}

async fn write(persister: &mut Persister, rules: &Ruleset, pending: &Pending) -> Written {
    persister
        .write(
            |base| pending.fold_onto(base, rules),
            BatchInfo {
                batch_size: pending.presses.len() as i64,
                ..BatchInfo::default()
            },
            nothing_before,
        )
        .await
        .expect("the write ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_appending_at_once_all_land() {
    let (_stack, pool) = database().await;
    const WRITERS: i32 = 4;
    const BATCHES: i64 = 25;
    const SIZE: i64 = 10;
    // Every writer starts from the same snapshot and never reloads: each
    // write after the first is folded from a state in hand that another
    // writer has already moved past.
    let mut tasks = Vec::new();
    for partition in 0..WRITERS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let (mut persister, rules) = writer(&pool).await;
            let mut outcomes = Vec::new();
            for b in 0..BATCHES {
                let pending = batch(partition, b * SIZE..(b + 1) * SIZE);
                outcomes.push(write(&mut persister, &rules, &pending).await);
            }
            outcomes
        }));
    }
    for task in tasks {
        let outcomes = task.await.expect("writer");
        assert!(
            outcomes.iter().all(|w| *w == Written::Committed),
            "a writer lost a batch: {outcomes:?}"
        );
    }
    let newest = button_store::latest_snapshot(&pool)
        .await
        .expect("newest")
        .expect("written");
    assert_eq!(newest.counter, (WRITERS as i64 * BATCHES * SIZE) as u64);
    for partition in 0..WRITERS {
        assert_eq!(newest.offsets.get(&partition), Some(&(BATCHES * SIZE - 1)));
    }
    let countries: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(presses), 0)::bigint FROM country_counts")
            .fetch_one(&pool)
            .await
            .expect("country counts");
    assert_eq!(countries, WRITERS as i64 * BATCHES * SIZE);
    let snapshots: i64 = sqlx::query_scalar("SELECT count(*) FROM global_states")
        .fetch_one(&pool)
        .await
        .expect("count snapshots");
    assert_eq!(
        snapshots,
        WRITERS as i64 * BATCHES,
        "one snapshot per batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waking_with_records_another_applied_counts_only_the_new_ones() {
    let (_stack, pool) = database().await;
    let (mut zombie, rules) = writer(&pool).await;
    let (mut owner, _) = writer(&pool).await;
    // The new owner of partition 0 applied offsets 0..=9 while the zombie
    // was frozen with 0..=14 in hand.
    assert_eq!(
        write(&mut owner, &rules, &batch(0, 0..10)).await,
        Written::Committed
    );
    assert_eq!(
        write(&mut zombie, &rules, &batch(0, 0..15)).await,
        Written::Committed
    );
    let newest = zombie.persisted().clone();
    assert_eq!(
        newest.counter, 15,
        "10 from the owner, 5 new from the zombie"
    );
    assert_eq!(newest.offsets.get(&0), Some(&14));
    // The owner, behind now, writes what the zombie applied: nothing new.
    assert_eq!(
        write(&mut owner, &rules, &batch(0, 10..15)).await,
        Written::Unchanged
    );
    assert_eq!(
        owner.persisted().id,
        newest.id,
        "it learnt the newest state"
    );
    let countries: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(presses), 0)::bigint FROM country_counts")
            .fetch_one(&pool)
            .await
            .expect("country counts");
    assert_eq!(countries, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stopped_inside_its_transaction_holds_the_others_up_only_until_postgresql_ends_it()
{
    let (stack, pool) = database().await;
    // A member stopped mid-write (SIGSTOP between its append and its
    // commit), on a pool like the reducer's: its append took the writers'
    // lock, and its commit does not come.
    let idle = Duration::from_secs(1);
    let stopped_pool =
        button_store::connect(&stack.database_url(), 1, Duration::from_secs(5), Some(idle))
            .await
            .expect("PostgreSQL answers");
    let (stopped, rules) = writer(&stopped_pool).await;
    let (_, hash) = button_store::active_ruleset(&pool).await.expect("ruleset");
    let base = stopped.persisted().clone();
    let folded = batch(0, 0..10)
        .fold_onto(&base.state(), &rules)
        .expect("new records");
    let mut tx = stopped_pool.begin().await.expect("begin");
    button_store::append_snapshot(&mut tx, base.id, &folded.state, &hash, BatchInfo::default())
        .await
        .expect("appended, not committed");

    // Another member writes meanwhile: it queues, then goes on.
    let (mut other, _) = writer(&pool).await;
    let started = std::time::Instant::now();
    assert_eq!(
        write(&mut other, &rules, &batch(1, 0..5)).await,
        Written::Committed
    );
    let waited = started.elapsed();
    assert!(
        waited >= idle / 2,
        "it queued behind the stopped writer's lock ({waited:?})"
    );

    // The stopped member's session was ended: nothing of its batch landed.
    assert!(
        tx.commit().await.is_err(),
        "a commit after the session ended"
    );
    let newest = button_store::latest_snapshot(&pool)
        .await
        .expect("newest")
        .expect("written");
    assert_eq!(newest.counter, 5);
    assert_eq!(newest.offsets.get(&0), None);
    assert_eq!(newest.offsets.get(&1), Some(&4));
}
