//! The store stage's readable output: the terminal summary and
//! `report.md` with its SVG charts, written beside the run's data so a
//! person can read a run without tools.

use crate::measure::Percentiles;
use crate::meta::Meta;
use crate::scenario::{Endpoint, Scenario};
use crate::summary::{PRESS_PATH_GOAL, PhaseSummary, PressPath, Summary, knee_text};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// "release (opt-level 3)", or a warning for unoptimised builds and runs
/// stored before the build was recorded.
pub fn build_text(meta: &Meta) -> String {
    match &meta.build {
        Some(b) if b.optimised() => format!("{} build (opt-level {})", b.profile, b.opt_level),
        Some(b) => format!(
            "DEV BUILD (opt-level {}): not a measurement of the design",
            b.opt_level
        ),
        None => "build not recorded".to_owned(),
    }
}

/// Each profile: its flame graph, and the functions with the most samples
/// of their own.
fn profiles_markdown(md: &mut String, s: &Summary) -> std::fmt::Result {
    for p in &s.profiles {
        match (&p.flamegraph, &p.error) {
            (Some(svg), _) => {
                writeln!(
                    md,
                    "\nProfile of {} ({}, {} samples at {} Hz): [flame graph]({svg}), [folded stacks]({}). Most self time:\n",
                    p.target,
                    p.window,
                    p.samples,
                    p.frequency_hz,
                    p.folded.as_deref().unwrap_or("")
                )?;
                writeln!(md, "| function | % of samples |\n|---|---|")?;
                for (f, pct) in p.top_self.iter().take(10) {
                    writeln!(md, "| `{}` | {pct:.1} |", f.replace('|', "\\|"))?;
                }
            }
            (None, e) => writeln!(
                md,
                "\nProfile of {} failed: {}.",
                p.target,
                e.as_deref().unwrap_or("no reason recorded")
            )?,
        }
    }
    Ok(())
}

/// The cost of a press by process, largest first: `service 41.2, broker 28.0, …`.
pub fn cost_text(s: &Summary) -> String {
    let mut cost: Vec<(&String, &f64)> = s.cost_us_per_press.iter().collect();
    cost.sort_by(|a, b| b.1.total_cmp(a.1));
    cost.iter()
        .map(|(name, us)| format!("{name} {us:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn target_text(p: &PhaseSummary) -> String {
    let target = p.rate.map_or_else(
        || format!("{} users", p.users.unwrap_or(0)),
        |r| format!("{r}/s"),
    );
    match p.endpoint {
        Endpoint::Press => target,
        Endpoint::Live => format!("{target} GET /health/live"),
    }
}

/// A phase's throughput: accepted presses a second, or a `live` phase's
/// checks served a second.
fn per_s_text(p: &PhaseSummary) -> String {
    match p.endpoint {
        Endpoint::Press => format!("{:.1}", p.accepted_per_s),
        Endpoint::Live => format!("{:.1} served", p.served_per_s),
    }
}

/// Both rates of the press path, their phases, and the client that
/// measured them.
pub fn press_path_text(p: &PressPath) -> String {
    format!(
        "{:.1} presses/s accepted (phase `{}`) against {:.1}/s `GET /health/live` served (phase `{}`), both sent by {}",
        p.press_per_s, p.press_phase, p.live_per_s, p.live_phase, p.client
    )
}

pub fn write(
    dir: &Path,
    scenario: &Scenario,
    s: &Summary,
    meta: &Meta,
    press_to_sse: &Histogram<u64>,
    press: &Histogram<u64>,
) -> anyhow::Result<()> {
    let rows = crate::sample::read_columns(&dir.join("timeseries.csv"));
    percentile_chart(
        &dir.join("latency.svg"),
        &[("press to SSE", press_to_sse), ("press", press)],
    )?;
    let faults: Vec<f64> = s.faults.iter().map(|f| f.at_s).collect();
    timeline_chart(&dir.join("timeline.svg"), &rows, &faults)?;
    lag_chart(&dir.join("lag.svg"), &rows, &faults)?;
    cpu_chart(&dir.join("cpu.svg"), &rows)?;
    std::fs::write(dir.join("report.md"), markdown(scenario, s, meta)?)?;
    Ok(())
}

pub fn markdown(scenario: &Scenario, s: &Summary, meta: &Meta) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(
        md,
        "# {}
",
        s.run
    )?;
    if !scenario.description.is_empty() {
        writeln!(
            md,
            "{}
",
            scenario.description
        )?;
    }
    writeln!(
        md,
        "Scenario `{}`, {:.0} s of load ({:.0} s steady), started {}; {}; {}. Machine and versions: `meta.json`; the resolved scenario: `scenario.toml`.\n",
        s.scenario,
        s.load_s,
        s.steady_s,
        s.started_at,
        s.guards.describe(),
        build_text(meta),
    )?;
    writeln!(md, "**Validity: {}.**\n", s.validity.describe())?;
    writeln!(
        md,
        "| planned | sent | accepted | accepted/s (steady) | errors | error rate | lag peak | drain |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {:.1} | {:?} | {:.4} | {} | {} |\n",
        s.planned,
        s.sent,
        s.accepted,
        s.accepted_per_s,
        s.errors,
        s.error_rate,
        s.lag_peak,
        s.drain_s
            .map_or("never".to_owned(), |d| format!("{d:.2} s"))
    )?;
    if s.retried > 0 {
        writeln!(
            md,
            "Presses retried on another instance after a connection-level failure: {}.\n",
            s.retried
        )?;
    }
    writeln!(
        md,
        "| latency (ms, steady phases) | count | p50 | p90 | p99 | p99.9 | max |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for (name, p) in [
        ("press (from due time)", &s.press_latency),
        ("press to SSE", &s.press_to_sse),
        ("commit to client (whole run)", &s.fanout),
        ("send start behind schedule", &s.schedule_lag),
        ("listeners' timer lateness", &s.observer_lag),
    ] {
        writeln!(md, "{}", latency_row(name, p))?;
    }
    if let Some(m) = &s.clients_memory {
        writeln!(md, "\nLive clients: {}.", m.text())?;
    }
    if !s.cost_us_per_press.is_empty() {
        writeln!(
            md,
            "\nCPU-µs per accepted press (steady phases): {}.",
            cost_text(s)
        )?;
    }
    profiles_markdown(&mut md, s)?;
    writeln!(
        md,
        "\n| phase | target | planned | sent on time | accepted/s | press p99 | to SSE p50 | to SSE p99 | send lag p99 | validity |\n|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for p in &s.phases {
        if p.not_run {
            writeln!(
                md,
                "| {} | {} | {} | not run: the ramp stopped | | | | | | |",
                p.name,
                target_text(p),
                p.planned
            )?;
            continue;
        }
        writeln!(
            md,
            "| {}{} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            p.name,
            if p.warmup { " (warm-up)" } else { "" },
            target_text(p),
            p.planned,
            p.sent_on_time,
            per_s_text(p),
            p.press_latency.p99_ms,
            p.press_to_sse.p50_ms,
            p.press_to_sse.p99_ms,
            p.schedule_lag.p99_ms,
            p.validity.describe()
        )?;
    }
    if let Some(stop) = &s.stopped {
        writeln!(md, "\n**Ramp {}.**", stop.describe())?;
    }
    if let Some(knee) = s.knee_per_s {
        writeln!(
            md,
            "\nKnee: **{} presses/s**, the highest valid rate meeting the p99 press-to-SSE limit with every planned press accepted.",
            knee_text(knee, s.knee_is_lower_bound)
        )?;
    }
    if let Some(p) = &s.press_path {
        writeln!(
            md,
            "\nPress path: press/trivial **{:.3}** (goal ≥ {PRESS_PATH_GOAL}): {}.",
            p.ratio,
            press_path_text(p)
        )?;
    }
    let v = &s.verdict;
    writeln!(
        md,
        "\n**Exactly once: {}.** {}\n",
        if v.clean { "clean" } else { "FAILED" },
        v.describe()
    )?;
    if !s.faults.is_empty() {
        writeln!(
            md,
            "| fault at (s) | action | target | ok |\n|---|---|---|---|"
        )?;
        for f in &s.faults {
            writeln!(
                md,
                "| {:.1} | {} | {} | {} |",
                f.at_s,
                f.action,
                f.target,
                if f.ok { "yes" } else { f.detail.as_str() }
            )?;
        }
        writeln!(md)?;
    }
    if !s.fault_impact.is_empty() {
        writeln!(
            md,
            "| fault | recovery | refused | longest SSE gap |\n|---|---|---|---|"
        )?;
        for i in &s.fault_impact {
            writeln!(
                md,
                "| {} | {} | {} | {:.1} s |",
                i.fault,
                i.recovery_s
                    .map_or("never".to_owned(), |r| format!("{r:.1} s")),
                i.refused,
                i.longest_sse_gap_s
            )?;
        }
        writeln!(md)?;
    }
    if !s.asserts.is_empty() {
        writeln!(md, "| assert | limit | actual | |\n|---|---|---|---|")?;
        for a in &s.asserts {
            writeln!(
                md,
                "| {} | {} | {} | {} |",
                a.name,
                a.limit,
                a.actual.map_or("n/a".to_owned(), |v| format!("{v:.3}")),
                if a.passed { "ok" } else { "FAILED" }
            )?;
        }
        writeln!(md)?;
    }
    writeln!(
        md,
        "![latency percentiles](latency.svg)\n\n![throughput and p99 over time](timeline.svg)\n\n![consumer lag](lag.svg)\n\n![CPU by process](cpu.svg)\n"
    )?;
    writeln!(
        md,
        "Data: `summary.json`, `timeseries.csv`, `*.hlog` (HdrHistogram interval logs, µs), `*.hgrm` (percentile tables, ms)."
    )?;
    Ok(md)
}

/// The end-of-run table on the terminal.
pub fn print_summary(s: &Summary, meta: &Meta, dir: &Path) {
    let row = |name: &str, p: &Percentiles| {
        println!(
            "  {name:<18} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
        )
    };
    println!(
        "\n{}  ({:.0} s of load, {:.0} s steady; {}; {})",
        s.run,
        s.load_s,
        s.steady_s,
        s.guards.describe(),
        build_text(meta)
    );
    println!(
        "  planned {}  sent {}  accepted {} ({:.1}/s steady)  errors {:?}  lag peak {}  drain {}",
        s.planned,
        s.sent,
        s.accepted,
        s.accepted_per_s,
        s.errors,
        s.lag_peak,
        s.drain_s
            .map_or("never".to_owned(), |d| format!("{d:.2} s"))
    );
    if s.retried > 0 {
        println!("  retried on another instance {}", s.retried);
    }
    println!(
        "  {:<18} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    row("press", &s.press_latency);
    row("press to SSE", &s.press_to_sse);
    row("commit to client", &s.fanout);
    row("send behind plan", &s.schedule_lag);
    row("listener lateness", &s.observer_lag);
    if let Some(m) = &s.clients_memory {
        println!("  live clients:  {}", m.text());
    }
    if !s.cost_us_per_press.is_empty() {
        println!("  CPU-µs per press:  {}", cost_text(s));
    }
    for p in &s.profiles {
        match &p.flamegraph {
            Some(svg) => println!(
                "  profile of {}:  {}  (top: {})",
                p.target,
                dir.join(svg).display(),
                p.top_self
                    .iter()
                    .take(3)
                    .map(|(f, pct)| format!("{f} {pct:.1}%"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => println!(
                "  profile of {} failed: {}",
                p.target,
                p.error.as_deref().unwrap_or("?")
            ),
        }
    }
    println!(
        "  {:<16} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}  validity",
        "phase", "target", "planned", "ok/s", "press p99", "SSE p99", "lag p99"
    );
    for p in &s.phases {
        if p.not_run {
            println!(
                "  {:<16} {:>8} {:>8}  not run: the ramp stopped",
                p.name,
                target_text(p),
                p.planned
            );
            continue;
        }
        println!(
            "  {:<16} {:>8} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}  {}",
            if p.warmup {
                format!("{} (warm)", p.name)
            } else {
                p.name.clone()
            },
            target_text(p),
            p.planned,
            // A live phase's checks answered 200.
            match p.endpoint {
                Endpoint::Press => p.accepted_per_s,
                Endpoint::Live => p.served_per_s,
            },
            p.press_latency.p99_ms,
            p.press_to_sse.p99_ms,
            p.schedule_lag.p99_ms,
            p.validity.describe()
        );
    }
    if let Some(stop) = &s.stopped {
        println!("  ramp {}", stop.describe());
    }
    if let Some(knee) = s.knee_per_s {
        println!(
            "  knee: {} presses/s (highest valid rate meeting the p99 press-to-SSE limit with every planned press accepted)",
            knee_text(knee, s.knee_is_lower_bound)
        );
    }
    if let Some(p) = &s.press_path {
        println!(
            "  press path: press/trivial {:.3} (goal >= {PRESS_PATH_GOAL}): {}",
            p.ratio,
            press_path_text(p)
        );
    }
    let v = &s.verdict;
    println!(
        "  exactly once: {} -> {}",
        v.describe(),
        if v.clean { "CLEAN" } else { "FAILED" }
    );
    println!("  validity: {}", s.validity.describe());
    for f in &s.faults {
        println!(
            "  fault at {:>6.1} s: {} {} {}",
            f.at_s,
            f.action,
            f.target,
            if f.ok { "" } else { &f.detail }
        );
    }
    for i in &s.fault_impact {
        println!(
            "  {}: recovered {}, {} presses refused meanwhile, longest SSE gap {:.1} s",
            i.fault,
            i.recovery_s
                .map_or("never (within the run)".to_owned(), |r| format!(
                    "{r:.1} s after"
                )),
            i.refused,
            i.longest_sse_gap_s
        );
    }
    for a in &s.asserts {
        println!(
            "  assert {:<22} limit {:>10.3} actual {:>10}  {}",
            a.name,
            a.limit,
            a.actual.map_or("n/a".to_owned(), |v| format!("{v:.3}")),
            if a.passed { "ok" } else { "FAILED" }
        );
    }
    println!(
        "  {}{}  stored in {}",
        if s.passed { "PASSED" } else { "FAILED" },
        if s.validity.valid {
            ""
        } else {
            " (INVALID as a measurement)"
        },
        dir.display()
    );
}

pub fn latency_row(name: &str, p: &Percentiles) -> String {
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
    )
}

fn percentile_chart(path: &Path, series: &[(&str, &Histogram<u64>)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    // x = number of nines: 0.9 → 1, 0.99 → 2, 0.999 → 3.
    let nines = |q: f64| -(1.0 - q.min(0.99999)).log10();
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, h)| {
            let points = if h.is_empty() {
                Vec::new()
            } else {
                h.iter_quantiles(5)
                    .map(|v| {
                        (
                            nines(v.quantile_iterated_to()),
                            v.value_iterated_to() as f64 / 1000.0,
                        )
                    })
                    .collect()
            };
            (*name, points)
        })
        .collect();
    let y_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency by percentile (ms)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..5.0, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(6)
        .x_label_formatter(&|x| format!("{:.3}%", (1.0 - 10f64.powf(-x)) * 100.0))
        .draw()?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn fault_lines(faults: &[f64], y_max: f64) -> Vec<PathElement<(f64, f64)>> {
    faults
        .iter()
        .map(|&x| PathElement::new(vec![(x, 0.0), (x, y_max)], RED.stroke_width(1)))
        .collect()
}

fn timeline_chart(
    path: &Path,
    rows: &std::collections::BTreeMap<String, Vec<f64>>,
    faults: &[f64],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(250);
    let caption = "accepted presses per second (red: faults)";
    time_series(&upper, rows, "accepted_per_s", caption, BLUE, faults)?;
    let caption = "press to SSE p99 per second (ms)";
    time_series(&lower, rows, "press_to_sse_p99_ms", caption, GREEN, faults)?;
    root.present()?;
    Ok(())
}

fn lag_chart(
    path: &Path,
    rows: &std::collections::BTreeMap<String, Vec<f64>>,
    faults: &[f64],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 300)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = "consumer lag (records; red: faults)";
    time_series(&root, rows, "lag", caption, MAGENTA, faults)?;
    root.present()?;
    Ok(())
}

/// One `timeseries.csv` column over time, with the faults as red lines.
fn time_series(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: &std::collections::BTreeMap<String, Vec<f64>>,
    column: &str,
    caption: &str,
    color: RGBColor,
    faults: &[f64],
) -> anyhow::Result<()> {
    let t = rows.get("t_s").cloned().unwrap_or_default();
    let values = rows.get(column).cloned().unwrap_or_default();
    let x_max = t.iter().copied().fold(1.0, f64::max);
    let y_max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart.configure_mesh().x_desc("s").draw()?;
    chart.draw_series(LineSeries::new(
        t.iter()
            .copied()
            .zip(values.iter().copied())
            .filter(|(_, v)| v.is_finite()),
        color.stroke_width(2),
    ))?;
    chart.draw_series(fault_lines(faults, y_max))?;
    Ok(())
}

/// CPU of every process over time, % of one core.
fn cpu_chart(
    path: &Path,
    rows: &std::collections::BTreeMap<String, Vec<f64>>,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 320)).into_drawing_area();
    root.fill(&WHITE)?;
    let t = rows.get("t_s").cloned().unwrap_or_default();
    let series: Vec<(&str, &Vec<f64>)> = rows
        .iter()
        .filter_map(|(k, v)| Some((k.strip_suffix("_cpu_pct")?, v)))
        .collect();
    let x_max = t.iter().copied().fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(10.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("CPU by process (% of one core)", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart.configure_mesh().x_desc("s").draw()?;
    for (i, (name, values)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                t.iter()
                    .copied()
                    .zip(values.iter().copied())
                    .filter(|(_, v)| v.is_finite()),
                color.stroke_width(2),
            ))?
            .label(name.to_owned())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
