//! The service's view of the newest state: ONE Redis subscription per
//! process, fanned out through a `watch` channel (latest value only, so a
//! slow client skips states instead of queueing them). While Redis is down
//! the feed polls PostgreSQL instead; while it is up it still checks
//! PostgreSQL now and then, for a publish the reducer could not make.
//!
//! Each state is serialised once, when it enters the channel ([`Published`]);
//! every SSE and WebSocket client sends that same JSON.

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use button_domain::Snapshot;
use futures::StreamExt;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub type Current = watch::Receiver<Arc<Published>>;

/// A state, its JSON and its SSE frame, made once per state rather than
/// once per client. Both are reference-counted views of one buffer: an SSE
/// stream and a WebSocket message send them without a copy.
#[derive(Debug)]
pub struct Published {
    pub snapshot: Snapshot,
    /// `event: state`, `id: <state id>`, `data: <json>`, a blank line.
    pub sse: Bytes,
    /// The JSON alone: a view into `sse`.
    pub json: Utf8Bytes,
}

impl Published {
    pub fn new(snapshot: Snapshot) -> Published {
        let json = serde_json::to_vec(&snapshot).unwrap_or_else(|_| b"{}".to_vec());
        let head = format!("event: state\nid: {}\ndata: ", snapshot.id);
        let mut frame = Vec::with_capacity(head.len() + json.len() + 2);
        frame.extend_from_slice(head.as_bytes());
        frame.extend_from_slice(&json);
        frame.extend_from_slice(b"\n\n");
        let sse = Bytes::from(frame);
        // serde_json writes UTF-8 only.
        let json = Utf8Bytes::try_from(sse.slice(head.len()..head.len() + json.len()))
            .unwrap_or_else(|_| Utf8Bytes::from_static("{}"));
        Published {
            snapshot,
            sse,
            json,
        }
    }
}

impl std::ops::Deref for Published {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

#[derive(Clone)]
pub struct FeedConfig {
    pub redis_url: String,
    pub channel: String,
    pub db_poll: Duration,
    pub db_safety_poll: Duration,
}

/// Keeps `tx` at the newest state until `shutdown`.
pub async fn run(
    pool: PgPool,
    config: FeedConfig,
    tx: watch::Sender<Arc<Published>>,
    redis_up: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let client = match redis::Client::open(config.redis_url.as_str()) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "invalid redis_url: serving states from PostgreSQL only");
            None
        }
    };
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let subscribed = match &client {
            Some(client) => subscribe(client, &config.channel).await,
            None => Err("no Redis client".to_owned()),
        };
        match subscribed {
            Ok(pubsub) => {
                redis_up.store(true, Ordering::Relaxed);
                metrics::gauge!("service_redis_up").set(1.0);
                tracing::info!(channel = %config.channel, "subscribed to state updates");
                // Anything published while we were not listening.
                poll_db(&pool, &tx).await;
                listen(pubsub, &pool, &config, &tx, &shutdown).await;
                redis_up.store(false, Ordering::Relaxed);
                metrics::gauge!("service_redis_up").set(0.0);
                tracing::warn!("state subscription lost: polling PostgreSQL until Redis is back");
            }
            Err(e) => {
                tracing::debug!(error = %e, "redis subscription failed");
                // Poll PostgreSQL for a second, then try Redis again.
                let until = tokio::time::Instant::now() + Duration::from_secs(1);
                while tokio::time::Instant::now() < until {
                    poll_db(&pool, &tx).await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(config.db_poll) => {}
                    }
                }
            }
        }
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

async fn listen(
    mut pubsub: redis::aio::PubSub,
    pool: &PgPool,
    config: &FeedConfig,
    tx: &watch::Sender<Arc<Published>>,
    shutdown: &CancellationToken,
) {
    let mut messages = pubsub.on_message();
    let mut safety = tokio::time::interval(config.db_safety_poll);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = safety.tick() => poll_db(pool, tx).await,
            message = messages.next() => {
                let Some(message) = message else { return };
                match serde_json::from_slice::<Snapshot>(message.get_payload_bytes()) {
                    Ok(snapshot) => {
                        metrics::counter!("service_state_updates_total", "source" => "redis").increment(1);
                        offer(tx, snapshot);
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable state on the channel"),
                }
            }
        }
    }
}

async fn poll_db(pool: &PgPool, tx: &watch::Sender<Arc<Published>>) {
    let current = tx.borrow().id;
    match tokio::time::timeout(
        Duration::from_secs(2),
        button_store::snapshot_after(pool, current),
    )
    .await
    {
        Ok(Ok(Some(snapshot))) => {
            metrics::counter!("service_state_updates_total", "source" => "postgres").increment(1);
            offer(tx, snapshot);
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "reading the newest state failed"),
        Err(_) => tracing::warn!("reading the newest state timed out"),
    }
}

/// Replaces the current state if `snapshot` is newer; never goes back.
pub fn offer(tx: &watch::Sender<Arc<Published>>, snapshot: Snapshot) {
    // Serialised outside the channel's lock, which every client reads.
    if snapshot.id <= tx.borrow().id {
        return;
    }
    let published = Arc::new(Published::new(snapshot));
    tx.send_if_modified(|current| {
        if published.id > current.id {
            observe_age(&published);
            *current = published;
            true
        } else {
            false
        }
    });
}

/// The end-to-end latency the dashboards show: from the acceptance of the
/// state's oldest press (its `first_event_ms`, stamped by the service that
/// took it) to this instance handing the state to its stream clients. One
/// histogram of the whole path, since adding the stages' percentiles
/// measures nothing. Ticks carry no press and are not observed.
fn observe_age(snapshot: &Snapshot) {
    let Some(first) = snapshot.first_event_ms else {
        return;
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Clocks of different hosts may disagree by a little: never negative.
    let age_s = (now_ms - first).max(0) as f64 / 1000.0;
    metrics::histogram!("service_state_age_seconds").record(age_s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_serialised_once_into_its_sse_frame_and_its_json_is_a_view_of_it() {
        let mut snapshot = Snapshot::genesis("rules".to_owned());
        snapshot.id = 7;
        snapshot.counter = 42;
        let json = serde_json::to_vec(&snapshot).expect("serialises");
        let published = Published::new(snapshot);
        assert_eq!(published.json.as_str().as_bytes(), json.as_slice());
        assert_eq!(
            published.sse.as_ref(),
            [b"event: state\nid: 7\ndata: ".as_slice(), &json, b"\n\n"].concat()
        );
        let frame = published.sse.as_ptr_range();
        let view = published.json.as_str().as_bytes().as_ptr_range();
        assert!(
            frame.start <= view.start && view.end <= frame.end,
            "the JSON shares the frame's buffer"
        );
    }
}
