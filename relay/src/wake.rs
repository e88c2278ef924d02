//! Wake-ups: `LISTEN outbox` on a connection of its own, turned into a
//! [`Notify`] permit the relay loop waits on (with its poll as the
//! fallback).
//!
//! Notifications are a hint, never the record of what is pending: one sent
//! while the listener was reconnecting is lost, so every (re)connection
//! also wakes the relay once, and the poll covers the rest.

use button_store::ingest::OUTBOX_CHANNEL;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Listens until `stop`, reconnecting after errors with a backoff from
/// `initial` to `max`. Every notification (coalesced) is one permit.
pub async fn listen(
    database_url: String,
    wake: Arc<Notify>,
    initial: Duration,
    max: Duration,
    stop: CancellationToken,
) {
    let mut delay = initial;
    let mut failures = 0u32;
    loop {
        let connected = async {
            let mut listener = PgListener::connect(&database_url).await?;
            listener.listen(OUTBOX_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let listener = tokio::select! {
            _ = stop.cancelled() => return,
            connected = connected => connected,
        };
        match listener {
            Ok(mut listener) => {
                if failures > 0 {
                    tracing::info!("listening for outbox notifications again");
                }
                delay = initial;
                failures = 0;
                wake.notify_one();
                loop {
                    // Dropping `try_recv` mid-read is only done on shutdown,
                    // when the connection goes with it.
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        next = listener.try_recv() => next,
                    };
                    match next {
                        Ok(Some(_)) => wake.notify_one(),
                        // The connection was lost and re-established:
                        // whatever was notified in between is unknown.
                        Ok(None) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "outbox listener lost; polling until it is back");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                // Once, then rarely: PostgreSQL being down is already
                // reported by every batch.
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, failures, "cannot listen for outbox notifications; polling");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(max);
    }
}
