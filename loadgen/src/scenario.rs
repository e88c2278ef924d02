//! Scenarios: what stack to start, how to tune it, what load and faults to
//! apply, and what must hold. Read from TOML; unknown keys are errors that
//! name the key and the file.

use button_client::Transport;
use button_stack::{BrokerStorage, Component, Ingest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file name without `.toml`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub stack: StackSection,
    /// `button-service` keys (see the README), e.g. `produce_timeout_ms`,
    /// and `[service.producer]` for librdkafka properties.
    #[serde(default)]
    pub service: toml::Table,
    /// `button-reducer` keys, e.g. `batch_max`, `batch_linger_ms`,
    /// `commit_every_batches`, and `[reducer.consumer]`.
    #[serde(default)]
    pub reducer: toml::Table,
    /// `button-relay` keys (ingest `outbox`), e.g. `batch_max`, and
    /// `[relay.producer]`.
    #[serde(default)]
    pub relay: toml::Table,
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub sse: SseSection,
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Tuning keys (`reducer.batch_max`, `service.producer.linger.ms`) to
    /// lists of values; every combination is one run.
    #[serde(default)]
    pub sweep: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default, rename = "assert")]
    pub asserts: Asserts,
    /// The service-level objective that defines the knee of a ramp.
    #[serde(default)]
    pub knee: Option<Knee>,
    /// When a run measured the load generator or a busy machine rather
    /// than the stack.
    #[serde(default)]
    pub validity: ValidityLimits,
    /// How the load generator sends.
    #[serde(default)]
    pub load: LoadSection,
    /// CPU profiles to take during the run, one flame graph per process.
    #[serde(default)]
    pub profile: ProfileSection,
    /// What `--set` changed (key → value as given), for the run's summary;
    /// the stored scenario already holds the result.
    #[serde(skip)]
    pub overrides: BTreeMap<String, String>,
}

/// `[profile]`: which processes `perf` samples, and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileSection {
    /// `service` (every instance), `service-N`, `broker`, `reducer`,
    /// `postgres`, `redis` or `loadgen`.
    pub targets: Vec<String>,
    /// The phase to profile, by name; none: the whole load.
    pub phase: Option<String>,
    /// Samples per second per CPU the process runs on.
    pub frequency_hz: u32,
}

impl Default for ProfileSection {
    fn default() -> Self {
        ProfileSection {
            targets: Vec::new(),
            phase: None,
            frequency_hz: 499,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSection {
    /// Presses in flight at once, at most (each holds a connection). Past
    /// it, open-model sends wait, and their lateness is measured.
    pub max_in_flight: usize,
    /// Threads sending open-model presses, each with its own connections
    /// and its share of `max_in_flight`; 0 (the default): one per core.
    pub threads: usize,
}

impl Default for LoadSection {
    fn default() -> Self {
        LoadSection {
            max_in_flight: crate::load::MAX_IN_FLIGHT,
            threads: 0,
        }
    }
}

/// Limits past which a phase's figures are not the stack's: the run is
/// stored and marked invalid with the reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ValidityLimits {
    /// Sends started before the phase's planned end, over planned.
    pub min_sent_ratio: f64,
    /// How late sends may start against their due time (p99, ms).
    pub max_schedule_lag_p99_ms: f64,
    /// The load generator's mean CPU over a phase, in % of the cores it
    /// may use (the machine's).
    pub max_generator_cpu_pct: f64,
    /// Mean steal time over a phase, % of the machine.
    pub max_steal_pct: f64,
    /// Mean CPU of processes outside the stack and the load generator,
    /// % of the machine.
    pub max_foreign_pct: f64,
    /// How late the load generator's listeners may run (p99 of a 10 ms
    /// timer's lateness, ms), judged with 100 listeners or more: past it,
    /// commit-to-client latency is partly the generator's own queueing.
    pub max_observer_lag_p99_ms: f64,
    /// The host index before the load and after the drain (1.0: as fast
    /// as this machine kind's reference, see `loadgen host calibrate`):
    /// below it, every phase is invalid. A machine kind without a
    /// reference has no index, and this check says so without failing.
    pub min_host_index: f64,
    /// The median index of the light probes during a phase: what a
    /// runnable thread at the stack's priority got. The load's own
    /// contention lowers it; a quota or a stolen core lowers it further.
    pub min_host_index_during: f64,
}

impl Default for ValidityLimits {
    fn default() -> Self {
        ValidityLimits {
            min_sent_ratio: 0.99,
            max_schedule_lag_p99_ms: 10.0,
            max_generator_cpu_pct: 90.0,
            max_steal_pct: 5.0,
            max_foreign_pct: 5.0,
            max_observer_lag_p99_ms: 10.0,
            min_host_index: 0.9,
            min_host_index_during: 0.5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knee {
    /// The knee is the highest open-model rate whose phase kept every press
    /// and stayed under this p99 press-to-SSE latency.
    pub p99_press_to_sse_ms: f64,
    /// Stop the ramp once this many steps in a row missed the objective
    /// (0, the default: run every step). Past its knee a path's steps only
    /// add backlog: the generator falls ever further behind its plan and
    /// their latencies say nothing more.
    #[serde(default)]
    pub stop_after_misses: i64,
}

impl Knee {
    /// Consecutive missed steps that end the ramp, if the rule is on.
    pub fn stop_after(&self) -> Option<u32> {
        u32::try_from(self.stop_after_misses)
            .ok()
            .filter(|&n| n > 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    #[default]
    Local,
    Compose,
    External,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StackSection {
    pub driver: Driver,
    /// How a press reaches the reducer: `kafka` (the default), `outbox`
    /// (PostgreSQL's outbox and `button-relay`) or `direct` (PostgreSQL's
    /// `presses`, no broker).
    pub ingest: Ingest,
    /// Relays started with ingest `outbox`.
    pub relays: usize,
    pub partitions: i32,
    pub services: usize,
    /// Reducers started (local driver), fault targets `reducer`,
    /// `reducer-1`, ... With `[reducer] assignment = "group"` they share
    /// the partitions and fail over to each other; with `manual` (the
    /// default) every one reads every partition and the extra ones are
    /// standbys whose writes queue behind the first's.
    pub reducers: usize,
    /// The local broker's storage engine: `sqlite` or `memory`.
    pub broker_storage: String,
    /// The compose driver's file.
    pub compose_file: String,
    /// The external driver's addresses.
    pub service_url: Option<String>,
    pub reducer_url: Option<String>,
    pub database_url: Option<String>,
    /// Bootstrap servers the verdict reads the press topic from (external
    /// and compose drivers; the local driver knows its own).
    pub brokers: Option<String>,
    /// The press topic (external and compose drivers).
    pub topic: String,
}

impl Default for StackSection {
    fn default() -> Self {
        StackSection {
            driver: Driver::Local,
            ingest: Ingest::Kafka,
            relays: 1,
            partitions: 1,
            services: 1,
            reducers: 1,
            broker_storage: "sqlite".to_owned(),
            compose_file: "compose/docker-compose.yml".to_owned(),
            service_url: None,
            reducer_url: None,
            database_url: None,
            brokers: None,
            topic: "press_button".to_owned(),
        }
    }
}

/// One load step. Closed model: `users` (reached over `ramp_s`) press as
/// fast as answers come. Open model: `rate` presses per second, each timed
/// from when it was due.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    #[serde(default)]
    pub name: String,
    /// Whole seconds.
    pub duration_s: u64,
    #[serde(default)]
    pub users: Option<usize>,
    /// Whole seconds to reach `users` (closed model).
    #[serde(default)]
    pub ramp_s: u64,
    #[serde(default)]
    pub rate: Option<f64>,
    /// A warm-up: run and stored, but left out of the run's headline
    /// figures, its asserts, its validity and its cost per press.
    #[serde(default)]
    pub warmup: bool,
    /// What the phase's requests ask for: presses, or (open model only)
    /// the service's trivial `GET /health/live`, to measure what the HTTP
    /// stack alone serves with the same client.
    #[serde(default)]
    pub endpoint: Endpoint,
}

/// A phase's requests: `press` (`POST /v1/events/press`, the default) or
/// `live` (`GET /health/live`: no broker, no handler work, no press).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    #[default]
    Press,
    Live,
}

impl Phase {
    pub fn is_open(&self) -> bool {
        self.rate.is_some()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SseSection {
    /// State streams held open during the run; the first one also times
    /// produce-to-SSE.
    pub listeners: usize,
    /// How the listeners receive states: `sse` (`/v1/states/stream`) or
    /// `ws` (`/v1/states/ws`). A string, parsed in `validate`, so that a
    /// wrong value is an error naming `sse.transport`.
    pub transport: String,
}

impl Default for SseSection {
    fn default() -> Self {
        SseSection {
            listeners: 1,
            transport: Transport::Sse.to_string(),
        }
    }
}

impl SseSection {
    pub fn transport(&self) -> Transport {
        self.transport
            .parse()
            .expect("validated when the scenario was loaded")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    Kill,
    Stop,
    Pause,
    Resume,
    Restart,
    Start,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Seconds from the start of the load.
    pub at_s: f64,
    pub action: FaultAction,
    /// postgres, redis, broker, reducer, service, service-N.
    pub target: String,
    /// Undo after this many seconds: kill/stop → start, pause → resume.
    #[serde(default, rename = "for_s")]
    pub for_s: Option<f64>,
}

impl Fault {
    pub fn component(&self) -> Component {
        self.target
            .parse()
            .expect("validated when the scenario was loaded")
    }
}

/// Service-level objectives; any that fails makes the exit code non-zero.
/// `lost` and `duplicated` are always checked (they must be 0).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asserts {
    pub p99_press_ms: Option<f64>,
    pub p99_press_to_sse_ms: Option<f64>,
    pub p999_press_to_sse_ms: Option<f64>,
    pub p99_fanout_ms: Option<f64>,
    pub min_accepted_per_s: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub max_drain_s: Option<f64>,
    pub lost: Option<u64>,
    pub duplicated: Option<u64>,
}

/// `smoke` → `scenarios/smoke.toml`; a path stays a path.
pub fn resolve(name_or_path: &str) -> PathBuf {
    let path = PathBuf::from(name_or_path);
    if path.extension().is_some() || path.components().count() > 1 {
        path
    } else {
        PathBuf::from("scenarios").join(format!("{name_or_path}.toml"))
    }
}

pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let mut scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if scenario.name.is_empty() {
        scenario.name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario")
            .to_owned();
    }
    scenario.validate(path)?;
    Ok(scenario)
}

impl Scenario {
    /// Applies `KEY=VALUE` (`--set`): any key a sweep takes (`stack.ingest`,
    /// `reducer.batch_max`, `service.producer.linger.ms`, `phase.rate`),
    /// checked as a one-value sweep would be. The value is TOML (`20`,
    /// `"outbox"`) or, when it does not parse as TOML, a string.
    pub fn set(&mut self, path: &Path, assignment: &str) -> Result<(), ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.to_owned(),
            key: format!("--set {assignment}"),
            message,
        };
        let (key, raw) = assignment
            .split_once('=')
            .ok_or_else(|| invalid("is not KEY=VALUE".into()))?;
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
        let mut probe = self.clone();
        probe.sweep = BTreeMap::from([(key.to_owned(), vec![value.clone()])]);
        probe.validate(path)?;
        apply_override(self, key, &value);
        self.validate(path)?;
        self.overrides.insert(key.to_owned(), raw.to_owned());
        Ok(())
    }

    fn validate(&self, path: &Path) -> Result<(), ScenarioError> {
        let invalid = |key: String, message: String| ScenarioError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        if self.phases.is_empty() {
            return Err(invalid(
                "phase".into(),
                "at least one [[phase]] is needed".into(),
            ));
        }
        for (i, p) in self.phases.iter().enumerate() {
            let key = |k: &str| format!("phase[{i}].{k}");
            if p.duration_s == 0 {
                return Err(invalid(key("duration_s"), "must be > 0".into()));
            }
            match (p.users, p.rate) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        key("rate"),
                        "a phase has users (closed model) or rate (open model), not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        key("users"),
                        "a phase needs users (closed model) or rate (open model)".into(),
                    ));
                }
                (Some(0), _) => return Err(invalid(key("users"), "must be at least 1".into())),
                (_, Some(r)) if r.is_nan() || r <= 0.0 => {
                    return Err(invalid(key("rate"), "must be > 0".into()));
                }
                _ => {}
            }
            if p.endpoint == Endpoint::Live && !p.is_open() {
                return Err(invalid(
                    key("endpoint"),
                    "`live` needs an open-model phase (rate): a closed model's users press through the general client".into(),
                ));
            }
            if p.ramp_s > p.duration_s {
                return Err(invalid(
                    key("ramp_s"),
                    "must be between 0 and duration_s".into(),
                ));
            }
        }
        if self.stack.partitions < 1 {
            return Err(invalid(
                "stack.partitions".into(),
                "must be at least 1".into(),
            ));
        }
        if self.stack.services < 1 {
            return Err(invalid(
                "stack.services".into(),
                "must be at least 1".into(),
            ));
        }
        if self.stack.reducers < 1 {
            return Err(invalid(
                "stack.reducers".into(),
                "must be at least 1".into(),
            ));
        }
        if self.stack.relays < 1 {
            return Err(invalid("stack.relays".into(), "must be at least 1".into()));
        }
        self.check_ingest(&self.stack.ingest, self.stack.relays)
            .map_err(|(k, m)| invalid(k, m))?;
        self.stack
            .broker_storage
            .parse::<BrokerStorage>()
            .map_err(|e| invalid("stack.broker_storage".into(), e.to_string()))?;
        self.sse
            .transport
            .parse::<Transport>()
            .map_err(|e| invalid("sse.transport".into(), e.to_string()))?;
        match self.stack.driver {
            Driver::External => {
                for key in ["service_url", "reducer_url", "database_url"] {
                    let set = match key {
                        "service_url" => &self.stack.service_url,
                        "reducer_url" => &self.stack.reducer_url,
                        _ => &self.stack.database_url,
                    };
                    if set.is_none() {
                        return Err(invalid(
                            format!("stack.{key}"),
                            "is required by the external driver".into(),
                        ));
                    }
                }
                if !self.faults.is_empty() {
                    return Err(invalid(
                        "fault".into(),
                        "the external driver cannot inject faults".into(),
                    ));
                }
                let tunes = self.sweep.keys().any(|k| !k.starts_with("phase."));
                if !self.service.is_empty()
                    || !self.reducer.is_empty()
                    || !self.relay.is_empty()
                    || tunes
                {
                    return Err(invalid("stack.driver".into(), "an external stack is tuned by whoever runs it: no [service], [reducer], [relay] or tuning [sweep] keys".into()));
                }
            }
            Driver::Compose if self.stack.services != 1 => {
                return Err(invalid(
                    "stack.services".into(),
                    "the compose stack has one service instance".into(),
                ));
            }
            Driver::Compose if self.stack.reducers != 1 => {
                return Err(invalid(
                    "stack.reducers".into(),
                    "the compose stack has one reducer".into(),
                ));
            }
            _ => {}
        }
        for (i, f) in self.faults.iter().enumerate() {
            let component: Component = f.target.parse().map_err(|e: button_stack::Error| {
                invalid(format!("fault[{i}].target"), e.to_string())
            })?;
            if let Component::Service(n) = component
                && n >= self.stack.services
            {
                return Err(invalid(
                    format!("fault[{i}].target"),
                    format!("there are {} service instances", self.stack.services),
                ));
            }
            if let Some(why) = self.absent(component) {
                return Err(invalid(format!("fault[{i}].target"), why));
            }
            if f.at_s < 0.0 {
                return Err(invalid(format!("fault[{i}].at_s"), "must be >= 0".into()));
            }
        }
        if let Some(knee) = &self.knee {
            if knee.p99_press_to_sse_ms.is_nan() || knee.p99_press_to_sse_ms <= 0.0 {
                return Err(invalid(
                    "knee.p99_press_to_sse_ms".into(),
                    "must be > 0".into(),
                ));
            }
            if !(0..=u32::MAX as i64).contains(&knee.stop_after_misses) {
                return Err(invalid(
                    "knee.stop_after_misses".into(),
                    "must be 0 (run every step) or the number of consecutive missed steps that ends the ramp (1 or more)".into(),
                ));
            }
        }
        self.check_profile().map_err(|(k, m)| invalid(k, m))?;
        check_tuning(&self.service, &service_keys(), "service").map_err(|(k, m)| invalid(k, m))?;
        check_tuning(&self.reducer, &reducer_keys(), "reducer").map_err(|(k, m)| invalid(k, m))?;
        check_tuning(&self.relay, &relay_keys(), "relay").map_err(|(k, m)| invalid(k, m))?;
        for (key, values) in &self.sweep {
            let (section, rest) = key.split_once('.').unwrap_or((key.as_str(), ""));
            let known = match section {
                "service" => service_keys(),
                "reducer" => reducer_keys(),
                "relay" => relay_keys(),
                "phase" => {
                    self.check_rate_sweep(path, key, rest, values)?;
                    continue;
                }
                "stack" => {
                    self.check_stack_sweep(key, rest, values)
                        .map_err(|(k, m)| invalid(k, m))?;
                    continue;
                }
                "sse" => {
                    check_sse_sweep(key, rest, values).map_err(|(k, m)| invalid(k, m))?;
                    continue;
                }
                _ => {
                    return Err(invalid(
                        format!("sweep.\"{key}\""),
                        "must start with service., reducer., relay., stack., sse. or phase.".into(),
                    ));
                }
            };
            let first = rest.split('.').next().unwrap_or("");
            if !known.contains_key(first) {
                return Err(invalid(
                    format!("sweep.\"{key}\""),
                    format!("`{first}` is not a {section} key"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the stack, as configured, runs `component`; why not if not.
    fn absent(&self, component: Component) -> Option<String> {
        let ingest = self.stack.ingest;
        match component {
            Component::Broker if !ingest.uses_broker() => {
                Some("ingest `direct` starts no broker".into())
            }
            Component::Relay(_) if ingest != Ingest::Outbox => {
                Some(format!("relays run with ingest `outbox`, not `{ingest}`"))
            }
            Component::Relay(n) if n >= self.stack.relays => {
                Some(format!("there are {} relays", self.stack.relays))
            }
            Component::Reducer(n) if n >= self.stack.reducers => {
                Some(format!("there are {} reducers", self.stack.reducers))
            }
            _ => None,
        }
    }

    /// An ingest path the driver can start, with its relays.
    fn check_ingest(&self, ingest: &Ingest, relays: usize) -> Result<(), (String, String)> {
        if self.stack.driver == Driver::Compose && *ingest != Ingest::Kafka {
            return Err((
                "stack.ingest".into(),
                format!("the compose stack runs ingest `kafka` only, not `{ingest}`"),
            ));
        }
        if relays < 1 {
            return Err(("stack.relays".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    /// `stack.ingest`, `stack.relays`, `stack.services` and
    /// `stack.reducers`: the stack keys a sweep may vary (the rest, such as
    /// partitions, shape the topic every point shares).
    fn check_stack_sweep(
        &self,
        key: &str,
        rest: &str,
        values: &[toml::Value],
    ) -> Result<(), (String, String)> {
        let name = format!("sweep.\"{key}\"");
        for value in values {
            match rest {
                "ingest" => {
                    let ingest = value
                        .as_str()
                        .ok_or_else(|| (name.clone(), "values must be strings".to_owned()))?
                        .parse::<Ingest>()
                        .map_err(|e| (name.clone(), e.to_string()))?;
                    self.check_ingest(&ingest, self.stack.relays)
                        .map_err(|(_, m)| (name.clone(), m))?;
                }
                "relays" => {
                    let n = value.as_integer().filter(|n| *n >= 1).ok_or_else(|| {
                        (
                            name.clone(),
                            "values must be whole numbers of at least 1".to_owned(),
                        )
                    })?;
                    self.check_ingest(&self.stack.ingest, n as usize)
                        .map_err(|(_, m)| (name.clone(), m))?;
                }
                "services" | "reducers" => {
                    value.as_integer().filter(|n| *n >= 1).ok_or_else(|| {
                        (
                            name.clone(),
                            "values must be whole numbers of at least 1".to_owned(),
                        )
                    })?;
                    if self.stack.driver == Driver::Compose {
                        return Err((
                            name,
                            format!("the compose stack runs one {}", &rest[..rest.len() - 1]),
                        ));
                    }
                }
                _ => {
                    return Err((
                        name,
                        "only stack.ingest, stack.relays, stack.services and stack.reducers can be swept".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[profile]`: known processes, a phase that exists, a sane rate.
    pub fn check_profile(&self) -> Result<(), (String, String)> {
        let p = &self.profile;
        for (i, t) in p.targets.iter().enumerate() {
            let known = t == crate::profile::LOADGEN
                || match t.parse::<Component>() {
                    Ok(Component::Service(n)) => n < self.stack.services,
                    Ok(c) => self.absent(c).is_none(),
                    // Every relay, like `service` is every instance.
                    Err(_) => t == "relay" && self.stack.ingest == Ingest::Outbox,
                };
            if !known {
                return Err((
                    format!("profile.targets[{i}]"),
                    format!(
                        "`{t}` is not a process of this stack: service, service-N (N < {}), broker, reducer, reducer-N (N < [stack] reducers), postgres, redis, relay, relay-N (ingest outbox) or loadgen",
                        self.stack.services
                    ),
                ));
            }
        }
        if let Some(phase) = &p.phase
            && !self.phases.iter().any(|ph| &ph.name == phase)
        {
            return Err((
                "profile.phase".into(),
                format!("no phase is named `{phase}`"),
            ));
        }
        if !(1..=20_000).contains(&p.frequency_hz) {
            return Err((
                "profile.frequency_hz".into(),
                "must be between 1 and 20000".into(),
            ));
        }
        Ok(())
    }

    /// `phase.rate`: every phase runs at each rate in turn, so the sweep
    /// finds the knee of each tuning point.
    fn check_rate_sweep(
        &self,
        path: &Path,
        key: &str,
        rest: &str,
        values: &[toml::Value],
    ) -> Result<(), ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.to_owned(),
            key: format!("sweep.\"{key}\""),
            message,
        };
        if rest != "rate" {
            return Err(invalid(format!(
                "`{rest}` cannot be swept; of a phase, only `rate` can"
            )));
        }
        if let Some(i) = self.phases.iter().position(|p| !p.is_open()) {
            return Err(invalid(format!(
                "phase[{i}] has no rate (a closed-model phase): a rate sweep needs open-model phases"
            )));
        }
        for v in values {
            if !v
                .as_float()
                .or(v.as_integer().map(|i| i as f64))
                .is_some_and(|r| r > 0.0)
            {
                return Err(invalid(format!("{v} is not a positive rate")));
            }
        }
        Ok(())
    }

    /// `BUTTON_*` variables for the service from `[service]`.
    pub fn service_env(&self) -> BTreeMap<String, String> {
        to_env(&self.service)
    }

    pub fn reducer_env(&self) -> BTreeMap<String, String> {
        to_env(&self.reducer)
    }

    pub fn relay_env(&self) -> BTreeMap<String, String> {
        to_env(&self.relay)
    }

    pub fn total_duration_s(&self) -> u64 {
        self.phases.iter().map(|p| p.duration_s).sum()
    }
}

/// Keys of a binary's configuration and whether they hold librdkafka tables.
fn keys_of(value: serde_json::Value) -> BTreeMap<String, bool> {
    value
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.is_object())).collect())
        .unwrap_or_default()
}

fn service_keys() -> BTreeMap<String, bool> {
    keys_of(serde_json::to_value(button_service::Config::default()).unwrap_or_default())
}

fn reducer_keys() -> BTreeMap<String, bool> {
    keys_of(serde_json::to_value(button_reducer::Config::default()).unwrap_or_default())
}

fn relay_keys() -> BTreeMap<String, bool> {
    keys_of(serde_json::to_value(button_relay::Config::default()).unwrap_or_default())
}

/// Addresses and names belong to the stack, not to a scenario.
const OWNED_BY_STACK: &[&str] = &[
    "http_addr",
    "database_url",
    "redis_url",
    "kafka_brokers",
    "topic",
    "dlq_topic",
    // `[stack] ingest`: every process must agree on it.
    "ingest",
];

fn check_tuning(
    table: &toml::Table,
    known: &BTreeMap<String, bool>,
    section: &str,
) -> Result<(), (String, String)> {
    for (key, value) in table {
        let name = format!("{section}.{key}");
        match known.get(key) {
            None => {
                return Err((
                    name,
                    format!("unknown {section} key (see the README's button-{section} table)"),
                ));
            }
            Some(_) if OWNED_BY_STACK.contains(&key.as_str()) => {
                return Err((name, "is set by the stack driver, not by a scenario".into()));
            }
            Some(true) if !value.is_table() => {
                return Err((name, "must be a table of librdkafka properties".into()));
            }
            Some(false) if value.is_table() || value.is_array() => {
                return Err((name, "must be a single value".into()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn scalar(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn to_env(table: &toml::Table) -> BTreeMap<String, String> {
    table
        .iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::Table(props) => props
                    .iter()
                    .map(|(k, v)| format!("{k}={}", scalar(v)))
                    .collect::<Vec<_>>()
                    .join(","),
                other => scalar(other),
            };
            (format!("BUTTON_{}", key.to_uppercase()), text)
        })
        .collect()
}

/// Sets `section.key[.property]` to `value` (a sweep point).
/// `sse.transport` (`sse` or `ws`) and `sse.listeners` (at least 1).
fn check_sse_sweep(key: &str, rest: &str, values: &[toml::Value]) -> Result<(), (String, String)> {
    let name = format!("sweep.\"{key}\"");
    for value in values {
        match rest {
            "transport" => {
                value
                    .as_str()
                    .ok_or_else(|| (name.clone(), "values must be strings".to_owned()))?
                    .parse::<Transport>()
                    .map_err(|e| (name.clone(), e.to_string()))?;
            }
            "listeners" => {
                value.as_integer().filter(|n| *n >= 1).ok_or_else(|| {
                    (
                        name.clone(),
                        "values must be whole numbers of at least 1".to_owned(),
                    )
                })?;
            }
            _ => {
                return Err((
                    name,
                    "only sse.transport and sse.listeners can be swept".into(),
                ));
            }
        }
    }
    Ok(())
}

pub fn apply_override(scenario: &mut Scenario, key: &str, value: &toml::Value) {
    let (section, rest) = key.split_once('.').unwrap_or((key, ""));
    if section == "phase" {
        // Checked when the scenario was read: `rate`, positive.
        let rate = value.as_float().or(value.as_integer().map(|i| i as f64));
        for phase in &mut scenario.phases {
            phase.rate = rate;
        }
        return;
    }
    if section == "stack" {
        // Checked when the scenario was read: a known path, counts >= 1.
        let count = value.as_integer().map(|n| n.max(1) as usize);
        match (rest, count) {
            ("ingest", _) => {
                if let Some(ingest) = value.as_str().and_then(|v| v.parse().ok()) {
                    scenario.stack.ingest = ingest;
                }
            }
            ("services", Some(n)) => scenario.stack.services = n,
            ("reducers", Some(n)) => scenario.stack.reducers = n,
            (_, Some(n)) => scenario.stack.relays = n,
            _ => {}
        }
        return;
    }
    if section == "sse" {
        // Checked when the scenario was read: `sse` or `ws`, listeners >= 1.
        match (rest, value.as_integer()) {
            ("listeners", Some(n)) => scenario.sse.listeners = n.max(1) as usize,
            _ => {
                if let Some(t) = value.as_str() {
                    scenario.sse.transport = t.to_owned();
                }
            }
        }
        return;
    }
    let table = match section {
        "service" => &mut scenario.service,
        "relay" => &mut scenario.relay,
        _ => &mut scenario.reducer,
    };
    match rest.split_once('.') {
        // A librdkafka property: `service.producer.linger.ms`.
        Some((sub, property)) => {
            let entry = table
                .entry(sub.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                t.insert(property.to_owned(), value.clone());
            }
        }
        None => {
            table.insert(rest.to_owned(), value.clone());
        }
    }
}

/// Every combination of the sweep's values, as (key, value) lists.
pub fn sweep_points(sweep: &BTreeMap<String, Vec<toml::Value>>) -> Vec<Vec<(String, toml::Value)>> {
    let mut points = vec![Vec::new()];
    for (key, values) in sweep {
        points = points
            .into_iter()
            .flat_map(|point| {
                values.iter().map(move |v| {
                    let mut p = point.clone();
                    p.push((key.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[phase]]\nduration_s = 5\nrate = 100\n";

    fn parse_str(text: &str) -> Result<Scenario, ScenarioError> {
        parse(Path::new("scenarios/test.toml"), text)
    }

    #[test]
    fn minimal_scenario_gets_defaults_and_its_name() {
        let s = parse_str(MINIMAL).expect("valid");
        assert_eq!(s.name, "test");
        assert_eq!(s.stack.partitions, 1);
        assert_eq!(s.sse.listeners, 1);
        assert!(s.phases[0].is_open());
    }

    #[test]
    fn a_typo_names_the_key_and_the_file() {
        let err = parse_str(&format!("[stack]\npartitons = 2\n{MINIMAL}"))
            .expect_err("typo")
            .to_string();
        assert!(
            err.contains("scenarios/test.toml") && err.contains("partitons"),
            "{err}"
        );
        let err = parse_str("[[phase]]\nduration_s = 5\nrate = 1\nusres = 3\n")
            .expect_err("typo")
            .to_string();
        assert!(err.contains("usres"), "{err}");
    }

    #[test]
    fn unknown_tuning_keys_are_named() {
        let err = parse_str(&format!("[reducer]\nbatch_maxx = 5\n{MINIMAL}"))
            .expect_err("typo")
            .to_string();
        assert!(err.contains("reducer.batch_maxx"), "{err}");
        let err = parse_str(&format!("[service]\ndatabase_url = \"x\"\n{MINIMAL}"))
            .expect_err("owned")
            .to_string();
        assert!(
            err.contains("service.database_url") && err.contains("stack driver"),
            "{err}"
        );
        let err = parse_str(&format!("[sweep]\n\"reducer.nope\" = [1]\n{MINIMAL}"))
            .expect_err("sweep")
            .to_string();
        assert!(err.contains("reducer.nope"), "{err}");
    }

    #[test]
    fn phases_need_exactly_one_model() {
        let err = parse_str("[[phase]]\nduration_s = 5\n")
            .expect_err("no model")
            .to_string();
        assert!(err.contains("phase[0].users"), "{err}");
        let err = parse_str("[[phase]]\nduration_s = 5\nusers = 2\nrate = 3\n")
            .expect_err("both")
            .to_string();
        assert!(err.contains("phase[0].rate"), "{err}");
        let err = parse_str("[[phase]]\nduration_s = 0\nrate = 3\n")
            .expect_err("zero")
            .to_string();
        assert!(err.contains("phase[0].duration_s"), "{err}");
        let err = parse_str("").expect_err("none").to_string();
        assert!(err.contains("phase"), "{err}");
    }

    #[test]
    fn a_live_endpoint_needs_an_open_model_phase() {
        let s = parse_str(&format!(
            "{MINIMAL}[[phase]]\nduration_s = 2\nrate = 500\nendpoint = \"live\"\n"
        ))
        .expect("valid");
        assert_eq!(s.phases[0].endpoint, Endpoint::Press);
        assert_eq!(s.phases[1].endpoint, Endpoint::Live);
        let err = parse_str("[[phase]]\nduration_s = 5\nusers = 2\nendpoint = \"live\"\n")
            .expect_err("closed model")
            .to_string();
        assert!(
            err.contains("phase[0].endpoint") && err.contains("scenarios/test.toml"),
            "{err}"
        );
        let err = parse_str("[[phase]]\nduration_s = 5\nrate = 2\nendpoint = \"ready\"\n")
            .expect_err("unknown endpoint")
            .to_string();
        assert!(err.contains("ready"), "{err}");
    }

    #[test]
    fn fault_targets_and_storage_are_checked() {
        let err = parse_str(&format!(
            "{MINIMAL}[[fault]]\nat_s = 1\naction = \"kill\"\ntarget = \"reduser\"\n"
        ))
        .expect_err("target")
        .to_string();
        assert!(
            err.contains("fault[0].target") && err.contains("reduser"),
            "{err}"
        );
        let err = parse_str(&format!(
            "{MINIMAL}[[fault]]\nat_s = 1\naction = \"explode\"\ntarget = \"reducer\"\n"
        ))
        .expect_err("action")
        .to_string();
        assert!(err.contains("explode"), "{err}");
        let err = parse_str(&format!("[stack]\nbroker_storage = \"s3\"\n{MINIMAL}"))
            .expect_err("storage")
            .to_string();
        assert!(err.contains("stack.broker_storage"), "{err}");
    }

    #[test]
    fn the_listeners_transport_is_sse_or_ws() {
        assert_eq!(
            parse_str(MINIMAL).expect("valid").sse.transport(),
            Transport::Sse
        );
        let s = parse_str(&format!(
            "[sse]\ntransport = \"ws\"\nlisteners = 2\n{MINIMAL}"
        ))
        .expect("valid");
        assert_eq!((s.sse.transport(), s.sse.listeners), (Transport::Ws, 2));
        let s = parse_str(&format!("[sse]\ntransport = \"sse\"\n{MINIMAL}")).expect("valid");
        assert_eq!(s.sse.transport(), Transport::Sse);
        let err = parse_str(&format!("[sse]\ntransport = \"websocket\"\n{MINIMAL}"))
            .expect_err("unknown transport")
            .to_string();
        assert!(
            err.contains("scenarios/test.toml")
                && err.contains("sse.transport")
                && err.contains("websocket"),
            "{err}"
        );
    }

    #[test]
    fn tuning_becomes_environment() {
        let s = parse_str(&format!(
            "[service.producer]\n\"linger.ms\" = 5\n\"compression.type\" = \"lz4\"\n[reducer]\nbatch_max = 100\n{MINIMAL}"
        ))
        .expect("valid");
        assert_eq!(
            s.service_env()["BUTTON_PRODUCER"],
            "compression.type=lz4,linger.ms=5"
        );
        assert_eq!(s.reducer_env()["BUTTON_BATCH_MAX"], "100");
    }

    #[test]
    fn sweeps_are_cartesian_and_apply_to_tuning() {
        let mut s = parse_str(&format!(
            "[sweep]\n\"reducer.batch_max\" = [1, 10, 100]\n\"reducer.batch_linger_ms\" = [0, 5, 20]\n\"service.producer.linger.ms\" = [0, 5]\n{MINIMAL}"
        ))
        .expect("valid");
        let points = sweep_points(&s.sweep);
        assert_eq!(points.len(), 18);
        for (k, v) in &points[17] {
            apply_override(&mut s, k, v);
        }
        assert_eq!(s.reducer_env()["BUTTON_BATCH_MAX"], "100");
        assert_eq!(s.service_env()["BUTTON_PRODUCER"], "linger.ms=5");
    }

    #[test]
    fn ingest_is_a_stack_key_that_sweeps_and_sets() {
        let s = parse_str(&format!(
            "[stack]\ningest = \"outbox\"\nrelays = 2\n{MINIMAL}"
        ))
        .expect("valid");
        assert_eq!((s.stack.ingest, s.stack.relays), (Ingest::Outbox, 2));
        let s = parse_str(&format!(
            "[sweep]\n\"stack.ingest\" = [\"kafka\", \"outbox\", \"direct\"]\n{MINIMAL}"
        ))
        .expect("valid");
        let mut points = Vec::new();
        for point in sweep_points(&s.sweep) {
            let mut p = s.clone();
            for (k, v) in &point {
                apply_override(&mut p, k, v);
            }
            points.push(p.stack.ingest);
        }
        assert_eq!(points, Ingest::ALL);
        for (text, key, wrong) in [
            (
                "[stack]\ningest = \"rabbit\"",
                "",
                "unknown variant `rabbit`",
            ),
            (
                "[sweep]\n\"stack.ingest\" = [\"rabbit\"]",
                "sweep.\"stack.ingest\"",
                "unknown ingest path `rabbit`",
            ),
            (
                "[sweep]\n\"stack.partitions\" = [1]",
                "sweep.\"stack.partitions\"",
                "only stack.ingest, stack.relays, stack.services and stack.reducers",
            ),
            (
                "[service]\ningest = \"direct\"",
                "service.ingest",
                "set by the stack driver",
            ),
            (
                "[[fault]]\nat_s = 1\naction = \"kill\"\ntarget = \"relay\"",
                "fault[0].target",
                "relays run with ingest `outbox`",
            ),
            (
                "[stack]\ningest = \"direct\"\n[[fault]]\nat_s = 1\naction = \"kill\"\ntarget = \"broker\"",
                "fault[0].target",
                "starts no broker",
            ),
            (
                "[stack]\ningest = \"outbox\"\n[[fault]]\nat_s = 1\naction = \"kill\"\ntarget = \"relay-1\"",
                "fault[0].target",
                "there are 1 relays",
            ),
            (
                "[stack]\ndriver = \"compose\"\ningest = \"outbox\"",
                "stack.ingest",
                "compose stack runs ingest `kafka` only",
            ),
            ("[relay]\nnope = 1", "relay.nope", "unknown relay key"),
        ] {
            let err = parse_str(&format!("{text}\n{MINIMAL}"))
                .expect_err(text)
                .to_string();
            assert!(err.contains(key) && err.contains(wrong), "{text}: {err}");
        }
    }

    #[test]
    fn set_overrides_one_key_as_a_sweep_point_would() {
        let path = Path::new("scenarios/test.toml");
        let mut s = parse_str(MINIMAL).expect("valid");
        s.set(path, "stack.ingest=direct").expect("a path");
        s.set(path, "reducer.batch_max=7").expect("a number");
        s.set(path, "service.producer.linger.ms=5")
            .expect("a property");
        assert_eq!(s.stack.ingest, Ingest::Direct);
        assert_eq!(s.reducer["batch_max"].as_integer(), Some(7));
        assert_eq!(
            s.service_env().get("BUTTON_PRODUCER").map(String::as_str),
            Some("linger.ms=5")
        );
        for (set, wrong) in [
            ("stack.ingest", "is not KEY=VALUE"),
            ("stack.ingest=rabbit", "unknown ingest path"),
            ("reducer.nope=1", "`nope` is not a reducer key"),
        ] {
            let err = s.set(path, set).expect_err(set).to_string();
            assert!(
                err.contains(&format!("--set {set}")) || err.contains(wrong),
                "{err}"
            );
            assert!(err.contains(wrong), "{set}: {err}");
        }
        assert_eq!(
            s.stack.ingest,
            Ingest::Direct,
            "a refused --set changes nothing"
        );
    }

    #[test]
    fn instances_and_listeners_can_be_set_from_the_command_line() {
        let mut s = parse_str(MINIMAL).expect("parses");
        for (key, value) in [
            ("stack.services", toml::Value::Integer(2)),
            ("stack.reducers", toml::Value::Integer(3)),
            ("sse.transport", toml::Value::String("ws".into())),
            ("sse.listeners", toml::Value::Integer(500)),
        ] {
            let checked = parse_str(&format!("[sweep]\n\"{key}\" = [{value}]\n{MINIMAL}"));
            assert!(checked.is_ok(), "{key}: {checked:?}");
            apply_override(&mut s, key, &value);
        }
        assert_eq!((s.stack.services, s.stack.reducers), (2, 3));
        assert_eq!((s.sse.transport(), s.sse.listeners), (Transport::Ws, 500));
        for (sweep, wrong) in [
            (
                "\"sse.transport\" = [\"pigeon\"]",
                "sweep.\"sse.transport\"",
            ),
            ("\"sse.listeners\" = [0]", "at least 1"),
            (
                "\"sse.keepalive\" = [1]",
                "only sse.transport and sse.listeners",
            ),
            ("\"stack.services\" = [0]", "at least 1"),
        ] {
            let err = parse_str(&format!("[sweep]\n{sweep}\n{MINIMAL}"))
                .expect_err(sweep)
                .to_string();
            assert!(err.contains(wrong), "{sweep}: {err}");
        }
    }

    #[test]
    fn a_rate_sweep_sets_every_phase() {
        let two_phases =
            "[[phase]]\nduration_s = 5\nrate = 100\n[[phase]]\nduration_s = 5\nrate = 300\n";
        let mut s = parse_str(&format!(
            "[sweep]\n\"phase.rate\" = [500, 2500.5]\n\"reducer.batch_max\" = [10, 1000]\n{two_phases}"
        ))
        .expect("valid");
        let points = sweep_points(&s.sweep);
        assert_eq!(points.len(), 4);
        // Keys in order: phase.rate, then reducer.batch_max.
        for (k, v) in &points[2] {
            apply_override(&mut s, k, v);
        }
        assert!(
            s.phases.iter().all(|p| p.rate == Some(2500.5)),
            "{:?}",
            s.phases
        );
        assert_eq!(s.reducer_env()["BUTTON_BATCH_MAX"], "10");

        for (sweep, wrong) in [
            ("\"phase.duration_s\" = [5]", "only `rate` can"),
            ("\"phase.rate\" = [0]", "not a positive rate"),
            ("\"phase.rate\" = [\"fast\"]", "not a positive rate"),
            (
                "\"load.rate\" = [5]",
                "must start with service., reducer., relay., stack., sse. or phase.",
            ),
        ] {
            let err = parse_str(&format!("[sweep]\n{sweep}\n{MINIMAL}"))
                .expect_err(sweep)
                .to_string();
            assert!(
                err.contains(wrong) && err.contains("scenarios/test.toml"),
                "{err}"
            );
        }
        let err =
            parse_str("[sweep]\n\"phase.rate\" = [5]\n[[phase]]\nduration_s = 5\nusers = 3\n")
                .expect_err("closed model")
                .to_string();
        assert!(err.contains("phase[0] has no rate"), "{err}");
        let external = "[stack]\ndriver = \"external\"\nservice_url = \"http://a\"\nreducer_url = \"http://b\"\ndatabase_url = \"postgres://c\"\n";
        parse_str(&format!(
            "{external}[sweep]\n\"phase.rate\" = [5, 10]\n{MINIMAL}"
        ))
        .expect("an external stack can be swept over rates");
    }

    #[test]
    fn drivers_check_what_they_need() {
        let err = parse_str(&format!("[stack]\ndriver = \"external\"\n{MINIMAL}"))
            .expect_err("urls")
            .to_string();
        assert!(err.contains("stack.service_url"), "{err}");
        let ok = format!(
            "[stack]\ndriver = \"external\"\nservice_url = \"http://a\"\nreducer_url = \"http://b\"\ndatabase_url = \"postgres://c\"\n{MINIMAL}"
        );
        parse_str(&ok).expect("complete external stack");
        let err = parse_str(&format!(
            "{ok}[[fault]]\nat_s = 1\naction = \"kill\"\ntarget = \"reducer\"\n"
        ))
        .expect_err("faults")
        .to_string();
        assert!(err.contains("cannot inject faults"), "{err}");
        let err = parse_str(&format!(
            "[stack]\ndriver = \"compose\"\nservices = 2\n{MINIMAL}"
        ))
        .expect_err("one")
        .to_string();
        assert!(err.contains("stack.services"), "{err}");
        let err = parse_str(&format!("[stack]\ndriver = \"docker\"\n{MINIMAL}"))
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("docker"), "{err}");
    }

    #[test]
    fn the_stop_rule_is_off_by_default_and_checked() {
        let knee = |extra: &str| format!("[knee]\np99_press_to_sse_ms = 100\n{extra}{MINIMAL}");
        let s = parse_str(&knee("")).expect("valid");
        assert_eq!(s.knee.as_ref().and_then(Knee::stop_after), None);
        let s = parse_str(&knee("stop_after_misses = 2\n")).expect("valid");
        assert_eq!(s.knee.as_ref().and_then(Knee::stop_after), Some(2));
        let err = parse_str(&knee("stop_after_misses = -1\n"))
            .expect_err("negative")
            .to_string();
        assert!(
            err.contains("knee.stop_after_misses") && err.contains("scenarios/test.toml"),
            "{err}"
        );
        let err = parse_str(&knee("stop_after_mises = 1\n"))
            .expect_err("typo")
            .to_string();
        assert!(err.contains("stop_after_mises"), "{err}");
    }

    #[test]
    fn names_resolve_to_the_scenarios_folder() {
        assert_eq!(resolve("smoke"), PathBuf::from("scenarios/smoke.toml"));
        assert_eq!(resolve("my/own.toml"), PathBuf::from("my/own.toml"));
    }

    #[test]
    fn a_profile_names_processes_of_the_stack_and_a_phase_of_the_scenario() {
        let two = "[stack]\nservices = 2\n[[phase]]\nname = \"hot\"\nduration_s = 1\nrate = 1\n";
        let s = parse_str(&format!(
            "{two}[profile]\ntargets = [\"service\", \"service-1\", \"broker\", \"loadgen\"]\nphase = \"hot\"\n"
        ))
        .expect("valid");
        assert_eq!(s.profile.frequency_hz, 499);
        for (profile, key) in [
            ("targets = [\"service-2\"]", "profile.targets[0]"),
            ("targets = [\"broker\", \"nginx\"]", "profile.targets[1]"),
            ("phase = \"cold\"", "profile.phase"),
            ("frequency_hz = 0", "profile.frequency_hz"),
        ] {
            let err = parse_str(&format!("{two}[profile]\n{profile}\n"))
                .expect_err(profile)
                .to_string();
            assert!(err.contains(key), "{profile}: {err}");
        }
    }

    #[test]
    fn the_replicas_scenario_kills_the_second_of_two_instances_and_brings_it_back() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/replicas-service-kill.toml");
        let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.stack.services, 2);
        assert_eq!(s.faults.len(), 1);
        let f = &s.faults[0];
        assert_eq!(
            (f.at_s, f.action, f.component(), f.for_s),
            (10.0, FaultAction::Kill, Component::Service(1), Some(5.0))
        );
        assert_eq!(s.phases[0].rate, Some(1000.0));
        assert_eq!((s.asserts.lost, s.asserts.duplicated), (Some(0), Some(0)));
    }

    #[test]
    fn reducers_are_counted_and_each_one_is_a_fault_target() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/reducer-group-kill.toml");
        let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.stack.reducers, 2);
        assert_eq!(s.stack.partitions, 4);
        assert_eq!(s.reducer["assignment"].as_str(), Some("group"));
        assert_eq!(s.faults[0].target, "reducer-1");
        assert_eq!(
            s.faults[0].target.parse::<Component>().ok(),
            Some(Component::Reducer(1))
        );
        assert_eq!(Component::Reducer(0).to_string(), "reducer");
        assert_eq!(Component::Reducer(1).to_string(), "reducer-1");
        assert_eq!(
            "reducer-0".parse::<Component>().ok(),
            Some(Component::Reducer(0))
        );

        let one =
            format!("[[fault]]\nat_s = 1\naction = \"kill\"\ntarget = \"reducer-1\"\n{MINIMAL}");
        let err = parse(Path::new("scenarios/test.toml"), &one)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fault[0].target") && err.contains("1 reducers"),
            "{err}"
        );
        let none = format!("[stack]\nreducers = 0\n{MINIMAL}");
        let err = parse(Path::new("scenarios/test.toml"), &none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("stack.reducers"), "{err}");
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 1);
    }
}
