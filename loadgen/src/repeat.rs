//! Repeats: the same scenario N times, each on a fresh stack, and the
//! spread of what they measured. One run is an anecdote on a shared
//! machine; a headline figure is the median of repeats with its spread.
//!
//! A repeated run stores every run as usual (labelled `r1`, `r2`, ...) and
//! an aggregate folder `<time>-<scenario>[-<label>]-repeat/` with
//! `repeat.json` and `repeat.md`.

use crate::report::print_summary;
use crate::run::{RunOptions, RunOutcome, run};
use crate::scenario::Scenario;
use crate::summary::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

/// How far from the median a repeat may be for the spread to count as
/// tight: throughput and p50 within ±10%, p99 within ±20%.
pub const TOLERANCE_THROUGHPUT: f64 = 0.10;
pub const TOLERANCE_P50: f64 = 0.10;
pub const TOLERANCE_P99: f64 = 0.20;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// The largest distance of a repeat from the median, over the median.
    pub deviation: f64,
    /// Whether that distance is within the figure's tolerance.
    pub within: bool,
}

impl Spread {
    pub fn of(values: &[f64], tolerance: f64) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let deviation = if median == 0.0 {
            if v[0] == v[n - 1] { 0.0 } else { f64::INFINITY }
        } else {
            v.iter()
                .map(|x| ((x - median) / median).abs())
                .fold(0.0, f64::max)
        };
        Spread {
            min: v[0],
            median,
            max: v[n - 1],
            deviation,
            within: deviation <= tolerance + 1e-12,
        }
    }

    pub fn text(&self, digits: usize) -> String {
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$}, ±{:.0}%{})",
            self.median,
            self.min,
            self.max,
            self.deviation * 100.0,
            if self.within { "" } else { " WIDE" }
        )
    }
}

/// The aggregate of N repeats (`repeat.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Aggregate {
    pub scenario: String,
    pub sweep_point: Option<BTreeMap<String, String>>,
    pub runs: Vec<String>,
    pub accepted_per_s: Spread,
    pub press_p50_ms: Spread,
    pub press_p99_ms: Spread,
    pub press_to_sse_p50_ms: Spread,
    pub press_to_sse_p99_ms: Spread,
    pub knee_per_s: Option<Spread>,
    /// Runs whose knee was their ramp's last step: a lower bound.
    #[serde(default)]
    pub knee_lower_bounds: usize,
    /// The highest step that met the objective in every repeat: the
    /// knee a reader can expect back when re-running.
    #[serde(default)]
    pub knee_every_repeat: Option<f64>,
    /// Why the repeats' knees cannot be trusted, when they lie more than
    /// one step apart: each run's knee and the steps that passed in some
    /// repeats and missed in others.
    #[serde(default)]
    pub knee_unstable: Option<String>,
    /// CPU-µs per accepted press, by process.
    pub cost_us_per_press: BTreeMap<String, Spread>,
    /// Every run's verdict was clean.
    pub clean: bool,
    /// Every run was valid.
    pub valid: bool,
    /// Throughput and p50 within ±10% of the median, p99 within ±20%.
    pub spread_within: bool,
}

impl Aggregate {
    pub fn of(summaries: &[&Summary]) -> Aggregate {
        let pick = |f: fn(&Summary) -> f64| summaries.iter().map(|s| f(s)).collect::<Vec<_>>();
        let accepted_per_s = Spread::of(&pick(|s| s.accepted_per_s), TOLERANCE_THROUGHPUT);
        let press_p50_ms = Spread::of(&pick(|s| s.press_latency.p50_ms), TOLERANCE_P50);
        let press_p99_ms = Spread::of(&pick(|s| s.press_latency.p99_ms), TOLERANCE_P99);
        let press_to_sse_p50_ms = Spread::of(&pick(|s| s.press_to_sse.p50_ms), TOLERANCE_P50);
        let press_to_sse_p99_ms = Spread::of(&pick(|s| s.press_to_sse.p99_ms), TOLERANCE_P99);
        let knees: Vec<f64> = summaries.iter().filter_map(|s| s.knee_per_s).collect();
        let mut processes: Vec<&String> = summaries
            .iter()
            .flat_map(|s| s.cost_us_per_press.keys())
            .collect();
        processes.sort();
        processes.dedup();
        let cost_us_per_press = processes
            .into_iter()
            .map(|p| {
                let values: Vec<f64> = summaries
                    .iter()
                    .filter_map(|s| s.cost_us_per_press.get(p).copied())
                    .collect();
                (p.clone(), Spread::of(&values, TOLERANCE_THROUGHPUT))
            })
            .collect();
        let spread_within = accepted_per_s.within
            && press_to_sse_p50_ms.within
            && press_to_sse_p99_ms.within
            && press_p50_ms.within
            && press_p99_ms.within;
        Aggregate {
            scenario: summaries
                .first()
                .map_or(String::new(), |s| s.scenario.clone()),
            sweep_point: summaries.first().and_then(|s| s.sweep_point.clone()),
            runs: summaries.iter().map(|s| s.run.clone()).collect(),
            accepted_per_s,
            press_p50_ms,
            press_p99_ms,
            press_to_sse_p50_ms,
            press_to_sse_p99_ms,
            knee_per_s: (knees.len() == summaries.len() && !knees.is_empty())
                .then(|| Spread::of(&knees, TOLERANCE_THROUGHPUT)),
            knee_lower_bounds: summaries.iter().filter(|s| s.knee_is_lower_bound).count(),
            knee_every_repeat: knee_steps(summaries).and_then(|k| k.every_repeat),
            knee_unstable: knee_steps(summaries).and_then(|k| k.unstable),
            cost_us_per_press,
            clean: summaries.iter().all(|s| s.verdict.clean),
            valid: summaries.iter().all(|s| s.validity.valid),
            spread_within,
        }
    }

    pub fn knee_text(&self) -> Option<String> {
        let k = self.knee_per_s.as_ref()?;
        let mut text = match self.knee_lower_bounds {
            0 => k.text(0),
            n if n == self.runs.len() && k.min == k.max => {
                crate::summary::knee_text(k.median, true)
            }
            n => format!(
                "≥ {} (the ramp's last step in {n} of {} runs)",
                k.text(0),
                self.runs.len()
            ),
        };
        if let Some(every) = self.knee_every_repeat {
            let _ = write!(text, "; met in every repeat up to {every:.0}");
        }
        if let Some(why) = &self.knee_unstable {
            let _ = write!(text, "; UNSTABLE: {why}");
        }
        Some(text)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "{} repeats of `{}`, each on a fresh stack: median (min–max, largest distance from the median).\n",
            self.runs.len(),
            self.scenario
        );
        let _ = writeln!(md, "| figure | median (min–max, ±) |\n|---|---|");
        let rows: [(&str, &Spread, usize); 5] = [
            ("accepted/s", &self.accepted_per_s, 1),
            ("press p50 ms", &self.press_p50_ms, 2),
            ("press p99 ms", &self.press_p99_ms, 2),
            ("press to SSE p50 ms", &self.press_to_sse_p50_ms, 2),
            ("press to SSE p99 ms", &self.press_to_sse_p99_ms, 2),
        ];
        for (name, spread, digits) in rows {
            let _ = writeln!(md, "| {name} | {} |", spread.text(digits));
        }
        if let Some(text) = self.knee_text() {
            let _ = writeln!(md, "| knee presses/s | {text} |");
        }
        for (p, spread) in &self.cost_us_per_press {
            let _ = writeln!(md, "| CPU-µs per press: {p} | {} |", spread.text(1));
        }
        let _ = writeln!(
            md,
            "\nSpread {} (throughput and p50 within ±10%, p99 within ±20%). Verdicts: {}. Validity: {}.\n",
            if self.spread_within {
                "within tolerance"
            } else {
                "WIDER than tolerance"
            },
            if self.clean {
                "all clean"
            } else {
                "NOT all clean"
            },
            if self.valid {
                "all valid"
            } else {
                "NOT all valid"
            },
        );
        let _ = writeln!(md, "Runs: {}", self.runs.join(", "));
        md
    }
}

/// The repeats judged step by step.
#[derive(Debug, PartialEq)]
pub struct KneeSteps {
    pub every_repeat: Option<f64>,
    pub unstable: Option<String>,
}

/// Step by step over repeats of one ramp: the highest step that met the
/// objective in every repeat, and whether the repeats' knees lie more than
/// one step apart. None unless every summary recorded its objective.
pub fn knee_steps(summaries: &[&Summary]) -> Option<KneeSteps> {
    let limits: Vec<f64> = summaries.iter().filter_map(|s| s.knee_limit_ms).collect();
    if limits.is_empty() || limits.len() != summaries.len() {
        return None;
    }
    let limit = limits[0];
    let mut steps: Vec<f64> = summaries
        .iter()
        .flat_map(|s| s.phases.iter())
        .filter(|p| !p.warmup && p.endpoint == crate::scenario::Endpoint::Press)
        .filter_map(|p| p.rate)
        .collect();
    steps.sort_by(f64::total_cmp);
    steps.dedup();
    let met = |s: &Summary, rate: f64| {
        s.phases
            .iter()
            .any(|p| p.rate == Some(rate) && crate::summary::meets_objective(p, limit))
    };
    let every_repeat = steps
        .iter()
        .copied()
        .filter(|&r| summaries.iter().all(|s| met(s, r)))
        .fold(None, |best: Option<f64>, r| {
            Some(best.map_or(r, |b| b.max(r)))
        });
    // A missing knee (no step met) sits below the first step.
    let index = |k: Option<f64>| -> i64 {
        k.and_then(|k| steps.iter().position(|&r| r == k))
            .map_or(-1, |i| i as i64)
    };
    let knees: Vec<i64> = summaries.iter().map(|s| index(s.knee_per_s)).collect();
    let (lo, hi) = (
        knees.iter().copied().min().unwrap_or(-1),
        knees.iter().copied().max().unwrap_or(-1),
    );
    let unstable = (hi - lo > 1).then(|| {
        let each: Vec<String> = summaries
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.run,
                    s.knee_per_s
                        .map_or("none".to_owned(), |k| format!("{k:.0}"))
                )
            })
            .collect();
        let mixed: Vec<String> = steps
            .iter()
            .copied()
            .filter(|&r| {
                let n = summaries.iter().filter(|s| met(s, r)).count();
                n > 0 && n < summaries.len()
            })
            .map(|r| {
                let misses: Vec<String> = summaries
                    .iter()
                    .filter(|s| !met(s, r))
                    .filter_map(|s| {
                        let p = s.phases.iter().find(|p| p.rate == Some(r))?;
                        let why = if p.not_run {
                            "not run".to_owned()
                        } else if !p.validity.valid {
                            "invalid".to_owned()
                        } else if p.accepted < p.planned {
                            format!("{} of {} accepted", p.accepted, p.planned)
                        } else {
                            format!(
                                "p99 {:.0} ms ({:.0}–{:.0})",
                                p.press_to_sse.p99_ms,
                                p.press_to_sse.p99_low_ms,
                                p.press_to_sse.p99_high_ms
                            )
                        };
                        Some(format!("{} {why}", s.run))
                    })
                    .collect();
                format!("{r:.0}/s missed in {}", misses.join(", "))
            })
            .collect();
        format!(
            "knees more than one step apart ({}); steps met in some repeats only: {}",
            each.join(", "),
            if mixed.is_empty() {
                "none".to_owned()
            } else {
                mixed.join("; ")
            }
        )
    });
    Some(KneeSteps {
        every_repeat,
        unstable,
    })
}

/// Runs `scenario` `n` times (each on a fresh stack), printing each run's
/// summary; with n > 1 stores and prints the aggregate too.
pub async fn run_repeated(
    scenario: &Scenario,
    out: &Path,
    sweep_point: Option<BTreeMap<String, String>>,
    label: Option<String>,
    n: u32,
    progress: bool,
) -> anyhow::Result<Vec<RunOutcome>> {
    let mut outcomes = Vec::new();
    for i in 1..=n {
        if n > 1 {
            eprintln!("{}: repeat {i} of {n}", scenario.name);
        }
        let label = match (&label, n) {
            (l, 1) => l.clone(),
            (Some(l), _) => Some(format!("{l}_r{i}")),
            (None, _) => Some(format!("r{i}")),
        };
        let options = RunOptions {
            out_dir: out.to_path_buf(),
            sweep_point: sweep_point.clone(),
            label,
            progress,
        };
        let outcome = run(scenario, &options).await?;
        let meta = crate::meta::read(&outcome.dir)?;
        print_summary(&outcome.summary, &meta, &outcome.dir);
        outcomes.push(outcome);
    }
    if n > 1 {
        let summaries: Vec<&Summary> = outcomes.iter().map(|o| &o.summary).collect();
        store_aggregate(&scenario.name, label.as_deref(), &summaries, out)?;
    }
    Ok(outcomes)
}

/// Stores the aggregate of repeats of one scenario (and label) as
/// `<time>-<scenario>[-<label>]-repeat/` and prints it.
pub fn store_aggregate(
    scenario: &str,
    label: Option<&str>,
    summaries: &[&Summary],
    out: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    let aggregate = Aggregate::of(summaries);
    let started = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let mut name = format!("{started}-{scenario}");
    if let Some(l) = label {
        name.push('-');
        name.push_str(l);
    }
    name.push_str("-repeat");
    let dir = out.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("repeat.json"),
        serde_json::to_string_pretty(&aggregate)? + "\n",
    )?;
    let md = aggregate.markdown();
    std::fs::write(
        dir.join("repeat.md"),
        format!("# {scenario} repeated\n\n{md}"),
    )?;
    println!("\n{md}\naggregate stored in {}", dir.display());
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_median_and_the_largest_distance_from_it() {
        let s = Spread::of(&[100.0, 95.0, 108.0], 0.10);
        assert_eq!((s.min, s.median, s.max), (95.0, 100.0, 108.0));
        assert!((s.deviation - 0.08).abs() < 1e-12);
        assert!(s.within);
        let wide = Spread::of(&[100.0, 70.0, 104.0], 0.10);
        assert!(!wide.within);
        assert!((wide.deviation - 0.30).abs() < 1e-12);
        let even = Spread::of(&[1.0, 2.0, 3.0, 4.0], 1.0);
        assert_eq!(even.median, 2.5);
        assert_eq!(Spread::of(&[], 0.1), Spread::default());
        assert!(Spread::of(&[0.0, 0.0], 0.1).within);
        assert!(!Spread::of(&[0.0, 0.0, 1.0], 0.1).within);
    }

    /// A ramp's summary whose steps had these p99s (ms), objective 100 ms.
    fn ramp(run: &str, p99s: &[(f64, f64)]) -> Summary {
        let phases: Vec<serde_json::Value> = p99s
            .iter()
            .map(|&(rate, p99)| {
                serde_json::json!({
                    "name": format!("{rate}/s"), "start_s": 0.0, "duration_s": 10.0,
                    "rate": rate, "users": null, "planned": 10, "sent": 10, "accepted": 10,
                    "accepted_per_s": rate,
                    "press_latency": crate::measure::Percentiles::default(),
                    "press_to_sse": crate::measure::Percentiles {
                        p99_ms: p99,
                        p99_low_ms: p99 * 0.9,
                        p99_high_ms: p99 * 1.2,
                        ..Default::default()
                    },
                    "schedule_lag": crate::measure::Percentiles::default(),
                    "cpu_pct": {}, "steal_pct": null, "foreign_pct": null,
                    "validity": { "valid": true, "reasons": [] },
                })
            })
            .collect();
        let knee = p99s
            .iter()
            .filter(|(_, p)| *p <= 100.0)
            .map(|(r, _)| *r)
            .fold(None, |b: Option<f64>, r| Some(b.map_or(r, |b| b.max(r))));
        let mut s: Summary = serde_json::from_value(serde_json::json!({
            "scenario": "ramp", "run": run, "sweep_point": null,
            "guards": crate::summary::GuardsInfo::default(), "started_at": "",
            "load_s": 0.0, "sent": 0, "accepted": 0, "errors": {}, "accepted_per_s": 0.0,
            "error_rate": 0.0, "press_latency": crate::measure::Percentiles::default(),
            "press_to_sse": crate::measure::Percentiles::default(),
            "fanout": crate::measure::Percentiles::default(), "phases": phases,
            "knee_per_s": knee, "knee_limit_ms": 100.0, "lag_peak": 0.0, "lag_recovery_s": null,
            "drain_s": null, "states": 0, "verdict": crate::verdict::Verdict::default(),
            "faults": [], "fault_impact": [], "profiles": [], "asserts": [], "passed": true,
        }))
        .expect("a summary");
        s.knee_per_s = knee;
        s
    }

    #[test]
    fn the_knee_every_repeat_met_and_why_repeats_are_unstable() {
        let steady = [
            ramp(
                "r1",
                &[
                    (2000.0, 40.0),
                    (4000.0, 60.0),
                    (6000.0, 90.0),
                    (8000.0, 150.0),
                ],
            ),
            ramp(
                "r2",
                &[
                    (2000.0, 40.0),
                    (4000.0, 70.0),
                    (6000.0, 120.0),
                    (8000.0, 160.0),
                ],
            ),
        ];
        let k = knee_steps(&steady.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(
            k,
            KneeSteps {
                every_repeat: Some(4000.0),
                unstable: None
            }
        );
        // A blip at 4000/s in one repeat, whose knee is 8000: two steps
        // from the other's 4000... and the blip lowers the every-repeat knee.
        let blip = [
            ramp(
                "r1",
                &[
                    (2000.0, 40.0),
                    (4000.0, 60.0),
                    (6000.0, 120.0),
                    (8000.0, 150.0),
                ],
            ),
            ramp(
                "r2",
                &[
                    (2000.0, 40.0),
                    (4000.0, 141.0),
                    (6000.0, 80.0),
                    (8000.0, 95.0),
                ],
            ),
        ];
        let k = knee_steps(&blip.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(k.every_repeat, Some(2000.0));
        let why = k.unstable.expect("unstable");
        assert!(why.contains("r1 4000") && why.contains("r2 8000"), "{why}");
        assert!(why.contains("4000/s missed in r2 p99 141 ms"), "{why}");
        assert!(why.contains("6000/s missed in r1"), "{why}");
        // Older summaries without the objective: no judgement.
        let mut old = ramp("r3", &[(2000.0, 40.0)]);
        old.knee_limit_ms = None;
        assert_eq!(knee_steps(&[&old]), None);
    }
}
