//! A throwaway local stack, one process per component.
//!
//! [`Stack::start`] brings up PostgreSQL (initdb + postgres), Redis, the
//! Kafka-protocol broker (tansu, unless the ingest path is `direct`), the
//! service instances, the outbox relays (ingest `outbox`) and the reducer, on
//! free loopback ports, each in its own folder under one temporary
//! directory, each logging to `logs/<component>.log`. Every component can
//! be killed (SIGKILL), stopped (graceful), paused (SIGSTOP), resumed
//! (SIGCONT) and restarted. Dropping the stack kills everything, also when
//! a test panics; a test that panics leaves its folder and prints the tail
//! of every log.
//!
//! Binaries are found by [`locate`]: `BUTTON_BIN_DIR`, `BUTTON_TANSU` and
//! `BUTTON_PG_BIN` override the defaults.

pub mod locate;
mod process;

use process::{Proc, Spec};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find {what}: {hint}")]
    NotFound { what: &'static str, hint: String },
    #[error("{component}: {message}")]
    Component {
        component: Component,
        message: String,
    },
    #[error("{component} did not become healthy within {waited:?}; log: {log}")]
    Unhealthy {
        component: Component,
        waited: Duration,
        log: PathBuf,
    },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "unknown component `{0}` (postgres, redis, broker, service, service-N, reducer, reducer-N, relay, relay-N)"
    )]
    UnknownComponent(String),
    #[error("unknown broker storage `{0}` (sqlite, memory)")]
    UnknownStorage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One process of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Postgres,
    Redis,
    Broker,
    /// Reducer `i`: shown as `reducer` for the first (the name stored runs
    /// and logs have always used) and `reducer-1`, ... for the others.
    Reducer(usize),
    Service(usize),
    Relay(usize),
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::Postgres => f.write_str("postgres"),
            Component::Redis => f.write_str("redis"),
            Component::Broker => f.write_str("broker"),
            Component::Reducer(0) => f.write_str("reducer"),
            Component::Reducer(i) => write!(f, "reducer-{i}"),
            Component::Service(i) => write!(f, "service-{i}"),
            Component::Relay(i) => write!(f, "relay-{i}"),
        }
    }
}

impl FromStr for Component {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "postgres" => Component::Postgres,
            "redis" => Component::Redis,
            "broker" | "kafka" => Component::Broker,
            "reducer" => Component::Reducer(0),
            "service" => Component::Service(0),
            "relay" => Component::Relay(0),
            other => {
                let numbered = |prefix: &str| other.strip_prefix(prefix)?.parse().ok();
                match (
                    numbered("service-"),
                    numbered("relay-"),
                    numbered("reducer-"),
                ) {
                    (Some(i), _, _) => Component::Service(i),
                    (_, Some(i), _) => Component::Relay(i),
                    (_, _, Some(i)) => Component::Reducer(i),
                    _ => return Err(Error::UnknownComponent(other.to_owned())),
                }
            }
        })
    }
}

/// The broker's storage engine (tansu's `--storage-engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrokerStorage {
    /// A SQLite file: resumes at the exact offset. The default.
    #[default]
    Sqlite,
    /// In memory: fastest, but a fetch from the middle of a stored batch
    /// returns the next batch, so a consumer that seeks skips records.
    Memory,
}

impl FromStr for BrokerStorage {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sqlite" => Ok(BrokerStorage::Sqlite),
            "memory" => Ok(BrokerStorage::Memory),
            other => Err(Error::UnknownStorage(other.to_owned())),
        }
    }
}

impl fmt::Display for BrokerStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerStorage::Sqlite => "sqlite",
            BrokerStorage::Memory => "memory",
        })
    }
}

pub use button_infra::config::Ingest;

/// The environment every process of a stack starts from (the caller's is
/// cleared): a search path, a home, a locale, and `RUST_LOG=warn` unless the
/// component's spec sets its own. Runs record it beside their results.
pub fn pinned_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "PATH".to_owned(),
            "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".to_owned(),
        ),
        (
            "HOME".to_owned(),
            std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned()),
        ),
        ("LC_ALL".to_owned(), "C.UTF-8".to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ])
}

/// `BUTTON_*` variables for [`StackConfig::service_env`] and
/// [`StackConfig::reducer_env`] from literal pairs.
pub fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub partitions: i32,
    pub broker_storage: BrokerStorage,
    pub services: usize,
    /// Start the reducers with the rest (tests of the service alone say no).
    pub reducer: bool,
    /// Reducers started, each with its own health port (and, alone, the
    /// static member id `button-reducer-0`). More than one takes
    /// turns over partitions with `BUTTON_ASSIGNMENT=group`; with `manual`
    /// each reads every partition and the writers' lock keeps the count.
    pub reducers: usize,
    /// The ingest path, given to the service and the reducer as
    /// `BUTTON_INGEST`; `direct` starts no broker.
    pub ingest: Ingest,
    /// Outbox relays started with ingest `outbox` (none otherwise).
    pub relays: usize,
    /// Extra `BUTTON_*` variables for every relay.
    pub relay_env: BTreeMap<String, String>,
    /// Extra `BUTTON_*` variables for every service instance.
    pub service_env: BTreeMap<String, String>,
    /// Extra `BUTTON_*` variables for every reducer.
    pub reducer_env: BTreeMap<String, String>,
    /// `RUST_LOG` for the service and the reducer.
    pub log_filter: String,
    pub topic: String,
    pub dlq_topic: String,
    /// How long to wait for each component to become healthy.
    pub health_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            partitions: 1,
            broker_storage: BrokerStorage::Sqlite,
            services: 1,
            reducer: true,
            reducers: 1,
            ingest: Ingest::Kafka,
            relays: 1,
            relay_env: BTreeMap::new(),
            service_env: BTreeMap::new(),
            reducer_env: BTreeMap::new(),
            log_filter: "info,rdkafka=warn".to_owned(),
            topic: "press_button".to_owned(),
            dlq_topic: "press_button.dlq".to_owned(),
            health_timeout: Duration::from_secs(60),
        }
    }
}

/// Ports and addresses of a running stack.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub postgres_port: u16,
    pub redis_port: u16,
    pub broker_port: u16,
    pub reducer_ports: Vec<u16>,
    pub service_ports: Vec<u16>,
    pub relay_ports: Vec<u16>,
}

pub struct Stack {
    config: StackConfig,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    endpoints: Endpoints,
    procs: BTreeMap<Component, Proc>,
    http: reqwest::Client,
}

impl Stack {
    /// Starts every component and waits until each is healthy.
    pub async fn start(config: StackConfig) -> Result<Stack> {
        let dir = tempfile::Builder::new().prefix("button-stack-").tempdir()?;
        let root = dir.path().to_path_buf();
        // PostgreSQL runs as its own user and must be able to reach its folder.
        set_mode(&root, 0o755)?;
        std::fs::create_dir_all(root.join("logs"))?;
        let endpoints = Endpoints {
            postgres_port: free_port()?,
            redis_port: free_port()?,
            broker_port: free_port()?,
            reducer_ports: (0..config.reducers.max(1))
                .map(|_| free_port())
                .collect::<Result<_>>()?,
            service_ports: (0..config.services)
                .map(|_| free_port())
                .collect::<Result<_>>()?,
            relay_ports: (0..config.relays)
                .map(|_| free_port())
                .collect::<Result<_>>()?,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::Component {
                component: Component::Service(0),
                message: e.to_string(),
            })?;
        let mut stack = Stack {
            config,
            dir: Some(dir),
            root,
            endpoints,
            procs: BTreeMap::new(),
            http,
        };
        stack.start_postgres().await?;
        stack.start_component(Component::Redis).await?;
        if stack.config.ingest.uses_broker() {
            stack.start_component(Component::Broker).await?;
            stack.create_topics().await?;
        }
        for i in 0..stack.config.services {
            stack.start_component(Component::Service(i)).await?;
        }
        if stack.config.ingest == Ingest::Outbox {
            for i in 0..stack.config.relays {
                stack.start_component(Component::Relay(i)).await?;
            }
        }
        if stack.config.reducer {
            for i in 0..stack.config.reducers.max(1) {
                stack.start_component(Component::Reducer(i)).await?;
            }
        }
        tracing::info!(root = %stack.root.display(), "stack up");
        Ok(stack)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn database_url(&self) -> String {
        format!(
            "postgres://button@127.0.0.1:{}/button",
            self.endpoints.postgres_port
        )
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.endpoints.redis_port)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.endpoints.broker_port)
    }

    /// Base URL of service instance `i`.
    pub fn service_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.endpoints.service_ports[i])
    }

    /// Base URL (health and metrics) of the first reducer.
    pub fn reducer_url(&self) -> String {
        self.reducer_url_of(0)
    }

    /// Base URL (health and metrics) of reducer `i`.
    pub fn reducer_url_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.endpoints.reducer_ports[i])
    }

    /// Base URLs of every reducer, first to last.
    pub fn reducer_urls(&self) -> Vec<String> {
        (0..self.endpoints.reducer_ports.len())
            .map(|i| self.reducer_url_of(i))
            .collect()
    }

    /// Base URL (health and metrics) of relay `i`.
    pub fn relay_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.endpoints.relay_ports[i])
    }

    pub fn log_path(&self, component: Component) -> PathBuf {
        self.root.join("logs").join(format!("{component}.log"))
    }

    /// Process id, when the component runs.
    pub fn pid(&self, component: Component) -> Option<u32> {
        self.procs.get(&component).and_then(Proc::pid)
    }

    /// Components in start order.
    pub fn components(&self) -> Vec<Component> {
        self.procs.keys().copied().collect()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self, component: Component) -> Result<()> {
        self.proc_mut(component)?.kill();
        Ok(())
    }

    /// Graceful stop (SIGTERM; SIGINT for PostgreSQL's fast shutdown), then
    /// SIGKILL after `grace`.
    pub async fn stop(&mut self, component: Component, grace: Duration) -> Result<()> {
        self.proc_mut(component)?.stop(grace).await;
        Ok(())
    }

    /// SIGSTOP: the process holds its sockets but answers nothing.
    pub fn pause(&mut self, component: Component) -> Result<()> {
        self.proc_mut(component)?
            .signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// SIGCONT.
    pub fn resume(&mut self, component: Component) -> Result<()> {
        self.proc_mut(component)?
            .signal(nix::sys::signal::Signal::SIGCONT)
    }

    /// Starts a component (or again, after kill or stop) and waits for health.
    pub async fn start_component(&mut self, component: Component) -> Result<()> {
        if let Some(proc) = self.procs.get_mut(&component) {
            proc.respawn()?;
            return self.wait_healthy(component).await;
        }
        // A port is chosen free but bound only when the process starts; other
        // test processes choose from the same range meanwhile. Losing that
        // race is not the component's fault: choose again.
        let mut attempts = 0;
        loop {
            let spec = self.spec(component)?;
            self.procs.insert(component, Proc::spawn(component, spec)?);
            match self.wait_healthy(component).await {
                Err(Error::Component { message, .. })
                    if attempts < 4 && message.contains("Address already in use") =>
                {
                    attempts += 1;
                    tracing::warn!(%component, "port taken before it was bound; choosing another");
                    self.procs.remove(&component);
                    *self.port_mut(component) = free_port()?;
                }
                other => return other,
            }
        }
    }

    fn port_mut(&mut self, component: Component) -> &mut u16 {
        let e = &mut self.endpoints;
        match component {
            Component::Postgres => &mut e.postgres_port,
            Component::Redis => &mut e.redis_port,
            Component::Broker => &mut e.broker_port,
            Component::Reducer(i) => &mut e.reducer_ports[i],
            Component::Service(i) => &mut e.service_ports[i],
            Component::Relay(i) => &mut e.relay_ports[i],
        }
    }

    /// Graceful stop, then start.
    pub async fn restart(&mut self, component: Component) -> Result<()> {
        self.stop(component, Duration::from_secs(10)).await?;
        self.start_component(component).await
    }

    /// Whether the process is alive (a paused one is).
    pub fn is_running(&mut self, component: Component) -> bool {
        self.procs.get_mut(&component).is_some_and(Proc::is_running)
    }

    /// Waits up to `timeout` for a component to exit on its own: `Some(code)`
    /// if it did (`code` is `None` when a signal ended it).
    pub async fn wait_exit(
        &mut self,
        component: Component,
        timeout: Duration,
    ) -> Result<Option<Option<i32>>> {
        Ok(self.proc_mut(component)?.wait_exit(timeout).await)
    }

    fn proc_mut(&mut self, component: Component) -> Result<&mut Proc> {
        self.procs.get_mut(&component).ok_or(Error::Component {
            component,
            message: "not started".to_owned(),
        })
    }

    fn spec(&self, component: Component) -> Result<Spec> {
        let log = self.log_path(component);
        let e = &self.endpoints;
        Ok(match component {
            Component::Postgres => {
                let data = self.root.join("postgres");
                Spec::new(locate::postgres_bin()?.join("postgres"), log)
                    .args(["-D".into(), data.display().to_string()])
                    .args(["-p".into(), e.postgres_port.to_string()])
                    .args(
                        [
                            "-c",
                            "listen_addresses=127.0.0.1",
                            "-c",
                            "unix_socket_directories=",
                            "-c",
                            "max_connections=200",
                        ]
                        .map(String::from),
                    )
                    .run_as_postgres_user()
                    .stop_signal(nix::sys::signal::Signal::SIGINT)
            }
            Component::Redis => Spec::new(locate::redis_server()?, log)
                .cwd(self.dir_for("redis")?)
                .args([
                    "--port".into(),
                    e.redis_port.to_string(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--save".into(),
                    String::new(),
                    "--appendonly".into(),
                    "no".into(),
                ]),
            Component::Broker => {
                let url = format!("tcp://127.0.0.1:{}", e.broker_port);
                let storage = match self.config.broker_storage {
                    // Relative to the broker's working directory.
                    BrokerStorage::Sqlite => "sqlite://broker.db".to_owned(),
                    BrokerStorage::Memory => "memory://tansu/".to_owned(),
                };
                Spec::new(locate::tansu()?, log)
                    .cwd(self.dir_for("broker")?)
                    .args([
                        "broker".into(),
                        "--listener-url".into(),
                        url.clone(),
                        "--advertised-listener-url".into(),
                        url,
                        "--storage-engine".into(),
                        storage,
                    ])
            }
            Component::Service(i) => Spec::new(locate::button_bin("button-service")?, log)
                .envs(self.common_env())
                .env(
                    "BUTTON_HTTP_ADDR",
                    format!("127.0.0.1:{}", e.service_ports[i]),
                )
                // One secret for every instance, unless the test sets its
                // own: pseudonyms and the request ids of Idempotency-Keys
                // must agree across instances (a retry on another
                // instance is the same press) and across restarts.
                .env(
                    "BUTTON_SECRET",
                    format!("stack-wide:{}", self.root.display()),
                )
                .envs(self.config.service_env.clone()),
            Component::Reducer(i) => Spec::new(locate::button_bin("button-reducer")?, log)
                .envs(self.common_env())
                .env(
                    "BUTTON_HTTP_ADDR",
                    format!("127.0.0.1:{}", e.reducer_ports[i]),
                )
                .env("BUTTON_DLQ_TOPIC", self.config.dlq_topic.clone())
                // One reducer: a static member takes its partitions back at
                // once after a restart. Several: dynamic members, since
                // tansu 0.6.0 never settles a group of static ones (each
                // assigned, then revoked, every session timeout); with
                // Apache Kafka (compose) each has its own static id.
                .env(
                    "BUTTON_GROUP_INSTANCE_ID",
                    if self.config.reducers > 1 {
                        String::new()
                    } else {
                        format!("button-reducer-{i}")
                    },
                )
                .envs(self.config.reducer_env.clone()),
            Component::Relay(i) => Spec::new(locate::button_bin("button-relay")?, log)
                .envs(self.common_env())
                .env(
                    "BUTTON_HTTP_ADDR",
                    format!("127.0.0.1:{}", e.relay_ports[i]),
                )
                .envs(self.config.relay_env.clone()),
        })
    }

    fn common_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("BUTTON_DATABASE_URL".to_owned(), self.database_url()),
            ("BUTTON_REDIS_URL".to_owned(), self.redis_url()),
            ("BUTTON_KAFKA_BROKERS".to_owned(), self.brokers()),
            ("BUTTON_TOPIC".to_owned(), self.config.topic.clone()),
            ("BUTTON_INGEST".to_owned(), self.config.ingest.to_string()),
            ("RUST_LOG".to_owned(), self.config.log_filter.clone()),
        ])
    }

    fn dir_for(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    async fn start_postgres(&mut self) -> Result<()> {
        let data = self.root.join("postgres");
        std::fs::create_dir_all(&data)?;
        process::chown_to_postgres(&data)?;
        let log = self.log_path(Component::Postgres);
        let initdb = Spec::new(locate::postgres_bin()?.join("initdb"), log)
            .args(["-D".into(), data.display().to_string()])
            .args(
                [
                    "-U",
                    "button",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
                .map(String::from),
            )
            .run_as_postgres_user();
        let status = initdb.run_to_end().await?;
        if !status.success() {
            return Err(Error::Component {
                component: Component::Postgres,
                message: format!(
                    "initdb failed ({status}); see {}",
                    self.log_path(Component::Postgres).display()
                ),
            });
        }
        self.start_component(Component::Postgres).await?;
        let admin = format!(
            "postgres://button@127.0.0.1:{}/postgres",
            self.endpoints.postgres_port
        );
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .map_err(|e| Error::Component {
                component: Component::Postgres,
                message: e.to_string(),
            })?;
        sqlx::query("CREATE DATABASE button")
            .execute(&mut conn)
            .await
            .map_err(|e| Error::Component {
                component: Component::Postgres,
                message: e.to_string(),
            })?;
        Ok(())
    }

    async fn create_topics(&self) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .map_err(|e| Error::Component {
                component: Component::Broker,
                message: e.to_string(),
            })?;
        let topics = [
            NewTopic::new(
                &self.config.topic,
                self.config.partitions,
                TopicReplication::Fixed(1),
            ),
            NewTopic::new(&self.config.dlq_topic, 1, TopicReplication::Fixed(1)),
        ];
        let results = admin
            .create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(|e| Error::Component {
                component: Component::Broker,
                message: e.to_string(),
            })?;
        for result in results {
            if let Err((topic, code)) = result
                && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
            {
                return Err(Error::Component {
                    component: Component::Broker,
                    message: format!("creating {topic}: {code}"),
                });
            }
        }
        Ok(())
    }

    async fn wait_healthy(&mut self, component: Component) -> Result<()> {
        let started = Instant::now();
        let timeout = self.config.health_timeout;
        loop {
            // Exit first: a component that lost its port to another process
            // must not pass for healthy because that process answers there.
            let proc = self.proc_mut(component)?;
            if let Some(code) = proc.exited() {
                // The folder goes with the failed stack: say why here.
                let log = std::fs::read_to_string(proc.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(Error::Component {
                    component,
                    message: format!(
                        "exited with {code:?} while starting; last lines of {}:\n{}",
                        proc.log().display(),
                        tail.join("\n")
                    ),
                });
            }
            if self.check(component).await {
                tracing::debug!(%component, waited = ?started.elapsed(), "healthy");
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::Unhealthy {
                    component,
                    waited: timeout,
                    log: self.log_path(component),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn check(&self, component: Component) -> bool {
        let e = &self.endpoints;
        match component {
            Component::Postgres => {
                let url = format!("postgres://button@127.0.0.1:{}/postgres", e.postgres_port);
                <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                    .await
                    .is_ok()
            }
            Component::Redis => {
                let Ok(client) = redis::Client::open(self.redis_url()) else {
                    return false;
                };
                let ping = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PING").query_async::<String>(&mut conn).await
                };
                matches!(
                    tokio::time::timeout(Duration::from_secs(1), ping).await,
                    Ok(Ok(_))
                )
            }
            Component::Broker => tokio::net::TcpStream::connect(("127.0.0.1", e.broker_port))
                .await
                .is_ok(),
            Component::Service(i) => {
                self.http_ok(&format!("{}/health/ready", self.service_url(i)))
                    .await
            }
            Component::Reducer(i) => {
                self.http_ok(&format!("{}/health/ready", self.reducer_url_of(i)))
                    .await
            }
            Component::Relay(i) => {
                self.http_ok(&format!("{}/health/ready", self.relay_url(i)))
                    .await
            }
        }
    }

    async fn http_ok(&self, url: &str) -> bool {
        matches!(self.http.get(url).send().await, Ok(r) if r.status().is_success())
    }

    /// Keeps the folder (logs, data) after the stack is dropped.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.root.clone()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Dependents first, so nothing logs errors about the others going away.
        for proc in self.procs.values_mut().rev() {
            proc.kill();
        }
        let keep = std::env::var_os("BUTTON_STACK_KEEP").is_some();
        if std::thread::panicking() || keep {
            let root = self.keep();
            if std::thread::panicking() {
                eprintln!("stack folder kept at {}", root.display());
                for component in self.procs.keys() {
                    let log = self.log_path(*component);
                    eprintln!("----- last lines of {} -----", log.display());
                    eprintln!("{}", process::tail(&log, 40));
                }
            }
        }
    }
}

/// A port that is free now, chosen below the kernel's ephemeral range: a
/// port the kernel handed out (port 0) can be taken again as the local port
/// of any outgoing connection before the component binds it, which tests
/// opening thousands of connections made happen.
fn free_port() -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    for _ in 0..200 {
        // RandomState is seeded per instance: a cheap random number.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = low + (h.finish() % u64::from(high - low)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
