//! The service's view of the newest state: ONE Redis subscription per
//! process, fanned out through a `watch` channel (latest value only, so a
//! slow client skips states instead of queueing them). While Redis is down
//! the feed polls PostgreSQL instead; while it is up it still checks
//! PostgreSQL now and then, for a publish the reducer could not make.
//!
//! Each state is serialised once, when it enters the channel ([`Published`]);
//! every SSE and WebSocket client sends that same JSON.

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

/// A state and its JSON, made once per state rather than once per client.
/// `Utf8Bytes` is reference-counted: a WebSocket message built from it
/// shares the bytes instead of copying them.
#[derive(Debug)]
pub struct Published {
    pub snapshot: Snapshot,
    pub json: Utf8Bytes,
}

impl Published {
    pub fn new(snapshot: Snapshot) -> Published {
        let json = serde_json::to_string(&snapshot).unwrap_or_else(|_| "{}".to_owned());
        Published {
            snapshot,
            json: json.into(),
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
            *current = published;
            true
        } else {
            false
        }
    });
}
