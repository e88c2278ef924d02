//! The outbox relay against a real stack (ingest `outbox`): rows are
//! inserted into `outbox` the way the service stores an accepted press,
//! the relays produce them, the reducer counts them.
//!
//! What every test settles on: once no row is pending and the reducer's
//! newest state covers the topic's high watermarks, the topic is read back
//! whole and compared with what was inserted.

use button_client::{init_test_logs, latest_in_db, wait_until};
use button_domain::{PressRecord, Snapshot};
use button_stack::{Component, Ingest, Stack, StackConfig};
use button_store::ingest::{self, outbox_counts};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOPIC: &str = "press_button";
const PARTITIONS: i32 = 2;

async fn stack(relays: usize, relay_env: &[(&str, &str)]) -> Stack {
    Stack::start(StackConfig {
        ingest: Ingest::Outbox,
        relays,
        partitions: PARTITIONS,
        relay_env: button_stack::env(relay_env),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts")
}

async fn pool(stack: &Stack) -> PgPool {
    PgPoolOptions::new()
        .max_connections(6)
        .connect(&stack.database_url())
        .await
        .expect("PostgreSQL")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The topic record the service would store for a press.
fn payload(request_id: &str) -> Vec<u8> {
    PressRecord::new(request_id.to_owned(), "relay-test".to_owned(), now_ms()).encode()
}

async fn insert(pool: &PgPool, request_id: &str) -> i64 {
    ingest::insert_outbox(pool, request_id, &payload(request_id))
        .await
        .expect("outbox insert")
}

/// Inserts rows one at a time from `writers` tasks until `stop`; their
/// commits interleave, so ids commit out of order. Returns the request ids.
fn insert_continuously(
    pool: &PgPool,
    prefix: &str,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..writers)
        .map(|w| {
            let (pool, stop, prefix) = (pool.clone(), stop.clone(), prefix.to_owned());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("{prefix}-{w}-{}", ids.len());
                    insert(&pool, &id).await;
                    ids.push(id);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                ids
            })
        })
        .collect()
}

async fn pending(pool: &PgPool) -> i64 {
    outbox_counts(pool).await.expect("outbox counts").0
}

/// Every record on the topic, as (partition, offset) → request id, read up
/// to the high watermarks taken first.
async fn read_topic(brokers: &str) -> (BTreeMap<(i32, i64), String>, BTreeMap<i32, i64>) {
    let highs = {
        let brokers = brokers.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "relay-test-watermarks")
                .create()
                .expect("consumer");
            (0..PARTITIONS)
                .map(|p| {
                    let (_, high) = consumer
                        .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                        .expect("watermarks");
                    (p, high)
                })
                .collect::<BTreeMap<i32, i64>>()
        })
        .await
        .expect("watermarks task")
    };
    let mut records = BTreeMap::new();
    let reader = topic_reader(brokers);
    let mut done: BTreeSet<i32> = highs
        .iter()
        .filter(|(_, high)| **high == 0)
        .map(|(p, _)| *p)
        .collect();
    while done.len() < highs.len() {
        let m = tokio::time::timeout(Duration::from_secs(20), reader.recv())
            .await
            .expect("the topic is read back up to its high watermarks")
            .expect("record");
        let (p, o) = (m.partition(), m.offset());
        if o >= highs[&p] {
            done.insert(p);
            continue;
        }
        let record = PressRecord::decode(m.payload()).expect("a press record");
        records.insert((p, o), record.request_id);
        if o + 1 >= highs[&p] {
            done.insert(p);
        }
    }
    (records, highs)
}

/// A consumer of every partition from the first record, committing nothing.
fn topic_reader(brokers: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "relay-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// What the topic and the reducer hold once everything settled.
struct Settled {
    /// Request id → how many records carry it.
    copies: BTreeMap<String, usize>,
    /// (partition, offset) → request id.
    records: BTreeMap<(i32, i64), String>,
    newest: Snapshot,
}

/// Waits until no row is pending and the reducer's newest state covers
/// every record on the topic, then reads the topic back.
async fn settle(stack: &Stack, pool: &PgPool) -> Settled {
    assert!(
        wait_until(Duration::from_secs(90), || async {
            pending(pool).await == 0
        })
        .await,
        "the relays sent every row (pending: {})",
        pending(pool).await
    );
    let (records, highs) = read_topic(&stack.brokers()).await;
    let url = stack.database_url();
    let covered = |s: &Snapshot| {
        highs
            .iter()
            .all(|(p, high)| *high == 0 || s.covers(*p, high - 1))
    };
    assert!(
        wait_until(Duration::from_secs(90), || async {
            matches!(latest_in_db(&url).await, Ok(Some(s)) if covered(&s))
        })
        .await,
        "the reducer applied the topic up to {highs:?}"
    );
    let newest = latest_in_db(&url)
        .await
        .expect("PostgreSQL")
        .expect("a state");
    let mut copies = BTreeMap::new();
    for id in records.values() {
        *copies.entry(id.clone()).or_insert(0) += 1;
    }
    Settled {
        copies,
        records,
        newest,
    }
}

/// Each sent row names where the broker stored it; that record must be it.
async fn assert_positions_recorded(pool: &PgPool, records: &BTreeMap<(i32, i64), String>) {
    let rows: Vec<(String, Option<i32>, Option<i64>)> = sqlx::query_as(
        "SELECT request_id, sent_partition, sent_offset FROM outbox WHERE state = 'sent'",
    )
    .fetch_all(pool)
    .await
    .expect("sent rows");
    for (request_id, partition, offset) in rows {
        let at = (
            partition.expect("sent_partition set"),
            offset.expect("sent_offset set"),
        );
        assert_eq!(
            records.get(&at),
            Some(&request_id),
            "the record at {at:?} is the row's"
        );
    }
}

async fn scrape(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body")
}

/// The value of an unlabelled series in a Prometheus exposition.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Runs `promtool check metrics` on an exposition; its findings on failure.
fn promtool(exposition: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("promtool (Debian package `prometheus`, scripts/setup installs it): {e}")
        })?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The relay's exposition passes promtool and declares every metric of its
/// contract with its type and help, and nothing undeclared.
fn assert_contract(exposition: &str) {
    if let Err(findings) = promtool(exposition) {
        panic!(
            "promtool check metrics failed on the relay's output:\n{findings}\n---\n{exposition}"
        );
    }
    let declared: BTreeSet<&str> = button_relay::metrics::METRICS
        .iter()
        .map(|m| m.name)
        .collect();
    for m in button_relay::metrics::METRICS {
        let kind = format!("# TYPE {} {}", m.name, m.kind.as_str());
        assert!(
            exposition.contains(&kind),
            "expected `{kind}`:\n{exposition}"
        );
        assert!(
            exposition.contains(&format!("# HELP {} ", m.name)),
            "no help text for {}",
            m.name
        );
    }
    for family in exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
    {
        assert!(
            !family.starts_with("relay_") || declared.contains(family),
            "undeclared {family}"
        );
    }
}

/// Relays SIGKILLed while rows flow, then one kill placed exactly between
/// the broker's acknowledgement and the relay's COMMIT: nothing is lost and
/// nothing is counted twice.
///
/// How the last kill is made deterministic. The test holds
/// `LOCK TABLE outbox IN SHARE MODE` in an open transaction. That lock lets
/// the relay's claim through (`SELECT ... FOR UPDATE` takes ROW SHARE, which
/// SHARE admits) but not its `mark_sent` (an UPDATE needs ROW EXCLUSIVE,
/// which SHARE blocks). So the relay claims the rows, produces them, gets
/// every acknowledgement (`mark_sent` only runs after all of them), and then
/// waits inside its transaction for as long as the test likes. The test
/// sees the rows on the topic and the relay's `UPDATE outbox ... 'sent'`
/// waiting on a lock in `pg_stat_activity`, SIGKILLs the relay there, and
/// releases the lock. The relay never sent COMMIT, so PostgreSQL rolls its
/// transaction back when it finds the connection gone: the rows are still
/// `pending` (asserted), the restarted relays send them again, and the topic
/// holds each of those request ids twice while the reducer counts it once.
///
/// Before that, two relays share rows inserted continuously by two writers
/// (commits out of id order) and are SIGKILLed in turn at arbitrary points,
/// and one is stopped with SIGTERM, which must finish its batch and exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_mid_batch_lose_nothing_and_count_once() {
    init_test_logs();
    let mut stack = stack(2, &[("BUTTON_BATCH_MAX", "50")]).await;
    let pool = pool(&stack).await;
    let mut inserted: BTreeSet<String> = BTreeSet::new();

    // Rows flowing while relays die at arbitrary points.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = insert_continuously(&pool, "flow", 2, stop.clone());
    for (relay, after_ms) in [(0, 700), (1, 600), (0, 500)] {
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        stack.kill(Component::Relay(relay)).expect("SIGKILL");
        tokio::time::sleep(Duration::from_millis(200)).await;
        stack
            .start_component(Component::Relay(relay))
            .await
            .expect("relay restarts");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        inserted.extend(writer.await.expect("writer"));
    }
    assert!(
        inserted.len() >= 200,
        "only {} rows inserted",
        inserted.len()
    );

    // SIGTERM: the batch in hand is finished and the relay exits 0.
    stack
        .stop(Component::Relay(1), Duration::from_secs(15))
        .await
        .expect("stop");
    assert_eq!(
        stack
            .wait_exit(Component::Relay(1), Duration::from_secs(1))
            .await
            .expect("stop"),
        Some(Some(0)),
        "SIGTERM ends the relay with exit code 0"
    );

    // The deterministic kill. Relay 0 alone, idle (nothing pending, so it
    // holds no row), is paused while the rows go in and the lock is taken.
    assert!(
        wait_until(Duration::from_secs(60), || async {
            pending(&pool).await == 0
        })
        .await,
        "relay 0 drains the flow"
    );
    stack.pause(Component::Relay(0)).expect("SIGSTOP");
    let held: Vec<String> = (0..40).map(|i| format!("held-{i}")).collect();
    for id in &held {
        insert(&pool, id).await;
    }
    inserted.extend(held.iter().cloned());
    let mut lock = pool.begin().await.expect("BEGIN");
    sqlx::query("LOCK TABLE outbox IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .expect("LOCK");
    stack.resume(Component::Relay(0)).expect("SIGCONT");

    // The broker has every held row...
    let reader = topic_reader(&stack.brokers());
    let mut unseen: BTreeSet<&str> = held.iter().map(String::as_str).collect();
    while !unseen.is_empty() {
        let m = tokio::time::timeout(Duration::from_secs(30), reader.recv())
            .await
            .unwrap_or_else(|_| panic!("held rows reach the topic; missing {unseen:?}"))
            .expect("record");
        let record = PressRecord::decode(m.payload()).expect("a press record");
        unseen.remove(record.request_id.as_str());
    }
    drop(reader);
    // ...and the relay waits to mark them sent, inside its transaction.
    let waiting = wait_until(Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE outbox o SET state = ''sent''%'",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_activity");
        n == 1
    })
    .await;
    assert!(waiting, "relay 0 blocks in mark_sent");
    stack.kill(Component::Relay(0)).expect("SIGKILL");
    lock.rollback().await.expect("release the lock");

    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM outbox WHERE request_id = ANY($1)")
            .bind(&held)
            .fetch_all(&pool)
            .await
            .expect("held rows");
    assert_eq!(states.len(), held.len());
    assert!(
        states.iter().all(|s| s == "pending"),
        "acknowledged but uncommitted rows stay pending: {states:?}"
    );

    stack
        .start_component(Component::Relay(0))
        .await
        .expect("relay 0 restarts");
    stack
        .start_component(Component::Relay(1))
        .await
        .expect("relay 1 restarts");

    let settled = settle(&stack, &pool).await;
    let missing: Vec<&String> = inserted
        .iter()
        .filter(|id| !settled.copies.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "rows never produced: {missing:?}");
    let strangers: Vec<&String> = settled
        .copies
        .keys()
        .filter(|id| !inserted.contains(*id))
        .collect();
    assert!(
        strangers.is_empty(),
        "records nobody inserted: {strangers:?}"
    );
    for id in &held {
        assert!(
            settled.copies[id] >= 2,
            "{id} was acknowledged, rolled back and sent again, so it is on the topic twice"
        );
    }
    assert_eq!(
        settled.newest.counter,
        inserted.len() as u64,
        "every inserted press counted once ({} records on the topic)",
        settled.records.len()
    );
    assert_positions_recorded(&pool, &settled.records).await;
    let repeats: usize = settled.copies.values().map(|n| n - 1).sum();
    tracing::info!(
        rows = inserted.len(),
        records = settled.records.len(),
        repeats,
        "settled"
    );
}

/// A row the broker can never take (over librdkafka's `message.max.bytes`,
/// 1,000,000 by default) fails `max_attempts` times with a growing backoff
/// and ends `dead` with its error, while the rows around it are sent and
/// counted; rows inserted after it are sent before it gives up, so a
/// failing row holds nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_row_goes_dead_and_the_rest_flows() {
    init_test_logs();
    let stack = stack(
        1,
        &[
            ("BUTTON_MAX_ATTEMPTS", "3"),
            ("BUTTON_BACKOFF_INITIAL_MS", "1000"),
            ("BUTTON_BACKOFF_MAX_MS", "10000"),
        ],
    )
    .await;
    let pool = pool(&stack).await;
    let mut good = Vec::new();
    for i in 0..20 {
        let id = format!("before-{i}");
        insert(&pool, &id).await;
        good.push(id);
    }
    let poison = PressRecord::new("poison".to_owned(), "x".repeat(1_200_000), now_ms()).encode();
    let poison_id = ingest::insert_outbox(&pool, "poison", &poison)
        .await
        .expect("insert");
    for i in 0..20 {
        let id = format!("after-{i}");
        insert(&pool, &id).await;
        good.push(id);
    }

    let dead = wait_until(Duration::from_secs(60), || async {
        let state: String = sqlx::query_scalar("SELECT state FROM outbox WHERE id = $1")
            .bind(poison_id)
            .fetch_one(&pool)
            .await
            .expect("poison row");
        state == "dead"
    })
    .await;
    assert!(dead, "the poison row ends dead");
    let (attempts, last_error, sent_offset): (i32, Option<String>, Option<i64>) =
        sqlx::query_as("SELECT attempts, last_error, sent_offset FROM outbox WHERE id = $1")
            .bind(poison_id)
            .fetch_one(&pool)
            .await
            .expect("poison row");
    assert_eq!(attempts, 3, "dead on its third failed send");
    let last_error = last_error.expect("last_error kept");
    assert!(
        last_error.contains("MessageSizeTooLarge"),
        "the error says why: {last_error}"
    );
    assert_eq!(sent_offset, None, "never stored by the broker");

    // Its last failure came `backoff_initial · 2^2` before its (unused)
    // next attempt time; every row after it was sent before that.
    let held_back: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox o, outbox p
         WHERE p.id = $1 AND o.request_id LIKE 'after-%'
           AND (o.sent_at IS NULL OR o.sent_at >= p.next_attempt_at - interval '4 seconds')",
    )
    .bind(poison_id)
    .fetch_one(&pool)
    .await
    .expect("ordering");
    assert_eq!(
        held_back, 0,
        "rows behind the poison row were not held back"
    );

    let settled = settle(&stack, &pool).await;
    assert!(!settled.copies.contains_key("poison"));
    for id in &good {
        assert!(settled.copies.contains_key(id), "{id} on the topic");
    }
    assert_eq!(settled.newest.counter, good.len() as u64);
    assert_positions_recorded(&pool, &settled.records).await;
    let (pending, sent, dead) = outbox_counts(&pool).await.expect("counts");
    assert_eq!((pending, sent, dead), (0, good.len() as i64, 1));

    // The gauges are read once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let exposition = scrape(&stack.relay_url(0)).await;
    assert_contract(&exposition);
    assert_eq!(sample(&exposition, "relay_rows_dead_total"), Some(1.0));
    assert_eq!(sample(&exposition, "relay_send_failures_total"), Some(3.0));
    assert_eq!(
        sample(&exposition, "relay_rows_sent_total"),
        Some(good.len() as f64)
    );
    assert_eq!(sample(&exposition, "relay_outbox_dead"), Some(1.0));
    assert_eq!(sample(&exposition, "relay_outbox_pending"), Some(0.0));
}

/// Sent rows are deleted once older than `prune_after_ms`, never sooner;
/// dead rows stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_rows_are_pruned_after_their_retention() {
    init_test_logs();
    let stack = stack(
        1,
        &[
            ("BUTTON_PRUNE_AFTER_MS", "2000"),
            ("BUTTON_PRUNE_EVERY_MS", "100"),
            // Several statements per round: the round repeats until one
            // deletes fewer.
            ("BUTTON_PRUNE_BATCH", "7"),
            ("BUTTON_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let pool = pool(&stack).await;
    let mut ids = BTreeSet::new();
    for i in 0..60 {
        ids.insert(insert(&pool, &format!("prune-{i}")).await);
    }
    let poison = PressRecord::new("poison".to_owned(), "x".repeat(1_200_000), now_ms()).encode();
    let poison_id = ingest::insert_outbox(&pool, "poison", &poison)
        .await
        .expect("insert");

    // Watch every row: each must be seen sent, and none may be gone at a
    // poll where it would be under 2 s old (PostgreSQL's clock on both sides).
    let mut sent_at: BTreeMap<i64, f64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows: Vec<(i64, String, Option<f64>, f64)> = sqlx::query_as(
            "SELECT id, state, extract(epoch FROM sent_at)::float8 * 1000,
                    extract(epoch FROM clock_timestamp())::float8 * 1000
             FROM outbox",
        )
        .fetch_all(&pool)
        .await
        .expect("rows");
        let now = match rows.first() {
            Some(row) => row.3,
            None => {
                sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8 * 1000")
                    .fetch_one(&pool)
                    .await
                    .expect("clock")
            }
        };
        let present: BTreeMap<i64, String> = rows
            .into_iter()
            .map(|(id, state, at, _)| {
                if let Some(at) = at {
                    sent_at.entry(id).or_insert(at);
                }
                (id, state)
            })
            .collect();
        for id in ids.iter().filter(|id| !present.contains_key(id)) {
            let at = sent_at
                .get(id)
                .unwrap_or_else(|| panic!("row {id} vanished without being seen sent"));
            assert!(
                now - at >= 2000.0,
                "row {id} pruned {} ms after it was sent",
                now - at
            );
        }
        if ids.iter().all(|id| !present.contains_key(id)) {
            assert_eq!(
                present.get(&poison_id).map(String::as_str),
                Some("dead"),
                "the dead row is kept"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sent rows pruned within 60 s; left: {:?}",
            present.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let settled = settle(&stack, &pool).await;
    assert_eq!(settled.newest.counter, ids.len() as u64);
    let exposition = scrape(&stack.relay_url(0)).await;
    assert_eq!(
        sample(&exposition, "relay_rows_pruned_total"),
        Some(ids.len() as f64)
    );
}

/// A keyed press retried after an unknown outcome stores the same request
/// id again: the outbox keeps the first row, and the press counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_stored_twice_is_one_row_counted_once() {
    init_test_logs();
    let stack = stack(1, &[]).await;
    let pool = pool(&stack).await;
    let first = insert(&pool, "retried").await;
    let again = insert(&pool, "retried").await;
    assert_eq!(first, again, "the retry gets the first row's id");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE request_id = 'retried'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 1);
    let settled = settle(&stack, &pool).await;
    assert_eq!(settled.newest.counter, 1);
}

/// The broker frozen (SIGSTOP) for longer than a row's whole backoff
/// schedule: batches fail and are rolled back without counting against
/// their rows, so once the broker is back every row is sent and counted and
/// none is `dead`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_turns_no_row_dead() {
    init_test_logs();
    let mut stack = stack(
        1,
        &[
            ("BUTTON_PRODUCE_TIMEOUT_MS", "500"),
            ("BUTTON_MAX_ATTEMPTS", "2"),
            ("BUTTON_BACKOFF_INITIAL_MS", "50"),
            ("BUTTON_BACKOFF_MAX_MS", "200"),
        ],
    )
    .await;
    let pool = pool(&stack).await;
    let relay = stack.pid(Component::Relay(0));
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = format!("before-{i}");
        insert(&pool, &id).await;
        ids.push(id);
    }
    assert!(
        wait_until(Duration::from_secs(30), || async {
            pending(&pool).await == 0
        })
        .await,
        "rows flow before the fault"
    );

    stack.pause(Component::Broker).expect("SIGSTOP");
    for i in 0..20 {
        let id = format!("frozen-{i}");
        insert(&pool, &id).await;
        ids.push(id);
    }
    // A row is dead after 2 failed sends: wait for 4 per frozen row (or
    // for a row to die, which fails below).
    let url = stack.relay_url(0);
    let outlasted = wait_until(Duration::from_secs(30), || async {
        let failures = sample(&scrape(&url).await, "relay_send_failures_total").unwrap_or(0.0);
        failures >= 80.0 || outbox_counts(&pool).await.expect("counts").2 > 0
    })
    .await;
    assert!(outlasted, "sends fail while the broker is frozen");
    let (attempts, dead): (i32, i64) = sqlx::query_as(
        "SELECT coalesce(max(attempts), 0), count(*) FILTER (WHERE state = 'dead') FROM outbox",
    )
    .fetch_one(&pool)
    .await
    .expect("attempts");
    assert_eq!((attempts, dead), (0, 0), "an outage is not the rows' fault");
    stack.resume(Component::Broker).expect("SIGCONT");

    let settled = settle(&stack, &pool).await;
    for id in &ids {
        assert!(settled.copies.contains_key(id), "{id} on the topic");
    }
    assert_eq!(settled.newest.counter, ids.len() as u64);
    let (_, _, dead) = outbox_counts(&pool).await.expect("counts");
    assert_eq!(dead, 0);
    assert_eq!(
        stack.pid(Component::Relay(0)),
        relay,
        "the relay never exited"
    );
}

/// PostgreSQL SIGKILLed and restarted while rows are inserted and relayed:
/// the relay waits it out without exiting, and every committed row is
/// produced and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_outlives_a_postgres_restart() {
    init_test_logs();
    let mut stack = stack(
        1,
        &[
            ("BUTTON_BATCH_MAX", "20"),
            ("BUTTON_BACKOFF_MAX_MS", "1000"),
        ],
    )
    .await;
    let pool = pool(&stack).await;
    let relay = stack.pid(Component::Relay(0));

    // Inserts that fail while PostgreSQL is away are retried under a new
    // request id; one cut off during its commit may or may not have landed,
    // so the count to match is the table's, not the writer's.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("pg-{n}");
                n += 1;
                match ingest::insert_outbox(&pool, &id, &payload(&id)).await {
                    Ok(_) => ok.push(id),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    stack.kill(Component::Postgres).expect("SIGKILL");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack
        .start_component(Component::Postgres)
        .await
        .expect("PostgreSQL restarts");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let inserted = writer.await.expect("writer");
    // The reducer gives up after its own attempts; that is its contract,
    // not the relay's.
    if !stack.is_running(Component::Reducer(0)) {
        stack
            .start_component(Component::Reducer(0))
            .await
            .expect("reducer restarts");
    }

    let settled = settle(&stack, &pool).await;
    for id in &inserted {
        assert!(settled.copies.contains_key(id), "{id} on the topic");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("rows");
    assert!(rows >= inserted.len() as i64);
    assert_eq!(
        settled.newest.counter, rows as u64,
        "every row counted once"
    );
    assert_eq!(
        stack.pid(Component::Relay(0)),
        relay,
        "the relay never exited"
    );
    assert!(stack.is_running(Component::Relay(0)));
}
