//! `loadgen run`: one scenario, start to finish, as a pipeline that reads
//! top to bottom:
//!
//! 1. **stack**: bring up what the scenario names ([`crate::driver`]);
//! 2. **schedule**: when every press is due ([`crate::schedule`]);
//! 3. **load** ([`crate::load`]) while the stage **observe** runs beside
//!    it: SSE listeners ([`crate::observe`]), the per-second sampler
//!    ([`crate::sample`]) and the faults ([`crate::faults`]), all writing
//!    into one [`Recorder`];
//! 4. **drain**: wait until PostgreSQL covers every accepted press;
//! 5. **judge**: the verdict by identity ([`crate::verdict`], reading the
//!    topic back with [`crate::topic`]) and validity, knee, cost per press,
//!    asserts ([`crate::summary`]);
//! 6. **store**: the run's folder ([`crate::store`]).

use crate::driver::{Driver, Endpoints};
use crate::faults::FaultEvent;
use crate::load::Target;
use crate::measure::{Percentiles, Series};
use crate::meta::Build;
use crate::recorder::{Recorder, lock};
use crate::sample::{Row, Sampled, Sources};
use crate::scenario::{Endpoint, Scenario};
use crate::schedule::Plan;
use crate::summary::{self, FaultWindow, GuardsInfo, PhaseSummary, Summary, Validity};
use crate::verdict::Verdict;
use anyhow::Context;
use button_client::latest_in_db;
use button_domain::Snapshot;
use button_stack::Ingest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub struct RunOptions {
    pub out_dir: PathBuf,
    /// The sweep point this run is (key → value), if any.
    pub sweep_point: Option<BTreeMap<String, String>>,
    /// Appended to the run folder's name (a sweep point, a repeat).
    pub label: Option<String>,
    pub progress: bool,
}

pub struct RunOutcome {
    pub dir: PathBuf,
    pub summary: Summary,
}

/// How long the listeners get to connect before the first press is due:
/// this, and [`HEAD_START_PER_LISTENER`] for each. The summary says how
/// many had their first frame when the load began.
const LISTENERS_HEAD_START: Duration = Duration::from_millis(300);
const HEAD_START_PER_LISTENER: Duration = Duration::from_millis(1);

/// How often the light host probe runs during the load: ~30 ms of one
/// core's work, about 1% of this machine.
const HOST_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Full probes before the load and after the drain, whose median counts:
/// about 2 s each side.
const HOST_PROBES: usize = 5;

/// Memory of every service process: PSS when readable, else RSS.
fn service_memory(driver: &Driver) -> (BTreeMap<String, u64>, &'static str) {
    let mut pss = true;
    let memory: BTreeMap<String, u64> = driver
        .pids()
        .into_iter()
        .filter(|(name, _)| name.starts_with("service"))
        .filter_map(|(name, pid)| {
            let u = crate::sample::process_usage(pid)?;
            pss &= u.pss_kib.is_some();
            Some((name, u.pss_kib.unwrap_or(u.rss_kib)))
        })
        .collect();
    (memory, if pss { "pss" } else { "rss" })
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
    let build = Build::current();
    if !build.optimised() {
        eprintln!(
            "{name}: WARNING: this loadgen is a dev build (opt-level {}); the service and reducer beside it are too, and the run will be marked invalid. Measure with scripts/loadgen (release).",
            build.opt_level
        );
    }

    // Before the stack starts: a profile that cannot be taken says so now.
    let profile_access = if scenario.profile.targets.is_empty() {
        None
    } else {
        Some(crate::profile::check_access()?)
    };

    // The host, before the stack starts: the same fixed work as this
    // machine kind's reference, which was taken with no stack up either
    // (an idle stack's polling alone costs the probe 10-20%).
    let host_reference = crate::host::find_reference(&options.out_dir)?;
    let host_before =
        tokio::task::spawn_blocking(|| crate::host::Probe::Full.median_of(HOST_PROBES))
            .await
            .context("the host probe")?
            .context("probing the host before the load")?;
    let mut host = crate::host::HostReport::new(
        host_reference.as_ref().map(|(r, name)| (r, name.clone())),
        Some(host_before),
    );

    // 1. stack
    eprintln!(
        "{name}: starting the stack ({:?} driver)",
        scenario.stack.driver
    );
    let driver = Arc::new(Driver::start(scenario, &dir).await?);
    let endpoints = driver.endpoints().clone();
    let guards = guards_of(&endpoints.service_urls[0]).await?;
    let state_before = latest_in_db(&endpoints.database_url).await?;

    // 2. schedule
    let plan = Plan::of(scenario);
    let head_start = LISTENERS_HEAD_START + HEAD_START_PER_LISTENER * scenario.sse.listeners as u32;
    let recorder = Arc::new(Recorder::new(plan, Instant::now() + head_start));
    // Interval logs count from the start of the load.
    let load_wall = SystemTime::now() + head_start;
    let (memory_before, memory_measure) = service_memory(&driver);
    let listeners_started = Instant::now();

    // 3. load, observed
    let listeners_stop = button_infra::CancellationToken::new();
    let listeners = crate::observe::spawn_listeners(
        scenario.sse.listeners,
        scenario.sse.transport(),
        &endpoints.service_urls,
        &recorder,
        &listeners_stop,
    );
    let fault_events = Arc::new(Mutex::new(Vec::<FaultEvent>::new()));
    let fault_tasks = crate::faults::spawn(&scenario.faults, &driver, &recorder, &fault_events);
    let progress = progress_bar(options.progress, scenario.total_duration_s());
    let recording = match profile_access {
        Some(access) => Some(start_profile(scenario, access, &driver, &recorder, &dir)?),
        None => None,
    };
    // The profiler's and the light probes' CPU is the run's own, each
    // shown as its own process.
    let profiler_pid = recording.as_ref().and_then(|r| r.pid());
    let during_probes = crate::host::DuringProbes::start(HOST_PROBE_EVERY)?;
    let probe_pid = during_probes.pid();
    let sampler_stop = button_infra::CancellationToken::new();
    let sampler = {
        let pids_of = driver.clone();
        tokio::spawn(crate::sample::sample_loop(
            recorder.clone(),
            Sources {
                reducer_urls: endpoints.reducer_urls.clone(),
                service_url: endpoints.service_urls[0].clone(),
                relay_urls: endpoints.relay_urls.clone(),
                topic: endpoints
                    .brokers
                    .clone()
                    .filter(|_| endpoints.ingest.uses_broker())
                    .map(|brokers| crate::sample::TopicSource {
                        brokers,
                        topic: endpoints.topic.clone(),
                        database_url: endpoints.database_url.clone(),
                    }),
                pids: Box::new(move || {
                    let mut pids = pids_of.pids();
                    pids.extend(profiler_pid.map(|p| ("perf".to_owned(), p)));
                    pids.insert(crate::host::DURING_PROCESS.to_owned(), probe_pid);
                    pids
                }),
            },
            dir.join("timeseries.csv"),
            progress.clone(),
            sampler_stop.clone(),
        ))
    };
    let target = Target::new(
        &endpoints.service_urls,
        guards.pow_difficulty > 0,
        scenario.load.max_in_flight,
        scenario.load.threads,
    )?;
    // Every listener connected (or the load is due): the service's memory
    // now is the clients' cost at rest.
    while recorder.listeners_connected.load(Ordering::Relaxed) < scenario.sse.listeners as u64
        && Instant::now() < recorder.start
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = recorder.listeners_connected.load(Ordering::Relaxed);
    let connect_s = listeners_started.elapsed().as_secs_f64();
    let (memory_connected, _) = service_memory(&driver);
    crate::load::run(
        recorder.clone(),
        target,
        crate::load::StopRamp::of(scenario),
    )
    .await?;
    let load_elapsed = recorder.start.elapsed();
    let light_reference = host_reference.as_ref().map(|(r, _)| r.light);
    host.during = during_probes
        .finish()
        .into_iter()
        .map(|(at, timings)| crate::host::DuringProbe {
            at_s: at.saturating_duration_since(recorder.start).as_secs_f64(),
            timings,
            index: light_reference.map(|r| crate::host::Index::of(&timings, &r).index),
        })
        .collect();
    if let Some((index, missed)) = recorder.stopped() {
        eprintln!(
            "{name}: stopped after phase {}: {} steps in a row missed the objective; the remaining phases were not run",
            recorder.plan.phases[index].name,
            missed.len()
        );
    }
    let (memory_end, _) = service_memory(&driver);
    let clients_memory = (scenario.sse.listeners >= summary::CLIENTS_MEMORY_MIN).then(|| {
        let processes = memory_before
            .iter()
            .map(|(name, &before_kib)| {
                let at = |m: &BTreeMap<String, u64>| m.get(name).copied().unwrap_or(before_kib);
                (
                    name.clone(),
                    summary::MemoryMarks {
                        before_kib,
                        connected_kib: at(&memory_connected),
                        end_kib: at(&memory_end),
                    },
                )
            })
            .collect();
        summary::ClientsMemory::new(
            scenario.sse.listeners,
            connected,
            connect_s,
            memory_measure,
            processes,
        )
    });
    for task in fault_tasks {
        let _ = task.await;
    }
    progress.finish_and_clear();
    eprintln!(
        "{name}: load done in {:.1} s; waiting for the lag to drain",
        load_elapsed.as_secs_f64()
    );

    // 4. drain
    let drained = drain(&recorder, &endpoints).await?;
    sampler_stop.cancel();
    let sampled = sampler.await.context("the sampler")??;
    listeners_stop.cancel();
    for l in listeners {
        let _ = l.await;
    }
    let load_end = recorder.start.elapsed();
    let mut profiles = Vec::new();
    if let Some(recording) = recording {
        profiles = crate::profile::finish(recording, &dir).await;
        for p in &profiles {
            match (&p.flamegraph, &p.error) {
                (Some(svg), _) => {
                    eprintln!(
                        "{name}: profile of {}: {} samples, {svg}",
                        p.target, p.samples
                    )
                }
                (None, e) => eprintln!(
                    "{name}: profile of {} failed: {}",
                    p.target,
                    e.as_deref().unwrap_or("?")
                ),
            }
        }
    }

    // 5. judge
    let verdict = judge_exactly_once(&recorder, &endpoints, state_before.as_ref(), &drained).await;
    if !verdict.clean {
        match driver.keep_logs(&dir.join("stack-logs")).await {
            Ok(kept) if !kept.is_empty() => eprintln!(
                "{name}: the verdict failed; the stack's logs are kept in {}",
                dir.join("stack-logs").display()
            ),
            Ok(_) => {}
            Err(e) => eprintln!("{name}: the stack's logs could not be kept: {e:#}"),
        }
    }
    let (driver_name, local) = (driver.name(), matches!(*driver, Driver::Local(..)));
    match Arc::try_unwrap(driver) {
        Ok(driver) => driver.stop().await,
        Err(_) => eprintln!("the stack is still in use; leaving it to be dropped"),
    }

    // The host again, with the stack gone, as before it started.
    let host_after =
        tokio::task::spawn_blocking(|| crate::host::Probe::Full.median_of(HOST_PROBES))
            .await
            .context("the host probe")?
            .context("probing the host after the run")?;
    host.finish(host_reference.as_ref().map(|(r, _)| r), Some(host_after));
    eprintln!("{name}: {}", host.describe());

    let mut summary = summarise(
        scenario,
        options,
        &name,
        &started_at,
        &guards,
        &recorder,
        &sampled,
        &drained,
        verdict,
        std::mem::take(&mut *lock(&fault_events)),
        &build,
        host,
    );
    summary.profiles = profiles;
    summary.clients_memory = clients_memory;

    // 6. store
    let meta = crate::meta::collect(
        driver_name,
        started_at,
        local,
        &components_started(scenario),
    );
    crate::store::write(
        &dir, scenario, &summary, &meta, &recorder, load_wall, load_end,
    )?;
    Ok(RunOutcome { dir, summary })
}

/// The lab's components a run starts (their fingerprints decide when it
/// is stale): the generator always, the stack's own unless it is external.
fn components_started(scenario: &Scenario) -> Vec<&'static str> {
    let mut components = vec!["generator"];
    if scenario.stack.driver != crate::scenario::Driver::External {
        components.extend(["service", "reducer"]);
        if scenario.stack.ingest == Ingest::Outbox {
            components.push("relay");
        }
    }
    components
}

/// Starts `perf` for the processes the scenario's `[profile]` names, for
/// its phase or the whole load.
fn start_profile(
    scenario: &Scenario,
    access: crate::profile::Access,
    driver: &Driver,
    recorder: &Recorder,
    dir: &std::path::Path,
) -> anyhow::Result<crate::profile::Recording> {
    let section = &scenario.profile;
    let (from, to, window) = match &section.phase {
        Some(name) => {
            let phase = recorder
                .plan
                .phases
                .iter()
                .find(|p| &p.name == name)
                .with_context(|| format!("profile.phase: no phase is named `{name}`"))?;
            (phase.start, phase.end, format!("phase {name}"))
        }
        None => (
            Duration::ZERO,
            recorder.plan.duration(),
            "the whole load".to_owned(),
        ),
    };
    let pids = driver.pids();
    let mut targets: Vec<(String, u32)> = Vec::new();
    for target in &section.targets {
        let processes = crate::profile::resolve_target(target, &pids);
        anyhow::ensure!(
            !processes.is_empty(),
            "profile: `{target}` has no process this driver knows (only the local driver's processes can be profiled)"
        );
        for p in processes {
            if !targets.contains(&p) {
                targets.push(p);
            }
        }
    }
    let delay = (recorder.start + from).saturating_duration_since(Instant::now());
    crate::profile::start(access, section, targets, delay, to - from, window, dir)
}

async fn guards_of(service_url: &str) -> anyhow::Result<GuardsInfo> {
    let health: serde_json::Value = reqwest::get(format!("{service_url}/health"))
        .await
        .with_context(|| format!("reading {service_url}/health"))?
        .json()
        .await
        .context("/health is not JSON")?;
    serde_json::from_value(health["guards"].clone())
        .with_context(|| format!("/health has no usable `guards`: {health}"))
}

/// The end of the drain.
struct Drained {
    /// Seconds from the end of the load until PostgreSQL covered every
    /// accepted press; none if it never did.
    drain_s: Option<f64>,
    /// PostgreSQL's newest state at the end.
    newest: Option<Snapshot>,
}

const DRAIN_LIMIT: Duration = Duration::from_secs(180);

/// Waits until PostgreSQL's newest state covers every accepted press, then
/// until the tracking client has seen that state. Presses accepted into
/// the outbox name no position: for them the outbox must have no pending
/// row left, and the state must cover everything the topic then holds.
async fn drain(recorder: &Recorder, endpoints: &Endpoints) -> anyhow::Result<Drained> {
    let database_url = endpoints.database_url.as_str();
    let mut ledger = recorder.ledger();
    let started = Instant::now();
    let mut covered = None;
    let mut outbox_settled = ledger.unplaced == 0;
    let pool = if outbox_settled {
        None
    } else {
        Some(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(database_url)
                .await
                .context("connecting to PostgreSQL to watch the outbox")?,
        )
    };
    while started.elapsed() < DRAIN_LIMIT {
        if !outbox_settled
            && let (Some(pool), Some(brokers)) = (&pool, &endpoints.brokers)
            && let Ok((0, _, _)) = button_store::ingest::outbox_counts(pool).await
            && let Ok(high) =
                crate::topic::high_watermarks(brokers, &endpoints.topic, Duration::from_secs(5))
                    .await
        {
            // Every row was sent (or is dead): the topic holds all there is.
            for (p, h) in high.into_iter().filter(|(_, h)| *h > 0) {
                let last = ledger.high.entry(p).or_insert(h - 1);
                *last = (*last).max(h - 1);
            }
            outbox_settled = true;
        }
        if outbox_settled
            && let Ok(Some(s)) = latest_in_db(database_url).await
            && ledger.covered_by(&s)
        {
            covered = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_s = covered.as_ref().map(|_| started.elapsed().as_secs_f64());
    let newest = match covered {
        Some(s) => Some(s),
        None => latest_in_db(database_url).await?,
    };
    if let Some(target) = &newest {
        let wait = Instant::now();
        while wait.elapsed() < Duration::from_secs(30) {
            if recorder.last_tracked().is_some_and(|s| s.id >= target.id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Drained { drain_s, newest })
}

/// Matches every 202 against the topic, read back independently, and
/// against what the reducer applied.
async fn judge_exactly_once(
    recorder: &Recorder,
    endpoints: &Endpoints,
    before: Option<&Snapshot>,
    drained: &Drained,
) -> Verdict {
    let offsets_before = before.map(|s| s.offsets.clone()).unwrap_or_default();
    let offsets_after = drained
        .newest
        .as_ref()
        .map(|s| s.offsets.clone())
        .unwrap_or_default();
    let reading = Instant::now();
    let ingest = endpoints.ingest;
    let topic = match (&endpoints.brokers, ingest) {
        // No broker: the reducer's log is PostgreSQL's `presses` table.
        (_, Ingest::Direct) => {
            read_presses_table(&endpoints.database_url, &offsets_before, &offsets_after)
                .await
                .map_err(|e| format!("{e:#}"))
        }
        // A minute without a new record: the broker is not coming back.
        (Some(brokers), _) => crate::topic::read_range(
            brokers,
            &endpoints.topic,
            &offsets_before,
            &offsets_after,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| e.to_string()),
        (None, _) => Err("the driver gives no broker address (set stack.brokers)".to_owned()),
    };
    if let Ok(records) = &topic {
        eprintln!(
            "read {} records back from {} in {:.1} s",
            records.len(),
            if ingest == Ingest::Direct {
                "the presses table"
            } else {
                "the topic"
            },
            reading.elapsed().as_secs_f64()
        );
    }
    let mut accepted = recorder.accepted_presses();
    if let Ok(records) = &topic
        && accepted.iter().any(|a| a.outbox_id.is_some())
    {
        // Outbox presses are judged where the relay put them, found by
        // their request id; their press-to-SSE latency is known now too.
        let positions = crate::recorder::first_positions(records);
        crate::recorder::place(&mut accepted, &positions);
        let placed = recorder.place_unplaced(&positions);
        eprintln!("placed {placed} outbox presses in the topic by request id");
    }
    crate::verdict::Verdict::judge(&crate::verdict::JudgeInput {
        accepted: &accepted,
        topic: topic.as_deref().ok(),
        topic_error: topic.as_ref().err().cloned(),
        offsets_before: &offsets_before,
        offsets_after: &offsets_after,
        counter_before: before.map_or(0, |s| s.counter),
        counter_after: drained
            .newest
            .as_ref()
            .map_or(before.map_or(0, |s| s.counter), |s| s.counter),
        unanswered: recorder.unanswered.load(Ordering::Relaxed),
        sse_last_counter: recorder.last_tracked().map(|s| s.counter),
        drained: drained.drain_s.is_some(),
        gaps_allowed: ingest == Ingest::Direct,
        repeats_expected: ingest == Ingest::Outbox,
        maybe_twice: &recorder.maybe_twice(),
    })
}

/// The `presses` rows the reducer applied between two states (ingest
/// `direct`: partition 0, offset = row id), as the verdict reads a topic.
async fn read_presses_table(
    database_url: &str,
    before: &BTreeMap<i32, i64>,
    after: &BTreeMap<i32, i64>,
) -> anyhow::Result<Vec<crate::topic::TopicRecord>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .context("connecting to PostgreSQL to read the presses table")?;
    let from = before.get(&0).copied().unwrap_or(0);
    let through = after.get(&0).copied().unwrap_or(0);
    let rows = button_store::ingest::presses_between(&pool, from, through)
        .await
        .context("reading the presses table")?;
    Ok(rows
        .into_iter()
        .map(|r| crate::topic::TopicRecord {
            partition: 0,
            offset: r.id,
            request_id: button_domain::PressRecord::decode(Some(&r.payload))
                .ok()
                .map(|p| p.request_id),
        })
        .collect())
}

fn merged(series: impl Iterator<Item = hdrhistogram::Histogram<u64>>) -> Percentiles {
    let mut total: Option<hdrhistogram::Histogram<u64>> = None;
    for h in series {
        match &mut total {
            Some(t) => {
                let _ = t.add(&h);
            }
            None => total = Some(h),
        }
    }
    total.map_or_else(Percentiles::default, |t| Percentiles::of(&t))
}

/// The summary of what was measured, judged.
#[allow(clippy::too_many_arguments)]
fn summarise(
    scenario: &Scenario,
    options: &RunOptions,
    name: &str,
    started_at: &str,
    guards: &GuardsInfo,
    recorder: &Recorder,
    sampled: &Sampled,
    drained: &Drained,
    verdict: Verdict,
    faults: Vec<FaultEvent>,
    build: &Build,
    host: crate::host::HostReport,
) -> Summary {
    let host_reason = summary::host_validity(&scenario.validity, &host);
    let rows: &[Row] = &sampled.rows;
    let cores = crate::host::machine_cores();
    let stop = recorder.stopped();
    // Phases after the one whose miss stopped the ramp never ran.
    let ran = |i: usize| stop.as_ref().is_none_or(|(last, _)| i <= *last);
    let phases: Vec<PhaseSummary> = recorder
        .plan
        .phases
        .iter()
        .zip(&recorder.phases)
        .enumerate()
        .map(|(i, (plan, stats))| {
            let (start_s, end_s) = (plan.start.as_secs_f64(), plan.end.as_secs_f64());
            let (cpu_pct, steal_pct, foreign_pct) = summary::phase_machine(rows, start_s, end_s);
            let sent = stats.sent.load(Ordering::Relaxed);
            let accepted = stats.accepted.load(Ordering::Relaxed);
            let served = stats.served.load(Ordering::Relaxed);
            let span_s = stats.span_s(plan);
            let mut p = PhaseSummary {
                name: plan.name.clone(),
                start_s,
                duration_s: end_s - start_s,
                rate: plan.rate,
                users: plan.users,
                warmup: plan.warmup,
                endpoint: plan.endpoint,
                planned: if plan.rate.is_some() {
                    plan.planned()
                } else {
                    sent
                },
                sent,
                sent_on_time: stats.sent_on_time.load(Ordering::Relaxed),
                accepted,
                unanswered: stats.unanswered.load(Ordering::Relaxed),
                span_s,
                accepted_per_s: accepted as f64 / span_s,
                served,
                served_per_s: served as f64 / span_s,
                press_latency: Percentiles::of(&stats.press.total()),
                press_to_sse: Percentiles::of(&stats.press_to_sse.total()),
                schedule_lag: Percentiles::of(&stats.schedule_lag.total()),
                cpu_pct,
                steal_pct,
                foreign_pct,
                host_index_during: host.during_index(start_s, end_s),
                validity: Validity::default(),
                not_run: !ran(i),
            };
            p.validity = if p.not_run {
                Validity::of(Vec::new())
            } else {
                let mut v =
                    summary::phase_validity(&scenario.validity, &p, build.optimised(), cores);
                // A slow host makes every phase's figures its own.
                v.reasons.extend(host_reason.clone());
                Validity::of(v.reasons)
            };
            p
        })
        .collect();
    // Headline figures are presses': a live phase has its own row and the
    // press path.
    let presses: Vec<usize> = (0..phases.len())
        .filter(|&i| phases[i].endpoint == Endpoint::Press && !phases[i].not_run)
        .collect();
    let steady: Vec<usize> = presses
        .iter()
        .copied()
        .filter(|&i| !phases[i].warmup)
        .collect();
    // A scenario of warm-ups only has no steady part: judge all of it.
    let headline: Vec<usize> = if !steady.is_empty() {
        steady
    } else if !presses.is_empty() {
        presses.clone()
    } else {
        (0..phases.len()).filter(|&i| !phases[i].not_run).collect()
    };
    let steady_s: f64 = headline.iter().map(|&i| phases[i].duration_s).sum();
    let steady_span_s: f64 = headline.iter().map(|&i| phases[i].span_s).sum();
    let steady_accepted: u64 = headline.iter().map(|&i| phases[i].accepted).sum();
    let windows: Vec<(f64, f64)> = headline
        .iter()
        .map(|&i| (phases[i].start_s, phases[i].start_s + phases[i].duration_s))
        .collect();
    let of_phases = |pick: fn(&crate::recorder::PhaseStats) -> &Series| {
        merged(headline.iter().map(|&i| pick(&recorder.phases[i]).total()))
    };
    let sent = recorder.sent.load(Ordering::Relaxed);
    let errors = recorder.errors();
    // Failed presses: a live check's failure is no press's.
    let error_count = recorder.error_count();
    let since = |i: Instant| i.saturating_duration_since(recorder.start).as_secs_f64();
    let windows_s: Vec<FaultWindow> = recorder
        .fault_windows()
        .into_iter()
        .map(|(index, started, done)| FaultWindow {
            index,
            at_s: since(started),
            done_s: since(done),
        })
        .collect();
    let frames_s: Vec<f64> = recorder.frames().into_iter().map(since).collect();
    let mut s = Summary {
        scenario: scenario.name.clone(),
        ingest: scenario.stack.ingest,
        transport: scenario.sse.transport(),
        run: name.to_owned(),
        sweep_point: options.sweep_point.clone(),
        overrides: scenario.overrides.clone(),
        guards: guards.clone(),
        started_at: started_at.to_owned(),
        // A stopped ramp's load ended with its last phase run.
        load_s: match &stop {
            Some((last, _)) => recorder.plan.phases[*last].end.as_secs_f64(),
            None => recorder.plan.duration().as_secs_f64(),
        },
        steady_s,
        planned: presses.iter().map(|&i| phases[i].planned).sum(),
        sent,
        accepted: recorder.accepted.load(Ordering::Relaxed),
        errors,
        unanswered: recorder.unanswered.load(Ordering::Relaxed),
        retried: recorder.retried.load(Ordering::Relaxed),
        accepted_per_s: steady_accepted as f64 / steady_span_s.max(1e-9),
        error_rate: if sent == 0 {
            0.0
        } else {
            error_count as f64 / sent as f64
        },
        press_latency: of_phases(|p| &p.press),
        press_to_sse: of_phases(|p| &p.press_to_sse),
        fanout: Percentiles::of(&recorder.fanout.total()),
        clients_memory: None,
        observer_lag: Percentiles::of(&recorder.observer_lag.total()),
        schedule_lag: of_phases(|p| &p.schedule_lag),
        cost_us_per_press: summary::cost_per_press(rows, &windows),
        knee_per_s: None,
        knee_limit_ms: scenario.knee.as_ref().map(|k| k.p99_press_to_sse_ms),
        knee_is_lower_bound: false,
        stopped: stop.map(|(last, missed)| summary::RampStop {
            after: recorder.plan.phases[last].name.clone(),
            missed,
            not_run: phases
                .iter()
                .filter(|p| p.not_run)
                .map(|p| p.name.clone())
                .collect(),
        }),
        press_path: None,
        lag_peak: sampled.lag_peak,
        lag_recovery_s: summary::lag_recovery(rows),
        drain_s: drained.drain_s,
        states: drained.newest.as_ref().map_or(0, |s| s.id),
        verdict,
        host: Some(host),
        validity: summary::run_validity(&phases),
        faults,
        fault_impact: summary::fault_impact(scenario, &windows_s, &frames_s, rows),
        profiles: Vec::new(),
        phases,
        asserts: Vec::new(),
        passed: false,
    };
    // Judged with many listeners only: a handful cost the generator
    // nothing, and how busy the machine is has checks of its own.
    if scenario.sse.listeners >= summary::CLIENTS_MEMORY_MIN
        && s.observer_lag.p99_ms > scenario.validity.max_observer_lag_p99_ms
    {
        let mut reasons = std::mem::take(&mut s.validity.reasons);
        reasons.push(format!(
            "listeners fell behind: their runtime ran {:.1} ms late at p99 (limit {} ms)",
            s.observer_lag.p99_ms, scenario.validity.max_observer_lag_p99_ms
        ));
        s.validity = summary::Validity::of(reasons);
    }
    s.knee_per_s = summary::knee(scenario, &s.phases);
    s.knee_is_lower_bound = summary::knee_is_lower_bound(s.knee_per_s, &s.phases);
    s.press_path = summary::press_path(&s.phases, &client_text(scenario));
    s.asserts = summary::check_asserts(scenario, &s);
    s.passed = s.verdict.clean && s.asserts.iter().all(|a| a.passed);
    s
}

/// The client open-model phases send with, presses and live checks alike.
fn client_text(scenario: &Scenario) -> String {
    let load = &scenario.load;
    format!(
        "loadgen's open-model client (hyper HTTP/1.1 keep-alive connections, {} sending threads, at most {} requests in flight)",
        crate::load::sending_threads(load.threads, load.max_in_flight),
        load.max_in_flight.max(1)
    )
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
