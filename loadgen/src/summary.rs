//! The judge stage: what a stored run says (`summary.json`, one typed
//! schema for writing and reading it back), and the pure functions that
//! decide it from what the run measured: each phase's validity, the cost
//! of a press by process, the knee, the asserts, each fault's impact.

use crate::faults::FaultEvent;
use crate::measure::Percentiles;
use crate::sample::{LOADGEN, Row};
use crate::scenario::{Endpoint, Scenario, ValidityLimits};
use crate::verdict::Verdict;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Whether a run's (or a phase's) figures are the stack's: `valid`, or
/// every reason they are not.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Validity {
    pub valid: bool,
    pub reasons: Vec<String>,
}

impl Validity {
    pub fn of(reasons: Vec<String>) -> Validity {
        Validity {
            valid: reasons.is_empty(),
            reasons,
        }
    }

    pub fn describe(&self) -> String {
        if self.valid {
            "valid".to_owned()
        } else {
            format!("INVALID: {}", self.reasons.join("; "))
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseSummary {
    pub name: String,
    pub start_s: f64,
    pub duration_s: f64,
    pub rate: Option<f64>,
    pub users: Option<usize>,
    #[serde(default)]
    pub warmup: bool,
    /// `press`, or `live`: a phase of `GET /health/live` checks, whose
    /// figures are of those (`served`, not `accepted`).
    #[serde(default)]
    pub endpoint: Endpoint,
    /// Presses the plan had due in this phase (open model; a closed
    /// model plans what it sends).
    #[serde(default)]
    pub planned: u64,
    pub sent: u64,
    /// Sends that started before the phase's planned end.
    #[serde(default)]
    pub sent_on_time: u64,
    pub accepted: u64,
    /// Requests that ended with no answer at all.
    #[serde(default)]
    pub unanswered: u64,
    /// From the phase's start to its last answer, at least its planned
    /// length: a phase the generator sent late took longer.
    #[serde(default)]
    pub span_s: f64,
    /// Accepted presses over `span_s`.
    pub accepted_per_s: f64,
    /// Live checks answered 200 (a `live` phase), and those over `span_s`.
    #[serde(default)]
    pub served: u64,
    #[serde(default)]
    pub served_per_s: f64,
    /// From due time to answer: of presses, or of a `live` phase's checks.
    pub press_latency: Percentiles,
    pub press_to_sse: Percentiles,
    /// How late sends started against their due time.
    #[serde(default)]
    pub schedule_lag: Percentiles,
    /// Mean CPU of each process over the phase, % of one core, and of the
    /// machine's steal and foreign share, % of the machine.
    #[serde(default)]
    pub cpu_pct: BTreeMap<String, f64>,
    #[serde(default)]
    pub steal_pct: Option<f64>,
    #[serde(default)]
    pub foreign_pct: Option<f64>,
    /// The median host index of the light probes during this phase (see
    /// [`crate::host`]); none without a reference or a probe in it.
    #[serde(default)]
    pub host_index_during: Option<f64>,
    #[serde(default)]
    pub validity: Validity,
    /// The ramp's stop rule ended the load before this phase: it sent
    /// nothing and has no figures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_run: bool,
}

/// Why a ramp ended before its last step (`[knee] stop_after_misses`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RampStop {
    /// The step whose miss ended the ramp.
    pub after: String,
    /// The consecutive missed steps, each with why it missed, judged at
    /// its planned end.
    pub missed: Vec<StepMiss>,
    /// The phases that were not run.
    pub not_run: Vec<String>,
}

impl RampStop {
    pub fn describe(&self) -> String {
        let steps = if self.missed.len() == 1 {
            "step"
        } else {
            "steps"
        };
        let why: Vec<String> = self
            .missed
            .iter()
            .map(|m| format!("{}: {}", m.phase, m.reason))
            .collect();
        format!(
            "stopped: {} {steps} missed the objective ({}); not run: {}",
            self.missed.len(),
            why.join("; "),
            if self.not_run.is_empty() {
                "none".to_owned()
            } else {
                self.not_run.join(", ")
            }
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMiss {
    pub phase: String,
    pub reason: String,
}

/// The stop rule: counts consecutive missed steps; a step that met the
/// objective starts the count again.
#[derive(Debug, Clone)]
pub struct StopRule {
    after: usize,
    missed: Vec<StepMiss>,
}

impl StopRule {
    pub fn new(after: u32) -> StopRule {
        StopRule {
            after: (after as usize).max(1),
            missed: Vec::new(),
        }
    }

    /// One step judged (`miss`: why it missed, none if it met the
    /// objective); true when the ramp stops here.
    pub fn step(&mut self, phase: &str, miss: Option<String>) -> bool {
        match miss {
            Some(reason) => self.missed.push(StepMiss {
                phase: phase.to_owned(),
                reason,
            }),
            None => self.missed.clear(),
        }
        self.missed.len() >= self.after
    }

    pub fn missed(&self) -> &[StepMiss] {
        &self.missed
    }
}

/// What a step measured by its planned end, to judge it then.
#[derive(Debug, Clone, Default)]
pub struct StepSoFar {
    pub planned: u64,
    pub sent_on_time: u64,
    /// Presses answered, and of those accepted.
    pub answered: u64,
    pub accepted: u64,
    pub schedule_lag_p99_ms: f64,
    /// Of the presses the tracking client has seen (none yet for outbox
    /// presses: theirs is known once the topic is read after the load).
    pub press_to_sse: Percentiles,
}

/// Why a step misses the objective by its planned end, none if it meets
/// it so far. The knee's own tests where they can be judged then: the
/// generator kept to the plan (the validity limits on sends on time and
/// on lateness, so a generator hopelessly behind misses at once), no
/// press failed, and the p99 press-to-SSE of the presses seen is within
/// the limit.
pub fn step_miss(limit_ms: f64, limits: &ValidityLimits, step: &StepSoFar) -> Option<String> {
    if step.planned > 0 {
        let ratio = step.sent_on_time as f64 / step.planned as f64;
        if ratio < limits.min_sent_ratio {
            return Some(format!(
                "generator fell behind: sent {} of {} planned presses on time ({:.1}%)",
                step.sent_on_time,
                step.planned,
                ratio * 100.0
            ));
        }
    }
    if step.schedule_lag_p99_ms > limits.max_schedule_lag_p99_ms {
        return Some(format!(
            "generator fell behind: sends started {:.1} ms late at p99",
            step.schedule_lag_p99_ms
        ));
    }
    if step.answered > step.accepted {
        return Some(format!("{} presses failed", step.answered - step.accepted));
    }
    if step.press_to_sse.count > 0 && step.press_to_sse.p99_ms > limit_ms {
        return Some(format!(
            "p99 press-to-SSE {:.1} ms over {limit_ms} ms",
            step.press_to_sse.p99_ms
        ));
    }
    None
}

/// The knee, as a report prints it: a ramp whose last step still met the
/// objective only shows the knee is at least that.
pub fn knee_text(knee: f64, lower_bound: bool) -> String {
    if lower_bound {
        format!("≥ {} (the ramp's last step)", thousands(knee))
    } else {
        format!("{knee}")
    }
}

/// `16000` → `16,000`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// Whether the phase is a step of a ramp: a steady open-model press phase.
fn is_step(p: &PhaseSummary) -> bool {
    !p.warmup && p.endpoint == Endpoint::Press && p.rate.is_some()
}

/// Whether the knee is the ramp's last planned step: the ramp never found
/// where the stack stops meeting the objective.
pub fn knee_is_lower_bound(knee: Option<f64>, phases: &[PhaseSummary]) -> bool {
    let last = phases.iter().rfind(|p| is_step(p));
    match (knee, last) {
        (Some(k), Some(last)) => !last.not_run && last.rate == Some(k),
        _ => false,
    }
}

/// Whether the service asked for proof of work and limited rates during
/// the run, as its `/health` said at the start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GuardsInfo {
    pub pow_difficulty: u32,
    pub rate_limit_per_s: f64,
    pub rate_limit_burst: u32,
}

impl GuardsInfo {
    pub fn describe(&self) -> String {
        let pow = match self.pow_difficulty {
            0 => "proof of work off".to_owned(),
            d => format!("proof of work {d} bits"),
        };
        let rate = if self.rate_limit_per_s > 0.0 {
            format!(
                "rate limit {}/s per client, burst {}",
                self.rate_limit_per_s, self.rate_limit_burst
            )
        } else {
            "rate limits off".to_owned()
        };
        format!("{pow}, {rate}")
    }
}

/// What one scenario fault did to clients and how long the pipeline took
/// to recover from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultImpact {
    /// e.g. `kill reducer for 2 s`.
    pub fault: String,
    pub at_s: f64,
    /// When the fault's last action (the undo, or a restart) was done.
    pub done_s: f64,
    /// From `at_s` to the first second with lag 0 and no refused press,
    /// after `done_s`; none when that never came within the run.
    pub recovery_s: Option<f64>,
    /// Presses refused (any non-202) from `at_s` to recovery.
    pub refused: u64,
    /// Longest time the tracking SSE client went without a state frame,
    /// from `at_s` to recovery.
    pub longest_sse_gap_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AssertResult {
    pub name: String,
    pub limit: f64,
    pub actual: Option<f64>,
    pub passed: bool,
}

/// What the broker round trip and the press handler cost against the HTTP
/// stack alone: in one run, one client saturating `GET /health/live`, then
/// presses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PressPath {
    /// The steady `live` phase that served the most checks a second, and
    /// that rate.
    pub live_phase: String,
    pub live_per_s: f64,
    /// The steady open-model press phase that accepted the most presses a
    /// second, and that rate.
    pub press_phase: String,
    pub press_per_s: f64,
    /// `press_per_s / live_per_s`.
    pub ratio: f64,
    /// The client that measured both.
    pub client: String,
}

/// The press path's ratio readers compare against (from the issue that
/// asked for it): presses reach at least this share of the trivial
/// endpoint's rate.
pub const PRESS_PATH_GOAL: f64 = 0.3;

/// `summary.json`. Headline figures (`accepted_per_s`, the latencies,
/// `cost_us_per_press`) cover the steady press phases, not the warm-up
/// nor `live` phases (those are in `phases` and `press_path`); `planned`,
/// `sent`, `accepted` and `error_rate` count presses only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    /// The ingest path the stack ran (runs stored before it existed ran
    /// `kafka`).
    #[serde(default)]
    pub ingest: button_stack::Ingest,
    /// How the listeners received states (runs stored before it existed
    /// used SSE).
    #[serde(default)]
    pub transport: button_client::Transport,
    pub run: String,
    pub sweep_point: Option<BTreeMap<String, String>>,
    /// Keys changed with `--set` (key → value as given).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, String>,
    pub guards: GuardsInfo,
    pub started_at: String,
    pub load_s: f64,
    /// Seconds of steady (not warm-up) press phases.
    #[serde(default)]
    pub steady_s: f64,
    #[serde(default)]
    pub planned: u64,
    pub sent: u64,
    pub accepted: u64,
    pub errors: BTreeMap<String, u64>,
    #[serde(default)]
    pub unanswered: u64,
    /// Presses sent again to another service instance after the first one
    /// failed at the connection level (several instances), each once.
    #[serde(default)]
    pub retried: u64,
    /// Accepted presses of the steady phases over the time they took
    /// (their planned length, or longer when sent late).
    pub accepted_per_s: f64,
    pub error_rate: f64,
    pub press_latency: Percentiles,
    pub press_to_sse: Percentiles,
    pub fanout: Percentiles,
    /// What the live clients cost the service processes in memory (runs
    /// with at least [`CLIENTS_MEMORY_MIN`] listeners).
    #[serde(default)]
    pub clients_memory: Option<ClientsMemory>,
    /// How late the listeners' runtime woke a 10 ms timer: when the load
    /// generator's own clients queue, fan-out latency is partly theirs.
    #[serde(default)]
    pub observer_lag: Percentiles,
    #[serde(default)]
    pub schedule_lag: Percentiles,
    pub phases: Vec<PhaseSummary>,
    /// CPU-µs per accepted press by process over the steady phases: the
    /// cost of a press by component.
    #[serde(default)]
    pub cost_us_per_press: BTreeMap<String, f64>,
    /// The highest open-model rate whose phase was valid, accepted every
    /// planned press, and met the scenario's `[knee]` objective.
    pub knee_per_s: Option<f64>,
    /// That objective (p99 press-to-SSE, ms), so repeats can be judged
    /// step by step.
    #[serde(default)]
    pub knee_limit_ms: Option<f64>,
    /// The knee is the ramp's last step, which still met the objective:
    /// the stack's knee is at least that.
    #[serde(default)]
    pub knee_is_lower_bound: bool,
    /// Set when the ramp's stop rule ended the load early.
    #[serde(default)]
    pub stopped: Option<RampStop>,
    /// Presses against the trivial endpoint with the same client, when the
    /// run has steady phases of both.
    #[serde(default)]
    pub press_path: Option<PressPath>,
    pub lag_peak: f64,
    /// Seconds from the lag's peak until it was next zero.
    pub lag_recovery_s: Option<f64>,
    /// From the end of the load until PostgreSQL covered every accepted press.
    pub drain_s: Option<f64>,
    pub states: i64,
    pub verdict: Verdict,
    /// The host, measured before, during and after the load (runs stored
    /// before it was measured have none).
    #[serde(default)]
    pub host: Option<crate::host::HostReport>,
    /// Whether the figures are the stack's (see [`Validity`]).
    #[serde(default)]
    pub validity: Validity,
    pub faults: Vec<FaultEvent>,
    pub fault_impact: Vec<FaultImpact>,
    /// CPU profiles taken during the run (`[profile]`, `--profile`).
    #[serde(default)]
    pub profiles: Vec<crate::profile::Profile>,
    pub asserts: Vec<AssertResult>,
    /// The verdict is clean and every assert passed (validity is reported
    /// beside it, not folded in: an invalid run still counted right).
    pub passed: bool,
}

impl Summary {
    pub fn read(dir: &Path) -> anyhow::Result<Summary> {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Rows whose second lies inside `[start_s, end_s]`.
fn rows_within(rows: &[Row], start_s: f64, end_s: f64) -> impl Iterator<Item = &Row> {
    // Row t covers the second (t - 1, t].
    rows.iter()
        .filter(move |r| r.t_s - 1.0 >= start_s - 1e-9 && r.t_s <= end_s + 1e-9)
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Mean CPU per process (% of one core), steal and foreign share (% of
/// the machine) over a phase's seconds.
pub fn phase_machine(
    rows: &[Row],
    start_s: f64,
    end_s: f64,
) -> (BTreeMap<String, f64>, Option<f64>, Option<f64>) {
    let within: Vec<&Row> = rows_within(rows, start_s, end_s).collect();
    let mut cpu = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> =
        within.iter().flat_map(|r| r.processes.keys()).collect();
    for name in names {
        if let Some(m) = mean(
            within
                .iter()
                .filter_map(|r| r.processes.get(name).map(|p| p.cpu_pct)),
        ) {
            cpu.insert(name.clone(), m);
        }
    }
    let steal = mean(within.iter().filter_map(|r| r.machine.map(|m| m.steal_pct)));
    let foreign = mean(
        within
            .iter()
            .filter_map(|r| r.machine.map(|m| m.foreign_pct)),
    );
    (cpu, steal, foreign)
}

/// Fewer listeners than this and their memory is lost in the noise of the
/// service's own allocations: not reported.
pub const CLIENTS_MEMORY_MIN: usize = 100;

/// Memory of one service process at the three marks, KiB: PSS where the
/// kernel gives it (shared pages divided among the processes mapping
/// them), else RSS.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryMarks {
    pub before_kib: u64,
    pub connected_kib: u64,
    pub end_kib: u64,
}

/// The service's memory against the number of live clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientsMemory {
    pub listeners: usize,
    /// Listeners that had their first frame when the load started.
    pub connected: u64,
    /// From the first listener's start until every one had a frame (or
    /// the load started).
    pub connect_s: f64,
    /// `pss` or `rss`: what the marks measure.
    pub measure: String,
    /// Per service process ("service", "service-1", ...).
    pub processes: BTreeMap<String, MemoryMarks>,
    /// Growth from before the listeners to all connected, summed over the
    /// service processes, per connected listener: an idle client's cost.
    pub per_client_kib: Option<f64>,
    /// Growth from before the listeners to the end of the load, per
    /// connected listener: a client's cost with states flowing (buffers).
    pub per_client_loaded_kib: Option<f64>,
}

impl ClientsMemory {
    pub fn new(
        listeners: usize,
        connected: u64,
        connect_s: f64,
        measure: &str,
        processes: BTreeMap<String, MemoryMarks>,
    ) -> ClientsMemory {
        let total = |f: fn(&MemoryMarks) -> u64| processes.values().map(f).sum::<u64>() as f64;
        let before = total(|m| m.before_kib);
        let per = |after: f64| (connected > 0).then(|| (after - before) / connected as f64);
        ClientsMemory {
            listeners,
            connected,
            connect_s,
            measure: measure.to_owned(),
            per_client_kib: per(total(|m| m.connected_kib)),
            per_client_loaded_kib: per(total(|m| m.end_kib)),
            processes,
        }
    }

    pub fn text(&self) -> String {
        let kib = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1} KiB"));
        let per_process: Vec<String> = self
            .processes
            .iter()
            .map(|(name, m)| {
                format!(
                    "{name} {} → {} → {} MiB",
                    mib(m.before_kib),
                    mib(m.connected_kib),
                    mib(m.end_kib)
                )
            })
            .collect();
        format!(
            "{} of {} listeners connected in {:.1} s; service {} per client {} idle, {} at the end of the load ({})",
            self.connected,
            self.listeners,
            self.connect_s,
            self.measure.to_uppercase(),
            kib(self.per_client_kib),
            kib(self.per_client_loaded_kib),
            per_process.join(", ")
        )
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Why a phase's figures may not be the stack's. `optimised` is false for
/// a run of unoptimised binaries; `generator_cores` is how many cores the
/// load generator's runtime may use.
pub fn phase_validity(
    limits: &ValidityLimits,
    phase: &PhaseSummary,
    optimised: bool,
    generator_cores: usize,
) -> Validity {
    let mut reasons = Vec::new();
    if !optimised {
        reasons.push("dev build: unoptimised binaries".to_owned());
    }
    if phase.rate.is_some() && phase.planned > 0 {
        let ratio = phase.sent_on_time as f64 / phase.planned as f64;
        if ratio < limits.min_sent_ratio {
            let requests = match phase.endpoint {
                Endpoint::Press => "presses",
                Endpoint::Live => "live checks",
            };
            reasons.push(format!(
                "generator fell behind: sent {} of {} planned {requests} on time ({:.1}%, limit {:.1}%)",
                phase.sent_on_time,
                phase.planned,
                ratio * 100.0,
                limits.min_sent_ratio * 100.0
            ));
        }
        if phase.schedule_lag.p99_ms > limits.max_schedule_lag_p99_ms {
            reasons.push(format!(
                "generator fell behind: sends started {:.1} ms late at p99 (limit {} ms)",
                phase.schedule_lag.p99_ms, limits.max_schedule_lag_p99_ms
            ));
        }
    }
    if let Some(&cpu) = phase.cpu_pct.get(LOADGEN) {
        let share = cpu / generator_cores.max(1) as f64;
        if share > limits.max_generator_cpu_pct {
            reasons.push(format!(
                "generator CPU-saturated: {share:.0}% of its {generator_cores} cores (limit {}%)",
                limits.max_generator_cpu_pct
            ));
        }
    }
    if let Some(steal) = phase.steal_pct.filter(|&s| s > limits.max_steal_pct) {
        reasons.push(format!(
            "steal {steal:.1}% of the machine (limit {}%)",
            limits.max_steal_pct
        ));
    }
    if let Some(foreign) = phase.foreign_pct.filter(|&f| f > limits.max_foreign_pct) {
        reasons.push(format!(
            "foreign CPU {foreign:.1}% of the machine: other processes competed (limit {}%)",
            limits.max_foreign_pct
        ));
    }
    if let Some(during) = phase
        .host_index_during
        .filter(|&i| i < limits.min_host_index_during)
    {
        reasons.push(format!(
            "host slow during the phase: probe index {during:.2} (limit {})",
            limits.min_host_index_during
        ));
    }
    Validity::of(reasons)
}

/// Why a whole run's host may not be the reference machine's: its index
/// before the load or after the drain below the limit.
pub fn host_validity(limits: &ValidityLimits, host: &crate::host::HostReport) -> Option<String> {
    let index = host.index.filter(|&i| i < limits.min_host_index)?;
    // The probe (before or after) that set the index, part by part.
    let parts = [host.before_index, host.after_index]
        .into_iter()
        .flatten()
        .min_by(|a, b| a.index.total_cmp(&b.index))
        .map_or(String::new(), |i| {
            format!(
                ": cpu {:.2}, memory {:.2}, loopback {:.2}",
                i.cpu, i.memory, i.loopback
            )
        });
    Some(format!(
        "host slow: index {index:.2} against {} (limit {}){parts}",
        host.reference.as_deref().unwrap_or("the reference"),
        limits.min_host_index
    ))
}

/// A run is valid when each of its steady phases is; its reasons name the
/// phase.
pub fn run_validity(phases: &[PhaseSummary]) -> Validity {
    let mut reasons = Vec::new();
    for p in phases.iter().filter(|p| !p.warmup) {
        for r in &p.validity.reasons {
            let reason = if r.starts_with("dev build") {
                r.clone()
            } else {
                format!("{}: {r}", p.name)
            };
            if !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
    }
    Validity::of(reasons)
}

/// CPU-µs per accepted press for every process, over the seconds of the
/// given windows `(start_s, end_s)`.
pub fn cost_per_press(rows: &[Row], windows: &[(f64, f64)]) -> BTreeMap<String, f64> {
    let mut cpu_s: BTreeMap<String, f64> = BTreeMap::new();
    let mut accepted = 0u64;
    for &(start, end) in windows {
        for r in rows_within(rows, start, end) {
            accepted += r.accepted;
            for (name, p) in &r.processes {
                *cpu_s.entry(name.clone()).or_default() += p.cpu_s;
            }
        }
    }
    if accepted == 0 {
        return BTreeMap::new();
    }
    cpu_s
        .into_iter()
        .map(|(name, s)| (name, s * 1e6 / accepted as f64))
        .collect()
}

/// Whether a steady open-model press step was valid, accepted every
/// planned press and kept p99 press-to-SSE within `limit_ms`.
pub fn meets_objective(p: &PhaseSummary, limit_ms: f64) -> bool {
    !p.warmup
        && !p.not_run
        && p.endpoint == Endpoint::Press
        && p.rate.is_some()
        && p.validity.valid
        && p.planned > 0
        && p.accepted == p.planned
        && p.press_to_sse.p99_ms <= limit_ms
}

/// The highest target rate whose phase was valid, accepted every planned
/// press and met the p99 press-to-SSE limit.
pub fn knee(scenario: &Scenario, phases: &[PhaseSummary]) -> Option<f64> {
    let limit = scenario.knee.as_ref()?.p99_press_to_sse_ms;
    phases
        .iter()
        .filter(|p| meets_objective(p, limit))
        .filter_map(|p| p.rate)
        .fold(None, |best: Option<f64>, r| {
            Some(best.map_or(r, |b| b.max(r)))
        })
}

/// The steady `live` phase with the most served/s against the steady open
/// press phase with the most accepted/s; none unless the run has both and
/// the live phase served something. Validity is the phases' own, reported
/// beside it.
pub fn press_path(phases: &[PhaseSummary], client: &str) -> Option<PressPath> {
    let best = |endpoint: Endpoint, per_s: fn(&PhaseSummary) -> f64| {
        phases
            .iter()
            .filter(|p| !p.warmup && p.rate.is_some() && p.endpoint == endpoint)
            .max_by(|a, b| per_s(a).total_cmp(&per_s(b)))
    };
    let live = best(Endpoint::Live, |p| p.served_per_s)?;
    let press = best(Endpoint::Press, |p| p.accepted_per_s)?;
    (live.served_per_s > 0.0).then(|| PressPath {
        live_phase: live.name.clone(),
        live_per_s: live.served_per_s,
        press_phase: press.name.clone(),
        press_per_s: press.accepted_per_s,
        ratio: press.accepted_per_s / live.served_per_s,
        client: client.to_owned(),
    })
}

pub fn check_asserts(scenario: &Scenario, s: &Summary) -> Vec<AssertResult> {
    let a = &scenario.asserts;
    let mut out = Vec::new();
    let mut at_most = |name: &str, limit: Option<f64>, actual: Option<f64>| {
        if let Some(limit) = limit {
            out.push(AssertResult {
                name: name.to_owned(),
                limit,
                actual,
                passed: actual.is_some_and(|v| v <= limit),
            });
        }
    };
    at_most("p99_press_ms", a.p99_press_ms, Some(s.press_latency.p99_ms));
    at_most(
        "p99_press_to_sse_ms",
        a.p99_press_to_sse_ms,
        Some(s.press_to_sse.p99_ms),
    );
    at_most(
        "p999_press_to_sse_ms",
        a.p999_press_to_sse_ms,
        Some(s.press_to_sse.p999_ms),
    );
    at_most("p99_fanout_ms", a.p99_fanout_ms, Some(s.fanout.p99_ms));
    at_most("max_error_rate", a.max_error_rate, Some(s.error_rate));
    at_most("max_drain_s", a.max_drain_s, s.drain_s);
    at_most(
        "lost",
        a.lost.map(|v| v as f64),
        Some(s.verdict.lost as f64),
    );
    at_most(
        "duplicated",
        a.duplicated.map(|v| v as f64),
        Some(s.verdict.duplicated as f64),
    );
    if let Some(min) = a.min_accepted_per_s {
        out.push(AssertResult {
            name: "min_accepted_per_s".to_owned(),
            limit: min,
            actual: Some(s.accepted_per_s),
            passed: s.accepted_per_s >= min,
        });
    }
    out
}

/// Seconds from the highest lag sample to the next sample at zero.
pub fn lag_recovery(rows: &[Row]) -> Option<f64> {
    let (peak_i, peak) = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.lag.map(|l| (i, l)))
        .fold(
            (0, 0.0),
            |best, (i, v)| if v > best.1 { (i, v) } else { best },
        );
    if peak <= 0.0 {
        return Some(0.0);
    }
    let zero_i = (peak_i..rows.len()).find(|&i| rows[i].lag == Some(0.0))?;
    Some(rows[zero_i].t_s - rows[peak_i].t_s)
}

/// One fault's window: when its first action started and its last was
/// done, in seconds from the start of the load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultWindow {
    pub index: usize,
    pub at_s: f64,
    pub done_s: f64,
}

/// Each fault's recovery and what clients saw, from the per-second rows
/// and the tracking client's frame times (seconds from the load's start).
pub fn fault_impact(
    scenario: &Scenario,
    windows: &[FaultWindow],
    frames_s: &[f64],
    rows: &[Row],
) -> Vec<FaultImpact> {
    let mut out: Vec<FaultImpact> = windows
        .iter()
        .map(|w| {
            let fault = &scenario.faults[w.index];
            let (at_s, done_s) = (w.at_s, w.done_s);
            // Row t covers the second (t - 1, t]: the first whole second
            // after the fault was undone.
            let recovered = rows
                .iter()
                .find(|r| r.t_s - 1.0 >= done_s && r.lag == Some(0.0) && r.errors == 0);
            let end_s = recovered.map_or(f64::INFINITY, |r| r.t_s);
            let refused = rows
                .iter()
                // (samples are taken a moment after each whole second)
                .filter(|r| r.t_s + 0.5 > at_s && r.t_s - 1.0 < end_s)
                .map(|r| r.errors)
                .sum();
            let mut longest: f64 = 0.0;
            let mut previous = at_s;
            for &f in frames_s.iter().filter(|&&f| f > at_s) {
                if f > end_s {
                    longest = longest.max(end_s.min(f) - previous);
                    previous = f64::NAN;
                    break;
                }
                longest = longest.max(f - previous);
                previous = f;
            }
            if previous.is_finite() && end_s.is_finite() {
                longest = longest.max(end_s - previous);
            }
            let mut label = format!(
                "{} {}",
                format!("{:?}", fault.action).to_lowercase(),
                fault.target
            );
            if let Some(for_s) = fault.for_s {
                label.push_str(&format!(" for {for_s} s"));
            }
            FaultImpact {
                fault: label,
                at_s,
                done_s,
                recovery_s: recovered.map(|r| r.t_s - at_s),
                refused,
                longest_sse_gap_s: longest,
            }
        })
        .collect();
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_cost_is_the_growth_of_every_service_process_over_the_connected_clients() {
        let marks = |before_kib, connected_kib, end_kib| MemoryMarks {
            before_kib,
            connected_kib,
            end_kib,
        };
        let m = ClientsMemory::new(
            1_000,
            800,
            1.5,
            "pss",
            BTreeMap::from([
                ("service".to_owned(), marks(10_000, 14_000, 20_000)),
                ("service-1".to_owned(), marks(10_000, 14_000, 16_000)),
            ]),
        );
        assert_eq!(m.per_client_kib, Some(10.0), "8,000 KiB over 800 clients");
        assert_eq!(m.per_client_loaded_kib, Some(20.0));
        assert!(m.text().contains("800 of 1000 listeners"), "{}", m.text());
        let none = ClientsMemory::new(100, 0, 5.0, "rss", BTreeMap::new());
        assert_eq!(
            none.per_client_kib, None,
            "no client connected: no cost to divide"
        );
    }
    use crate::sample::{MachineSample, ProcessSample};

    fn scenario(extra: &str) -> Scenario {
        crate::scenario::parse(
            Path::new("t.toml"),
            &format!("[[phase]]\nduration_s = 10\nrate = 100\n{extra}"),
        )
        .expect("parses")
    }

    fn phase(rate: f64, planned: u64, on_time: u64, accepted: u64, p99: f64) -> PhaseSummary {
        PhaseSummary {
            name: format!("{rate}/s"),
            start_s: 0.0,
            duration_s: 10.0,
            rate: Some(rate),
            users: None,
            warmup: false,
            endpoint: Endpoint::Press,
            planned,
            sent: planned,
            sent_on_time: on_time,
            accepted,
            unanswered: 0,
            span_s: 10.0,
            accepted_per_s: accepted as f64 / 10.0,
            served: 0,
            served_per_s: 0.0,
            press_latency: Percentiles::default(),
            press_to_sse: Percentiles {
                p99_ms: p99,
                ..Percentiles::default()
            },
            schedule_lag: Percentiles {
                p99_ms: 1.0,
                ..Percentiles::default()
            },
            cpu_pct: BTreeMap::from([(LOADGEN.to_owned(), 40.0)]),
            steal_pct: Some(0.5),
            foreign_pct: Some(1.0),
            host_index_during: None,
            validity: Validity::of(vec![]),
            not_run: false,
        }
    }

    fn row(t: f64, accepted: u64, cpu: &[(&str, f64)], lag: Option<f64>, errors: u64) -> Row {
        Row {
            t_s: t,
            accepted,
            errors,
            lag,
            machine: Some(MachineSample {
                steal_pct: 2.0,
                foreign_pct: 8.0,
                ..MachineSample::default()
            }),
            processes: cpu
                .iter()
                .map(|&(n, s)| {
                    (
                        n.to_owned(),
                        ProcessSample {
                            cpu_s: s,
                            cpu_pct: s * 100.0,
                            ..ProcessSample::default()
                        },
                    )
                })
                .collect(),
            ..Row::default()
        }
    }

    #[test]
    fn a_phase_that_kept_up_on_a_quiet_machine_is_valid() {
        let limits = ValidityLimits::default();
        let v = phase_validity(&limits, &phase(100.0, 1000, 1000, 1000, 50.0), true, 2);
        assert_eq!(v, Validity::of(vec![]));
        assert!(v.valid);
    }

    #[test]
    fn each_reason_makes_a_phase_invalid_and_is_named() {
        let limits = ValidityLimits::default();
        let mut p = phase(20_000.0, 200_000, 150_000, 150_000, 50.0);
        p.schedule_lag.p99_ms = 250.0;
        p.cpu_pct.insert(LOADGEN.to_owned(), 195.0);
        p.steal_pct = Some(9.0);
        p.foreign_pct = Some(12.0);
        let v = phase_validity(&limits, &p, false, 2);
        assert!(!v.valid);
        let text = v.reasons.join("\n");
        for expected in [
            "dev build",
            "sent 150000 of 200000 planned",
            "250.0 ms late",
            "CPU-saturated",
            "steal 9.0%",
            "foreign CPU 12.0%",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        assert_eq!(v.reasons.len(), 6);
    }

    #[test]
    fn a_run_is_invalid_when_a_steady_phase_is_and_ignores_the_warm_up() {
        let mut warm = phase(100.0, 1000, 900, 900, 10.0);
        warm.warmup = true;
        warm.validity = Validity::of(vec!["generator fell behind".into()]);
        let steady = phase(200.0, 2000, 2000, 2000, 10.0);
        assert!(run_validity(&[warm.clone(), steady.clone()]).valid);
        let mut bad = steady.clone();
        bad.validity = Validity::of(vec!["steal 9.0%".into()]);
        let v = run_validity(&[warm, steady, bad]);
        assert_eq!(v.reasons, vec!["200/s: steal 9.0%".to_owned()]);
    }

    #[test]
    fn the_knee_takes_only_valid_phases_that_accepted_every_planned_press() {
        let s = scenario("[knee]\np99_press_to_sse_ms = 100\n");
        let ok = phase(1000.0, 10_000, 10_000, 10_000, 40.0);
        let slow = phase(2000.0, 20_000, 20_000, 20_000, 140.0);
        let mut invalid = phase(3000.0, 30_000, 30_000, 30_000, 60.0);
        invalid.validity = Validity::of(vec!["generator fell behind".into()]);
        // Everything sent was accepted, but not everything planned was sent.
        let short = phase(4000.0, 40_000, 40_000, 30_000, 60.0);
        assert_eq!(knee(&s, &[ok, slow, invalid, short]), Some(1000.0));
        assert_eq!(knee(&scenario(""), &[phase(1.0, 1, 1, 1, 1.0)]), None);
    }

    fn live(rate: f64, served: u64) -> PhaseSummary {
        let mut p = phase(rate, served, served, 0, 0.0);
        p.name = format!("live {rate}/s");
        p.endpoint = Endpoint::Live;
        p.served = served;
        p.served_per_s = served as f64 / 10.0;
        p
    }

    #[test]
    fn the_stop_rule_counts_consecutive_misses_and_a_met_step_resets_it() {
        let miss = || Some("slow".to_owned());
        let mut rule = StopRule::new(2);
        assert!(!rule.step("1000/s", None));
        assert!(!rule.step("2000/s", miss()));
        assert!(
            !rule.step("4000/s", None),
            "a met step starts the count again"
        );
        assert!(!rule.step("6000/s", miss()));
        assert!(rule.step("8000/s", miss()));
        let names: Vec<&str> = rule.missed().iter().map(|m| m.phase.as_str()).collect();
        assert_eq!(names, ["6000/s", "8000/s"]);
        let mut one = StopRule::new(1);
        assert!(one.step("1000/s", miss()));
    }

    #[test]
    fn a_step_misses_when_the_generator_fell_behind_a_press_failed_or_it_was_slow() {
        let limits = ValidityLimits::default();
        let seen = |p99: f64| Percentiles {
            count: 100,
            p99_ms: p99,
            ..Percentiles::default()
        };
        let met = StepSoFar {
            planned: 10_000,
            sent_on_time: 10_000,
            answered: 9_990,
            accepted: 9_990,
            schedule_lag_p99_ms: 1.0,
            press_to_sse: seen(40.0),
        };
        assert_eq!(step_miss(100.0, &limits, &met), None);
        // Outbox presses are seen only after the load: nothing to judge.
        let unseen = StepSoFar {
            press_to_sse: Percentiles::default(),
            ..met.clone()
        };
        assert_eq!(step_miss(100.0, &limits, &unseen), None);
        for (step, why) in [
            (
                StepSoFar {
                    sent_on_time: 6_000,
                    ..met.clone()
                },
                "sent 6000 of 10000",
            ),
            (
                StepSoFar {
                    schedule_lag_p99_ms: 900.0,
                    ..met.clone()
                },
                "900.0 ms late",
            ),
            (
                StepSoFar {
                    accepted: 9_980,
                    ..met.clone()
                },
                "10 presses failed",
            ),
            (
                StepSoFar {
                    press_to_sse: seen(140.0),
                    ..met.clone()
                },
                "140.0 ms over 100 ms",
            ),
        ] {
            let reason = step_miss(100.0, &limits, &step).expect(why);
            assert!(reason.contains(why), "{why}: {reason}");
        }
    }

    #[test]
    fn a_knee_at_the_ramps_last_step_is_a_lower_bound() {
        let s = scenario("[knee]\np99_press_to_sse_ms = 100\n");
        let ok = |rate: f64| phase(rate, 10_000, 10_000, 10_000, 40.0);
        let mut warm = ok(500.0);
        warm.warmup = true;
        let ramp = [warm.clone(), ok(1000.0), ok(2000.0)];
        let k = knee(&s, &ramp);
        assert_eq!(k, Some(2000.0));
        assert!(knee_is_lower_bound(k, &ramp));
        assert_eq!(knee_text(16000.0, true), "≥ 16,000 (the ramp's last step)");
        assert_eq!(knee_text(16000.0, false), "16000");
        // The last step missed: the knee is where the ramp found it.
        let slow = phase(4000.0, 40_000, 40_000, 40_000, 140.0);
        let ramp = [warm.clone(), ok(1000.0), ok(2000.0), slow];
        assert!(!knee_is_lower_bound(knee(&s, &ramp), &ramp));
        // A stopped ramp's steps not run are no knee, and no bound either.
        let mut not_run = ok(8000.0);
        not_run.not_run = true;
        let ramp = [warm, ok(1000.0), ok(2000.0), not_run];
        assert_eq!(knee(&s, &ramp), Some(2000.0));
        assert!(!knee_is_lower_bound(Some(2000.0), &ramp));
    }

    #[test]
    fn a_summary_stored_before_the_stop_rule_still_loads() {
        let mut old = serde_json::to_value(phase(1000.0, 10, 10, 10, 1.0)).expect("json");
        assert!(old.get("not_run").is_none(), "false is not written");
        old.as_object_mut().expect("object").remove("not_run");
        let p: PhaseSummary = serde_json::from_value(old).expect("loads");
        assert!(!p.not_run);
        let stop = RampStop {
            after: "6000/s".into(),
            missed: vec![
                StepMiss {
                    phase: "4000/s".into(),
                    reason: "p99 press-to-SSE 140.0 ms over 100 ms".into(),
                },
                StepMiss {
                    phase: "6000/s".into(),
                    reason: "generator fell behind".into(),
                },
            ],
            not_run: vec!["8000/s".into(), "10000/s".into()],
        };
        let text = stop.describe();
        assert!(
            text.starts_with("stopped: 2 steps missed the objective")
                && text.ends_with("not run: 8000/s, 10000/s"),
            "{text}"
        );
    }

    #[test]
    fn the_knee_ignores_live_phases() {
        let s = scenario("[knee]\np99_press_to_sse_ms = 100\n");
        let mut checks = live(9000.0, 90_000);
        // Even one that looks like a phase that kept every press.
        checks.accepted = checks.planned;
        let ok = phase(1000.0, 10_000, 10_000, 10_000, 40.0);
        assert_eq!(knee(&s, &[checks, ok]), Some(1000.0));
    }

    #[test]
    fn the_press_path_sets_the_best_steady_press_phase_against_the_best_live_one() {
        let mut warm = phase(500.0, 5_000, 5_000, 5_000, 10.0);
        warm.warmup = true;
        warm.accepted_per_s = 1e9;
        let slow_live = live(1000.0, 10_000);
        let fast_live = live(50_000.0, 200_000);
        let press = phase(20_000.0, 200_000, 100_000, 60_000, 10.0);
        let phases = [warm.clone(), slow_live, fast_live, press.clone()];
        let p = press_path(&phases, "client").expect("both kinds");
        assert_eq!(
            (p.live_phase.as_str(), p.press_phase.as_str()),
            ("live 50000/s", "20000/s")
        );
        assert_eq!((p.live_per_s, p.press_per_s), (20_000.0, 6_000.0));
        assert!((p.ratio - 0.3).abs() < 1e-12, "{p:?}");
        assert_eq!(p.client, "client");
        // Only presses, only live checks, or a warm-up live phase: none.
        assert_eq!(press_path(&[warm.clone(), press.clone()], "c"), None);
        assert_eq!(press_path(&[live(10.0, 100)], "c"), None);
        let mut warm_live = live(10.0, 100);
        warm_live.warmup = true;
        assert_eq!(press_path(&[warm_live, press.clone()], "c"), None);
        assert_eq!(press_path(&[live(10.0, 0), press], "c"), None);
    }

    #[test]
    fn a_live_phase_that_fell_behind_says_live_checks() {
        let mut p = live(150_000.0, 50_000);
        p.planned = 1_500_000;
        let v = phase_validity(&ValidityLimits::default(), &p, true, 2);
        let text = v.reasons.join("\n");
        assert!(text.contains("planned live checks on time"), "{text}");
    }

    #[test]
    fn stored_summaries_from_before_the_press_path_still_read() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../experiments/2026-11-29T035453Z-ceiling-r1");
        let s = Summary::read(&dir).expect("an old summary.json reads");
        assert_eq!(s.press_path, None);
        assert!(!s.phases.is_empty());
        assert!(
            s.phases
                .iter()
                .all(|p| p.endpoint == Endpoint::Press && p.served == 0),
            "{:?}",
            s.phases
        );
    }

    #[test]
    fn cost_per_press_divides_cpu_by_accepted_presses_within_the_windows() {
        let rows = vec![
            row(1.0, 100, &[("service", 0.5)], None, 0), // warm-up second
            row(2.0, 1000, &[("service", 0.02), (LOADGEN, 0.01)], None, 0),
            row(3.0, 1000, &[("service", 0.04), (LOADGEN, 0.01)], None, 0),
        ];
        let cost = cost_per_press(&rows, &[(1.0, 3.0)]);
        assert!((cost["service"] - 30.0).abs() < 1e-9, "{cost:?}");
        assert!((cost[LOADGEN] - 10.0).abs() < 1e-9, "{cost:?}");
        assert!(cost_per_press(&rows, &[(5.0, 9.0)]).is_empty());
        let (cpu, steal, foreign) = phase_machine(&rows, 1.0, 3.0);
        assert_eq!(cpu["service"], 3.0);
        assert_eq!((steal, foreign), (Some(2.0), Some(8.0)));
    }

    #[test]
    fn lag_recovery_runs_from_the_peak_to_the_next_zero() {
        let rows: Vec<Row> = [Some(0.0), Some(50.0), Some(400.0), Some(20.0), Some(0.0)]
            .iter()
            .enumerate()
            .map(|(i, &l)| row(i as f64 + 1.0, 0, &[], l, 0))
            .collect();
        assert_eq!(lag_recovery(&rows), Some(2.0));
        assert_eq!(lag_recovery(&rows[..4]), None);
        assert_eq!(lag_recovery(&rows[..1]), Some(0.0));
    }

    #[test]
    fn a_fault_recovers_at_the_first_clean_second_after_it_was_undone() {
        let s = scenario(
            "[[fault]]\nat_s = 2.0\naction = \"kill\"\ntarget = \"reducer\"\nfor_s = 2.0\n",
        );
        let lags = [0.0, 0.0, 100.0, 300.0, 200.0, 0.0, 0.0];
        let errors = [0, 0, 5, 7, 0, 0, 0];
        let rows: Vec<Row> = (0..7)
            .map(|i| row(i as f64 + 1.0, 0, &[], Some(lags[i]), errors[i]))
            .collect();
        let windows = [FaultWindow {
            index: 0,
            at_s: 2.0,
            done_s: 4.1,
        }];
        let frames = [1.0, 1.5, 2.5, 5.5, 6.0];
        let impact = fault_impact(&s, &windows, &frames, &rows);
        assert_eq!(impact.len(), 1);
        let i = &impact[0];
        assert_eq!(i.fault, "kill reducer for 2 s");
        assert_eq!(i.recovery_s, Some(4.0));
        assert_eq!(i.refused, 12);
        assert!((i.longest_sse_gap_s - 3.0).abs() < 1e-9, "{i:?}");
    }

    #[test]
    fn asserts_compare_headline_figures_with_their_limits() {
        let s = scenario("[assert]\np99_press_ms = 10\nmin_accepted_per_s = 50\n");
        let summary = Summary {
            scenario: "t".into(),
            ingest: button_stack::Ingest::Kafka,
            transport: button_client::Transport::Sse,
            run: "r".into(),
            sweep_point: None,
            overrides: BTreeMap::new(),
            guards: GuardsInfo::default(),
            started_at: String::new(),
            load_s: 10.0,
            steady_s: 10.0,
            planned: 1000,
            sent: 1000,
            accepted: 1000,
            errors: BTreeMap::new(),
            unanswered: 0,
            retried: 0,
            accepted_per_s: 100.0,
            error_rate: 0.0,
            press_latency: Percentiles {
                p99_ms: 12.0,
                ..Percentiles::default()
            },
            press_to_sse: Percentiles::default(),
            fanout: Percentiles::default(),
            clients_memory: None,
            observer_lag: Percentiles::default(),
            schedule_lag: Percentiles::default(),
            phases: vec![],
            cost_us_per_press: BTreeMap::new(),
            knee_per_s: None,
            knee_limit_ms: None,
            knee_is_lower_bound: false,
            stopped: None,
            press_path: None,
            lag_peak: 0.0,
            lag_recovery_s: None,
            drain_s: Some(1.0),
            states: 1,
            verdict: Verdict::default(),
            host: None,
            validity: Validity::of(vec![]),
            faults: vec![],
            fault_impact: vec![],
            profiles: vec![],
            asserts: vec![],
            passed: true,
        };
        let results = check_asserts(&s, &summary);
        // A summary stored before the stop rule and the knee's bound loads.
        let mut old = serde_json::to_value(&summary).expect("json");
        let fields = old.as_object_mut().expect("object");
        fields.remove("knee_is_lower_bound");
        fields.remove("stopped");
        let read: Summary = serde_json::from_value(old).expect("an old summary loads");
        assert!(!read.knee_is_lower_bound && read.stopped.is_none());
        assert_eq!(results.len(), 2);
        assert!(!results[0].passed && results[0].name == "p99_press_ms");
        assert!(results[1].passed);
    }
}
