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
    #[serde(default)]
    pub validity: Validity,
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
    /// Accepted presses of the steady phases over the time they took
    /// (their planned length, or longer when sent late).
    pub accepted_per_s: f64,
    pub error_rate: f64,
    pub press_latency: Percentiles,
    pub press_to_sse: Percentiles,
    pub fanout: Percentiles,
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
    Validity::of(reasons)
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

/// The highest target rate whose phase was valid, accepted every planned
/// press and met the p99 press-to-SSE limit.
pub fn knee(scenario: &Scenario, phases: &[PhaseSummary]) -> Option<f64> {
    let limit = scenario.knee.as_ref()?.p99_press_to_sse_ms;
    phases
        .iter()
        .filter(|p| {
            !p.warmup
                && p.endpoint == Endpoint::Press
                && p.validity.valid
                && p.planned > 0
                && p.accepted == p.planned
                && p.press_to_sse.p99_ms <= limit
        })
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
            validity: Validity::of(vec![]),
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
            guards: GuardsInfo::default(),
            started_at: String::new(),
            load_s: 10.0,
            steady_s: 10.0,
            planned: 1000,
            sent: 1000,
            accepted: 1000,
            errors: BTreeMap::new(),
            unanswered: 0,
            accepted_per_s: 100.0,
            error_rate: 0.0,
            press_latency: Percentiles {
                p99_ms: 12.0,
                ..Percentiles::default()
            },
            press_to_sse: Percentiles::default(),
            fanout: Percentiles::default(),
            schedule_lag: Percentiles::default(),
            phases: vec![],
            cost_us_per_press: BTreeMap::new(),
            knee_per_s: None,
            press_path: None,
            lag_peak: 0.0,
            lag_recovery_s: None,
            drain_s: Some(1.0),
            states: 1,
            verdict: Verdict::default(),
            validity: Validity::of(vec![]),
            faults: vec![],
            fault_impact: vec![],
            profiles: vec![],
            asserts: vec![],
            passed: true,
        };
        let results = check_asserts(&s, &summary);
        assert_eq!(results.len(), 2);
        assert!(!results[0].passed && results[0].name == "p99_press_ms");
        assert!(results[1].passed);
    }
}
