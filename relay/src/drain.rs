//! The relay loop: wait for a notification (or the poll), then claim,
//! produce and mark batches until one comes back short.

use crate::Config;
use crate::producer::{Producer, SendError};
use button_store::Error as StoreError;
use button_store::ingest::{self, OutboxRow, Sent};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Nothing of the batch got through and no row was at fault: the
    /// broker is down or refusing this session. The rows were left as they
    /// were (no attempt counted), so an outage longer than the backoff
    /// schedule does not turn good rows dead.
    #[error("none of {rows} rows got through: {first}")]
    Broker { rows: usize, first: String },
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Store(StoreError::from(e))
    }
}

/// What one committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub claimed: usize,
    pub sent: usize,
    pub failed: usize,
    pub dead: usize,
}

pub struct Relay {
    pub config: Config,
    pub pool: PgPool,
    pub producer: Producer,
}

fn stage(name: &'static str, since: Instant) {
    metrics::histogram!("relay_stage_duration_seconds", "stage" => name)
        .record(since.elapsed().as_secs_f64());
}

impl Relay {
    /// Runs until `shutdown`; a batch under way when it comes is finished
    /// (produced, marked, committed) first.
    pub async fn run(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_ms);
        let linger = Duration::from_millis(self.config.linger_ms);
        loop {
            let notified = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => true,
                _ = tokio::time::sleep(poll) => false,
            };
            // One insert notifies at once; letting the batch grow a little
            // turns a burst of single-row commits into one claim.
            if notified && !linger.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(linger) => {}
                }
            }
            if !self.drain(&shutdown).await {
                return;
            }
        }
    }

    /// Claims batches until one comes back short. PostgreSQL and broker
    /// failures pause (with backoff) and retry; false when `shutdown` came
    /// during a pause.
    async fn drain(&self, shutdown: &CancellationToken) -> bool {
        let initial = Duration::from_millis(self.config.backoff_initial_ms);
        let max = Duration::from_millis(self.config.backoff_max_ms);
        let mut pause = initial;
        loop {
            match self.batch().await {
                Ok(report) => {
                    if report.claimed < self.config.batch_max as usize || shutdown.is_cancelled() {
                        return true;
                    }
                    pause = initial;
                }
                Err(e) => {
                    metrics::counter!("relay_batch_failures_total").increment(1);
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "batch rolled back; retrying after a pause");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(max);
                }
            }
        }
    }

    /// One transaction: claim, produce every row, mark what was sent and
    /// what failed, commit.
    pub async fn batch(&self) -> Result<BatchReport, BatchError> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let rows = ingest::claim_outbox(&mut tx, i64::from(self.config.batch_max)).await?;
        stage("claim", started);
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(BatchReport::default());
        }
        metrics::histogram!("relay_batch_size").record(rows.len() as f64);

        let producing = Instant::now();
        let outcomes = self.producer.send_all(&rows).await;
        stage("produce", producing);
        let mut sent: Vec<Sent> = Vec::with_capacity(rows.len());
        let mut failed: Vec<(&OutboxRow, SendError)> = Vec::new();
        for (row, outcome) in rows.iter().zip(outcomes) {
            match outcome {
                Ok(s) => sent.push(s),
                Err(e) => failed.push((row, e)),
            }
        }
        metrics::counter!("relay_send_failures_total").increment(failed.len() as u64);
        if sent.is_empty() && failed.iter().all(|(_, e)| !e.is_record_fault()) {
            let first = failed
                .first()
                .map(|(_, e)| e.to_string())
                .unwrap_or_default();
            self.producer.session_lost();
            tx.rollback().await?;
            return Err(BatchError::Broker {
                rows: rows.len(),
                first,
            });
        }

        let marking = Instant::now();
        let mut dead = 0;
        for (row, error) in &failed {
            let attempts = u32::try_from(row.attempts).unwrap_or(0);
            let is_dead = self.config.dead_after_failure(attempts);
            let retry_in = self.config.retry_in(attempts);
            ingest::mark_failed(
                &mut tx,
                row.id,
                &error.to_string(),
                i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX),
                is_dead,
            )
            .await?;
            if is_dead {
                dead += 1;
                tracing::error!(id = row.id, request_id = %row.request_id, attempts = attempts + 1, %error, "outbox row is dead: it will not be sent");
            }
        }
        ingest::mark_sent(&mut tx, &sent).await?;
        tx.commit().await?;
        stage("mark", marking);

        metrics::counter!("relay_rows_sent_total").increment(sent.len() as u64);
        metrics::counter!("relay_rows_dead_total").increment(dead as u64);
        if let Some((row, error)) = failed.first() {
            tracing::warn!(failed = failed.len(), sent = sent.len(), first_id = row.id, first_error = %error, "sends failed; rows retried after their backoff");
        }
        Ok(BatchReport {
            claimed: rows.len(),
            sent: sent.len(),
            failed: failed.len(),
            dead,
        })
    }
}
