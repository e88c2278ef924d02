//! `loadgen run`: bring up the stack a scenario names, apply its load with
//! goose and its faults on schedule, measure, judge, and store the run.

use crate::driver::Driver;
use crate::measure::{Percentiles, Series};
use crate::sample;
use crate::scenario::{FaultAction, Scenario};
use crate::verdict::Verdict;
use anyhow::Context;
use button_client::{Accepted, Ledger, latest_in_db};
use button_domain::Snapshot;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use goose::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct RunOptions {
    pub out_dir: PathBuf,
    /// The sweep point this run is (key → value), if any.
    pub sweep_point: Option<BTreeMap<String, String>>,
    /// Appended to the run folder's name (a sweep point).
    pub label: Option<String>,
    pub progress: bool,
}

/// One load step as the users see it: offsets from the start of the load.
struct PhasePlan {
    name: String,
    start: Duration,
    end: Duration,
    rate: Option<f64>,
    users: Option<usize>,
    slots: AtomicU64,
    sent: AtomicU64,
    accepted: AtomicU64,
    press: Series,
    press_to_sse: Series,
}

/// What one phase measured.
#[derive(Debug, Serialize)]
pub struct PhaseSummary {
    pub name: String,
    pub start_s: f64,
    pub duration_s: f64,
    pub rate: Option<f64>,
    pub users: Option<usize>,
    pub sent: u64,
    pub accepted: u64,
    pub accepted_per_s: f64,
    pub press_latency: Percentiles,
    pub press_to_sse: Percentiles,
}

/// Presses waiting for the first state that covers them.
#[derive(Default)]
struct Tracker {
    pending: BTreeMap<i32, BTreeMap<i64, (Instant, usize)>>,
    covered: BTreeMap<i32, i64>,
}

struct Shared {
    phases: Vec<PhasePlan>,
    start: OnceLock<Instant>,
    press: Series,
    press_to_sse: Series,
    fanout: Series,
    tracker: Mutex<Tracker>,
    ledger: Mutex<Ledger>,
    sent: AtomicU64,
    accepted: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    last_tracked: Mutex<Option<Snapshot>>,
    /// When the tracking SSE client received each state frame.
    frames: Mutex<Vec<Instant>>,
    /// Per scenario fault: (first action started, last action done).
    fault_windows: Mutex<Vec<(usize, Instant, Instant)>>,
    /// One press URL per service instance; each user keeps to one.
    press_urls: Vec<String>,
    challenge_urls: Vec<String>,
    guards: GuardsInfo,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn accept(&self, a: &Accepted, due: Instant, phase: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.phases[phase].accepted.fetch_add(1, Ordering::Relaxed);
        lock(&self.ledger).record(a);
        let mut t = lock(&self.tracker);
        if t.covered.get(&a.partition).is_some_and(|&o| o >= a.offset) {
            // The state arrived before the answer did.
            drop(t);
            self.seen(due, phase, Instant::now());
        } else {
            t.pending
                .entry(a.partition)
                .or_default()
                .insert(a.offset, (due, phase));
        }
    }

    fn seen(&self, due: Instant, phase: usize, now: Instant) {
        let latency = now.saturating_duration_since(due);
        self.press_to_sse.record(latency);
        self.phases[phase].press_to_sse.record(latency);
    }

    fn error(&self, code: String) {
        *lock(&self.errors).entry(code).or_insert(0) += 1;
    }

    /// A state reached the tracking client: every press it covers is seen.
    fn on_tracked_state(&self, s: &Snapshot) {
        let now = Instant::now();
        lock(&self.frames).push(now);
        let mut seen = Vec::new();
        {
            let mut t = lock(&self.tracker);
            for (&p, &o) in &s.offsets {
                let covered = t.covered.entry(p).or_insert(o);
                *covered = (*covered).max(o);
                if let Some(pending) = t.pending.get_mut(&p) {
                    let rest = pending.split_off(&(o + 1));
                    seen.extend(std::mem::replace(pending, rest).into_values());
                }
            }
        }
        for (due, phase) in seen {
            self.seen(due, phase, now);
        }
        *lock(&self.last_tracked) = Some(s.clone());
    }
}

#[derive(Debug, Serialize)]
pub struct FaultEvent {
    pub at_s: f64,
    pub action: String,
    pub target: String,
    pub ok: bool,
    pub detail: String,
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
    async fn of(service_url: &str) -> anyhow::Result<GuardsInfo> {
        let health: serde_json::Value = reqwest::get(format!("{service_url}/health"))
            .await
            .with_context(|| format!("reading {service_url}/health"))?
            .json()
            .await
            .context("/health is not JSON")?;
        serde_json::from_value(health["guards"].clone())
            .with_context(|| format!("/health has no usable `guards`: {health}"))
    }

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
#[derive(Debug, Clone, Serialize, PartialEq)]
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

#[derive(Debug, Serialize)]
pub struct AssertResult {
    pub name: String,
    pub limit: f64,
    pub actual: Option<f64>,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub run: String,
    pub sweep_point: Option<BTreeMap<String, String>>,
    pub guards: GuardsInfo,
    pub started_at: String,
    pub load_s: f64,
    pub sent: u64,
    pub accepted: u64,
    pub errors: BTreeMap<String, u64>,
    pub accepted_per_s: f64,
    pub error_rate: f64,
    pub press_latency: Percentiles,
    pub press_to_sse: Percentiles,
    pub fanout: Percentiles,
    pub phases: Vec<PhaseSummary>,
    /// The highest open-model rate whose phase met the scenario's `[knee]`
    /// objective with every press accepted.
    pub knee_per_s: Option<f64>,
    pub lag_peak: f64,
    /// Seconds from the lag's peak until it was next zero.
    pub lag_recovery_s: Option<f64>,
    /// From the end of the load until PostgreSQL covered every accepted press.
    pub drain_s: Option<f64>,
    pub states: i64,
    pub verdict: Verdict,
    pub faults: Vec<FaultEvent>,
    pub fault_impact: Vec<FaultImpact>,
    pub asserts: Vec<AssertResult>,
    pub passed: bool,
}

pub struct RunOutcome {
    pub dir: PathBuf,
    pub summary: Summary,
}

pub async fn run(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<RunOutcome> {
    let started_wall = SystemTime::now();
    let started_at = humantime::format_rfc3339_seconds(started_wall).to_string();
    let mut name = format!("{}-{}", started_at.replace(':', ""), scenario.name);
    if let Some(label) = &options.label {
        name.push('-');
        name.push_str(label);
    }
    let dir = options.out_dir.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("scenario.toml"), toml::to_string(scenario)?)?;

    eprintln!(
        "{name}: starting the stack ({:?} driver)",
        scenario.stack.driver
    );
    let driver = Arc::new(Driver::start(scenario, &dir).await?);
    let endpoints = driver.endpoints().clone();
    let service_urls = endpoints.service_urls.clone();
    let reducer_url = endpoints.reducer_url.clone();
    let database_url = endpoints.database_url.clone();
    let broker_log = driver.broker_log().await;
    let guards = GuardsInfo::of(&service_urls[0]).await?;
    let state_before = latest_in_db(&database_url).await?;
    let counter_before = state_before.as_ref().map_or(0, |s| s.counter);
    let offsets_before = state_before.map(|s| s.offsets).unwrap_or_default();

    let mut offset = Duration::ZERO;
    let phases = scenario
        .phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let start = offset;
            offset += Duration::from_secs(p.duration_s);
            PhasePlan {
                name: if p.name.is_empty() {
                    format!("phase-{i}")
                } else {
                    p.name.clone()
                },
                start,
                end: offset,
                rate: p.rate,
                users: p.users,
                slots: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                press: Series::new("press"),
                press_to_sse: Series::new("press_to_sse"),
            }
        })
        .collect();
    let shared = Arc::new(Shared {
        phases,
        start: OnceLock::new(),
        press: Series::new("press"),
        press_to_sse: Series::new("press_to_sse"),
        fanout: Series::new("fanout"),
        tracker: Mutex::new(Tracker::default()),
        ledger: Mutex::new(Ledger::default()),
        sent: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        last_tracked: Mutex::new(None),
        frames: Mutex::new(Vec::new()),
        fault_windows: Mutex::new(Vec::new()),
        press_urls: service_urls
            .iter()
            .map(|u| format!("{u}/v1/events/press"))
            .collect(),
        challenge_urls: service_urls
            .iter()
            .map(|u| format!("{u}/v1/challenge"))
            .collect(),
        guards: guards.clone(),
    });

    // SSE listeners, spread over the service instances; the first one tracks.
    let listeners_stop = tokio_util_token();
    let mut listeners = Vec::new();
    for i in 0..scenario.sse.listeners.max(1) {
        let url = format!("{}/v1/states/stream", service_urls[i % service_urls.len()]);
        listeners.push(tokio::spawn(listen(
            url,
            i == 0,
            shared.clone(),
            listeners_stop.clone(),
        )));
    }

    let load_s = scenario.total_duration_s() as f64;
    let progress = progress_bar(options.progress, scenario.total_duration_s());
    let faults = Arc::new(Mutex::new(Vec::<FaultEvent>::new()));
    let load_started = Instant::now();
    let fault_tasks: Vec<_> = scenario
        .faults
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, f)| {
            tokio::spawn(apply_fault(
                i,
                f,
                driver.clone(),
                load_started,
                faults.clone(),
                shared.clone(),
            ))
        })
        .collect();
    let sampler_stop = tokio_util_token();
    let sampler = tokio::spawn(sample_loop(
        shared.clone(),
        driver.clone(),
        reducer_url.clone(),
        service_urls[0].clone(),
        dir.join("timeseries.csv"),
        load_started,
        progress.clone(),
        sampler_stop.clone(),
    ));

    let attack = attack(scenario, &service_urls[0], shared.clone())?;
    let goose_metrics = attack.execute().await.context("running the load")?;
    let load_elapsed = load_started.elapsed();
    for task in fault_tasks {
        let _ = task.await;
    }
    progress.finish_and_clear();
    drop(goose_metrics);
    eprintln!(
        "{name}: load done in {:.1} s; waiting for the lag to drain",
        load_elapsed.as_secs_f64()
    );

    // Drain: PostgreSQL covers every accepted press.
    let ledger = lock(&shared.ledger).clone();
    let drain_started = Instant::now();
    let mut newest = None;
    while drain_started.elapsed() < Duration::from_secs(180) {
        if let Ok(Some(s)) = latest_in_db(&database_url).await
            && ledger.covered_by(&s)
        {
            newest = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_s = newest
        .as_ref()
        .map(|_| drain_started.elapsed().as_secs_f64());
    let db_newest = match newest {
        Some(s) => Some(s),
        None => latest_in_db(&database_url).await?,
    };
    // Let the tracking client see the newest state.
    if let Some(target) = &db_newest {
        let wait = Instant::now();
        while wait.elapsed() < Duration::from_secs(30) {
            if lock(&shared.last_tracked)
                .as_ref()
                .is_some_and(|s| s.id >= target.id)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    sampler_stop.cancel();
    let lag_peak = sampler.await.unwrap_or(0.0);
    listeners_stop.cancel();
    for l in listeners {
        let _ = l.await;
    }

    let sse_last = lock(&shared.last_tracked).as_ref().map(|s| s.counter);
    let counter_after = db_newest.as_ref().map_or(counter_before, |s| s.counter);
    let records_applied = db_newest.as_ref().map_or(0, |s| {
        crate::verdict::records_between(&offsets_before, &s.offsets)
    });
    let verdict = Verdict::judge(
        ledger.accepted as u64,
        counter_before,
        counter_after,
        records_applied,
        sse_last,
        drain_s.is_some(),
    );

    let sent = shared.sent.load(Ordering::Relaxed);
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let errors = lock(&shared.errors).clone();
    let error_count: u64 = errors.values().sum();
    let mut summary = Summary {
        scenario: scenario.name.clone(),
        run: name.clone(),
        sweep_point: options.sweep_point.clone(),
        guards: guards.clone(),
        started_at: started_at.clone(),
        load_s,
        sent,
        accepted,
        errors,
        accepted_per_s: accepted as f64 / load_s,
        error_rate: if sent == 0 {
            0.0
        } else {
            error_count as f64 / sent as f64
        },
        press_latency: Percentiles::of(&shared.press.total()),
        press_to_sse: Percentiles::of(&shared.press_to_sse.total()),
        fanout: Percentiles::of(&shared.fanout.total()),
        phases: shared
            .phases
            .iter()
            .map(|p| {
                let accepted = p.accepted.load(Ordering::Relaxed);
                let duration_s = (p.end - p.start).as_secs_f64();
                PhaseSummary {
                    name: p.name.clone(),
                    start_s: p.start.as_secs_f64(),
                    duration_s,
                    rate: p.rate,
                    users: p.users,
                    sent: p.sent.load(Ordering::Relaxed),
                    accepted,
                    accepted_per_s: accepted as f64 / duration_s,
                    press_latency: Percentiles::of(&p.press.total()),
                    press_to_sse: Percentiles::of(&p.press_to_sse.total()),
                }
            })
            .collect(),
        knee_per_s: None,
        lag_peak,
        lag_recovery_s: lag_recovery(&dir.join("timeseries.csv")),
        drain_s,
        states: db_newest.as_ref().map_or(0, |s| s.id),
        verdict,
        faults: std::mem::take(&mut *lock(&faults)),
        fault_impact: fault_impact(
            scenario,
            &lock(&shared.fault_windows),
            &lock(&shared.frames),
            load_started,
            &dir.join("timeseries.csv"),
        ),
        asserts: Vec::new(),
        passed: false,
    };
    summary.knee_per_s = knee(scenario, &summary.phases);
    summary.asserts = check_asserts(scenario, &summary);
    summary.passed = summary.verdict.clean && summary.asserts.iter().all(|a| a.passed);

    for series in [&shared.press, &shared.press_to_sse, &shared.fanout] {
        series.write(&dir, started_wall)?;
    }
    let meta = crate::meta::collect(driver.name(), started_at, broker_log.as_deref());
    std::fs::write(
        dir.join("meta.json"),
        serde_json::to_string_pretty(&meta)? + "\n",
    )?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    crate::report::write(
        &dir,
        scenario,
        &summary,
        &shared.press_to_sse.total(),
        &shared.press.total(),
    )?;
    match Arc::try_unwrap(driver) {
        Ok(driver) => driver.stop().await,
        Err(_) => eprintln!("the stack is still in use; leaving it to be dropped"),
    }
    Ok(RunOutcome { dir, summary })
}

fn tokio_util_token() -> button_infra::CancellationToken {
    button_infra::CancellationToken::new()
}

fn progress_bar(enabled: bool, seconds: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(seconds);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The goose attack: users per the scenario's phases; each press paced by
/// the phase's rate (open model) or as fast as answers come (closed).
fn attack(scenario: &Scenario, host: &str, shared: Arc<Shared>) -> anyhow::Result<GooseAttack> {
    let mut steps = Vec::new();
    let mut previous = 0usize;
    for p in &scenario.phases {
        let users = match (p.users, p.rate) {
            (Some(u), _) => u,
            // Enough users that a slow answer does not hold up the next due
            // press; a press that waits anyway is timed from when it was due.
            (None, Some(rate)) => ((rate * 0.5).ceil() as usize).clamp(16, 1024),
            (None, None) => 1,
        };
        let ramp = if p.users.is_some() { p.ramp_s } else { 0 };
        if users != previous || ramp > 0 {
            steps.push(format!("{users},{ramp}"));
        }
        steps.push(format!("{users},{}", p.duration_s - ramp));
        previous = users;
    }
    steps.push("0,0".to_owned());
    let plan = steps.join(";");
    let args: Vec<String> = [
        "--host",
        host,
        "--test-plan",
        plan.as_str(),
        "--quiet",
        "--no-print-metrics",
        "--no-error-summary",
        "--no-telnet",
        "--no-gzip",
        "--co-mitigation",
        "disabled",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let configuration = goose::config::GooseConfiguration::parse_args_default(&arg_refs)
        .map_err(|e| anyhow::anyhow!("goose configuration: {e}"))?;
    let transaction = Transaction::new(Arc::new(move |user: &mut GooseUser| {
        let shared = shared.clone();
        Box::pin(async move {
            press_once(&shared, user).await;
            Ok(())
        })
    }))
    .set_name("press");
    Ok(GooseAttack::initialize_with_config(configuration)?
        .register_scenario(Scenario_::new("press").register_transaction(transaction)))
}

use goose::goose::Scenario as Scenario_;

/// `GET /v1/challenge`, solved: the body of a press with proof of work.
/// An error is the code the failure is counted under.
async fn solved_challenge(user: &mut GooseUser, url: &str) -> Result<serde_json::Value, String> {
    let goose = user
        .get(url)
        .await
        .map_err(|_| "challenge_transport".to_owned())?;
    let response = goose
        .response
        .map_err(|_| "challenge_transport".to_owned())?;
    if !response.status().is_success() {
        return Err(format!("challenge_{}", response.status().as_u16()));
    }
    let mut challenge: serde_json::Value = response
        .json()
        .await
        .map_err(|_| "challenge_body".to_owned())?;
    let id = challenge["challenge_id"]
        .as_str()
        .ok_or_else(|| "challenge_body".to_owned())?
        .to_owned();
    let difficulty = challenge["difficulty"].as_u64().unwrap_or(0) as u32;
    let nonce = tokio::task::spawn_blocking(move || button_domain::pow::solve(&id, difficulty))
        .await
        .map_err(|_| "challenge_solve".to_owned())?;
    challenge["nonce"] = serde_json::Value::String(nonce);
    Ok(serde_json::json!({ "pow": challenge }))
}

async fn press_once(shared: &Shared, user: &mut GooseUser) {
    let start = *shared.start.get_or_init(Instant::now);
    let elapsed = start.elapsed();
    let Some((index, phase)) = shared
        .phases
        .iter()
        .enumerate()
        .find(|(_, p)| elapsed < p.end)
    else {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return;
    };
    let due = match phase.rate {
        Some(rate) => {
            let n = phase.slots.fetch_add(1, Ordering::Relaxed);
            let due = phase.start + Duration::from_secs_f64(n as f64 / rate);
            if due >= phase.end {
                tokio::time::sleep_until((start + phase.end).into()).await;
                return;
            }
            let due = start + due;
            tokio::time::sleep_until(due.into()).await;
            due
        }
        None => Instant::now(),
    };
    shared.sent.fetch_add(1, Ordering::Relaxed);
    phase.sent.fetch_add(1, Ordering::Relaxed);
    let instance = user.weighted_users_index % shared.press_urls.len();
    // With proof of work on, a press costs what it costs a real client:
    // fetching a challenge and solving it count in its latency.
    let body = if shared.guards.pow_difficulty > 0 {
        solved_challenge(user, &shared.challenge_urls[instance]).await
    } else {
        Ok(serde_json::json!({}))
    };
    let answer = match body {
        Ok(body) => user.post_json(&shared.press_urls[instance], &body).await,
        Err(code) => {
            let latency = due.elapsed();
            shared.press.record(latency);
            phase.press.record(latency);
            shared.error(code);
            return;
        }
    };
    let latency = due.elapsed();
    shared.press.record(latency);
    phase.press.record(latency);
    match answer {
        Ok(goose) => match goose.response {
            Ok(response) if response.status().as_u16() == 202 => {
                match response.json::<Accepted>().await {
                    Ok(a) => shared.accept(&a, due, index),
                    Err(_) => shared.error("bad_202_body".to_owned()),
                }
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                shared.error(format!(
                    "{status}_{}",
                    body["error"].as_str().unwrap_or("unknown")
                ));
            }
            Err(_) => shared.error("transport".to_owned()),
        },
        Err(_) => shared.error("transport".to_owned()),
    }
}

/// One SSE connection; reconnects (with `Last-Event-ID`) if it drops.
async fn listen(
    url: String,
    tracking: bool,
    shared: Arc<Shared>,
    stop: button_infra::CancellationToken,
) {
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut last_id: Option<i64> = None;
    while !stop.is_cancelled() {
        let mut request = client.get(&url).header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = tokio::select! {
            _ = stop.cancelled() => return,
            r = request.send() => r,
        };
        let Ok(response) = response.and_then(|r| r.error_for_status()) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut events = response.bytes_stream().eventsource();
        let mut first = true;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.next() => e,
            };
            let Some(Ok(event)) = event else { break };
            if event.event != "state" {
                continue;
            }
            let Ok(snapshot) = serde_json::from_str::<Snapshot>(&event.data) else {
                continue;
            };
            last_id = Some(snapshot.id);
            // The first frame is the state at connect time, not a fresh commit.
            if !first && snapshot.committed_at_ms > 0 {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                shared.fanout.record(Duration::from_millis(
                    (now_ms - snapshot.committed_at_ms).max(0) as u64,
                ));
            }
            first = false;
            if tracking {
                shared.on_tracked_state(&snapshot);
            }
        }
    }
}

async fn apply_fault(
    index: usize,
    fault: crate::scenario::Fault,
    driver: Arc<Driver>,
    load_started: Instant,
    events: Arc<Mutex<Vec<FaultEvent>>>,
    shared: Arc<Shared>,
) {
    let component = fault.component();
    tokio::time::sleep_until((load_started + Duration::from_secs_f64(fault.at_s)).into()).await;
    let started = Instant::now();
    let act = |action: FaultAction| {
        let driver = driver.clone();
        let events = events.clone();
        async move {
            let at_s = load_started.elapsed().as_secs_f64();
            let result = driver.fault(action, component).await;
            let name = format!("{action:?}").to_lowercase();
            eprintln!(
                "fault at {at_s:.1} s: {name} {component}: {}",
                if result.is_ok() { "done" } else { "failed" }
            );
            lock(&events).push(FaultEvent {
                at_s,
                action: name,
                target: component.to_string(),
                ok: result.is_ok(),
                detail: result.err().map(|e| e.to_string()).unwrap_or_default(),
            });
        }
    };
    act(fault.action).await;
    if let Some(for_s) = fault.for_s {
        tokio::time::sleep(Duration::from_secs_f64(for_s)).await;
        let undo = match fault.action {
            FaultAction::Kill | FaultAction::Stop => Some(FaultAction::Start),
            FaultAction::Pause => Some(FaultAction::Resume),
            _ => None,
        };
        if let Some(undo) = undo {
            act(undo).await;
        }
    }
    lock(&shared.fault_windows).push((index, started, Instant::now()));
}

/// Each fault's recovery and what clients saw, from the per-second
/// samples and the tracking client's frames.
fn fault_impact(
    scenario: &Scenario,
    windows: &[(usize, Instant, Instant)],
    frames: &[Instant],
    load_started: Instant,
    timeseries: &Path,
) -> Vec<FaultImpact> {
    let rows = crate::report::read_timeseries(timeseries);
    let column = |name: &str| rows.get(name).cloned().unwrap_or_default();
    let (t, lag, errors) = (column("t_s"), column("lag"), column("errors_per_s"));
    let since = |i: Instant| i.saturating_duration_since(load_started).as_secs_f64();
    let mut out: Vec<FaultImpact> = windows
        .iter()
        .map(|&(index, started, done)| {
            let fault = &scenario.faults[index];
            let (at_s, done_s) = (since(started), since(done));
            // Row t covers the second (t - 1, t]: the first whole second
            // after the fault was undone.
            let recovered = (0..t.len()).find(|&i| {
                t[i] - 1.0 >= done_s
                    && lag.get(i).is_some_and(|&l| l == 0.0)
                    && errors.get(i).is_some_and(|&e| e == 0.0)
            });
            let end_s = recovered.map_or(f64::INFINITY, |i| t[i]);
            let refused = (0..t.len())
                // (samples are taken a moment after each whole second)
                .filter(|&i| t[i] + 0.5 > at_s && t[i] - 1.0 < end_s)
                .map(|i| {
                    errors
                        .get(i)
                        .copied()
                        .filter(|e| e.is_finite())
                        .unwrap_or(0.0)
                })
                .sum::<f64>() as u64;
            let mut longest: f64 = 0.0;
            let mut previous = at_s;
            for f in frames.iter().map(|&f| since(f)).filter(|&f| f > at_s) {
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
                recovery_s: recovered.map(|i| t[i] - at_s),
                refused,
                longest_sse_gap_s: longest,
            }
        })
        .collect();
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    out
}

/// Writes one CSV row a second; returns the peak lag.
#[allow(clippy::too_many_arguments)]
async fn sample_loop(
    shared: Arc<Shared>,
    driver: Arc<Driver>,
    reducer_url: String,
    service_url: String,
    path: PathBuf,
    load_started: Instant,
    progress: indicatif::ProgressBar,
    stop: button_infra::CancellationToken,
) -> f64 {
    use std::io::Write;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let components = ["postgres", "redis", "broker", "reducer", "service-0"];
    let Ok(file) = std::fs::File::create(&path) else {
        return 0.0;
    };
    let mut csv = std::io::BufWriter::new(file);
    let mut header = "t_s,sent_per_s,accepted_per_s,errors_per_s,press_p50_ms,press_p99_ms,press_to_sse_p50_ms,press_to_sse_p99_ms,fanout_p99_ms,lag,batch_size_avg,db_write_ms_avg,sse_clients".to_owned();
    for c in components {
        header.push_str(&format!(",{c}_cpu_pct,{c}_rss_kib,{c}_pss_kib,{c}_fds"));
    }
    let _ = writeln!(csv, "{header}");
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let (mut last_sent, mut last_accepted, mut last_errors) = (0u64, 0u64, 0u64);
    let (mut last_batches, mut last_records, mut last_db_sum, mut last_db_count) =
        (0.0, 0.0, 0.0, 0.0);
    let mut last_cpu: BTreeMap<String, f64> = BTreeMap::new();
    let mut lag_peak: f64 = 0.0;
    let mut second = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        second += 1;
        let t = load_started.elapsed();
        let start = t.saturating_sub(Duration::from_secs(1));
        let press = Percentiles::of(&shared.press.rotate(start, Duration::from_secs(1)));
        let p2s = Percentiles::of(&shared.press_to_sse.rotate(start, Duration::from_secs(1)));
        let fan = Percentiles::of(&shared.fanout.rotate(start, Duration::from_secs(1)));
        let sent = shared.sent.load(Ordering::Relaxed);
        let accepted = shared.accepted.load(Ordering::Relaxed);
        let errors: u64 = lock(&shared.errors).values().sum();
        let reducer = scrape(&http, &reducer_url).await;
        let service = scrape(&http, &service_url).await;
        let lag = reducer
            .as_deref()
            .and_then(|p| sample::metric_sum(p, "reducer_consumer_lag"));
        lag_peak = lag_peak.max(lag.unwrap_or(0.0));
        let batches = reducer
            .as_deref()
            .and_then(|p| sample::metric_sum(p, "reducer_batch_size_count"))
            .unwrap_or(last_batches);
        let records = reducer
            .as_deref()
            .and_then(|p| sample::metric_sum(p, "reducer_batch_size_sum"))
            .unwrap_or(last_records);
        let db_sum = reducer
            .as_deref()
            .and_then(|p| db_stage(p, "sum"))
            .unwrap_or(last_db_sum);
        let db_count = reducer
            .as_deref()
            .and_then(|p| db_stage(p, "count"))
            .unwrap_or(last_db_count);
        let batch_avg = if batches > last_batches {
            (records - last_records) / (batches - last_batches)
        } else {
            0.0
        };
        let db_avg_ms = if db_count > last_db_count {
            (db_sum - last_db_sum) / (db_count - last_db_count) * 1000.0
        } else {
            0.0
        };
        (last_batches, last_records, last_db_sum, last_db_count) =
            (batches, records, db_sum, db_count);
        let sse_clients = service
            .as_deref()
            .and_then(|p| sample::metric_sum(p, "service_sse_clients"))
            .unwrap_or(0.0);

        let mut usage = BTreeMap::new();
        let mut fds = BTreeMap::new();
        let mut cpu_now = BTreeMap::new();
        let pids = driver.pids();
        for c in components {
            if let Some(&pid) = pids.get(c)
                && let Some(u) = sample::tree_usage(pid)
            {
                cpu_now.insert(c.to_owned(), u.cpu_s);
                usage.insert(c.to_owned(), u);
                if let Some(n) = sample::tree_open_fds(pid) {
                    fds.insert(c.to_owned(), n);
                }
            }
        }
        let cpu_pct = sample::cpu_percent(&last_cpu, &cpu_now, 1.0);
        last_cpu = cpu_now;

        let mut row = format!(
            "{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{},{:.1},{:.3},{}",
            second,
            sent - last_sent,
            accepted - last_accepted,
            errors - last_errors,
            press.p50_ms,
            press.p99_ms,
            p2s.p50_ms,
            p2s.p99_ms,
            fan.p99_ms,
            lag.map_or(String::new(), |l| format!("{l}")),
            batch_avg,
            db_avg_ms,
            sse_clients
        );
        for c in components {
            let u = usage.get(c);
            row.push_str(&format!(
                ",{},{},{},{}",
                cpu_pct.get(c).map_or(String::new(), |v| format!("{v:.1}")),
                u.map_or(String::new(), |u| u.rss_kib.to_string()),
                u.and_then(|u| u.pss_kib)
                    .map_or(String::new(), |v| v.to_string()),
                fds.get(c).map_or(String::new(), |v| v.to_string())
            ));
        }
        let _ = writeln!(csv, "{row}");
        progress.set_position(second);
        progress.set_message(format!(
            "{}/s ok {} err  press p99 {:.1} ms  to SSE p99 {:.1} ms  lag {}",
            accepted - last_accepted,
            errors - last_errors,
            press.p99_ms,
            p2s.p99_ms,
            lag.map_or("?".to_owned(), |l| format!("{l}"))
        ));
        (last_sent, last_accepted, last_errors) = (sent, accepted, errors);
    }
    let _ = csv.flush();
    lag_peak
}

fn db_stage(page: &str, what: &str) -> Option<f64> {
    let prefix = format!("reducer_stage_duration_seconds_{what}{{stage=\"db\"}}");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

async fn scrape(http: &reqwest::Client, base: &str) -> Option<String> {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Seconds from the highest lag sample to the next sample at zero.
fn lag_recovery(timeseries: &Path) -> Option<f64> {
    let rows = crate::report::read_timeseries(timeseries);
    let (t, lag) = (rows.get("t_s")?, rows.get("lag")?);
    let (peak_i, peak) =
        lag.iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .fold(
                (0, 0.0),
                |best, (i, &v)| if v > best.1 { (i, v) } else { best },
            );
    if peak <= 0.0 {
        return Some(0.0);
    }
    let zero_i = (peak_i..lag.len()).find(|&i| lag[i] == 0.0)?;
    Some(t[zero_i] - t[peak_i])
}

/// The highest target rate whose phase kept every press and met the p99
/// press-to-SSE limit.
fn knee(scenario: &Scenario, phases: &[PhaseSummary]) -> Option<f64> {
    let limit = scenario.knee.as_ref()?.p99_press_to_sse_ms;
    phases
        .iter()
        .filter(|p| {
            p.rate.is_some() && p.sent > 0 && p.accepted == p.sent && p.press_to_sse.p99_ms <= limit
        })
        .filter_map(|p| p.rate)
        .fold(None, |best: Option<f64>, r| {
            Some(best.map_or(r, |b| b.max(r)))
        })
}

fn check_asserts(scenario: &Scenario, s: &Summary) -> Vec<AssertResult> {
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

/// Prints the end-of-run table.
pub fn print_summary(s: &Summary, dir: &Path) {
    let row = |name: &str, p: &Percentiles| {
        println!(
            "  {name:<16} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
        )
    };
    println!(
        "\n{}  ({:.0} s of load; {})",
        s.run,
        s.load_s,
        s.guards.describe()
    );
    println!(
        "  sent {}  accepted {} ({:.1}/s)  errors {:?}  lag peak {}  drain {}",
        s.sent,
        s.accepted,
        s.accepted_per_s,
        s.errors,
        s.lag_peak,
        s.drain_s
            .map_or("never".to_owned(), |d| format!("{d:.2} s"))
    );
    println!(
        "  {:<16} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    row("press", &s.press_latency);
    row("press to SSE", &s.press_to_sse);
    row("commit to client", &s.fanout);
    if s.phases.len() > 1 {
        println!(
            "  {:<16} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "phase", "target", "ok/s", "press p99", "SSE p50", "SSE p99"
        );
        for p in &s.phases {
            let target = p.rate.map_or_else(
                || format!("{}u", p.users.unwrap_or(0)),
                |r| format!("{r}/s"),
            );
            println!(
                "  {:<16} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
                p.name,
                target,
                p.accepted_per_s,
                p.press_latency.p99_ms,
                p.press_to_sse.p50_ms,
                p.press_to_sse.p99_ms
            );
        }
    }
    if let Some(knee) = s.knee_per_s {
        println!(
            "  knee: {knee} presses/s (highest rate meeting the p99 press-to-SSE limit with no errors)"
        );
    }
    let v = &s.verdict;
    println!(
        "  exactly once: accepted {}, counted {} ({} stored without a 202), lost {}, duplicated {}, last SSE frame {} -> {}",
        v.accepted,
        v.counter_after - v.counter_before,
        v.stored_without_202,
        v.lost,
        v.duplicated,
        v.sse_last_counter
            .map_or("none".to_owned(), |c| c.to_string()),
        if v.clean { "CLEAN" } else { "FAILED" }
    );
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
        "  {}  stored in {}",
        if s.passed { "PASSED" } else { "FAILED" },
        dir.display()
    );
}
