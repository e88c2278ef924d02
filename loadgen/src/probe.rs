//! `loadgen probe`: a fixed burst of presses through a local stack, with
//! press latency, time to drain, and the exactly-once verdict, optionally
//! with the reducer SIGKILLed and restarted mid-burst. Stored under
//! `experiments/<UTC time>-probe-<storage>/`.

use crate::measure::{Percentiles, Series};
use crate::meta;
use anyhow::Context;
use button_client::{Api, Ledger, latest_in_db};
use button_stack::{BrokerStorage, Component, Stack, StackConfig};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone)]
pub struct ProbeArgs {
    pub storage: BrokerStorage,
    pub partitions: i32,
    pub presses: usize,
    pub concurrency: usize,
    pub kill_reducer: bool,
    pub service_env: BTreeMap<String, String>,
    pub reducer_env: BTreeMap<String, String>,
    pub out_dir: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct ProbeSummary {
    pub storage: String,
    pub partitions: i32,
    pub presses: usize,
    pub concurrency: usize,
    pub kill_reducer: bool,
    pub service_env: BTreeMap<String, String>,
    pub reducer_env: BTreeMap<String, String>,
    pub accepted: usize,
    pub rejected: usize,
    pub press_wall_ms: u64,
    pub accepted_per_s: f64,
    pub press_latency: Percentiles,
    /// From the last 202 until PostgreSQL's newest state covered every press.
    pub drain_ms: Option<u64>,
    pub counter: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub exactly_once: bool,
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<PathBuf> {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut stack = Stack::start(StackConfig {
        partitions: args.partitions,
        broker_storage: args.storage,
        log_filter: "warn".to_owned(),
        service_env: args.service_env.clone(),
        reducer_env: args.reducer_env.clone(),
        ..StackConfig::default()
    })
    .await
    .context("starting the local stack")?;
    let api = Api::new(stack.service_url(0));

    let wall = Instant::now();
    let presses = {
        let api = api.clone();
        let (n, c) = (args.presses, args.concurrency);
        tokio::spawn(async move {
            futures::stream::iter(0..n)
                .map(|_| {
                    let api = api.clone();
                    async move {
                        let t = Instant::now();
                        let answer = api.press().await;
                        (t.elapsed(), answer)
                    }
                })
                .buffer_unordered(c)
                .collect::<Vec<_>>()
                .await
        })
    };
    if args.kill_reducer {
        tokio::time::sleep(Duration::from_millis(800)).await;
        stack.kill(Component::Reducer(0))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack.start_component(Component::Reducer(0)).await?;
    }
    let answers = presses.await?;
    let press_wall = wall.elapsed();
    let last_accepted = Instant::now();

    let latency = Series::new("press");
    let mut ledger = Ledger::default();
    let mut rejected = 0;
    for (took, answer) in &answers {
        latency.record(*took);
        match answer {
            Ok(a) => ledger.record(a),
            Err(_) => rejected += 1,
        }
    }

    // Drain: wait until the newest state covers every accepted press.
    let mut drain_ms = None;
    let mut newest = None;
    while last_accepted.elapsed() < Duration::from_secs(60) {
        if let Some(s) = latest_in_db(&stack.database_url()).await?
            && ledger.covered_by(&s)
        {
            drain_ms = Some(last_accepted.elapsed().as_millis() as u64);
            newest = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counter = match newest {
        Some(s) => s.counter,
        None => latest_in_db(&stack.database_url())
            .await?
            .map_or(0, |s| s.counter),
    };
    let accepted = ledger.accepted as u64;
    let summary = ProbeSummary {
        storage: args.storage.to_string(),
        partitions: args.partitions,
        presses: args.presses,
        concurrency: args.concurrency,
        kill_reducer: args.kill_reducer,
        service_env: args.service_env.clone(),
        reducer_env: args.reducer_env.clone(),
        accepted: ledger.accepted,
        rejected,
        press_wall_ms: press_wall.as_millis() as u64,
        accepted_per_s: ledger.accepted as f64 / press_wall.as_secs_f64(),
        press_latency: Percentiles::of(&latency.total()),
        drain_ms,
        counter,
        lost: accepted.saturating_sub(counter),
        duplicated: counter.saturating_sub(accepted),
        exactly_once: counter == accepted && drain_ms.is_some(),
    };

    let name = format!(
        "{}-probe-{}{}",
        started_at.replace(':', ""),
        args.storage,
        if args.kill_reducer { "-kill" } else { "" }
    );
    let dir = args.out_dir.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = meta::collect(
        "local",
        started_at,
        true,
        &["generator", "service", "reducer"],
    );
    write_json(&dir.join("meta.json"), &meta)?;
    write_json(&dir.join("summary.json"), &summary)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(dir)
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
