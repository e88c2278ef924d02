//! `loadgen sweep`, `loadgen compare` and `loadgen report`: the workflow
//! around stored runs.

use crate::repeat::{Aggregate, run_repeated};
use crate::scenario::{self, apply_override, sweep_points};
use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One point of a sweep; with repeats, the medians of its runs.
#[derive(Debug, Serialize)]
pub(crate) struct SweepPoint {
    pub(crate) point: BTreeMap<String, String>,
    pub(crate) run: String,
    /// Every run of the point (one per repeat).
    pub(crate) runs: Vec<String>,
    pub(crate) accepted_per_s: f64,
    pub(crate) error_rate: f64,
    pub(crate) press_p99_ms: f64,
    pub(crate) press_to_sse_p50_ms: f64,
    pub(crate) press_to_sse_p99_ms: f64,
    pub(crate) press_to_sse_p999_ms: f64,
    pub(crate) lag_peak: f64,
    pub(crate) clean: bool,
    /// Every run of the point was valid (see `summary::Validity`); a
    /// point measured while the generator fell behind is drawn hollow.
    pub(crate) valid: bool,
    /// Throughput and p50 within ±10% across repeats, p99 within ±20%.
    pub(crate) spread_within: bool,
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs every point of a scenario's `[sweep]`; returns whether all passed.
pub async fn sweep(name: &str, out: &Path, quiet: bool, repeat: u32) -> anyhow::Result<bool> {
    let path = scenario::resolve(name);
    let base = scenario::load(&path)?;
    anyhow::ensure!(!base.sweep.is_empty(), "{}: has no [sweep]", path.display());
    let points = sweep_points(&base.sweep);
    let started = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let sweep_dir = out.join(format!("{started}-{}-sweep", base.name));
    std::fs::create_dir_all(&sweep_dir)?;
    eprintln!("{}: {} points", base.name, points.len());
    let mut results = Vec::new();
    let mut all_passed = true;
    for (i, point) in points.iter().enumerate() {
        let mut scenario = base.clone();
        scenario.sweep.clear();
        let mut labels = Vec::new();
        let mut described = BTreeMap::new();
        for (key, value) in point {
            apply_override(&mut scenario, key, value);
            let short = key.rsplit('.').next().unwrap_or(key);
            labels.push(format!("{short}-{}", value_text(value)));
            described.insert(key.clone(), value_text(value));
        }
        eprintln!("point {}/{}: {}", i + 1, points.len(), labels.join(" "));
        let outcomes = run_repeated(
            &scenario,
            out,
            Some(described.clone()),
            Some(labels.join("_")),
            repeat,
            !quiet,
        )
        .await?;
        let summaries: Vec<&crate::summary::Summary> =
            outcomes.iter().map(|o| &o.summary).collect();
        all_passed &= summaries.iter().all(|s| s.passed);
        let aggregate = Aggregate::of(&summaries);
        let median = |f: fn(&crate::summary::Summary) -> f64| {
            crate::repeat::Spread::of(&summaries.iter().map(|s| f(s)).collect::<Vec<_>>(), 1.0)
                .median
        };
        results.push(SweepPoint {
            point: described,
            run: aggregate.runs.first().cloned().unwrap_or_default(),
            runs: aggregate.runs.clone(),
            accepted_per_s: aggregate.accepted_per_s.median,
            error_rate: median(|s| s.error_rate),
            press_p99_ms: aggregate.press_p99_ms.median,
            press_to_sse_p50_ms: aggregate.press_to_sse_p50_ms.median,
            press_to_sse_p99_ms: aggregate.press_to_sse_p99_ms.median,
            press_to_sse_p999_ms: median(|s| s.press_to_sse.p999_ms),
            lag_peak: median(|s| s.lag_peak),
            clean: aggregate.clean,
            valid: aggregate.valid,
            spread_within: aggregate.spread_within,
        });
    }
    std::fs::write(
        sweep_dir.join("sweep.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(sweep_dir.join("scenario.toml"), toml::to_string(&base)?)?;
    let table = sweep_table(&results);
    std::fs::write(
        sweep_dir.join("sweep.md"),
        format!(
            "# {} sweep\n\n{}\n![throughput vs p99](throughput_vs_p99.svg)\n",
            base.name, table
        ),
    )?;
    sweep_chart(&sweep_dir.join("throughput_vs_p99.svg"), &results)?;
    println!("\n{table}\nsweep stored in {}", sweep_dir.display());
    Ok(all_passed)
}

fn sweep_table(results: &[SweepPoint]) -> String {
    let keys: Vec<String> = results
        .first()
        .map(|r| r.point.keys().cloned().collect())
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| {} | accepted/s | press p99 ms | to SSE p50 ms | to SSE p99 ms | to SSE p99.9 ms | lag peak | verdict | validity | repeats |",
        keys.join(" | ")
    );
    let _ = writeln!(md, "|{}", "---|".repeat(keys.len() + 9));
    for r in results {
        let values: Vec<&str> = keys
            .iter()
            .map(|k| r.point.get(k).map_or("", String::as_str))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
            values.join(" | "),
            r.accepted_per_s,
            r.press_p99_ms,
            r.press_to_sse_p50_ms,
            r.press_to_sse_p99_ms,
            r.press_to_sse_p999_ms,
            r.lag_peak,
            if r.clean { "clean" } else { "FAILED" },
            if r.valid { "valid" } else { "INVALID" },
            match (r.runs.len(), r.spread_within) {
                (0 | 1, _) => "1".to_owned(),
                (n, true) => format!("{n}, spread ok"),
                (n, false) => format!("{n}, spread WIDE"),
            }
        );
    }
    md
}

/// The sweep key that sets every phase's rate.
pub(crate) const RATE_KEY: &str = "phase.rate";

/// Accepted presses/s against p99 press-to-SSE, one dot per point. When
/// the sweep went over rates, each tuning point is a line through its
/// rates, so where a line turns up is that tuning's knee; a point that
/// lost or refused presses is a cross.
pub(crate) fn sweep_chart(path: &Path, results: &[SweepPoint]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = results.iter().map(|r| r.accepted_per_s).fold(1.0, f64::max) * 1.1;
    let y_max = results
        .iter()
        .map(|r| r.press_to_sse_p99_ms)
        .fold(1.0, f64::max)
        * 1.15;
    let by_rate = results.iter().any(|r| r.point.contains_key(RATE_KEY));
    let broke = |r: &SweepPoint| !r.clean || r.error_rate > 0.0;
    if by_rate {
        rate_lines(&root, results, x_max, &broke)?;
        root.present()?;
        return Ok(());
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "sweep: accepted presses/s vs p99 press-to-SSE (ms); hollow: invalid",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("accepted/s")
        .y_desc("p99 ms")
        .draw()?;
    for r in results {
        let label: Vec<String> = r.point.values().cloned().collect();
        let (x, y) = (r.accepted_per_s, r.press_to_sse_p99_ms);
        if broke(r) {
            chart.draw_series(std::iter::once(Cross::new((x, y), 5, RED.stroke_width(2))))?;
        } else if !r.valid {
            chart.draw_series(std::iter::once(Circle::new(
                (x, y),
                5,
                BLUE.stroke_width(2),
            )))?;
        } else {
            chart.draw_series(std::iter::once(Circle::new((x, y), 4, BLUE.filled())))?;
        }
        chart.draw_series(std::iter::once(Text::new(
            label.join("/"),
            (x, y),
            ("sans-serif", 10),
        )))?;
    }
    root.present()?;
    Ok(())
}

/// Distinct on white, in legend order.
const LINE_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// One line per tuning point through its rates, p99 on a log scale so the
/// floor and the collapse both read.
fn rate_lines(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    results: &[SweepPoint],
    x_max: f64,
    broke: &dyn Fn(&SweepPoint) -> bool,
) -> anyhow::Result<()> {
    let p99 = || results.iter().map(|r| r.press_to_sse_p99_ms.max(0.1));
    let y_min = p99().fold(f64::MAX, f64::min) * 0.7;
    let y_max = p99().fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(root)
        .caption(
            "accepted/s vs p99 press-to-SSE, a line per tuning; hollow: invalid",
            ("sans-serif", 17),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("accepted/s")
        .y_desc("p99 ms (log)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    // In the order the sweep ran them: the scenario's order of values.
    let mut lines: Vec<(String, Vec<(f64, &SweepPoint)>)> = Vec::new();
    for r in results {
        let tuning: Vec<String> = r
            .point
            .iter()
            .filter(|(k, _)| k.as_str() != RATE_KEY)
            .map(|(k, v)| format!("{}={v}", k.rsplit('.').next().unwrap_or(k)))
            .collect();
        let rate = r
            .point
            .get(RATE_KEY)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let label = if tuning.is_empty() {
            "as configured".to_owned()
        } else {
            tuning.join(" ")
        };
        match lines.iter_mut().find(|(l, _)| *l == label) {
            Some((_, points)) => points.push((rate, r)),
            None => lines.push((label, vec![(rate, r)])),
        }
    }
    for (i, (label, mut points)) in lines.into_iter().enumerate() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = LINE_COLORS[i % LINE_COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|(_, r)| (r.accepted_per_s, r.press_to_sse_p99_ms)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        for (rate, r) in &points {
            let at = (r.accepted_per_s, r.press_to_sse_p99_ms);
            if broke(r) {
                chart.draw_series(std::iter::once(Cross::new(at, 5, RED.stroke_width(2))))?;
            } else if !r.valid {
                // Hollow: the generator or the machine, not the stack, set it.
                chart.draw_series(std::iter::once(Circle::new(at, 5, color.stroke_width(2))))?;
            } else {
                chart.draw_series(std::iter::once(Circle::new(at, 4, color.filled())))?;
            }
            chart.draw_series(std::iter::once(Text::new(
                format!("{rate}/s{}", if r.valid { "" } else { " (invalid)" }),
                at,
                ("sans-serif", 10),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `experiments/<run>` or a path.
fn run_dir(name: &str, experiments: &Path) -> PathBuf {
    let p = PathBuf::from(name);
    if p.is_dir() {
        p
    } else {
        experiments.join(name)
    }
}

fn load_summary(dir: &Path) -> anyhow::Result<Value> {
    let path = dir.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

const COMPARED: &[(&str, &str)] = &[
    ("accepted/s", "/accepted_per_s"),
    ("error rate", "/error_rate"),
    ("press p50 ms", "/press_latency/p50_ms"),
    ("press p99 ms", "/press_latency/p99_ms"),
    ("to SSE p50 ms", "/press_to_sse/p50_ms"),
    ("to SSE p99 ms", "/press_to_sse/p99_ms"),
    ("to SSE p99.9 ms", "/press_to_sse/p999_ms"),
    ("fan-out p99 ms", "/fanout/p99_ms"),
    ("lag peak", "/lag_peak"),
    ("drain s", "/drain_s"),
    ("lost", "/verdict/lost"),
    ("duplicated", "/verdict/duplicated"),
];

/// The compared runs' summaries: (folder name, summary).
fn load_runs(runs: &[String], experiments: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    runs.iter()
        .map(|r| {
            let dir = run_dir(r, experiments);
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(r)
                .to_owned();
            Ok((name, load_summary(&dir)?))
        })
        .collect()
}

/// The comparison as rows: label, then one value per run, then each
/// run's ratio to the first.
fn compare_rows(loaded: &[(String, Value)]) -> Vec<(String, Vec<String>, Vec<String>)> {
    COMPARED
        .iter()
        .map(|(label, pointer)| {
            let values: Vec<Option<f64>> = loaded
                .iter()
                .map(|(_, s)| s.pointer(pointer).and_then(Value::as_f64))
                .collect();
            let shown = values
                .iter()
                .map(|v| v.map_or("-".to_owned(), |v| format!("{v:.3}")))
                .collect();
            let ratios = values[1..]
                .iter()
                .map(|v| match (values[0], v) {
                    (Some(x), Some(y)) if x != 0.0 => format!("{:.2}", y / x),
                    _ => "-".to_owned(),
                })
                .collect();
            ((*label).to_owned(), shown, ratios)
        })
        .collect()
}

pub fn compare(runs: &[String], experiments: &Path) -> anyhow::Result<()> {
    let loaded = load_runs(runs, experiments)?;
    for (i, (name, _)) in loaded.iter().enumerate() {
        println!("{}: {name}", (b'A' + i as u8) as char);
    }
    let letters: Vec<char> = (0..loaded.len())
        .map(|i| (b'A' + i as u8) as char)
        .collect();
    let mut header = format!("\n{:<18}", "");
    for l in &letters {
        header.push_str(&format!(" {l:>12}"));
    }
    for l in &letters[1..] {
        header.push_str(&format!(" {:>8}", format!("{l}/A")));
    }
    println!("{header}");
    for (label, values, ratios) in compare_rows(&loaded) {
        let mut line = format!("{label:<18}");
        for v in values {
            line.push_str(&format!(" {v:>12}"));
        }
        for r in ratios {
            line.push_str(&format!(" {r:>8}"));
        }
        println!("{line}");
    }
    Ok(())
}

/// Writes `experiments/<file>`: the comparison table and every run's
/// charts side by side.
pub fn compare_page(runs: &[String], experiments: &Path, file: &str) -> anyhow::Result<PathBuf> {
    let loaded = load_runs(runs, experiments)?;
    let mut md = String::from("# Runs side by side\n\n");
    for (i, (name, s)) in loaded.iter().enumerate() {
        let _ = writeln!(
            md,
            "- {}: [`{name}`]({name}/report.html), scenario `{}`",
            (b'A' + i as u8) as char,
            s["scenario"].as_str().unwrap_or("?")
        );
    }
    md.push_str("\n| |");
    for i in 0..loaded.len() {
        md.push_str(&format!(" {} |", (b'A' + i as u8) as char));
    }
    for i in 1..loaded.len() {
        md.push_str(&format!(" {}/A |", (b'A' + i as u8) as char));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(2 * loaded.len() - 1));
    md.push('\n');
    for (label, values, ratios) in compare_rows(&loaded) {
        let _ = writeln!(
            md,
            "| {label} | {} | {} |",
            values.join(" | "),
            ratios.join(" | ")
        );
    }
    // One table row: a cell per run.
    let row = |cell: &dyn Fn(&str) -> String| {
        let cells: Vec<String> = loaded.iter().map(|(n, _)| cell(n)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    for chart in ["latency.svg", "timeline.svg", "lag.svg"] {
        md.push('\n');
        md.push_str(&row(&|n| format!("`{n}`")));
        md.push_str(&format!("|{}\n", "---|".repeat(loaded.len())));
        md.push_str(&row(&|n| format!("![{chart}]({n}/{chart})")));
    }
    let path = experiments.join(file);
    std::fs::write(&path, page("Runs side by side", &md, Some("index.html")))?;
    Ok(path)
}

/// What a run exercises: a run whose commit differs from HEAD in any of
/// these measured other code than HEAD's.
const EXERCISED: &[&str] = &[
    "Cargo.lock",
    "Cargo.toml",
    "migrations",
    "domain/src",
    "domain/Cargo.toml",
    "store/src",
    "store/Cargo.toml",
    "infra/src",
    "infra/Cargo.toml",
    "service/src",
    "service/Cargo.toml",
    "reducer/src",
    "reducer/Cargo.toml",
    "relay/src",
    "relay/Cargo.toml",
    "stack/src",
    "stack/Cargo.toml",
    "client/src",
    "client/Cargo.toml",
    "loadgen/src",
    "loadgen/build.rs",
    "loadgen/Cargo.toml",
];

/// The scenario whose runs vouch for a changed generator.
pub const GENERATOR_CANARY: &str = "generator-canary";

/// Whether a path (from the repository's root) is code a run exercises.
pub(crate) fn exercised(path: &str) -> bool {
    EXERCISED.iter().any(|e| {
        path == *e
            || path
                .strip_prefix(e)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Decides which stored runs measured the code in the work tree: by the
/// fingerprints of the components a run started, or, for runs stored
/// before those were recorded, by its commit.
pub struct Freshness {
    head: Option<String>,
    by_commit: BTreeMap<String, Option<String>>,
    /// The work tree's fingerprints, or why there are none.
    current: Result<BTreeMap<String, String>, String>,
    /// A stored canary run of the current generator (its name), which
    /// keeps runs of an earlier generator fresh.
    generator_canary: Option<String>,
}

impl Freshness {
    pub fn at_head() -> Freshness {
        let head = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let root = std::process::Command::new("git")
            .args(["rev-parse", "--show-toplevel"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(
                || PathBuf::from("."),
                |o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            );
        Freshness {
            head,
            by_commit: BTreeMap::new(),
            current: crate::fingerprint::of_workspace(&root).map_err(|e| format!("{e:#}")),
            generator_canary: None,
        }
    }

    /// Records the stored canary runs (scenario `generator-canary`, valid,
    /// verdict passed): one whose generator is the work tree's vouches for
    /// the generator of every other run.
    pub fn note_canary(&mut self, name: &str, summary: &Value, meta: &Value) {
        let current = self.current.as_ref().ok().and_then(|c| c.get("generator"));
        let generator = meta
            .pointer("/fingerprints/generator")
            .and_then(Value::as_str);
        let passed = summary.get("scenario").and_then(Value::as_str) == Some(GENERATOR_CANARY)
            && summary.pointer("/verdict/clean").and_then(Value::as_bool) == Some(true)
            && summary.pointer("/validity/valid").and_then(Value::as_bool) != Some(false);
        if passed && current.is_some() && generator == current.map(String::as_str) {
            self.generator_canary = Some(name.to_owned());
        }
    }

    /// Why a run (its `meta.json`) is stale; none when it measured the
    /// code that would be built now.
    pub fn stale_reason(&mut self, meta: &Value) -> Option<String> {
        if let Some(prints) = meta
            .get("fingerprints")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
        {
            let current = match &self.current {
                Ok(c) => c,
                Err(e) => return Some(format!("the work tree has no fingerprints: {e}")),
            };
            let changed: Vec<&str> = prints
                .iter()
                .filter(|(c, h)| current.get(*c).map(String::as_str) != h.as_str())
                // The generator is vouched for by its canary, not by
                // re-running everything.
                .filter(|(c, _)| !(c.as_str() == "generator" && self.generator_canary.is_some()))
                .map(|(c, _)| c.as_str())
                .collect();
            return (!changed.is_empty()).then(|| {
                let generator = if changed.contains(&"generator") {
                    " (and no passing `generator-canary` run of the current generator)"
                } else {
                    ""
                };
                format!("its {} changed since{generator}", changed.join(", "))
            });
        }
        if meta.get("git_dirty").and_then(Value::as_bool) == Some(true) {
            // Older runs did not record which files: any edit counts.
            let dirty: Option<Vec<String>> = meta
                .get("git_dirty_paths")
                .and_then(|p| serde_json::from_value(p.clone()).ok());
            match dirty {
                None => return Some("run from a tree with uncommitted changes".to_owned()),
                Some(paths) => {
                    if let Some(p) = paths.iter().find(|p| exercised(p)) {
                        return Some(format!("run with uncommitted changes to {p}"));
                    }
                }
            }
        }
        let Some(commit) = meta.get("git_commit").and_then(Value::as_str) else {
            return Some("no commit recorded".to_owned());
        };
        let head = self.head.clone()?;
        if commit == head {
            return None;
        }
        self.by_commit
            .entry(commit.to_owned())
            .or_insert_with(|| {
                let status = std::process::Command::new("git")
                    .args(["diff", "--quiet", commit, &head, "--"])
                    .args(EXERCISED)
                    .status();
                let short = &commit[..commit.len().min(10)];
                match status.ok().and_then(|s| s.code()) {
                    Some(0) => None,
                    Some(1) => Some(format!(
                        "commit {short} differs from HEAD in the code it runs"
                    )),
                    _ => Some(format!("commit {short} is not in this clone")),
                }
            })
            .clone()
    }
}

/// Regenerates the generated sections of SCALE.md (between
/// `<!-- report:NAME -->` and `<!-- /report:NAME -->`) from stored runs.
pub fn report(experiments: &Path, scale: &Path) -> anyhow::Result<()> {
    let mut runs: Vec<(String, Value, Value)> = Vec::new();
    let mut sweeps: Vec<(String, Value)> = Vec::new();
    let mut repeats: Vec<(String, Value)> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(experiments)
        .with_context(|| format!("reading {}", experiments.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    for dir in names {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if let Ok(text) = std::fs::read_to_string(dir.join("sweep.json")) {
            sweeps.push((name, serde_json::from_str(&text)?));
        } else if let Ok(text) = std::fs::read_to_string(dir.join("repeat.json")) {
            repeats.push((name, serde_json::from_str(&text)?));
        } else if dir.join("summary.json").is_file() && dir.join("scenario.toml").is_file() {
            let meta = std::fs::read_to_string(dir.join("meta.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            runs.push((name, load_summary(&dir)?, meta.unwrap_or(Value::Null)));
        }
    }
    // Headline tables come from runs of HEAD's code only; the others are
    // listed with the reason.
    let mut freshness = Freshness::at_head();
    for (name, summary, meta) in &runs {
        freshness.note_canary(name, summary, meta);
    }
    let mut stale: Vec<(String, String)> = Vec::new();
    let mut stale_names = std::collections::BTreeSet::new();
    runs.retain(|(name, _, meta)| match freshness.stale_reason(meta) {
        Some(reason) => {
            stale.push((name.clone(), reason));
            stale_names.insert(name.clone());
            false
        }
        None => true,
    });
    sweeps.retain(|(name, points)| {
        let first = points
            .pointer("/0/run")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let fresh = !first.is_empty()
            && !stale_names.contains(first)
            && runs.iter().any(|(n, _, _)| n == first);
        if !fresh {
            stale.push((name.clone(), "its runs are stale".to_owned()));
        }
        fresh
    });
    let mut sections = BTreeMap::new();
    // The list itself lives beside the runs: in SCALE.md it outgrew every
    // table a reader came for.
    let index = experiments.join(STALE_INDEX);
    std::fs::write(&index, stale_index(&stale))
        .with_context(|| format!("writing {}", index.display()))?;
    sections.insert("stale", stale_section(stale.len()));
    sections.insert("runs", runs_table(&runs));
    sections.insert("ab", crate::ab::section(experiments)?);
    repeats.retain(|(_, r)| {
        r.get("runs")
            .and_then(Value::as_array)
            .is_some_and(|names| {
                !names.is_empty()
                    && names.iter().all(|n| {
                        n.as_str()
                            .is_some_and(|n| runs.iter().any(|(run, _, _)| run == n))
                    })
            })
    });
    sections.insert("repeats", repeats_section(&repeats));
    sections.insert("architectures", crate::arch::section(&runs, experiments)?);
    sections.insert("fanout", fanout_section(&runs));
    // The sections below are the default path's: runs of other ingest
    // paths are compared in `architectures`.
    let kafka: Vec<(String, Value, Value)> = runs
        .iter()
        .filter(|(_, s, _)| {
            s.get("ingest")
                .and_then(Value::as_str)
                .is_none_or(|i| i == "kafka")
        })
        .cloned()
        .collect();
    let runs = kafka;
    sections.insert("knee", knee_section(&runs, &repeats));
    sections.insert("press-path", press_path_section(&runs));
    sections.insert("spike", spike_section(&runs));
    sections.insert("faults", faults_section(&runs));
    sections.insert("fault-matrix", fault_matrix(&runs));
    sections.insert("soak", soak_section(&runs, experiments));
    sections.insert("sweep", sweep_section(&sweeps, "sweep", experiments)?);
    sections.insert(
        "knee-sweep",
        sweep_section(&sweeps, "knee-sweep", experiments)?,
    );
    let mut text =
        std::fs::read_to_string(scale).with_context(|| format!("reading {}", scale.display()))?;
    for (name, body) in sections {
        let (open, close) = (
            format!("<!-- report:{name} -->"),
            format!("<!-- /report:{name} -->"),
        );
        let (Some(a), Some(b)) = (text.find(&open), text.find(&close)) else {
            anyhow::bail!("{}: missing the markers {open} … {close}", scale.display());
        };
        text.replace_range(a + open.len()..b, &format!("\n{body}"));
    }
    std::fs::write(scale, text)?;
    println!(
        "{} regenerated from {} runs and {} sweeps",
        scale.display(),
        runs.len(),
        sweeps.len()
    );
    Ok(())
}

/// The index of stale runs that `report` writes under `experiments/`.
pub const STALE_INDEX: &str = "STALE.md";

const NONE_STALE: &str = "None: every stored run measured the code at HEAD.\n";

fn stale_section(count: usize) -> String {
    if count == 0 {
        return NONE_STALE.to_owned();
    }
    format!(
        "{count} stored runs and sweeps measured other code than HEAD's and are left out of the tables above; `experiments/{STALE_INDEX}` lists each with the reason.\n"
    )
}

fn stale_index(stale: &[(String, String)]) -> String {
    let mut md = String::from(
        "# Stale runs\n\nWritten by `loadgen report`: the stored runs and sweeps that measured other code than HEAD's (a component they started has changed since), left out of SCALE.md's tables and kept for the record.\n\n",
    );
    if stale.is_empty() {
        md.push_str(NONE_STALE);
        return md;
    }
    md.push_str("| run | why stale |\n|---|---|\n");
    for (name, reason) in stale {
        let _ = writeln!(md, "| `{name}` | {reason} |");
    }
    md
}

/// Every fresh repeated run's aggregate: medians with their spread.
fn repeats_section(repeats: &[(String, Value)]) -> String {
    if repeats.is_empty() {
        return "No repeated run of HEAD's code stored yet.\n".to_owned();
    }
    let mut md = String::from(
        "| repeats | scenario | n | accepted/s | press p50 ms | press p99 ms | to SSE p50 ms | to SSE p99 ms | knee/s | spread | verdicts | validity |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let spread = |r: &Value, key: &str, digits: usize| -> String {
        match (
            r.pointer(&format!("/{key}/median")).and_then(Value::as_f64),
            r.pointer(&format!("/{key}/min")).and_then(Value::as_f64),
            r.pointer(&format!("/{key}/max")).and_then(Value::as_f64),
        ) {
            (Some(m), Some(lo), Some(hi)) => format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})"),
            _ => "-".to_owned(),
        }
    };
    for (name, r) in repeats {
        let point = r
            .get("sweep_point")
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|p| !p.is_empty())
            .map_or(String::new(), |p| format!(" ({p})"));
        let _ = writeln!(
            md,
            "| `{name}` | {}{point} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.get("scenario").and_then(Value::as_str).unwrap_or("?"),
            r.get("runs").and_then(Value::as_array).map_or(0, Vec::len),
            spread(r, "accepted_per_s", 0),
            spread(r, "press_p50_ms", 2),
            spread(r, "press_p99_ms", 2),
            spread(r, "press_to_sse_p50_ms", 2),
            spread(r, "press_to_sse_p99_ms", 2),
            // Runs whose knee was the ramp's last step only bound it.
            match r.get("knee_lower_bounds").and_then(Value::as_u64) {
                Some(n) if n > 0 => format!(
                    "≥ {} (the ramp's last step in {n} of {} runs)",
                    spread(r, "knee_per_s", 0),
                    r.get("runs").and_then(Value::as_array).map_or(0, Vec::len)
                ),
                _ => spread(r, "knee_per_s", 0),
            },
            if r.get("spread_within").and_then(Value::as_bool) == Some(true) {
                "within ±10% / ±20%"
            } else {
                "WIDE"
            },
            if r.get("clean").and_then(Value::as_bool) == Some(true) {
                "all clean"
            } else {
                "NOT all clean"
            },
            if r.get("valid").and_then(Value::as_bool) == Some(true) {
                "all valid"
            } else {
                "NOT all valid"
            },
        );
    }
    md
}

pub(crate) fn num(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .map_or("-".to_owned(), |x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        })
}

fn validity(v: &Value) -> String {
    match v.pointer("/validity/valid").and_then(Value::as_bool) {
        Some(true) => "valid".to_owned(),
        Some(false) => format!(
            "INVALID: {}",
            v.pointer("/validity/reasons")
                .and_then(Value::as_array)
                .map(|r| r
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; "))
                .unwrap_or_default()
        ),
        None => "not judged".to_owned(),
    }
}

fn verdict(v: &Value) -> &'static str {
    if v.pointer("/verdict/clean").and_then(Value::as_bool) == Some(true) {
        "clean"
    } else {
        "FAILED"
    }
}

fn runs_table(runs: &[(String, Value, Value)]) -> String {
    let mut md = String::from(
        "| run | accepted/s | press p99 ms | to SSE p50 ms | to SSE p99 ms | to SSE p99.9 ms | fan-out p99 ms | lag peak | lost | dup | verdict | validity |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, s, _) in runs
        .iter()
        .filter(|(_, s, _)| s.get("sweep_point").is_none_or(Value::is_null))
    {
        let _ = writeln!(
            md,
            "| `{name}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(s, "/accepted_per_s"),
            num(s, "/press_latency/p99_ms"),
            num(s, "/press_to_sse/p50_ms"),
            num(s, "/press_to_sse/p99_ms"),
            num(s, "/press_to_sse/p999_ms"),
            num(s, "/fanout/p99_ms"),
            num(s, "/lag_peak"),
            num(s, "/verdict/lost"),
            num(s, "/verdict/duplicated"),
            verdict(s),
            validity(s)
        );
    }
    if let Some((_, _, meta)) = runs.last() {
        let _ = writeln!(
            md,
            "\nMachine: {}, {} cores, {} KiB; kernel {}; {}; {}; {}.",
            meta.pointer("/machine/cpu_model")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            meta.pointer("/machine/cores")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            meta.pointer("/machine/memory_kib")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            meta.pointer("/machine/kernel")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            meta.pointer("/versions/broker")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            meta.pointer("/versions/postgres")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            meta.pointer("/versions/redis")
                .and_then(Value::as_str)
                .unwrap_or("?"),
        );
    }
    md
}

fn phase_rows(s: &Value) -> String {
    let mut md = String::from(
        "| phase | target/s | accepted/s | press p99 ms | to SSE p50 ms | to SSE p99 ms | to SSE p99.9 ms |\n|---|---|---|---|---|---|---|\n",
    );
    for p in s
        .get("phases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if p.get("not_run").and_then(Value::as_bool) == Some(true) {
            let _ = writeln!(
                md,
                "| {} | {} | not run: the ramp stopped | | | | |",
                p.get("name").and_then(Value::as_str).unwrap_or("?"),
                num(p, "/rate"),
            );
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.get("name").and_then(Value::as_str).unwrap_or("?"),
            num(p, "/rate"),
            num(p, "/accepted_per_s"),
            num(p, "/press_latency/p99_ms"),
            num(p, "/press_to_sse/p50_ms"),
            num(p, "/press_to_sse/p99_ms"),
            num(p, "/press_to_sse/p999_ms"),
        );
    }
    md
}

fn latest(
    runs: &[(String, Value, Value)],
    pred: impl Fn(&Value) -> bool,
) -> Option<&(String, Value, Value)> {
    runs.iter().rev().find(|(_, s, _)| pred(s))
}

/// The ramp's knee from its newest fresh repeats: median and spread, the
/// step every repeat met, whether the repeats agree, and each run's host
/// index beside its knee.
fn repeated_knee(runs: &[(String, Value, Value)], repeats: &[(String, Value)]) -> Option<String> {
    let (name, aggregate) = repeats
        .iter()
        .rev()
        .find(|(_, r)| r.get("scenario").and_then(Value::as_str) == Some("ramp"))?;
    let aggregate: crate::repeat::Aggregate = serde_json::from_value(aggregate.clone()).ok()?;
    let mut md = format!(
        "From the {} repeats `{name}`: knee **{}**.\n\n| run | started | knee presses/s | host index (before, after) | verdict | validity |\n|---|---|---|---|---|---|\n",
        aggregate.runs.len(),
        aggregate.knee_text()?
    );
    for run in &aggregate.runs {
        let Some((_, s, _)) = runs.iter().find(|(n, _, _)| n == run) else {
            continue;
        };
        let host: Option<crate::host::HostReport> = s
            .get("host")
            .filter(|h| !h.is_null())
            .and_then(|h| serde_json::from_value(h.clone()).ok());
        let host = host.map_or("–".to_owned(), |h| {
            let part = |i: Option<crate::host::Index>| {
                i.map_or("–".to_owned(), |i| format!("{:.3}", i.index))
            };
            format!(
                "{} ({}, {})",
                h.index.map_or("–".to_owned(), |i| format!("**{i:.3}**")),
                part(h.before_index),
                part(h.after_index)
            )
        });
        let _ = writeln!(
            md,
            "| `{run}` | {} | {} | {host} | {} | {} |",
            s.get("started_at").and_then(Value::as_str).unwrap_or(""),
            num(s, "/knee_per_s"),
            verdict(s),
            if s.pointer("/validity/valid").and_then(Value::as_bool) == Some(false) {
                "invalid"
            } else {
                "valid"
            }
        );
    }
    Some(md)
}

fn knee_section(runs: &[(String, Value, Value)], repeats: &[(String, Value)]) -> String {
    if let Some(md) = repeated_knee(runs, repeats) {
        return md;
    }
    // The ramp's own runs first: a sweep point's single-rate knee is not
    // the stack's.
    let ramp = latest(runs, |s| {
        s.get("scenario").and_then(Value::as_str) == Some("ramp")
    });
    match ramp.or_else(|| latest(runs, |s| s.get("knee_per_s").is_some_and(|k| !k.is_null()))) {
        Some((name, s, _)) => format!(
            "From `{name}`: knee **{} presses/s** (verdict {}).{}\n\n{}",
            match s.get("knee_per_s").and_then(Value::as_f64) {
                Some(k) if s.get("knee_is_lower_bound").and_then(Value::as_bool) == Some(true) => {
                    crate::summary::knee_text(k, true)
                }
                _ => num(s, "/knee_per_s"),
            },
            verdict(s),
            s.get("stopped")
                .filter(|v| !v.is_null())
                .and_then(|v| serde_json::from_value::<crate::summary::RampStop>(v.clone()).ok())
                .map_or(String::new(), |stop| format!(" Ramp {}.", stop.describe())),
            phase_rows(s)
        ),
        None => "No ramp run stored yet.\n".to_owned(),
    }
}

/// The newest run that measured the press path: its ratio, both rates and
/// the client that sent both.
fn press_path_section(runs: &[(String, Value, Value)]) -> String {
    let path = |s: &Value| {
        serde_json::from_value::<crate::summary::PressPath>(s.get("press_path")?.clone()).ok()
    };
    match latest(runs, |s| path(s).is_some()) {
        Some((name, s, _)) => {
            let p = path(s).expect("picked for having one");
            format!(
                "From `{name}`: press/trivial **{:.3}** (goal ≥ {}): {} (verdict {}).\n",
                p.ratio,
                crate::summary::PRESS_PATH_GOAL,
                crate::report::press_path_text(&p),
                verdict(s)
            )
        }
        None => "No press-path run stored yet.\n".to_owned(),
    }
}

fn spike_section(runs: &[(String, Value, Value)]) -> String {
    match latest(runs, |s| {
        s.get("scenario").and_then(Value::as_str) == Some("spike")
    }) {
        Some((name, s, _)) => format!(
            "From `{name}`: lag peak {} records, back to zero {} s after the peak, drained {} s after the load ended (verdict {}).\n\n{}",
            num(s, "/lag_peak"),
            num(s, "/lag_recovery_s"),
            num(s, "/drain_s"),
            verdict(s),
            phase_rows(s)
        ),
        None => "No spike run stored yet.\n".to_owned(),
    }
}

/// Every `fanout` run, grouped by transport, service instances and any
/// other key changed with `--set` (so a median is over repeats of one
/// setting only): the clients' memory, commit-to-client latency over every
/// client's frames, and whether the listeners kept up.
fn fanout_section(runs: &[(String, Value, Value)]) -> String {
    let mut groups: BTreeMap<(String, usize, String), Vec<(&String, &Value)>> = BTreeMap::new();
    for (name, s, _) in runs {
        if s.get("scenario").and_then(Value::as_str) != Some("fanout") {
            continue;
        }
        let transport = s
            .get("transport")
            .and_then(Value::as_str)
            .unwrap_or("sse")
            .to_owned();
        let services = s
            .pointer("/clients_memory/processes")
            .and_then(Value::as_object)
            .map_or(1, |p| p.len().max(1));
        // The columns already show these two.
        let changed = s
            .get("overrides")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| *k != "sse.transport" && *k != "stack.services")
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        groups
            .entry((transport, services, changed))
            .or_default()
            .push((name, s));
    }
    if groups.is_empty() {
        return "No fanout run stored yet.\n".to_owned();
    }
    let mut md = String::from(
        "| transport | services | also set | run | clients connected | KiB per client idle / loaded | commit→client p50 / p99 / p99.9 ms | press→SSE p99 ms | press p99 ms | listener lateness p99 ms | service CPU-µs per press | verdict | validity |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for ((transport, services, changed), members) in &groups {
        for (name, s) in members {
            let _ = writeln!(
                md,
                "| {transport} | {services} | {changed} | `{name}` | {} of {} | {} / {} | {} / {} / {} | {} | {} | {} | {} | {} | {} |",
                num(s, "/clients_memory/connected"),
                num(s, "/clients_memory/listeners"),
                one_decimal(s, "/clients_memory/per_client_kib"),
                one_decimal(s, "/clients_memory/per_client_loaded_kib"),
                num(s, "/fanout/p50_ms"),
                num(s, "/fanout/p99_ms"),
                num(s, "/fanout/p999_ms"),
                num(s, "/press_to_sse/p99_ms"),
                num(s, "/press_latency/p99_ms"),
                num(s, "/observer_lag/p99_ms"),
                service_cost(s),
                verdict(s),
                validity(s)
            );
        }
        if members.len() > 1 {
            let spread = |pointer: &str| {
                let values: Vec<f64> = members
                    .iter()
                    .filter_map(|(_, s)| s.pointer(pointer).and_then(Value::as_f64))
                    .collect();
                let sp = crate::repeat::Spread::of(&values, 1.0);
                format!("{:.1} ({:.1}–{:.1})", sp.median, sp.min, sp.max)
            };
            let _ = writeln!(
                md,
                "| {transport} | {services} | {changed} | **median of {} (min–max)** | | {} / {} | p99 {} | {} | | {} | | | |",
                members.len(),
                spread("/clients_memory/per_client_kib"),
                spread("/clients_memory/per_client_loaded_kib"),
                spread("/fanout/p99_ms"),
                spread("/press_to_sse/p99_ms"),
                spread("/observer_lag/p99_ms"),
            );
        }
    }
    md
}

fn one_decimal(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .map_or("-".to_owned(), |x| format!("{x:.1}"))
}

/// CPU-µs per press of every service process together.
fn service_cost(s: &Value) -> String {
    let total: f64 = s
        .get("cost_us_per_press")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("service"))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    if total > 0.0 {
        format!("{total:.0}")
    } else {
        "-".to_owned()
    }
}

fn faults_section(runs: &[(String, Value, Value)]) -> String {
    let mut md = String::new();
    for (name, s, _) in runs.iter().filter(|(_, s, _)| {
        s.get("faults")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    }) {
        let faults: Vec<String> = s["faults"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{} {} at {:.1} s",
                    f["action"].as_str().unwrap_or("?"),
                    f["target"].as_str().unwrap_or("?"),
                    f["at_s"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "- `{name}`: {}. Accepted {}, lost {}, duplicated {}, errors {}; verdict **{}**.",
            faults.join(", "),
            num(s, "/verdict/accepted"),
            num(s, "/verdict/lost"),
            num(s, "/verdict/duplicated"),
            s.get("errors").map_or("{}".to_owned(), Value::to_string),
            verdict(s)
        );
    }
    if md.is_empty() {
        "No fault run stored yet.\n".to_owned()
    } else {
        md
    }
}

/// The newest `soak` run: memory and open files of every process at the
/// start, the middle and the end, from its per-second samples.
fn soak_section(runs: &[(String, Value, Value)], experiments: &Path) -> String {
    let Some((name, s, _)) = latest(runs, |s| {
        s.get("scenario").and_then(Value::as_str) == Some("soak")
    }) else {
        return "No soak run stored yet.\n".to_owned();
    };
    let rows = crate::sample::read_columns(&experiments.join(name).join("timeseries.csv"));
    let t = rows.get("t_s").cloned().unwrap_or_default();
    // The mean over one minute from `from_s`, skipping empty samples.
    let minute = |column: &str, from_s: f64| -> String {
        let Some(values) = rows.get(column) else {
            return "-".to_owned();
        };
        let picked: Vec<f64> = t
            .iter()
            .zip(values)
            .filter(|(t, v)| **t > from_s && **t <= from_s + 60.0 && v.is_finite())
            .map(|(_, v)| *v)
            .collect();
        if picked.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.0}", picked.iter().sum::<f64>() / picked.len() as f64)
        }
    };
    let end = t.last().copied().unwrap_or(0.0);
    let marks = [60.0, (end / 2.0).floor(), (end - 60.0).max(0.0)];
    let mut md = format!(
        "From `{name}`: {} s at {} presses/s; sent {}, accepted {}, errors {}, lost {}, duplicated {}; verdict **{}**; press p99 {} ms, press-to-SSE p99 {} ms.\n\n\
         Means over one minute, after minute 1, in the middle and in the last minute \
         (PSS divides each shared page among the processes mapping it, so PostgreSQL's \
         shared buffers count once; runs before it was sampled show `-`):\n\n\
         | process | RSS KiB | | | PSS KiB | | | open files | | |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        num(s, "/load_s"),
        num(s, "/phases/0/rate"),
        num(s, "/sent"),
        num(s, "/accepted"),
        s["errors"]
            .as_object()
            .map_or(0, |e| e.values().filter_map(Value::as_u64).sum::<u64>()),
        num(s, "/verdict/lost"),
        num(s, "/verdict/duplicated"),
        verdict(s),
        num(s, "/press_latency/p99_ms"),
        num(s, "/press_to_sse/p99_ms"),
    );
    for process in ["service-0", "reducer", "broker", "postgres", "redis"] {
        let rss: Vec<String> = marks
            .iter()
            .map(|&m| minute(&format!("{process}_rss_kib"), m))
            .collect();
        let pss: Vec<String> = marks
            .iter()
            .map(|&m| minute(&format!("{process}_pss_kib"), m))
            .collect();
        let fds: Vec<String> = marks
            .iter()
            .map(|&m| minute(&format!("{process}_fds"), m))
            .collect();
        let _ = writeln!(
            md,
            "| {process} | {} | {} | {} |",
            rss.join(" | "),
            pss.join(" | "),
            fds.join(" | ")
        );
    }
    md
}

/// The newest run of every `fault-*` scenario, one row per fault.
fn fault_matrix(runs: &[(String, Value, Value)]) -> String {
    let mut newest: BTreeMap<String, &(String, Value, Value)> = BTreeMap::new();
    for run in runs {
        if let Some(scenario) = run.1.get("scenario").and_then(Value::as_str)
            && scenario.starts_with("fault-")
        {
            newest.insert(scenario.to_owned(), run);
        }
    }
    if newest.is_empty() {
        return "No fault-* run stored yet.\n".to_owned();
    }
    let mut md = String::from(
        "| fault | run | accepted (202) | lost | duplicated | stored without a 202 | refused, fault to recovery | errors (whole run) | fault lasted s | recovered s after it ended | longest SSE gap s | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, s, _) in newest.values() {
        let impacts = s["fault_impact"].as_array().cloned().unwrap_or_default();
        let faults = impacts
            .iter()
            .map(|i| i["fault"].as_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
            .join("; ");
        let each = |key: &str| {
            impacts
                .iter()
                .map(|i| num(i, &format!("/{key}")))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let seconds = |f: &dyn Fn(&Value) -> Option<f64>| {
            impacts
                .iter()
                .map(|i| f(i).map_or("never".to_owned(), |x| format!("{x:.1}")))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let lasted = seconds(&|i| Some(i["done_s"].as_f64()? - i["at_s"].as_f64()?));
        let recovered = seconds(&|i| {
            Some(i["recovery_s"].as_f64()? - (i["done_s"].as_f64()? - i["at_s"].as_f64()?))
        });
        let errors = s["errors"]
            .as_object()
            .map(|e| {
                e.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "none".to_owned());
        let _ = writeln!(
            md,
            "| {faults} | `{name}` | {} | {} | {} | {} | {} | {errors} | {lasted} | {recovered} | {} | {} |",
            num(s, "/verdict/accepted"),
            num(s, "/verdict/lost"),
            num(s, "/verdict/duplicated"),
            num(s, "/verdict/stored_without_202"),
            each("refused"),
            each("longest_sse_gap_s"),
            verdict(s)
        );
    }
    md
}

/// The newest stored sweep of `scenario` (folders end `-<scenario>-sweep`);
/// its chart is drawn again from its `sweep.json`, as this version draws.
fn sweep_section(
    sweeps: &[(String, Value)],
    scenario: &str,
    experiments: &Path,
) -> anyhow::Result<String> {
    let suffix = format!("-{scenario}-sweep");
    let Some((name, points)) = sweeps.iter().rev().find(|(name, _)| {
        name.ends_with(&suffix) && name.len() == "2026-01-01T000000Z".len() + suffix.len()
    }) else {
        return Ok(format!(
            "No sweep of `scenarios/{scenario}.toml` stored yet.\n"
        ));
    };
    let results: Vec<SweepPoint> = points
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(SweepPoint {
                point: serde_json::from_value(p.get("point")?.clone()).ok()?,
                run: p.get("run")?.as_str()?.to_owned(),
                runs: p
                    .get("runs")
                    .and_then(|r| serde_json::from_value(r.clone()).ok())
                    .unwrap_or_default(),
                accepted_per_s: p.get("accepted_per_s")?.as_f64()?,
                error_rate: p.get("error_rate")?.as_f64()?,
                press_p99_ms: p.get("press_p99_ms")?.as_f64()?,
                press_to_sse_p50_ms: p.get("press_to_sse_p50_ms")?.as_f64()?,
                press_to_sse_p99_ms: p.get("press_to_sse_p99_ms")?.as_f64()?,
                press_to_sse_p999_ms: p.get("press_to_sse_p999_ms")?.as_f64()?,
                lag_peak: p.get("lag_peak")?.as_f64()?,
                clean: p.get("clean")?.as_bool()?,
                // Sweeps stored before validity was judged say nothing.
                valid: p.get("valid").and_then(Value::as_bool).unwrap_or(false),
                spread_within: p
                    .get("spread_within")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            })
        })
        .collect();
    sweep_chart(
        &experiments.join(name).join("throughput_vs_p99.svg"),
        &results,
    )?;
    Ok(format!(
        "From `{name}` ({} points):\n\n{}\n![throughput vs p99](experiments/{name}/throughput_vs_p99.svg)\n",
        results.len(),
        sweep_table(&results)
    ))
}

/// A page around Markdown rendered to HTML: no script, no remote resource;
/// images stay relative, so a page sits beside the SVGs it shows.
fn page(title: &str, markdown: &str, back: Option<&str>) -> String {
    use pulldown_cmark::{Options, Parser, html};
    let mut body = String::new();
    html::push_html(&mut body, Parser::new_ext(markdown, Options::ENABLE_TABLES));
    let back = back.map_or(String::new(), |href| {
        format!("<p><a href=\"{href}\">← all runs</a></p>\n")
    });
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{PAGE_STYLE}</style>\n</head>\n<body>\n<main>\n{back}{body}</main>\n</body>\n</html>\n",
        escape(title)
    )
}

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1f23;background:#fafbfc}\
main{max-width:72rem;margin:0 auto;padding:1rem 1.5rem 3rem}\
table{border-collapse:collapse;margin:1rem 0;font-variant-numeric:tabular-nums}\
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:right}\
th:first-child,td:first-child{text-align:left}\
img{max-width:100%;height:auto;background:#fff;border:1px solid #d0d7de;margin:.5rem 0}\
code{font-size:.9em}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `report.html` beside every run's `report.md`, `sweep.html` beside every
/// sweep's `sweep.md`, and `index.html` in `experiments` linking them.
pub fn html_pages(experiments: &Path) -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(experiments)
        .with_context(|| format!("reading {}", experiments.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut index = String::from(
        "# Stored runs\n\nEvery run and sweep under `experiments/`, newest last. Regenerate with `loadgen report --html`.\n\n| run | scenario | accepted/s | press p99 ms | press to SSE p99 ms | verdict |\n|---|---|---:|---:|---:|---|\n",
    );
    let mut pages = 0;
    for dir in dirs {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        for (markdown, html) in [("report.md", "report.html"), ("sweep.md", "sweep.html")] {
            let Ok(text) = std::fs::read_to_string(dir.join(markdown)) else {
                continue;
            };
            std::fs::write(dir.join(html), page(&name, &text, Some("../index.html")))?;
            pages += 1;
            let summary = if markdown == "report.md" {
                load_summary(&dir).ok()
            } else {
                None
            };
            let _ = writeln!(
                index,
                "| [{name}]({name}/{html}) | {} | {} | {} | {} | {} |",
                summary
                    .as_ref()
                    .and_then(|s| s["scenario"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "sweep".to_owned()),
                summary
                    .as_ref()
                    .map_or("-".to_owned(), |s| num(s, "/accepted_per_s")),
                summary
                    .as_ref()
                    .map_or("-".to_owned(), |s| num(s, "/press_latency/p99_ms")),
                summary
                    .as_ref()
                    .map_or("-".to_owned(), |s| num(s, "/press_to_sse/p99_ms")),
                summary.as_ref().map_or("-", verdict),
            );
        }
    }
    std::fs::write(
        experiments.join("index.html"),
        page("The Button lab: stored runs", &index, None),
    )?;
    println!(
        "{} pages and {} written",
        pages,
        experiments.join("index.html").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_runs_are_counted_in_scale_md_and_listed_with_the_reason_in_their_index() {
        let stale = vec![
            (
                "2026-11-29T063106Z-ramp-r1".to_owned(),
                "its service changed since".to_owned(),
            ),
            (
                "2026-11-22T071819Z-sweep-sweep".to_owned(),
                "its runs are stale".to_owned(),
            ),
        ];
        let section = stale_section(stale.len());
        assert!(section.starts_with("2 stored runs"), "{section}");
        assert!(section.contains("`experiments/STALE.md`"), "{section}");
        assert!(
            !section.contains("ramp-r1"),
            "the list is not in SCALE.md: {section}"
        );
        let index = stale_index(&stale);
        assert!(
            index.contains("| `2026-11-29T063106Z-ramp-r1` | its service changed since |"),
            "{index}"
        );
        assert!(
            index.contains("| `2026-11-22T071819Z-sweep-sweep` | its runs are stale |"),
            "{index}"
        );
        assert!(stale_section(0).starts_with("None"));
        assert!(stale_index(&[]).contains("None"));
    }

    #[test]
    fn the_fanout_section_groups_runs_by_transport_instances_and_setting_with_their_spread() {
        let run = |transport: Option<&str>, services: usize, p99: f64, kib: f64| {
            let processes: serde_json::Map<String, Value> = (0..services)
                .map(|i| (format!("service-{i}"), serde_json::json!({})))
                .collect();
            let mut s = serde_json::json!({
                "scenario": "fanout",
                "fanout": {"p50_ms": 5.0, "p99_ms": p99, "p999_ms": 90.0},
                "clients_memory": {"listeners": 10000, "connected": 10000,
                    "per_client_kib": kib, "per_client_loaded_kib": kib * 2.0,
                    "processes": processes},
                "cost_us_per_press": {"service-0": 100.0, "service-1": 20.0, "broker": 50.0},
                "verdict": {"clean": true},
                "validity": {"valid": true, "reasons": []},
            });
            if let Some(t) = transport {
                s["transport"] = Value::from(t);
            }
            s
        };
        // A run with another reducer linger is its own row, not one more
        // repeat of the default.
        let mut lingered = run(Some("sse"), 1, 500.0, 30.0);
        lingered["overrides"] = serde_json::json!({"reducer.batch_linger_ms": "100"});
        let runs = vec![
            ("a".to_owned(), run(None, 1, 40.0, 8.0), Value::Null),
            ("b".to_owned(), run(Some("sse"), 1, 60.0, 9.0), Value::Null),
            ("c".to_owned(), run(Some("sse"), 1, 50.0, 7.0), Value::Null),
            ("d".to_owned(), run(Some("ws"), 2, 30.0, 6.0), Value::Null),
            ("f".to_owned(), lingered, Value::Null),
            (
                "e".to_owned(),
                serde_json::json!({"scenario": "spike"}),
                Value::Null,
            ),
        ];
        let md = fanout_section(&runs);
        assert!(
            md.contains("| sse | 1 |  | **median of 3 (min–max)** | | 8.0 (7.0–9.0) / 16.0 (14.0–18.0) | p99 50.0 (40.0–60.0)"),
            "{md}"
        );
        assert!(
            md.contains("| ws | 2 |  | `d` | 10000 of 10000 | 6.0 / 12.0 | 5 / 30 / 90 |"),
            "{md}"
        );
        assert!(
            md.contains("| sse | 1 | reducer.batch_linger_ms=100 | `f` | 10000 of 10000 | 30.0 / 60.0 | 5 / 500 / 90 |"),
            "{md}"
        );
        assert_eq!(md.matches("median of").count(), 1, "{md}");
        assert!(
            md.contains("| 120 | clean | valid |"),
            "every service process counts: {md}"
        );
        assert!(!md.contains("`e`"), "{md}");
        assert_eq!(fanout_section(&runs[5..]), "No fanout run stored yet.\n");
    }

    #[test]
    fn the_press_path_section_takes_the_newest_run_that_measured_it() {
        assert_eq!(press_path_section(&[]), "No press-path run stored yet.\n");
        let run = |name: &str, ratio: Option<f64>| {
            let path = ratio.map(|r| {
                serde_json::json!({
                    "live_phase": "trivial", "live_per_s": 1000.0,
                    "press_phase": "press", "press_per_s": r * 1000.0,
                    "ratio": r, "client": "the client",
                })
            });
            let summary = serde_json::json!({ "press_path": path, "verdict": { "clean": true } });
            (name.to_owned(), summary, Value::Null)
        };
        let md = press_path_section(&[
            run("older", Some(0.25)),
            run("newer", Some(0.5)),
            run("old-style", None),
        ]);
        assert!(
            md.contains("`newer`")
                && md.contains("**0.500**")
                && md.contains("500.0 presses/s")
                && md.contains("1000.0/s `GET /health/live`")
                && md.contains("the client")
                && md.contains("verdict clean"),
            "{md}"
        );
    }

    #[test]
    fn the_knee_section_takes_the_newest_ramp_over_a_newer_sweep_point() {
        let run = |name: &str, scenario: &str, knee: f64| {
            let summary = serde_json::json!({
                "scenario": scenario, "knee_per_s": knee, "phases": [],
                "verdict": { "clean": true },
            });
            (name.to_owned(), summary, Value::Null)
        };
        let md = knee_section(
            &[
                run("the-ramp", "ramp", 18000.0),
                run("a-sweep-point", "knee-sweep", 14000.0),
            ],
            &[],
        );
        assert!(md.contains("`the-ramp`") && md.contains("**18000"), "{md}");
        let md = knee_section(&[run("a-sweep-point", "knee-sweep", 14000.0)], &[]);
        assert!(
            md.contains("`a-sweep-point`"),
            "no ramp: the newest knee: {md}"
        );
    }

    #[test]
    fn every_crate_a_run_starts_is_exercised_code() {
        let manifest = include_str!("../../Cargo.toml");
        let workspace: toml::Value = toml::from_str(manifest).expect("workspace manifest");
        let members = workspace["workspace"]["members"]
            .as_array()
            .expect("members");
        for member in members.iter().filter_map(toml::Value::as_str) {
            // The micro-benchmark gate is not part of any run.
            if member == "benchgate" {
                continue;
            }
            assert!(
                exercised(&format!("{member}/src/lib.rs")),
                "{member}/src is missing from EXERCISED: runs would not go stale when it changes"
            );
        }
    }

    #[test]
    fn a_run_is_stale_only_when_a_component_it_started_changed() {
        let prints = |service: &str, generator: &str| {
            BTreeMap::from([
                ("service".to_owned(), service.to_owned()),
                ("reducer".to_owned(), "r1".to_owned()),
                ("relay".to_owned(), "x1".to_owned()),
                ("generator".to_owned(), generator.to_owned()),
            ])
        };
        let mut fresh = Freshness {
            // Another commit, a dirty tree: neither matters once a run
            // has fingerprints.
            head: Some("def".into()),
            by_commit: BTreeMap::new(),
            current: Ok(prints("s2", "g2")),
            generator_canary: None,
        };
        let meta = |components: &[(&str, &str)]| {
            serde_json::json!({
                "git_commit": "abc", "git_dirty": true, "git_dirty_paths": ["service/src/app.rs"],
                "fingerprints": components.iter().map(|(c, h)| (c.to_string(), h.to_string())).collect::<BTreeMap<_, _>>(),
            })
        };
        // The relay changed, but the run did not start one.
        assert_eq!(
            fresh.stale_reason(&meta(&[
                ("service", "s2"),
                ("reducer", "r1"),
                ("generator", "g2")
            ])),
            None
        );
        assert_eq!(
            fresh.stale_reason(&meta(&[
                ("service", "s1"),
                ("reducer", "r1"),
                ("generator", "g2")
            ])),
            Some("its service changed since".to_owned())
        );
        let old_generator = meta(&[("service", "s2"), ("reducer", "r1"), ("generator", "g1")]);
        assert!(
            fresh
                .stale_reason(&old_generator)
                .is_some_and(|r| r.contains("generator") && r.contains("canary")),
        );
        // A passing canary of the current generator vouches for it; one of
        // an earlier generator, or a failed one, does not.
        let canary = |valid: bool| {
            serde_json::json!({
                "scenario": GENERATOR_CANARY, "verdict": { "clean": true },
                "validity": { "valid": valid, "reasons": [] },
            })
        };
        fresh.note_canary("c-old", &canary(true), &meta(&[("generator", "g1")]));
        fresh.note_canary("c-invalid", &canary(false), &meta(&[("generator", "g2")]));
        assert!(fresh.stale_reason(&old_generator).is_some());
        fresh.note_canary("c", &canary(true), &meta(&[("generator", "g2")]));
        assert_eq!(fresh.stale_reason(&old_generator), None);
    }

    #[test]
    fn only_uncommitted_code_makes_a_run_stale() {
        let mut fresh = Freshness {
            head: Some("abc".into()),
            by_commit: BTreeMap::new(),
            current: Err("unused".into()),
            generator_canary: None,
        };
        let meta = |paths: Option<&[&str]>| {
            let mut m = serde_json::json!({ "git_commit": "abc", "git_dirty": true });
            if let Some(p) = paths {
                m["git_dirty_paths"] = serde_json::json!(p);
            }
            m
        };
        assert_eq!(
            fresh.stale_reason(&meta(Some(&["SCALE.md", "scenarios/ramp.toml"]))),
            None
        );
        assert_eq!(
            fresh.stale_reason(&meta(Some(&["loadgen/srcx/a.rs"]))),
            None
        );
        assert_eq!(
            fresh.stale_reason(&meta(Some(&["README.md", "loadgen/src/run.rs"]))),
            Some("run with uncommitted changes to loadgen/src/run.rs".into())
        );
        assert_eq!(
            fresh.stale_reason(&meta(Some(&["Cargo.lock"]))),
            Some("run with uncommitted changes to Cargo.lock".into())
        );
        assert_eq!(
            fresh.stale_reason(&meta(None)),
            Some("run from a tree with uncommitted changes".into())
        );
    }

    fn point(rate: &str, batch: &str, accepted: f64, p99: f64, clean: bool) -> SweepPoint {
        SweepPoint {
            point: [
                (RATE_KEY.to_owned(), rate.to_owned()),
                ("reducer.batch_max".to_owned(), batch.to_owned()),
            ]
            .into(),
            run: format!("run-{rate}-{batch}"),
            runs: vec![format!("run-{rate}-{batch}")],
            accepted_per_s: accepted,
            error_rate: 0.0,
            press_p99_ms: p99,
            press_to_sse_p50_ms: p99 / 2.0,
            press_to_sse_p99_ms: p99,
            press_to_sse_p999_ms: p99,
            lag_peak: 0.0,
            clean,
            valid: true,
            spread_within: true,
        }
    }

    #[test]
    fn a_rate_sweep_draws_a_line_per_tuning_and_crosses_what_broke() {
        let results = [
            point("1000", "10", 1000.0, 120.0, true),
            point("500", "10", 500.0, 70.0, true),
            point("2000", "10", 1900.0, 6000.0, false),
            point("500", "100", 500.0, 65.0, true),
            point("1000", "100", 1000.0, 100.0, true),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chart.svg");
        sweep_chart(&path, &results).expect("chart");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(
            svg.contains("\nbatch_max=10\n") && svg.contains("\nbatch_max=100\n"),
            "a legend entry per batch size"
        );
        assert!(
            svg.contains("\n2000/s\n") && svg.contains("\n500/s\n"),
            "rates labelled"
        );
        // Each tuning: its line through the rates and its legend sample.
        for color in ["#1F77B4", "#D62728"] {
            let lines = svg
                .matches("<polyline")
                .zip(svg.split("<polyline").skip(1))
                .filter(|(_, rest)| {
                    rest.split('>')
                        .next()
                        .is_some_and(|tag| tag.contains(color))
                })
                .count();
            assert_eq!(lines, 2, "{color}");
        }
        let batch_10 = svg
            .split("<polyline")
            .find(|tag| tag.split('>').next().is_some_and(|t| t.contains("#1F77B4")))
            .expect("the first line");
        assert_eq!(
            batch_10
                .split("points=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
                .map(|p| p.split_whitespace().count()),
            Some(3),
            "batch 10 through its three rates"
        );
        // Legend in the sweep's order of values, not as text.
        let ordered = [
            point("500", "200", 500.0, 70.0, true),
            point("500", "1000", 500.0, 60.0, true),
        ];
        sweep_chart(&path, &ordered).expect("chart");
        let legend = std::fs::read_to_string(&path).expect("svg");
        let at = |label: &str| legend.find(&format!("\n{label}\n")).expect(label);
        assert!(at("batch_max=200") < at("batch_max=1000"));
        // The point that lost presses is a cross, red.
        assert!(svg.contains("#FF0000"), "a red cross");
    }
}
