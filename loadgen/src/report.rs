//! `report.md` and its SVG charts, written beside the run's data so a
//! person can read a run without tools.

use crate::measure::Percentiles;
use crate::run::Summary;
use crate::scenario::Scenario;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

pub fn write(
    dir: &Path,
    scenario: &Scenario,
    s: &Summary,
    press_to_sse: &Histogram<u64>,
    press: &Histogram<u64>,
) -> anyhow::Result<()> {
    let rows = read_timeseries(&dir.join("timeseries.csv"));
    percentile_chart(
        &dir.join("latency.svg"),
        &[("press to SSE", press_to_sse), ("press", press)],
    )?;
    let faults: Vec<f64> = s.faults.iter().map(|f| f.at_s).collect();
    timeline_chart(&dir.join("timeline.svg"), &rows, &faults)?;
    lag_chart(&dir.join("lag.svg"), &rows, &faults)?;

    let mut md = String::new();
    writeln!(md, "# {}\n", s.run)?;
    if !scenario.description.is_empty() {
        writeln!(md, "{}\n", scenario.description)?;
    }
    writeln!(
        md,
        "Scenario `{}`, {:.0} s of load, started {}; {}. Machine and versions: `meta.json`; the resolved scenario: `scenario.toml`.\n",
        s.scenario,
        s.load_s,
        s.started_at,
        s.guards.describe()
    )?;
    writeln!(
        md,
        "| sent | accepted | accepted/s | errors | error rate | lag peak | drain |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {:.1} | {:?} | {:.4} | {} | {} |\n",
        s.sent,
        s.accepted,
        s.accepted_per_s,
        s.errors,
        s.error_rate,
        s.lag_peak,
        s.drain_s
            .map_or("never".to_owned(), |d| format!("{d:.2} s"))
    )?;
    writeln!(
        md,
        "| latency (ms) | count | p50 | p90 | p99 | p99.9 | max |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for (name, p) in [
        ("press (from due time)", &s.press_latency),
        ("press to SSE", &s.press_to_sse),
        ("commit to client", &s.fanout),
    ] {
        writeln!(md, "{}", latency_row(name, p))?;
    }
    if s.phases.len() > 1 {
        writeln!(
            md,
            "\n| phase | target | accepted/s | press p99 | to SSE p50 | to SSE p99 | to SSE p99.9 |\n|---|---|---|---|---|---|---|"
        )?;
        for p in &s.phases {
            let target = p.rate.map_or_else(
                || format!("{} users", p.users.unwrap_or(0)),
                |r| format!("{r}/s"),
            );
            writeln!(
                md,
                "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                p.name,
                target,
                p.accepted_per_s,
                p.press_latency.p99_ms,
                p.press_to_sse.p50_ms,
                p.press_to_sse.p99_ms,
                p.press_to_sse.p999_ms
            )?;
        }
    }
    if let Some(knee) = s.knee_per_s {
        writeln!(
            md,
            "\nKnee: **{knee} presses/s**, the highest rate meeting the p99 press-to-SSE limit with every press accepted."
        )?;
    }
    let v = &s.verdict;
    writeln!(
        md,
        "\n**Exactly once: {}.** Accepted {}, counter {} → {} (counted {}), lost {}, duplicated {}, last SSE frame {}.\n",
        if v.clean { "clean" } else { "FAILED" },
        v.accepted,
        v.counter_before,
        v.counter_after,
        v.counter_after - v.counter_before,
        v.lost,
        v.duplicated,
        v.sse_last_counter
            .map_or("none".to_owned(), |c| c.to_string())
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
        "![latency percentiles](latency.svg)\n\n![throughput and p99 over time](timeline.svg)\n\n![consumer lag](lag.svg)\n"
    )?;
    writeln!(
        md,
        "Data: `summary.json`, `timeseries.csv`, `*.hlog` (HdrHistogram interval logs, µs), `*.hgrm` (percentile tables, ms)."
    )?;
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

pub fn latency_row(name: &str, p: &Percentiles) -> String {
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
    )
}

/// Columns of `timeseries.csv` by name, one vector per column.
pub fn read_timeseries(path: &Path) -> std::collections::BTreeMap<String, Vec<f64>> {
    let mut columns = std::collections::BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return columns;
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return columns;
    };
    let names: Vec<&str> = header.split(',').collect();
    for line in lines {
        for (name, value) in names.iter().zip(line.split(',')) {
            columns
                .entry((*name).to_owned())
                .or_insert_with(Vec::new)
                .push(value.parse().unwrap_or(f64::NAN));
        }
    }
    columns
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
