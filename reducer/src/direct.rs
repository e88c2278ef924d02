//! Ingest `direct`: no broker. The service inserts each press into
//! PostgreSQL's `presses` table; this loop folds the rows in id order with
//! the Kafka path's domain code and persists the state with the last id
//! applied as the offset of partition 0, in one transaction (see
//! [`crate::persist`]): a restarted reducer resumes after that id, so no
//! row is folded twice and none is stepped over.
//!
//! - Waking: a NOTIFY on `presses` (the insert trigger sends one per
//!   statement) or, when none came, every `direct_poll_ms`.
//! - Reading: [`button_store::ingest::read_presses`], whose SHARE lock
//!   waits for every insert in flight, so no id below the last one read can
//!   commit afterwards. The lock request is bounded by [`LOCK_TIMEOUT`].
//! - Batching: like the Kafka loop's linger. A read that brings fewer than
//!   `batch_max` rows lets the batch grow until `batch_linger_ms` after its
//!   first row, then reads once more after the last id.
//! - Poison rows (payloads that do not decode) are skipped: the offset
//!   moves past them, they are counted in `reducer_dead_letters_total` by
//!   reason and logged. There is no dead-letter topic without a broker; the
//!   row itself stays in `presses`.
//! - A repeated request id never reaches this loop (`presses.request_id` is
//!   unique), so the dedupe window is not used.
//! - Decay ticks while idle, as in the Kafka loop.

use crate::persist::{Pending, Persister, Written};
use crate::pipeline::country_of;
use crate::{Config, ReducerError};
use button_domain::{PressEvent, PressRecord, Ruleset};
use button_store::ingest::{PRESSES_CHANNEL, StoredPress, read_presses};
use button_store::{BatchInfo, Error as StoreError};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The partition the `presses` ids are recorded under in the offsets.
pub const PARTITION: i32 = 0;

/// How long a read's SHARE lock request may wait. While it waits, every
/// new insert queues behind it, so one insert transaction left open (a
/// paused service, a stuck client) would otherwise hold back every press.
/// After a timeout the reader stays away as long again, so inserts flow
/// at least half the time until that transaction ends.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// SQLSTATE `lock_not_available`: `lock_timeout` expired.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// How often the lag gauge is refreshed; it costs one index lookup.
const LAG_EVERY: Duration = Duration::from_secs(1);

pub struct Direct {
    config: Config,
    rules: Ruleset,
    persister: Persister,
    /// Sessions with `lock_timeout` set, used for the reads only: snapshot
    /// writes keep the server's default.
    reader: PgPool,
}

/// A batch in hand, in id order.
#[derive(Default)]
struct Batch {
    pending: Pending,
    /// Rows that do not decode: id, reason, detail.
    poison: Vec<(i64, &'static str, String)>,
    rows: usize,
    last_id: Option<i64>,
    first_event_ms: Option<i64>,
    last_event_ms: Option<i64>,
    decoding: Duration,
}

enum Read {
    Rows(Vec<StoredPress>),
    /// The SHARE lock was not granted within [`LOCK_TIMEOUT`].
    LockTimeout,
}

impl Direct {
    pub fn new(config: Config, rules: Ruleset, persister: Persister) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(&config.database_url)?
            .application_name("button-reducer-direct")
            .options([("lock_timeout", LOCK_TIMEOUT.as_millis())])
            // The lock wait is slow by design (up to LOCK_TIMEOUT) and the
            // loop reports a timeout itself: no slow-statement warnings.
            .disable_statement_logging();
        // One reader at a time; connected on first use, so start-up does
        // not wait for it (the main pool already reached the server).
        let reader = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Direct {
            config,
            rules,
            persister,
            reader,
        })
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ReducerError> {
        let wake = Arc::new(Notify::new());
        // Ends the listener with this loop, also when it ends with an error.
        let _listening = {
            let stop = shutdown.child_token();
            tokio::spawn(listen(
                self.config.database_url.clone(),
                wake.clone(),
                self.backoff(),
                stop.clone(),
            ));
            stop.drop_guard()
        };
        let poll = Duration::from_millis(self.config.direct_poll_ms);
        let idle_check = Duration::from_millis(self.config.idle_check_ms.max(1));
        let (mut delay, backoff_max) = self.backoff();
        let mut failures = 0;
        let mut last_idle_check = Instant::now();
        let mut last_lag: Option<Instant> = None;

        while !shutdown.is_cancelled() {
            let read = self.read(self.applied(), self.config.batch_max).await;
            // A notification cuts a poll short; after a lock timeout or a
            // failure the reader keeps away for the whole pause.
            let (mut pause, mut wake_early) = (poll, true);
            match read {
                Ok(Read::Rows(rows)) if !rows.is_empty() => {
                    failures = 0;
                    let full = self.batch(rows, &shutdown).await?;
                    self.report_lag(&mut last_lag).await;
                    if full {
                        // More rows are likely waiting: no pause.
                        continue;
                    }
                }
                Ok(read) => {
                    failures = 0;
                    if matches!(read, Read::LockTimeout) {
                        tracing::warn!(
                            waited_ms = LOCK_TIMEOUT.as_millis() as u64,
                            "an insert into `presses` has been open too long to read past it: retrying"
                        );
                        (pause, wake_early) = (LOCK_TIMEOUT, false);
                    }
                    if last_idle_check.elapsed() >= idle_check {
                        last_idle_check = Instant::now();
                        self.tick_if_due().await?;
                    }
                    self.report_lag(&mut last_lag).await;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= self.config.max_attempts {
                        return Err(ReducerError::ReadFailed {
                            attempts: failures,
                            last: e.to_string(),
                        });
                    }
                    tracing::warn!(error = %e, attempt = failures, retry_in_ms = delay.as_millis() as u64, "reading presses failed");
                    (pause, wake_early) = (delay, false);
                    delay = (delay * 2).min(backoff_max);
                }
            }
            if failures == 0 {
                delay = self.backoff().0;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified(), if wake_early => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(
            state = self.persister.persisted().id,
            counter = self.persister.persisted().counter,
            "reducer stopped"
        );
        Ok(())
    }

    /// The last id folded into the persisted state.
    fn applied(&self) -> i64 {
        self.persister
            .persisted()
            .offsets
            .get(&PARTITION)
            .copied()
            .unwrap_or(0)
    }

    fn backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.config.backoff_initial_ms),
            Duration::from_millis(self.config.backoff_max_ms),
        )
    }

    async fn read(&self, after: i64, limit: usize) -> Result<Read, StoreError> {
        match read_presses(&self.reader, after, limit as i64).await {
            Ok(rows) => Ok(Read::Rows(rows)),
            Err(StoreError::Db(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
            {
                Ok(Read::LockTimeout)
            }
            Err(e) => Err(e),
        }
    }

    /// Lingers (when `first` is short), folds and persists one batch.
    /// Returns whether it was full.
    async fn batch(
        &mut self,
        first: Vec<StoredPress>,
        shutdown: &CancellationToken,
    ) -> Result<bool, ReducerError> {
        let max = self.config.batch_max;
        let collect_started = Instant::now();
        let mut batch = Batch::default();
        take(&mut batch, first);
        let linger = Duration::from_millis(self.config.batch_linger_ms);
        if batch.rows < max && !linger.is_zero() {
            tokio::select! {
                // The batch in hand is persisted before stopping.
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(linger) => {
                    let after = batch.last_id.unwrap_or_else(|| self.applied());
                    match self.read(after, max - batch.rows).await {
                        Ok(Read::Rows(rows)) => take(&mut batch, rows),
                        // What is in hand is persisted; the next read
                        // meets the lock or the error again.
                        Ok(Read::LockTimeout) => {}
                        Err(e) => tracing::debug!(error = %e, "reading more presses for the batch failed"),
                    }
                }
            }
        }
        metrics::histogram!("reducer_stage_duration_seconds", "stage" => "collect")
            .record(collect_started.elapsed().as_secs_f64());
        metrics::histogram!("reducer_stage_duration_seconds", "stage" => "decode")
            .record(batch.decoding.as_secs_f64());

        metrics::histogram!("reducer_batch_size").record(batch.rows as f64);
        let info = BatchInfo {
            batch_size: batch.rows as i64,
            first_event_ms: batch.first_event_ms,
            last_event_ms: batch.last_event_ms,
        };
        let written = self
            .persister
            .write(
                |base| batch.pending.fold_onto(base, &self.rules),
                info,
                crate::persist::nothing_before,
            )
            .await?;
        match written {
            Written::Committed => {
                // Counted once they are skipped for good, not per attempt.
                for (id, reason, detail) in &batch.poison {
                    metrics::counter!("reducer_dead_letters_total", "reason" => *reason)
                        .increment(1);
                    tracing::warn!(id, reason, %detail, "poison row skipped (no dead-letter topic without a broker)");
                }
            }
            Written::Unchanged => {}
            Written::Conflict => self.persister.reload().await?,
        }
        Ok(batch.rows >= max)
    }

    async fn tick_if_due(&mut self) -> Result<(), ReducerError> {
        if let Some(Written::Conflict) = self.persister.tick_if_due(&self.rules).await? {
            self.persister.reload().await?;
        }
        Ok(())
    }

    /// `reducer_consumer_lag{partition="0"}`: the highest committed id past
    /// the last one applied (ids have gaps, so this bounds the rows from
    /// above). At most every [`LAG_EVERY`].
    async fn report_lag(&self, last: &mut Option<Instant>) {
        if last.is_some_and(|t| t.elapsed() < LAG_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let newest: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT max(id) FROM presses")
                .fetch_one(self.persister.pool())
                .await;
        match newest {
            Ok(newest) => {
                let lag = (newest.unwrap_or(0) - self.applied()).max(0);
                metrics::gauge!("reducer_consumer_lag", "partition" => PARTITION.to_string())
                    .set(lag as f64);
            }
            Err(e) => tracing::debug!(error = %e, "reading the newest press id failed"),
        }
    }
}

/// Decodes rows into the batch.
fn take(batch: &mut Batch, rows: Vec<StoredPress>) {
    metrics::counter!("reducer_records_total").increment(rows.len() as u64);
    for row in rows {
        batch.rows += 1;
        batch.last_id = Some(row.id);
        let started = Instant::now();
        let decoded = PressRecord::decode(Some(&row.payload));
        batch.decoding += started.elapsed();
        match decoded {
            Ok(record) => {
                batch.first_event_ms.get_or_insert(record.accepted_at_ms);
                batch.last_event_ms = Some(record.accepted_at_ms);
                batch.pending.push(
                    PressEvent {
                        accepted_at_ms: record.accepted_at_ms,
                        partition: PARTITION,
                        offset: row.id,
                    },
                    country_of(&record),
                );
            }
            Err(e) => {
                batch.pending.skipped.push((PARTITION, row.id));
                batch.poison.push((row.id, e.code(), e.to_string()));
            }
        }
    }
}

/// Wakes the loop on every notification on `presses`, reconnecting with
/// backoff when listening fails. A notification sent while no one
/// listened is lost: the loop's poll covers that, and a wake after every
/// (re)connect catches up at once.
async fn listen(
    url: String,
    wake: Arc<Notify>,
    (initial, max): (Duration, Duration),
    stop: CancellationToken,
) {
    let mut delay = initial;
    loop {
        let connect = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(PRESSES_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let failure = tokio::select! {
            _ = stop.cancelled() => return,
            connected = connect => match connected {
                Ok(mut listener) => {
                    delay = initial;
                    wake.notify_one();
                    // `recv` reconnects by itself after a lost connection;
                    // what it returns is worth a fresh listener.
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            received = listener.recv() => match received {
                                Ok(_) => wake.notify_one(),
                                Err(e) => break e,
                            },
                        }
                    }
                }
                Err(e) => e,
            },
        };
        tracing::warn!(error = %failure, retry_in_ms = delay.as_millis() as u64, "listening for new presses failed (polling meanwhile)");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(max);
    }
}
