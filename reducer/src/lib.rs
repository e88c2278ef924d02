//! The Button's reducer: one writer of the global state, which it persists
//! with the position of the last press folded in, so no press counts twice.
//!
//! - [`consumer`]: the Kafka consumer that starts every assigned partition
//!   from PostgreSQL's offsets.
//! - [`pipeline`]: collect → fold → persist (one transaction with offsets)
//!   → publish → commit, with backoff and exactly-once effect.
//! - [`direct`]: ingest `direct`, no broker: the same fold over
//!   PostgreSQL's `presses` table, in id order.
//! - [`persist`]: the transaction both loops write through, with backoff.
//! - [`dlq`]: poison records to the dead-letter topic, with reasons.
//! - [`publisher`]: best-effort Redis publishing off the hot path.

pub mod config;
pub mod consumer;
pub mod dedupe;
pub mod direct;
pub mod dlq;
pub mod metrics;
pub mod persist;
pub mod pipeline;
pub mod publisher;

pub use config::Config;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use button_domain::Snapshot;
use button_infra::config::Ingest;
use button_store::Error as StoreError;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ReducerError {
    #[error("gave up after {attempts} attempts to persist a batch: {last}")]
    PersistFailed { attempts: u32, last: String },
    #[error("gave up after {attempts} attempts to read presses: {last}")]
    ReadFailed { attempts: u32, last: String },
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Runs until `shutdown` (exit 0) or until persisting (with `direct`, also
/// reading) fails for good (error).
pub async fn run(
    config: Config,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid reducer configuration: {e}"))?;
    let pool = connect_with_retry(&config, &shutdown).await?;
    let (rules, rules_hash) = button_store::active_ruleset(&pool)
        .await
        .context("loading the active ruleset")?;
    let persisted = button_store::latest_snapshot(&pool)
        .await
        .context("reading the newest state")?
        .unwrap_or_else(|| Snapshot::genesis(rules_hash.clone()));
    tracing::info!(state = persisted.id, counter = persisted.counter, offsets = ?persisted.offsets, rules = %rules_hash, "resuming");

    let (published, published_rx) = watch::channel(None);
    let persister = persist::Persister::new(&config, pool, rules_hash, published, persisted);
    // Health says ready once the source is: the Kafka consumer assigned;
    // `direct` needs only PostgreSQL, which answered above.
    let source = match config.ingest {
        Ingest::Kafka | Ingest::Outbox => {
            Source::Kafka(kafka_reducer(config.clone(), rules, persister, &shutdown).await?)
        }
        Ingest::Direct => Source::Direct(
            direct::Direct::new(config.clone(), rules, persister)
                .context("preparing the reader of `presses`")?,
        ),
    };

    let publisher_stop = CancellationToken::new();
    let publisher = tokio::spawn(publisher::run(
        config.redis_url.clone(),
        config.redis_channel.clone(),
        Duration::from_millis(config.publish_timeout_ms),
        published_rx,
        publisher_stop.clone(),
    ));

    let http_stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    tracing::info!(address = %listener.local_addr()?, ingest = %config.ingest, "health and metrics listening");
    let http = tokio::spawn({
        let stop = http_stop.clone();
        async move {
            axum::serve(listener, router(metrics))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });

    let outcome = match source {
        Source::Kafka(reducer) => reducer.run(shutdown).await,
        Source::Direct(reader) => reader.run(shutdown).await,
    };
    publisher_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), publisher).await;
    http_stop.cancel();
    let _ = http.await;
    outcome.context("reducer stopped")
}

/// Where the loop reads presses from.
enum Source {
    Kafka(pipeline::Reducer),
    Direct(direct::Direct),
}

/// The consumer, assigned (or in the group), and the dead-letter producer.
async fn kafka_reducer(
    config: Config,
    rules: button_domain::Ruleset,
    persister: persist::Persister,
    shutdown: &CancellationToken,
) -> anyhow::Result<pipeline::Reducer> {
    let shared = Arc::new(consumer::Shared::default());
    shared.set_applied(&persister.persisted().offsets);
    let kafka = consumer::create(
        &config.kafka_brokers,
        &config.group_id,
        &config.group_instance_id,
        &config.topic,
        &config.consumer,
        shared.clone(),
    )
    .context("creating the Kafka consumer")?;
    let kafka = Arc::new(kafka);
    match config.assignment {
        config::Assignment::Group => {
            consumer::join_group(&kafka, &config.topic).context("joining the consumer group")?
        }
        config::Assignment::Manual => {
            assign_all_with_retry(&kafka, &config, &shared, shutdown).await?
        }
    }
    let kafka = Arc::into_inner(kafka).expect("no other owner of the consumer");
    let dead_letters = dlq::DeadLetters::new(
        &config.kafka_brokers,
        &config.topic,
        &config.dlq_topic,
        &config.dlq_producer,
    )
    .context("creating the dead-letter producer")?;
    let recent = std::sync::Mutex::new(dedupe::RecentIds::new(config.dedupe_window));
    Ok(pipeline::Reducer {
        config,
        rules,
        consumer: kafka,
        shared,
        dead_letters,
        recent,
        persister,
    })
}

async fn assign_all_with_retry(
    kafka: &Arc<consumer::ReducerConsumer>,
    config: &Config,
    shared: &Arc<consumer::Shared>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        let (k, s, topic) = (kafka.clone(), shared.clone(), config.topic.clone());
        let assigned = tokio::task::spawn_blocking(move || {
            consumer::assign_all(&k, &topic, &s, Duration::from_secs(2))
        })
        .await?;
        match assigned {
            Ok(_) => return Ok(()),
            Err(e) => {
                attempt += 1;
                if attempt % 5 == 1 {
                    tracing::warn!(error = %e, topic = %config.topic, "waiting for the broker and the topic");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down before the topic was reachable"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn connect_with_retry(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<sqlx::PgPool> {
    let mut delay = Duration::from_millis(config.backoff_initial_ms);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match button_store::connect(
            &config.database_url,
            config.db_max_connections,
            Duration::from_secs(3),
            (config.db_idle_in_transaction_ms > 0)
                .then(|| Duration::from_millis(config.db_idle_in_transaction_ms)),
        )
        .await
        {
            Ok(pool) => return Ok(pool),
            Err(e) if attempt < config.max_attempts && e.is_transient() => {
                tracing::warn!(error = %e, attempt, "PostgreSQL not reachable yet");
            }
            Err(e) => return Err(e).context("connecting to PostgreSQL"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down while connecting to PostgreSQL"),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_millis(config.backoff_max_ms));
    }
}

fn router(metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/health/live", get(|| async { (StatusCode::OK, "ok") }))
        .route("/health/ready", get(|| async { (StatusCode::OK, "ready") }))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
}
