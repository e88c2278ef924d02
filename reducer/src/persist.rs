//! Writing a batch, for both ingest loops: one transaction (the snapshot
//! with its offsets, and the batch's country counts), retried with
//! exponential backoff; only after the commit does [`Persister::persisted`]
//! move on and the state go to the publisher.
//!
//! Several reducers (a consumer group) write the one global state. A batch
//! is folded onto the snapshot in hand and appended as its child; the
//! append queues on the writers' lock. When another writer appended onto
//! that parent first, the batch is folded again, still under the lock,
//! onto the newest snapshot: a record it already holds (its partition's
//! offset is at or past it: another member applied it) is dropped, never
//! folded twice. With one reducer the parent is always the newest, so a
//! batch costs one append and no read.

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
    /// The newest snapshot held everything the batch had (another writer
    /// applied it): nothing was written, [`Persister::persisted`] is that
    /// snapshot.
    Unchanged,
    /// Another writer appended onto the newest snapshot while this one
    /// held the writers' lock (one that does not take it); nothing was
    /// written. The caller reloads (see [`Persister::reload`]) and starts
    /// over from there.
    Conflict,
}

/// A batch folded onto a base state: what one transaction writes.
pub struct Folded {
    pub state: State,
    /// Presses per country of the records folded.
    pub countries: BTreeMap<String, u64>,
    /// Presses folded (counted in `reducer_events_applied_total`).
    pub applied: u64,
}

/// A batch as read, before it meets the newest state.
#[derive(Default)]
pub struct Pending {
    pub presses: Vec<PressEvent>,
    /// Each press's country (`None`: unknown), index for index, so the
    /// counts can be redone when some presses are dropped.
    pub press_countries: Vec<Option<[u8; 2]>>,
    /// The same, summed: what the batch adds when nothing is dropped.
    pub countries: BTreeMap<String, u64>,
    /// Records moved past without counting (poison): partition, offset.
    pub skipped: Vec<(i32, i64)>,
}

impl Pending {
    pub fn push(&mut self, press: PressEvent, country: &str) {
        let code = match country.as_bytes() {
            &[a, b] => Some([a, b]),
            _ => None,
        };
        // A new key is allocated once per batch, not per press.
        match self.countries.get_mut(country) {
            Some(n) => *n += 1,
            None => {
                self.countries.insert(country.to_owned(), 1);
            }
        }
        self.presses.push(press);
        self.press_countries.push(code);
    }

    /// Folds the records `base` does not hold yet; `None` when it holds
    /// them all. With one writer `base` is the state the batch was read
    /// against, nothing is dropped and the counts are the ones in hand.
    pub fn fold_onto(&self, base: &State, rules: &Ruleset) -> Option<Folded> {
        let fresh = |partition: i32, offset: i64| {
            base.offsets
                .get(&partition)
                .is_none_or(|&applied| offset > applied)
        };
        let all_fresh = self.presses.iter().all(|p| fresh(p.partition, p.offset))
            && self.skipped.iter().all(|&(p, o)| fresh(p, o));
        if all_fresh {
            return Some(Folded {
                state: fold(
                    base.clone(),
                    &self.presses,
                    self.skipped.iter().copied(),
                    rules,
                ),
                countries: self.countries.clone(),
                applied: self.presses.len() as u64,
            });
        }
        let mut presses = Vec::new();
        let mut countries = BTreeMap::<String, u64>::new();
        for (press, code) in self.presses.iter().zip(&self.press_countries) {
            if fresh(press.partition, press.offset) {
                presses.push(*press);
                let country = code
                    .as_ref()
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .unwrap_or("unknown");
                *countries.entry(country.to_owned()).or_default() += 1;
            }
        }
        let skipped: Vec<(i32, i64)> = self
            .skipped
            .iter()
            .copied()
            .filter(|&(p, o)| fresh(p, o))
            .collect();
        // Another member applied them first (it took the partition over).
        metrics::counter!("reducer_records_skipped_total").increment(
            (self.presses.len() + self.skipped.len() - presses.len() - skipped.len()) as u64,
        );
        if presses.is_empty() && skipped.is_empty() {
            return None;
        }
        Some(Folded {
            state: fold(base.clone(), &presses, skipped, rules),
            countries,
            applied: presses.len() as u64,
        })
    }
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

    /// Folds a batch onto the newest snapshot (`fold` gets its state;
    /// `None` = nothing to write) and appends the result as its child, with
    /// the batch's country counts in the same transaction, then publishes
    /// it.
    ///
    /// `before` runs at the start of every attempt, before the transaction;
    /// its failure is a failed attempt like a database error. The Kafka path
    /// stores dead letters there, so they reach their topic before the
    /// batch that skips them commits.
    pub async fn write<E: Display>(
        &mut self,
        fold: impl Fn(&State) -> Option<Folded>,
        info: BatchInfo,
        mut before: impl AsyncFnMut() -> Result<(), E>,
    ) -> Result<Written, ReducerError> {
        let mut delay = self.backoff_initial;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match before().await {
                Err(e) => e.to_string(),
                Ok(()) => match self.transaction(&fold, info).await {
                    Ok(Outcome::Appended(snapshot, applied)) => {
                        self.committed(snapshot, applied);
                        return Ok(Written::Committed);
                    }
                    Ok(Outcome::Unchanged(newer)) => {
                        if let Some(newer) = newer {
                            self.persisted = newer;
                        }
                        return Ok(Written::Unchanged);
                    }
                    Err(StoreError::Conflict { parent_id }) => {
                        metrics::counter!("reducer_conflicts_total").increment(1);
                        tracing::warn!(
                            parent_id,
                            "another writer appended past the writers' lock: reloading"
                        );
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
        if !self.persisted.state().tick_due(now, rules) {
            return Ok(None);
        }
        // Onto the newest state: another writer may have pressed since.
        let tick = |base: &State| {
            base.tick_due(now, rules).then(|| Folded {
                state: apply_tick(base.clone(), now, rules),
                countries: BTreeMap::new(),
                applied: 0,
            })
        };
        let written = self
            .write(tick, BatchInfo::default(), nothing_before)
            .await?;
        if written == Written::Committed {
            metrics::counter!("reducer_ticks_total").increment(1);
        }
        Ok(Some(written))
    }

    async fn transaction(
        &self,
        fold: &impl Fn(&State) -> Option<Folded>,
        info: BatchInfo,
    ) -> Result<Outcome, StoreError> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        // First onto the snapshot in hand: with one writer it is the newest.
        let mut newer: Option<Snapshot> = None;
        let (snapshot, applied) = loop {
            let base = newer.as_ref().unwrap_or(&self.persisted);
            let Some(folded) = fold(&base.state()) else {
                tx.rollback().await?;
                return Ok(Outcome::Unchanged(newer));
            };
            match button_store::append_snapshot(
                &mut tx,
                base.id,
                &folded.state,
                &self.rules_hash,
                info,
            )
            .await
            {
                Ok(snapshot) => {
                    button_store::add_country_counts(&mut tx, &folded.countries).await?;
                    break (snapshot, folded.applied);
                }
                // The first miss: the append holds the writers' lock now,
                // so the newest snapshot stays the newest until the commit.
                Err(StoreError::Conflict { parent_id }) if newer.is_none() => {
                    metrics::counter!("reducer_conflicts_total").increment(1);
                    tracing::debug!(
                        parent_id,
                        "another writer appended first: folding onto the newest"
                    );
                    newer = button_store::snapshot_after(&mut *tx, parent_id).await?;
                    if newer.is_none() {
                        // The parent is taken, so a newer snapshot exists.
                        return Err(StoreError::Conflict { parent_id });
                    }
                }
                Err(e) => return Err(e),
            }
        };
        tx.commit().await?;
        metrics::histogram!("reducer_stage_duration_seconds", "stage" => "db")
            .record(started.elapsed().as_secs_f64());
        Ok(Outcome::Appended(snapshot, applied))
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

enum Outcome {
    /// The new snapshot and the presses it folded.
    Appended(Snapshot, u64),
    /// Nothing to write; the newest snapshot when it was not the one in hand.
    Unchanged(Option<Snapshot>),
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
