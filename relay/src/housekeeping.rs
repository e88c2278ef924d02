//! Work beside the relay loop: deleting old sent rows, and the gauges of
//! what the outbox holds. Both only log their failures: the next round
//! tries again, and neither decides what gets sent.

use crate::Config;
use button_store::ingest;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Every `prune_every_ms`, deletes rows sent more than `prune_after_ms` ago,
/// `prune_batch` at a time (short statements, short locks) until fewer go.
pub async fn prune(pool: PgPool, config: Config, stop: CancellationToken) {
    let every = Duration::from_millis(config.prune_every_ms);
    let after = i64::try_from(config.prune_after_ms).unwrap_or(i64::MAX);
    let limit = i64::from(config.prune_batch);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        loop {
            match ingest::prune_sent(&pool, after, limit).await {
                Ok(deleted) => {
                    metrics::counter!("relay_rows_pruned_total").increment(deleted);
                    if deleted < limit as u64 || stop.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning sent outbox rows failed");
                    break;
                }
            }
        }
    }
}

/// How long a pending row may wait before it counts as overdue: far
/// above a row's normal wait (the linger plus one batch), far below an
/// outage.
const OVERDUE_MS: i64 = 1_000;

/// Refreshes `relay_outbox_pending`, `relay_outbox_overdue` and
/// `relay_outbox_dead` about once a second.
pub async fn gauges(pool: PgPool, stop: CancellationToken) {
    let mut failures = 0u32;
    loop {
        match ingest::outbox_counts(&pool).await {
            Ok((pending, _sent, dead)) => {
                failures = 0;
                metrics::gauge!("relay_outbox_pending").set(pending as f64);
                metrics::gauge!("relay_outbox_dead").set(dead as f64);
                match ingest::outbox_overdue(&pool, OVERDUE_MS).await {
                    Ok(overdue) => metrics::gauge!("relay_outbox_overdue").set(overdue as f64),
                    Err(e) => tracing::warn!(error = %e, "cannot read the outbox's overdue rows"),
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, "cannot read the outbox's counts");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
