//! SCALE.md's architecture comparison (`<!-- report:architectures -->`):
//! the three ingest paths side by side, one column each, from the stored
//! runs of `scenarios/architectures.toml` (a ramp swept over
//! `stack.ingest`), the spike and the fault scenarios run with
//! `--set stack.ingest=…`, and `scenarios/fault-relay-kill.toml`.
//!
//! Figures are medians of the runs stored for a path, with min–max when
//! there is more than one; a path with no run says so.

use crate::lab::{SweepPoint, num, sweep_chart};
use crate::repeat::Spread;
use button_stack::Ingest;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The ramp every path runs.
pub const RAMP: &str = "architectures";
/// Rates whose latencies the table shows: below every path's knee, and
/// where the paths part.
const RATES: &[f64] = &[2000.0, 8000.0];
/// Faults compared, in the table's order.
const FAULTS: &[(&str, &str)] = &[
    ("fault-reducer-kill", "reducer SIGKILL ×3"),
    ("fault-postgres-restart", "PostgreSQL restart"),
    ("fault-broker-restart", "broker restart"),
    ("fault-relay-kill", "relay SIGKILL ×3"),
];
/// Processes in the cost rows, instances summed (`service-0`, `relay-1`...).
const PROCESSES: &[&str] = &["service", "broker", "relay", "reducer", "postgres", "redis"];

type Run = (String, Value, Value);

fn ingest_of(s: &Value) -> Ingest {
    s.get("ingest")
        .and_then(Value::as_str)
        .and_then(|i| i.parse().ok())
        .unwrap_or_default()
}

fn of_scenario<'a>(runs: &'a [Run], scenario: &str, ingest: Ingest) -> Vec<&'a Run> {
    runs.iter()
        .filter(|(_, s, _)| {
            s.get("scenario").and_then(Value::as_str) == Some(scenario) && ingest_of(s) == ingest
        })
        .collect()
}

/// `median (min–max)`, or the one value, or `-`.
fn spread(values: &[f64], digits: usize) -> String {
    let s = Spread::of(values, f64::INFINITY);
    match values.len() {
        0 => "-".to_owned(),
        1 => format!("{:.digits$}", s.median),
        _ if s.min == s.max => format!("{:.digits$}", s.median),
        _ => format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            s.median, s.min, s.max
        ),
    }
}

fn median(values: &[f64]) -> f64 {
    Spread::of(values, f64::INFINITY).median
}

/// The steady phase of `s` at `rate`.
fn phase_at(s: &Value, rate: f64) -> Option<&Value> {
    s.get("phases")?.as_array()?.iter().find(|p| {
        p.get("warmup").and_then(Value::as_bool) != Some(true)
            && !not_run(p)
            && p.get("rate").and_then(Value::as_f64) == Some(rate)
    })
}

/// A phase the ramp's stop rule left out: it has no figures.
fn not_run(p: &Value) -> bool {
    p.get("not_run").and_then(Value::as_bool) == Some(true)
}

/// The knee cell: the median over the runs, marked as a lower bound when
/// a run's knee was its ramp's last step (that ramp never found where the
/// path stops meeting the objective).
fn knee_cell(r: &[&Run]) -> String {
    // A run where no step met the objective has a knee of none: 0.
    let knees: Vec<f64> = r
        .iter()
        .map(|(_, s, _)| s.get("knee_per_s").and_then(Value::as_f64).unwrap_or(0.0))
        .collect();
    let bounded = r
        .iter()
        .filter(|(_, s, _)| s.get("knee_is_lower_bound").and_then(Value::as_bool) == Some(true))
        .count();
    let all_same = knees.windows(2).all(|w| w[0] == w[1]);
    match bounded {
        0 => format!("**{}**", spread(&knees, 0)),
        n if n == r.len() && all_same => {
            format!("**{}**", crate::summary::knee_text(knees[0], true))
        }
        n => format!(
            "**≥ {}** (the ramp's last step in {n} of {} runs)",
            spread(&knees, 0),
            r.len()
        ),
    }
}

/// CPU-µs per press of one process kind, instances summed.
fn cost_of(s: &Value, process: &str) -> Option<f64> {
    let costs = s.get("cost_us_per_press")?.as_object()?;
    let mut total = None;
    for (name, v) in costs {
        let kind = name
            .rsplit_once('-')
            .filter(|(_, n)| n.parse::<u32>().is_ok())
            .map_or(name.as_str(), |(k, _)| k);
        if kind == process
            && let Some(x) = v.as_f64()
        {
            *total.get_or_insert(0.0) += x;
        }
    }
    total
}

/// The stack's CPU-µs per press: every process but the generator's own.
fn stack_cost(s: &Value) -> Option<f64> {
    let costs = s.get("cost_us_per_press")?.as_object()?;
    Some(
        costs
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "loadgen" | "perf" | crate::host::DURING_PROCESS
                )
            })
            .filter_map(|(_, v)| v.as_f64())
            .sum(),
    )
}

fn clean(s: &Value) -> bool {
    s.pointer("/verdict/clean").and_then(Value::as_bool) == Some(true)
}

/// A fault's row cell: recovery seconds after the fault ended (every
/// fault of the run, ` / `-separated) and the verdict, from the newest run.
fn fault_cell(runs: &[&Run]) -> String {
    let Some((name, s, _)) = runs.last() else {
        return "not run".to_owned();
    };
    let recovered: Vec<String> = s["fault_impact"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let after = i["recovery_s"].as_f64().zip(
                i["done_s"]
                    .as_f64()
                    .zip(i["at_s"].as_f64())
                    .map(|(d, a)| d - a),
            );
            after.map_or("never".to_owned(), |(r, lasted)| {
                format!("{:.1}", r - lasted)
            })
        })
        .collect();
    format!(
        "{} s, {} lost, {} dup, {} (`{name}`)",
        if recovered.is_empty() {
            "-".to_owned()
        } else {
            recovered.join(" / ")
        },
        num(s, "/verdict/lost"),
        num(s, "/verdict/duplicated"),
        if clean(s) { "clean" } else { "**FAILED**" },
    )
}

/// The section's Markdown; draws `architectures.svg` into the newest
/// ramp run's folder.
pub fn section(runs: &[Run], experiments: &Path) -> anyhow::Result<String> {
    let ramps: Vec<(Ingest, Vec<&Run>)> = Ingest::ALL
        .iter()
        .map(|&i| (i, of_scenario(runs, RAMP, i)))
        .collect();
    if ramps.iter().all(|(_, r)| r.is_empty()) {
        return Ok(format!(
            "No run of `scenarios/{RAMP}.toml` stored yet (`loadgen sweep {RAMP} --repeat 3`).\n"
        ));
    }
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let per_path = |f: &dyn Fn(&[&Run]) -> String| -> Vec<String> {
        ramps.iter().map(|(_, r)| f(r)).collect()
    };
    let values = |r: &[&Run], f: &dyn Fn(&Value) -> Option<f64>| -> Vec<f64> {
        r.iter().filter_map(|(_, s, _)| f(s)).collect()
    };
    rows.push((
        "ramp runs (clean verdicts)".to_owned(),
        per_path(&|r| {
            format!(
                "{} ({})",
                r.len(),
                r.iter().filter(|(_, s, _)| clean(s)).count()
            )
        }),
    ));
    rows.push((
        "**knee**, presses/s (p99 press→SSE ≤ 100 ms)".to_owned(),
        per_path(&|r| knee_cell(r)),
    ));
    for &rate in RATES {
        for (label, pointer) in [
            ("press p50 ms", "/press_latency/p50_ms"),
            ("press p99 ms", "/press_latency/p99_ms"),
            ("press→SSE p50 ms", "/press_to_sse/p50_ms"),
            ("press→SSE p99 ms", "/press_to_sse/p99_ms"),
        ] {
            rows.push((
                format!("at {rate:.0}/s: {label}"),
                per_path(&|r| {
                    spread(
                        &values(r, &|s| phase_at(s, rate)?.pointer(pointer)?.as_f64()),
                        1,
                    )
                }),
            ));
        }
    }
    for &process in PROCESSES {
        rows.push((
            format!("CPU-µs per press, {process}"),
            per_path(&|r| spread(&values(r, &|s| cost_of(s, process)), 1)),
        ));
    }
    rows.push((
        "CPU-µs per press, whole stack".to_owned(),
        per_path(&|r| spread(&values(r, &stack_cost), 1)),
    ));
    rows.push((
        "CPU-µs per press, load generator".to_owned(),
        per_path(&|r| spread(&values(r, &|s| cost_of(s, "loadgen")), 1)),
    ));
    let spikes: Vec<Vec<&Run>> = Ingest::ALL
        .iter()
        .map(|&i| of_scenario(runs, "spike", i))
        .collect();
    rows.push((
        "spike: lag peak / drained s after the load".to_owned(),
        spikes
            .iter()
            .map(|r| match r.last() {
                Some((name, s, _)) => format!(
                    "{} / {} s, {} (`{name}`)",
                    num(s, "/lag_peak"),
                    num(s, "/drain_s"),
                    if clean(s) { "clean" } else { "**FAILED**" }
                ),
                None => "not run".to_owned(),
            })
            .collect(),
    ));
    for &(scenario, label) in FAULTS {
        rows.push((
            format!("{label}: recovered after, verdict"),
            Ingest::ALL
                .iter()
                .map(|&i| {
                    let applies = match scenario {
                        "fault-broker-restart" => i.uses_broker(),
                        "fault-relay-kill" => i == Ingest::Outbox,
                        _ => true,
                    };
                    if applies {
                        fault_cell(&of_scenario(runs, scenario, i))
                    } else {
                        "n/a".to_owned()
                    }
                })
                .collect(),
        ));
    }

    let mut md = String::from("| | kafka | outbox | direct |\n|---|---|---|---|\n");
    for (label, cells) in &rows {
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
    let _ = writeln!(md, "\nRamp runs behind the columns:\n");
    for (ingest, r) in &ramps {
        let names: Vec<String> = r.iter().map(|(n, _, _)| format!("`{n}`")).collect();
        let _ = writeln!(
            md,
            "- {ingest}: {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    }
    if let Some((newest, _, _)) = ramps
        .iter()
        .flat_map(|(_, r)| r.iter())
        .max_by(|a, b| a.0.cmp(&b.0))
    {
        let points = chart_points(&ramps);
        sweep_chart(&experiments.join(newest).join("architectures.svg"), &points)?;
        let _ = writeln!(
            md,
            "\n![accepted/s vs p99 press-to-SSE, a line per ingest path](experiments/{newest}/architectures.svg)"
        );
    }
    Ok(md)
}

/// One point per path and steady rate: medians over the path's runs.
fn chart_points(ramps: &[(Ingest, Vec<&Run>)]) -> Vec<SweepPoint> {
    let mut points = Vec::new();
    for (ingest, runs) in ramps {
        let mut rates: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
        for (_, s, _) in runs {
            for p in s["phases"].as_array().into_iter().flatten() {
                if p.get("warmup").and_then(Value::as_bool) == Some(true) || not_run(p) {
                    continue;
                }
                if let Some(rate) = p.get("rate").and_then(Value::as_f64) {
                    rates.entry(rate as i64).or_default().push(p);
                }
            }
        }
        for (rate, phases) in rates {
            let m = |pointer: &str| {
                median(
                    &phases
                        .iter()
                        .filter_map(|p| p.pointer(pointer)?.as_f64())
                        .collect::<Vec<_>>(),
                )
            };
            let lost = phases.iter().any(|p| {
                p.get("accepted").and_then(Value::as_u64) < p.get("planned").and_then(Value::as_u64)
            });
            points.push(SweepPoint {
                point: BTreeMap::from([
                    ("stack.ingest".to_owned(), ingest.to_string()),
                    (crate::lab::RATE_KEY.to_owned(), rate.to_string()),
                ]),
                run: String::new(),
                runs: Vec::new(),
                accepted_per_s: m("/accepted_per_s"),
                error_rate: if lost { 1.0 } else { 0.0 },
                press_p99_ms: m("/press_latency/p99_ms"),
                press_to_sse_p50_ms: m("/press_to_sse/p50_ms"),
                press_to_sse_p99_ms: m("/press_to_sse/p99_ms"),
                press_to_sse_p999_ms: m("/press_to_sse/p999_ms"),
                lag_peak: 0.0,
                clean: true,
                valid: phases
                    .iter()
                    .all(|p| p.pointer("/validity/valid").and_then(Value::as_bool) == Some(true)),
                spread_within: true,
            });
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line of table `md` that starts with `label`.
    fn row_of(md: &str, label: &str) -> String {
        md.lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("no row {label} in\n{md}"))
            .to_owned()
    }
    use serde_json::json;

    fn ramp(ingest: &str, knee: Option<f64>, p99_at_2000: f64, service_us: f64) -> Run {
        (
            format!("2026-01-01T00000{}Z-architectures", ingest.len()),
            json!({
                "scenario": "architectures",
                "ingest": ingest,
                "knee_per_s": knee,
                "verdict": {"clean": true, "lost": 0, "duplicated": 0},
                "cost_us_per_press": {"service-0": service_us, "relay-0": 3.0, "relay-1": 2.0, "loadgen": 15.0},
                "phases": [
                    {"name": "warm-up", "warmup": true, "rate": 2000.0},
                    {"name": "2000/s", "rate": 2000.0, "planned": 10, "accepted": 10,
                     "accepted_per_s": 2000.0,
                     "press_latency": {"p50_ms": 1.0, "p99_ms": 2.0},
                     "press_to_sse": {"p50_ms": 20.0, "p99_ms": p99_at_2000},
                     "validity": {"valid": true}}
                ]
            }),
            Value::Null,
        )
    }

    #[test]
    fn columns_are_paths_and_figures_are_medians() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![
            ramp("kafka", Some(16000.0), 50.0, 22.0),
            ramp("kafka", Some(14000.0), 70.0, 24.0),
            ramp("kafka", Some(18000.0), 60.0, 20.0),
            ramp("outbox", None, 90.0, 30.0),
        ];
        for (name, _, _) in &runs {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
        }
        let md = section(&runs, dir.path()).unwrap();
        let row = |label: &str| row_of(&md, label);
        assert_eq!(
            row("**knee**"),
            "| **knee**, presses/s (p99 press→SSE ≤ 100 ms) | **16000 (14000–18000)** | **0** | **-** |"
        );
        assert!(row("at 2000/s: press→SSE p99").contains("| 60.0 (50.0–70.0) | 90.0 | - |"));
        // Instances of one process kind add up.
        assert!(
            row("CPU-µs per press, relay").contains("| 5.0 (5.0–5.0) |")
                || row("CPU-µs per press, relay").contains("| 5.0 |")
        );
        assert!(
            row("CPU-µs per press, whole stack")
                .starts_with("| CPU-µs per press, whole stack | 27.0 (25.0–29.0) | 35.0 |")
        );
        // No broker with ingest direct, no relay without the outbox.
        assert!(row("broker restart").ends_with("| n/a |"));
        assert!(row("relay SIGKILL").contains("| n/a | not run | n/a |"));
        assert!(md.contains("architectures.svg"));
    }

    #[test]
    fn a_knee_at_the_ramps_last_step_is_a_lower_bound_and_steps_not_run_show_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bounded = |knee: f64| {
            let mut run = ramp("kafka", Some(knee), 50.0, 22.0);
            run.1["knee_is_lower_bound"] = json!(true);
            run
        };
        let mut stopped = ramp("direct", Some(2000.0), 80.0, 30.0);
        stopped.1["phases"].as_array_mut().unwrap().push(
            json!({"name": "8000/s", "rate": 8000.0, "planned": 80000, "not_run": true,
                 "press_to_sse": {"p50_ms": 0.0, "p99_ms": 0.0}}),
        );
        let runs = vec![bounded(16000.0), bounded(16000.0), stopped];
        for (name, _, _) in &runs {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
        }
        let md = section(&runs, dir.path()).unwrap();
        let row = |label: &str| row_of(&md, label);
        assert!(
            row("**knee**").contains("| **≥ 16,000 (the ramp's last step)** | **-** | **2000** |"),
            "{md}"
        );
        assert!(
            row("at 8000/s: press→SSE p99").ends_with("| - | - | - |"),
            "{md}"
        );
        let mixed = knee_cell(&[&bounded(16000.0), &ramp("kafka", Some(14000.0), 1.0, 1.0)]);
        assert_eq!(
            mixed,
            "**≥ 15000 (14000–16000)** (the ramp's last step in 1 of 2 runs)"
        );
    }

    #[test]
    fn no_ramp_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let md = section(&[], dir.path()).unwrap();
        assert!(
            md.contains("loadgen sweep architectures --repeat 3"),
            "{md}"
        );
    }
}
