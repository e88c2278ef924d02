//! The reducer loop: collect a batch, fold it, persist it with its offsets
//! in one transaction, then publish and commit to Kafka.
//!
//! The order is the exactly-once argument: a record's effect and its offset
//! reach PostgreSQL together; Kafka offsets and Redis only ever follow what
//! is already there; after a crash, assignment starts from PostgreSQL's
//! offsets. A record at or below the applied offset is never folded again.

use crate::consumer::{self, ReducerConsumer, Shared};
use crate::dedupe::RecentIds;
use crate::dlq::{DeadLetters, Poison};
use crate::persist::{Pending, Persister, Written};
use crate::{Config, ReducerError};
use button_domain::{PressEvent, PressRecord, Ruleset};
use button_store::BatchInfo;
use rdkafka::Message;
use rdkafka::consumer::CommitMode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A batch in hand: decoded presses and poison records, in arrival order
/// per partition.
#[derive(Default)]
struct Batch {
    /// Presses with their countries (see `migrations/0003_country_counts.sql`)
    /// and the poison records' positions.
    pending: Pending,
    poison: Vec<Poison>,
    first_event_ms: Option<i64>,
    last_event_ms: Option<i64>,
    /// Time spent decoding payloads, summed over the batch.
    decoding: Duration,
}

impl Batch {
    fn len(&self) -> usize {
        self.pending.presses.len() + self.poison.len()
    }
}

pub struct Reducer {
    pub config: Config,
    pub rules: Ruleset,
    pub consumer: ReducerConsumer,
    pub shared: Arc<Shared>,
    pub dead_letters: DeadLetters,
    /// Request ids applied lately (see [`crate::dedupe`]). Behind a lock
    /// only because records borrow the consumer while they are taken.
    pub recent: std::sync::Mutex<RecentIds>,
    /// Writes states and holds the newest one known to be in PostgreSQL.
    pub persister: Persister,
}

impl Reducer {
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ReducerError> {
        let linger = Duration::from_millis(self.config.batch_linger_ms);
        let idle_check = Duration::from_millis(self.config.idle_check_ms.max(1));
        let mut batches_since_commit = 0u64;
        let mut last_commit = Instant::now();
        self.shared.set_applied(&self.persister.persisted().offsets);

        while !shutdown.is_cancelled() {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = tokio::time::timeout(idle_check, self.consumer.recv()) => m,
            };
            let mut batch = Batch::default();
            match first {
                Err(_) => {
                    self.report_lag();
                    self.tick_if_due().await?;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Ok(Ok(message)) => self.take(&mut batch, &message),
            }
            let collect_started = Instant::now();
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < self.config.batch_max {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Err(_) => break,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    Ok(Ok(message)) => self.take(&mut batch, &message),
                }
            }
            metrics::histogram!("reducer_stage_duration_seconds", "stage" => "collect")
                .record(collect_started.elapsed().as_secs_f64());

            if self.shared.take_reassigned() {
                // Partitions moved while collecting: what we hold may belong
                // to another member now. Start over from the database.
                tracing::info!(dropped = batch.len(), "rebalance during a batch: reloading");
                self.reload().await?;
                continue;
            }
            if batch.len() == 0 {
                continue;
            }
            if self.persist(batch).await? {
                batches_since_commit += 1;
                let by_count = self.config.commit_every_batches > 0
                    && batches_since_commit >= self.config.commit_every_batches;
                let by_time = self.config.commit_interval_ms > 0
                    && last_commit.elapsed()
                        >= Duration::from_millis(self.config.commit_interval_ms);
                if by_count || by_time {
                    self.commit(CommitMode::Async);
                    batches_since_commit = 0;
                    last_commit = Instant::now();
                }
            }
            self.report_lag();
        }

        // SIGTERM: the batch in hand was persisted above; commit and leave.
        self.commit(CommitMode::Sync);
        use rdkafka::consumer::Consumer;
        self.consumer.unsubscribe();
        tracing::info!(
            state = self.persister.persisted().id,
            counter = self.persister.persisted().counter,
            "reducer stopped"
        );
        Ok(())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentIds> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, batch: &mut Batch, message: &rdkafka::message::BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        // Exactly once: never fold a record the database already has.
        if let Some(&applied) = self.persister.persisted().offsets.get(&partition) {
            if offset <= applied {
                metrics::counter!("reducer_records_skipped_total").increment(1);
                return;
            }
            if offset > applied + 1 && batch_last_offset(batch, partition).is_none() {
                metrics::counter!("reducer_offset_gaps_total").increment(1);
                tracing::debug!(
                    partition,
                    expected = applied + 1,
                    got = offset,
                    "offset gap"
                );
            }
        }
        metrics::counter!("reducer_records_total").increment(1);
        let decode_started = Instant::now();
        let decoded = PressRecord::decode(message.payload());
        batch.decoding += decode_started.elapsed();
        // (reason, detail) of a record that must not be counted.
        let decoded = match decoded {
            Ok(record) if !self.recent().first_time(&record.request_id) => Err((
                "duplicate_request_id",
                format!("request_id {} was applied already", record.request_id),
            )),
            Ok(record) => Ok(record),
            Err(e) => Err((e.code(), e.to_string())),
        };
        match decoded {
            Ok(record) => {
                batch.first_event_ms.get_or_insert(record.accepted_at_ms);
                batch.last_event_ms = Some(record.accepted_at_ms);
                batch.pending.push(
                    PressEvent {
                        accepted_at_ms: record.accepted_at_ms,
                        partition,
                        offset,
                    },
                    country_of(&record),
                );
            }
            Err((reason, detail)) => {
                batch.pending.skipped.push((partition, offset));
                batch.poison.push(Poison {
                    partition,
                    offset,
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    reason,
                    detail,
                });
            }
        }
    }

    /// Folds and persists a batch. Returns false when nothing was written
    /// (another member had applied it all, or a writer without the lock got
    /// there first: then the batch is dropped and the consumer rewound).
    async fn persist(&mut self, batch: Batch) -> Result<bool, ReducerError> {
        metrics::histogram!("reducer_stage_duration_seconds", "stage" => "decode")
            .record(batch.decoding.as_secs_f64());
        let info = BatchInfo {
            batch_size: batch.len() as i64,
            first_event_ms: batch.first_event_ms,
            last_event_ms: batch.last_event_ms,
        };
        metrics::histogram!("reducer_batch_size").record(batch.len() as f64);
        self.write(&batch.pending, info, &batch.poison).await
    }

    async fn tick_if_due(&mut self) -> Result<(), ReducerError> {
        if let Some(written) = self.persister.tick_if_due(&self.rules).await? {
            self.after_write(written).await?;
        }
        Ok(())
    }

    /// Dead letters first, then the transaction (see [`Persister::write`]);
    /// retried together with exponential backoff. Nothing reaches Kafka
    /// offsets or Redis before the commit.
    async fn write(
        &mut self,
        pending: &Pending,
        info: BatchInfo,
        poison: &[Poison],
    ) -> Result<bool, ReducerError> {
        // Poison records already on the dead-letter topic are not sent again.
        let mut dead_lettered = 0;
        let dead_letters = &self.dead_letters;
        let rules = &self.rules;
        let written = self
            .persister
            .write(
                |base| pending.fold_onto(base, rules),
                info,
                async || {
                    dead_letters
                        .send_from(poison, &mut dead_lettered)
                        .await
                        .map_err(|e| format!("dead-letter topic: {e}"))
                },
            )
            .await?;
        self.after_write(written).await
    }

    /// True when committed; after a conflict, reloads and rewinds (false).
    async fn after_write(&mut self, written: Written) -> Result<bool, ReducerError> {
        match written {
            Written::Committed => {
                self.shared.set_applied(&self.persister.persisted().offsets);
                Ok(true)
            }
            Written::Unchanged => {
                self.shared.set_applied(&self.persister.persisted().offsets);
                Ok(false)
            }
            Written::Conflict => {
                self.reload().await?;
                Ok(false)
            }
        }
    }

    /// Takes the newest snapshot from PostgreSQL and rewinds the consumer
    /// to its offsets.
    async fn reload(&mut self) -> Result<(), ReducerError> {
        self.recent().clear();
        self.persister.reload().await?;
        self.shared.set_applied(&self.persister.persisted().offsets);
        consumer::rewind(&self.consumer, &self.shared)?;
        Ok(())
    }

    fn commit(&self, mode: CommitMode) {
        let started = Instant::now();
        match consumer::commit(
            &self.consumer,
            &self.config.topic,
            &self.persister.persisted().offsets,
            mode,
        ) {
            Ok(0) => {}
            Ok(_) => metrics::counter!("reducer_kafka_commits_total").increment(1),
            Err(e) => {
                metrics::counter!("reducer_kafka_commit_failures_total").increment(1);
                tracing::warn!(error = %e, "committing offsets to Kafka failed (PostgreSQL still has them)");
            }
        }
        metrics::histogram!("reducer_stage_duration_seconds", "stage" => "commit")
            .record(started.elapsed().as_secs_f64());
    }

    /// Lag for the partitions this member reads, 0 for the others; which
    /// it reads, so that a lab can count a partition no member holds.
    fn report_lag(&self) {
        for (partition, value) in self.shared.lag() {
            let partition = partition.to_string();
            metrics::gauge!("reducer_consumer_lag", "partition" => partition.clone())
                .set(value.unwrap_or(0) as f64);
            metrics::gauge!("reducer_partition_held", "partition" => partition)
                .set(if value.is_some() { 1.0 } else { 0.0 });
        }
    }
}

/// The record's country as the table takes it: two capital letters, or
/// `unknown` (absent in older records, or not a code).
pub(crate) fn country_of(record: &PressRecord) -> &str {
    match record.country.as_deref() {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) => c,
        _ => "unknown",
    }
}

fn batch_last_offset(batch: &Batch, partition: i32) -> Option<i64> {
    let press = batch
        .pending
        .presses
        .iter()
        .rev()
        .find(|p| p.partition == partition)
        .map(|p| p.offset);
    let poison = batch
        .poison
        .iter()
        .rev()
        .find(|p| p.partition == partition)
        .map(|p| p.offset);
    press.max(poison)
}
