//! The store stage: a run's folder, written once the run is judged.
//! `timeseries.csv` was written by the sampler as the run went.
//!
//! - `scenario.toml` (written first, so a failed run still says what it
//!   was), `meta.json`, `summary.json`;
//! - `<series>.hlog` interval logs and `.hgrm` tables for every latency;
//! - `report.md` and its charts.

use crate::meta::Meta;
use crate::recorder::Recorder;
use crate::scenario::Scenario;
use crate::summary::Summary;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub fn write(
    dir: &Path,
    scenario: &Scenario,
    summary: &Summary,
    meta: &Meta,
    recorder: &Recorder,
    started_wall: SystemTime,
    load_end: Duration,
) -> anyhow::Result<()> {
    for series in recorder.series() {
        series.write(dir, started_wall, load_end)?;
    }
    std::fs::write(
        dir.join("meta.json"),
        serde_json::to_string_pretty(meta)? + "\n",
    )?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summary)? + "\n",
    )?;
    crate::report::write(
        dir,
        scenario,
        summary,
        meta,
        &recorder.press_to_sse.total(),
        &recorder.press.total(),
    )
}
