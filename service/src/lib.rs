//! The Button's HTTP API.
//!
//! - [`routes::press`]: `POST /v1/events/press` → Kafka (`acks=all`,
//!   idempotent), 202 with partition and offset after the broker's ack; or
//!   (ingest `outbox`, `direct`) a PostgreSQL insert ([`ingest`]).
//! - [`routes::states`]: the newest state from memory, and its stream over
//!   SSE or a WebSocket.
//! - [`feed`]: one Redis subscription per process, PostgreSQL while Redis
//!   is down.
//! - [`error`]: the one failure-to-response mapping.
//! - [`timeout`]: the deadline of every request but the stream.
//!
//! [`run`] binds, serves until the shutdown token fires, then drains.

pub mod config;
pub mod error;
pub mod feed;
pub mod geo;
pub mod guard;
pub mod ingest;
pub mod metrics;
pub mod producer;
pub mod routes;
pub mod timeout;

pub use config::Config;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use button_domain::Snapshot;
use button_infra::config::Ingest;
use error::ApiError;
use metrics_exporter_prometheus::PrometheusHandle;
use producer::{PressProducer, PressSink};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What every handler can reach. Cloned for every request (axum's
/// `State`), so one reference count rather than one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The service's shared parts, behind [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    pub producer: Arc<dyn PressSink>,
    pub guards: Arc<guard::Guards>,
    pub geo: Arc<geo::Geo>,
    pub pool: PgPool,
    pub current: feed::Current,
    pub sse_clients: Arc<AtomicUsize>,
    pub sse_per_client: routes::states::StreamsPerClient,
    /// `/v1/countries`'s JSON body.
    pub countries: routes::states::Cached<axum::body::Bytes>,
    pub redis_up: Arc<AtomicBool>,
    pub metrics: PrometheusHandle,
    pub shutdown: CancellationToken,
}

impl AppState {
    /// A state whose broker is `producer` and whose PostgreSQL and Redis
    /// are never reached: the HTTP layer alone, for benchmarks and fuzzing.
    /// Needs a Tokio runtime (the pool is created lazily inside it).
    pub fn detached(config: Config, producer: Arc<dyn PressSink>) -> anyhow::Result<AppState> {
        let guards = guard::Guards::offline(&config)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy(&config.database_url)
            .context("a lazy PostgreSQL pool")?;
        let (_, current) = watch::channel(Arc::new(feed::Published::new(Snapshot::genesis(
            String::new(),
        ))));
        let countries_ttl = Duration::from_millis(config.countries_cache_ms);
        Ok(AppState::new(Shared {
            config: Arc::new(config),
            producer,
            guards: Arc::new(guards),
            geo: Arc::new(geo::Geo::open("")),
            pool,
            current,
            sse_clients: Arc::new(AtomicUsize::new(0)),
            sse_per_client: Default::default(),
            countries: routes::states::Cached::new(countries_ttl),
            redis_up: Arc::new(AtomicBool::new(false)),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            shutdown: CancellationToken::new(),
        }))
    }
}

pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/", get(routes::web::index))
        .route("/assets/app.js", get(routes::web::app))
        .route("/assets/pow-worker.js", get(routes::web::worker))
        .route("/assets/style.css", get(routes::web::style))
        .route("/v1/events/press", post(routes::press::press))
        .route("/v1/challenge", get(routes::press::challenge))
        .route("/v1/countries", get(routes::states::countries))
        .route("/v1/states/current", get(routes::states::current))
        .route("/health", get(routes::health::health))
        .route("/health/live", get(routes::health::live))
        .route("/health/ready", get(routes::health::ready))
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<AppState>| async move {
                    s.metrics.render()
                },
            ),
        );
    // `route_layer` covers the routes above only: the streams, added after,
    // are meant to stay open.
    if state.config.request_timeout_ms > 0 {
        router = router.route_layer(timeout::RequestTimeoutLayer(Duration::from_millis(
            state.config.request_timeout_ms,
        )));
    }
    router
        .route("/v1/states/stream", get(routes::states::stream))
        .route("/v1/states/ws", get(routes::states::ws))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Connects to PostgreSQL, Kafka and Redis, serves HTTP until `shutdown`.
pub async fn run(
    config: Config,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    serve(listener, config, metrics, shutdown).await
}

pub async fn serve(
    listener: TcpListener,
    config: Config,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = button_store::connect(
        &config.database_url,
        config.db_max_connections,
        Duration::from_secs(3),
        None,
    )
    .await
    .context("connecting to PostgreSQL")?;
    let genesis = match button_store::latest_snapshot(&pool)
        .await
        .context("reading the newest state")?
    {
        Some(snapshot) => snapshot,
        None => Snapshot::genesis(
            button_store::active_ruleset(&pool)
                .await
                .context("reading the ruleset")?
                .1,
        ),
    };
    let guards =
        guard::Guards::new(&config).context("configuring proof of work and rate limits")?;
    let deadline = Duration::from_millis(config.produce_timeout_ms);
    let producer: Arc<dyn PressSink> = match config.ingest {
        Ingest::Kafka => {
            let producer = PressProducer::new(
                &config.kafka_brokers,
                &config.topic,
                deadline,
                &config.producer,
            )
            .context("creating the Kafka producer")?;
            wait_for_topic(&producer, &shutdown).await?;
            Arc::new(producer)
        }
        ingest => Arc::new(ingest::TableSink::new(pool.clone(), ingest, deadline)),
    };

    let (tx, current) = watch::channel(Arc::new(feed::Published::new(genesis)));
    let redis_up = Arc::new(AtomicBool::new(false));
    let feed_config = feed::FeedConfig {
        redis_url: config.redis_url.clone(),
        channel: config.redis_channel.clone(),
        db_poll: Duration::from_millis(config.db_poll_ms),
        db_safety_poll: Duration::from_millis(config.db_safety_poll_ms),
    };
    let feed = tokio::spawn(feed::run(
        pool.clone(),
        feed_config,
        tx,
        redis_up.clone(),
        shutdown.clone(),
    ));

    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let geoip_db = config.geoip_db.clone();
    let countries_ttl = Duration::from_millis(config.countries_cache_ms);
    let state = AppState::new(Shared {
        config: Arc::new(config),
        producer,
        guards: Arc::new(guards),
        geo: Arc::new(geo::Geo::open(&geoip_db)),
        pool,
        current,
        sse_clients: Arc::new(AtomicUsize::new(0)),
        sse_per_client: Default::default(),
        countries: routes::states::Cached::new(countries_ttl),
        redis_up,
        metrics,
        shutdown: shutdown.clone(),
    });
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    let send_buffer = state.config.tcp_send_buffer_bytes;
    let listener = listener.tap_io(move |tcp| {
        if send_buffer > 0
            && let Err(error) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer)
        {
            tracing::warn!(%error, send_buffer, "could not set the connection's send buffer");
        }
    });
    // Peer addresses reach the handlers only to derive pseudonyms.
    let server = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move { shutdown.cancelled().await }
    });
    let server = tokio::spawn(server.into_future());
    shutdown.cancelled().await;
    // In-flight presses get the grace period; SSE streams end at once.
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.context("server task")?.context("serving HTTP")?,
        Err(_) => tracing::warn!("requests still open after the grace period; closing"),
    }
    let _ = feed.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_topic(
    producer: &PressProducer,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        let p = producer.clone();
        let checked =
            tokio::task::spawn_blocking(move || p.check_topic(Duration::from_secs(2))).await?;
        match checked {
            Ok(partitions) => {
                tracing::info!(partitions, "topic ready");
                return Ok(());
            }
            Err(e) => {
                attempt += 1;
                if attempt % 5 == 1 {
                    tracing::warn!(error = %e, "waiting for the broker and the topic");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down before the broker was reachable"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
