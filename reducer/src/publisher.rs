//! Publishing states to Redis, after they are committed, off the hot path.
//!
//! The reducer hands each committed snapshot to a `watch` channel; this
//! task publishes the newest one. Redis being slow or down never slows the
//! reducer: it only delays (and counts) publishes, and clients fall back to
//! PostgreSQL.

use button_domain::Snapshot;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub async fn run(
    redis_url: String,
    channel: String,
    timeout: Duration,
    mut rx: watch::Receiver<Option<Arc<Snapshot>>>,
    shutdown: CancellationToken,
) {
    let client = match redis::Client::open(redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid redis_url: states will not be published");
            return;
        }
    };
    let mut connection: Option<ConnectionManager> = None;
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => {
                // One last publish of the newest state, then stop.
                if rx.has_changed().unwrap_or(false) {
                    let snapshot = rx.borrow_and_update().clone();
                    if let Some(s) = snapshot { publish(&client, &mut connection, &channel, &s, timeout).await; }
                }
                return;
            }
        }
        let snapshot = rx.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            publish(&client, &mut connection, &channel, &snapshot, timeout).await;
        }
    }
}

async fn publish(
    client: &redis::Client,
    connection: &mut Option<ConnectionManager>,
    channel: &str,
    snapshot: &Snapshot,
    timeout: Duration,
) {
    let started = Instant::now();
    let payload = match serde_json::to_string(snapshot) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a state");
            return;
        }
    };
    let attempt = async {
        if connection.is_none() {
            *connection = Some(ConnectionManager::new(client.clone()).await?);
        }
        let conn = connection.as_mut().expect("connection was just set");
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(&payload)
            .query_async::<i64>(conn)
            .await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(_receivers)) => {
            metrics::counter!("reducer_publishes_total").increment(1);
        }
        Ok(Err(e)) => {
            metrics::counter!("reducer_publish_failures_total").increment(1);
            tracing::debug!(error = %e, state = snapshot.id, "publish failed");
        }
        Err(_) => {
            metrics::counter!("reducer_publish_failures_total").increment(1);
            tracing::debug!(state = snapshot.id, "publish timed out");
            // A connection stuck on a paused server is dropped and remade.
            *connection = None;
        }
    }
    metrics::histogram!("reducer_stage_duration_seconds", "stage" => "publish")
        .record(started.elapsed().as_secs_f64());
}
