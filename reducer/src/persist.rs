//! Writing a folded state, for both ingest loops: one transaction (the
//! snapshot with its offsets, and the batch's country counts), retried with
//! exponential backoff; only after the commit does [`Persister::persisted`]
//! move on and the state go to the publisher.

use crate::{Config, ReducerError};
use button_domain::{PressEvent, Ruleset, Snapshot, State, apply_batch, apply_tick};
use button_store::{BatchInfo, Error as StoreError};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How a write ended when it did not fail for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Committed: [`Persister::persisted`] is the new state.
    Committed,
    /// Another writer appended first; nothing was written. The caller
    /// reloads (see [`Persister::reload`]) and starts over from there.
    Conflict,
}

pub struct Persister {
    pool: PgPool,
    rules_hash: String,
    published: watch::Sender<Option<Arc<Snapshot>>>,
    max_attempts: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    /// The newest snapshot known to be in PostgreSQL.
    persisted: Snapshot,
}

/// Folds `presses` into `from` and moves past the records that could not
/// be folded (`skipped`: partition and offset), timing it as the `apply`
/// stage. Both loops, Kafka and direct, fold this way.
pub fn fold(
    from: State,
    presses: &[PressEvent],
    skipped: impl IntoIterator<Item = (i32, i64)>,
    rules: &Ruleset,
) -> State {
    let started = Instant::now();
    let mut state = apply_batch(from, presses, rules);
    for (partition, offset) in skipped {
        state.skip_record(partition, offset);
    }
    metrics::histogram!("reducer_stage_duration_seconds", "stage" => "apply")
        .record(started.elapsed().as_secs_f64());
    state
}

impl Persister {
    pub fn new(
        config: &Config,
        pool: PgPool,
        rules_hash: String,
        published: watch::Sender<Option<Arc<Snapshot>>>,
        persisted: Snapshot,
    ) -> Self {
        Persister {
            pool,
            rules_hash,
            published,
            max_attempts: config.max_attempts,
            backoff_initial: Duration::from_millis(config.backoff_initial_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
            persisted,
        }
    }

    pub fn persisted(&self) -> &Snapshot {
        &self.persisted
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Takes the newest snapshot from PostgreSQL (after a conflict, or when
    /// what is in hand may be stale).
    pub async fn reload(&mut self) -> Result<(), StoreError> {
        if let Some(latest) = button_store::latest_snapshot(&self.pool).await? {
            self.persisted = latest;
        }
        Ok(())
    }

    /// Persists `state` as the child of the newest persisted snapshot, with
    /// the batch's country counts in the same transaction, then publishes
    /// it. `applied` presses are counted as folded.
    ///
    /// `before` runs at the start of every attempt, before the transaction;
    /// its failure is a failed attempt like a database error. The Kafka path
    /// stores dead letters there, so they reach their topic before the
    /// batch that skips them commits.
    pub async fn write<E: Display>(
        &mut self,
        state: &State,
        info: BatchInfo,
        countries: &BTreeMap<String, u64>,
        applied: u64,
        mut before: impl AsyncFnMut() -> Result<(), E>,
    ) -> Result<Written, ReducerError> {
        let mut delay = self.backoff_initial;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match before().await {
                Err(e) => e.to_string(),
                Ok(()) => match self.transaction(state, info, countries).await {
                    Ok(snapshot) => {
                        self.committed(snapshot, applied);
                        return Ok(Written::Committed);
                    }
                    Err(StoreError::Conflict { parent_id }) => {
                        metrics::counter!("reducer_conflicts_total").increment(1);
                        tracing::warn!(parent_id, "another writer appended first: reloading");
                        return Ok(Written::Conflict);
                    }
                    Err(e) => e.to_string(),
                },
            };
            metrics::counter!("reducer_db_retries_total").increment(1);
            if attempt >= self.max_attempts {
                return Err(ReducerError::PersistFailed {
                    attempts: attempt,
                    last: failure,
                });
            }
            tracing::warn!(error = %failure, attempt, retry_in_ms = delay.as_millis() as u64, "persisting failed");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.backoff_max);
        }
    }

    /// Persists one step of idle decay when one is due: `None` when none
    /// was. Ticks change neither the counter nor the offsets.
    pub async fn tick_if_due(&mut self, rules: &Ruleset) -> Result<Option<Written>, ReducerError> {
        let now = now_ms();
        let state = self.persisted.state();
        if !state.tick_due(now, rules) {
            return Ok(None);
        }
        let ticked = apply_tick(state, now, rules);
        let written = self
            .write(
                &ticked,
                BatchInfo::default(),
                &BTreeMap::new(),
                0,
                nothing_before,
            )
            .await?;
        if written == Written::Committed {
            metrics::counter!("reducer_ticks_total").increment(1);
        }
        Ok(Some(written))
    }

    async fn transaction(
        &self,
        state: &State,
        info: BatchInfo,
        countries: &BTreeMap<String, u64>,
    ) -> Result<Snapshot, StoreError> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let snapshot = button_store::append_snapshot(
            &mut tx,
            self.persisted.id,
            state,
            &self.rules_hash,
            info,
        )
        .await?;
        button_store::add_country_counts(&mut tx, countries).await?;
        tx.commit().await?;
        metrics::histogram!("reducer_stage_duration_seconds", "stage" => "db")
            .record(started.elapsed().as_secs_f64());
        Ok(snapshot)
    }

    fn committed(&mut self, snapshot: Snapshot, applied: u64) {
        metrics::gauge!("reducer_state_id").set(snapshot.id as f64);
        metrics::gauge!("reducer_state_presses").set(snapshot.counter as f64);
        for (partition, offset) in &snapshot.offsets {
            metrics::gauge!("reducer_applied_offset", "partition" => partition.to_string())
                .set(*offset as f64);
        }
        metrics::counter!("reducer_events_applied_total").increment(applied);
        let snapshot = Arc::new(snapshot);
        self.persisted = Snapshot::clone(&snapshot);
        self.published.send_replace(Some(snapshot));
    }
}

/// For [`Persister::write`] when nothing has to happen before the
/// transaction.
pub async fn nothing_before() -> Result<(), std::convert::Infallible> {
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
