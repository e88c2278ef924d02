//! Where a run's stack comes from.
//!
//! - `local`: every component as a process on this machine (`stack/`),
//!   with faults as signals.
//! - `compose`: `compose/docker-compose.yml` (Apache Kafka, PostgreSQL 16,
//!   Redis 7, the binaries built from a Dockerfile), with the scenario's
//!   tuning in a generated override file and faults as `docker compose`
//!   commands.
//! - `external`: URLs of a stack someone else runs; no lifecycle, no faults.

use crate::scenario::{Driver as DriverKind, FaultAction, Scenario};
use anyhow::Context;
use button_stack::{Component, Ingest, Stack, StackConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;

pub enum Driver {
    Local(Box<AsyncMutex<Stack>>, Endpoints, KnownPids),
    Compose(Compose, Endpoints),
    External(Endpoints),
}

#[derive(Debug, Clone)]
pub struct Endpoints {
    pub service_urls: Vec<String>,
    /// The first reducer's health and metrics.
    pub reducer_url: String,
    /// Every reducer's (the local driver starts `stack.reducers`): the lab
    /// sums their metrics.
    pub reducer_urls: Vec<String>,
    pub database_url: String,
    /// Where the verdict reads the press topic back from; none when the
    /// stack's broker cannot be reached from here.
    pub brokers: Option<String>,
    pub topic: String,
    /// How presses reach the reducer: where the verdict finds them.
    pub ingest: Ingest,
    /// Outbox relays' health and metrics (the local driver's).
    pub relay_urls: Vec<String>,
}

/// The local stack's process ids as last seen: the sampler reads them
/// while a fault holds the stack (a restart can take seconds), so that the
/// stack's CPU is not counted as another process's meanwhile.
#[derive(Default)]
pub struct KnownPids(std::sync::Mutex<BTreeMap<String, u32>>);

impl KnownPids {
    fn refresh(&self, stack: &Stack) {
        let pids = stack
            .components()
            .into_iter()
            .filter_map(|c| Some((c.to_string(), stack.pid(c)?)))
            .collect();
        *crate::recorder::lock(&self.0) = pids;
    }

    fn get(&self) -> BTreeMap<String, u32> {
        crate::recorder::lock(&self.0).clone()
    }
}

/// How much of each component's log a failed run keeps: the end, where
/// the failure is.
pub const LOG_TAIL_BYTES: usize = 2 << 20;

pub struct Compose {
    file: PathBuf,
    override_file: PathBuf,
    project: String,
}

impl Driver {
    pub async fn start(scenario: &Scenario, run_dir: &Path) -> anyhow::Result<Driver> {
        let s = &scenario.stack;
        match s.driver {
            DriverKind::Local => {
                let stack = Stack::start(StackConfig {
                    partitions: s.partitions,
                    services: s.services,
                    reducers: s.reducers,
                    broker_storage: s.broker_storage.parse()?,
                    service_env: scenario.service_env(),
                    reducer_env: scenario.reducer_env(),
                    ingest: s.ingest,
                    relays: s.relays,
                    relay_env: scenario.relay_env(),
                    log_filter: "warn".to_owned(),
                    ..StackConfig::default()
                })
                .await
                .context("starting the local stack")?;
                let endpoints = Endpoints {
                    service_urls: (0..s.services).map(|i| stack.service_url(i)).collect(),
                    reducer_url: stack.reducer_url(),
                    reducer_urls: stack.reducer_urls(),
                    database_url: stack.database_url(),
                    brokers: s.ingest.uses_broker().then(|| stack.brokers()),
                    topic: stack.config().topic.clone(),
                    ingest: s.ingest,
                    relay_urls: match s.ingest {
                        Ingest::Outbox => (0..s.relays).map(|i| stack.relay_url(i)).collect(),
                        _ => Vec::new(),
                    },
                };
                let pids = KnownPids::default();
                pids.refresh(&stack);
                Ok(Driver::Local(
                    Box::new(AsyncMutex::new(stack)),
                    endpoints,
                    pids,
                ))
            }
            DriverKind::External => Ok(Driver::External(Endpoints {
                service_urls: vec![
                    s.service_url
                        .clone()
                        .context("stack.service_url is required by the external driver")?,
                ],
                reducer_url: s
                    .reducer_url
                    .clone()
                    .context("stack.reducer_url is required by the external driver")?,
                reducer_urls: s.reducer_url.iter().cloned().collect(),
                database_url: s
                    .database_url
                    .clone()
                    .context("stack.database_url is required by the external driver")?,
                brokers: s.brokers.clone(),
                topic: s.topic.clone(),
                ingest: s.ingest,
                relay_urls: Vec::new(),
            })),
            DriverKind::Compose => {
                let compose = Compose::up(scenario, run_dir).await?;
                Ok(Driver::Compose(
                    compose,
                    Endpoints {
                        service_urls: vec!["http://127.0.0.1:8080".to_owned()],
                        reducer_url: "http://127.0.0.1:9101".to_owned(),
                        reducer_urls: vec!["http://127.0.0.1:9101".to_owned()],
                        database_url: "postgres://button:button@127.0.0.1:5432/button".to_owned(),
                        // The compose broker advertises its in-network name.
                        brokers: s.brokers.clone(),
                        topic: s.topic.clone(),
                        ingest: Ingest::Kafka,
                        relay_urls: Vec::new(),
                    },
                ))
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Driver::Local(..) => "local",
            Driver::Compose(..) => "compose",
            Driver::External(..) => "external",
        }
    }

    pub fn endpoints(&self) -> &Endpoints {
        match self {
            Driver::Local(_, e, _) | Driver::Compose(_, e) | Driver::External(e) => e,
        }
    }

    /// The local broker's log, whose first line names its version.
    pub async fn broker_log(&self) -> Option<PathBuf> {
        match self {
            Driver::Local(stack, ..) => Some(stack.lock().await.log_path(Component::Broker)),
            _ => None,
        }
    }

    pub async fn fault(&self, action: FaultAction, component: Component) -> anyhow::Result<()> {
        match self {
            Driver::Local(stack, _, pids) => {
                let mut stack = stack.lock().await;
                let done = match action {
                    FaultAction::Kill => stack.kill(component),
                    FaultAction::Stop => stack.stop(component, Duration::from_secs(10)).await,
                    FaultAction::Pause => stack.pause(component),
                    FaultAction::Resume => stack.resume(component),
                    FaultAction::Restart => stack.restart(component).await,
                    FaultAction::Start => stack.start_component(component).await,
                };
                pids.refresh(&stack);
                Ok(done?)
            }
            Driver::Compose(compose, _) => compose.fault(action, component).await,
            Driver::External(_) => anyhow::bail!("the external driver cannot inject faults"),
        }
    }

    /// Process ids of the local stack's components: as they are now, or,
    /// while a fault holds the stack, as they were before it.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        match self {
            Driver::Local(stack, _, pids) => {
                if let Ok(stack) = stack.try_lock() {
                    pids.refresh(&stack);
                }
                pids.get()
            }
            _ => BTreeMap::new(),
        }
    }

    /// Copies the local stack's logs into `dest` (the last
    /// [`LOG_TAIL_BYTES`] of each): a run whose verdict failed keeps its
    /// evidence after the stack's folder is gone. Returns the files kept.
    pub async fn keep_logs(&self, dest: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let Driver::Local(stack, ..) = self else {
            return Ok(Vec::new());
        };
        let logs = stack.lock().await.root().join("logs");
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut kept = Vec::new();
        for entry in
            std::fs::read_dir(&logs).with_context(|| format!("reading {}", logs.display()))?
        {
            let path = entry?.path();
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let tail = &bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES)..];
            let to = dest.join(path.file_name().unwrap_or_default());
            std::fs::write(&to, tail).with_context(|| format!("writing {}", to.display()))?;
            kept.push(to);
        }
        Ok(kept)
    }

    pub async fn stop(self) {
        match self {
            Driver::Local(stack, ..) => drop(stack),
            Driver::Compose(compose, _) => compose.down().await,
            Driver::External(_) => {}
        }
    }
}

impl Compose {
    async fn up(scenario: &Scenario, run_dir: &Path) -> anyhow::Result<Compose> {
        let file = PathBuf::from(&scenario.stack.compose_file);
        anyhow::ensure!(
            file.is_file(),
            "stack.compose_file: {} does not exist",
            file.display()
        );
        // The scenario's tuning, whatever keys it sets, as an override file.
        let override_file = run_dir.join("compose.override.yml");
        let mut text = String::from("services:\n");
        for (service, env) in [
            ("service", scenario.service_env()),
            ("reducer", scenario.reducer_env()),
        ] {
            text.push_str(&format!("  {service}:\n    environment:\n"));
            for (k, v) in env {
                text.push_str(&format!("      {k}: {}\n", serde_json::to_string(&v)?));
            }
            if text.ends_with("environment:\n") {
                text.push_str("      BUTTON_LOG_FORMAT: json\n");
            }
        }
        std::fs::write(&override_file, text)?;
        let compose = Compose {
            file,
            override_file,
            project: format!("button-{}", std::process::id()),
        };
        let partitions = scenario.stack.partitions.to_string();
        compose
            .run(
                &["up", "-d", "--build", "--wait"],
                &[("PARTITIONS", partitions.as_str())],
            )
            .await
            .context("the compose driver needs Docker with the compose plugin")?;
        Ok(compose)
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new("docker");
        command
            .arg("compose")
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .arg("-f")
            .arg(&self.override_file)
            .args(args)
            .envs(env.iter().copied());
        let status = command.status().await.context("running docker compose")?;
        anyhow::ensure!(
            status.success(),
            "docker compose {} failed ({status})",
            args.join(" ")
        );
        Ok(())
    }

    async fn fault(&self, action: FaultAction, component: Component) -> anyhow::Result<()> {
        let service = match component {
            Component::Postgres => "postgres",
            Component::Redis => "redis",
            Component::Broker => "kafka",
            Component::Reducer(0) => "reducer",
            Component::Reducer(n) => {
                anyhow::bail!("the compose stack has one reducer, not reducer-{n}")
            }
            Component::Service(0) => "service",
            Component::Service(n) => {
                anyhow::bail!("the compose stack has one service instance, not service-{n}")
            }
            Component::Relay(n) => {
                anyhow::bail!("the compose stack runs ingest kafka: it has no relay-{n}")
            }
        };
        let verb = match action {
            FaultAction::Kill => "kill",
            FaultAction::Stop => "stop",
            FaultAction::Pause => "pause",
            FaultAction::Resume => "unpause",
            FaultAction::Restart => "restart",
            FaultAction::Start => "start",
        };
        self.run(&[verb, service], &[]).await
    }

    async fn down(self) {
        if let Err(e) = self.run(&["down", "-v"], &[]).await {
            eprintln!("compose: {e}");
        }
    }
}
