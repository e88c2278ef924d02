//! The Button's outbox relay: rows the service stored in PostgreSQL's
//! `outbox` (ingest `outbox`) produced to the press topic.
//!
//! - [`drain`]: the loop. One transaction per batch: claim pending rows
//!   (`FOR UPDATE SKIP LOCKED`, so relays share the work), produce them all
//!   and wait for every acknowledgement, mark them sent (or failed, with a
//!   backoff, or dead), commit.
//! - [`producer`]: the idempotent producer, and which failures are the
//!   record's fault.
//! - [`wake`]: `LISTEN outbox`, with polling as the fallback.
//! - [`housekeeping`]: pruning sent rows; the outbox gauges.
//!
//! The promise: every committed outbox row reaches the topic at least once,
//! and the reducer counts it once.
//!
//! Why a crash loses nothing. A claimed row stays locked and `pending`
//! until the claiming transaction commits, and the transaction commits only
//! after the broker acknowledged the row. A relay killed before that
//! commit, also after the broker's acknowledgement, leaves its rows
//! `pending`; PostgreSQL rolls the transaction back when the connection
//! drops, the next claim (this relay restarted, or another one) takes them,
//! and they are produced again. The topic then holds the request id twice,
//! and the reducer drops the repeat (`button_reducer::dedupe`) instead of
//! counting it.
//!
//! Why no row is stepped over. Ids come from a sequence and inserts commit
//! out of order: id 8 can commit after id 9 was claimed and sent. The claim
//! selects by state (`pending`), never "ids above the last one sent", so
//! row 8 is simply pending at the next claim.
//!
//! A failed send counts against the row only when the batch got something
//! through or the record itself is at fault (too large for the broker): a
//! batch in which nothing got through because the broker is down is rolled
//! back untouched and retried after a pause, so an outage does not turn
//! good rows `dead`.

pub mod config;
pub mod drain;
pub mod housekeeping;
pub mod metrics;
pub mod producer;
pub mod wake;

pub use config::Config;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown` (exit 0). Errors only on configuration that
/// cannot work (a bad address, producer properties librdkafka refuses,
/// a database that refuses us for good); PostgreSQL or the broker being
/// away is waited out.
pub async fn run(
    config: Config,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid relay configuration: {e}"))?;

    // Health first, so a relay waiting for PostgreSQL or the broker is
    // visibly alive and not ready.
    let ready = Arc::new(AtomicBool::new(false));
    let http_stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    tracing::info!(address = %listener.local_addr()?, "health and metrics listening");
    let http = tokio::spawn({
        let stop = http_stop.clone();
        let app = router(metrics, ready.clone());
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });

    let outcome = relay(config, &ready, &shutdown).await;
    http_stop.cancel();
    let _ = http.await;
    outcome
}

async fn relay(
    config: Config,
    ready: &AtomicBool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(pool) = connect_with_retry(&config, shutdown).await? else {
        return Ok(());
    };
    let producer = producer::Producer::new(&config).context("creating the Kafka producer")?;
    let producer = Arc::new(producer);
    if !wait_for_topic(&producer, &config.topic, shutdown).await {
        return Ok(());
    }

    let tasks = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(wake::listen(
        config.database_url.clone(),
        wake.clone(),
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
        tasks.clone(),
    ));
    let pruner = tokio::spawn(housekeeping::prune(
        pool.clone(),
        config.clone(),
        tasks.clone(),
    ));
    let gauges = tokio::spawn(housekeeping::gauges(pool.clone(), tasks.clone()));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(topic = %config.topic, batch_max = config.batch_max, "relaying");

    let relay = drain::Relay {
        config,
        pool: pool.clone(),
        producer: Arc::into_inner(producer).expect("no other owner of the producer"),
    };
    relay.run(wake, shutdown.clone()).await;

    // Every batch waited for its acknowledgements; this only catches a
    // record whose delivery report outlived its bound.
    ready.store(false, Ordering::Relaxed);
    let drain::Relay { producer, .. } = relay;
    let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5)))
        .await
        .context("flushing the producer")?;
    if let Err(e) = flushed {
        tracing::warn!(error = %e, "records still unacknowledged at exit stay pending");
    }
    tasks.cancel();
    for task in [listener, pruner, gauges] {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    pool.close().await;
    tracing::info!("relay stopped");
    Ok(())
}

/// Waits until the broker answers and the topic exists (readiness); false
/// when shut down first.
async fn wait_for_topic(
    producer: &Arc<producer::Producer>,
    topic: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut attempt = 0u32;
    loop {
        let p = producer.clone();
        let checked =
            tokio::task::spawn_blocking(move || p.check_topic(Duration::from_secs(2))).await;
        match checked {
            Ok(Ok(partitions)) => {
                tracing::info!(topic, partitions, "topic found");
                return true;
            }
            Ok(Err(e)) => {
                attempt += 1;
                if attempt % 5 == 1 {
                    tracing::warn!(error = %e, topic, "waiting for the broker and the topic");
                }
            }
            Err(e) => tracing::warn!(error = %e, "topic check did not finish"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Connects and migrates, waiting out PostgreSQL being unreachable; `None`
/// when shut down first. Errors that waiting cannot fix end the process.
async fn connect_with_retry(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<sqlx::PgPool>> {
    let mut delay = Duration::from_millis(config.backoff_initial_ms);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match button_store::connect(
            &config.database_url,
            config.db_max_connections,
            Duration::from_secs(3),
            // A batch's transaction waits on the broker's acks.
            None,
        )
        .await
        {
            Ok(pool) => return Ok(Some(pool)),
            Err(e) if e.is_transient() => {
                if attempt % 5 == 1 {
                    tracing::warn!(error = %e, attempt, "PostgreSQL not reachable yet");
                }
            }
            Err(e) => return Err(e).context("connecting to PostgreSQL"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_millis(config.backoff_max_ms));
    }
}

fn router(metrics: PrometheusHandle, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/health/live", get(|| async { (StatusCode::OK, "ok") }))
        .route(
            "/health/ready",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                std::future::ready(if ready {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                })
            }),
        )
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
}
