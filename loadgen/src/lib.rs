//! The lab's command line. Its promise: a stored run says whether its
//! figures are the stack's (validity), whether every accepted press was
//! counted exactly once (matched by identity), and how it can be re-run.
//!
//! A run (`loadgen run`, [`run`]) is a pipeline of stages, each its own
//! module with a narrow input and output:
//!
//! | stage | modules | in → out |
//! |---|---|---|
//! | stack | [`driver`] | scenario → endpoints, pids, faults |
//! | schedule | [`schedule`] | scenario → [`schedule::Plan`] (when each press is due) |
//! | load | [`load`], [`wire`] (presses on keep-alive connections, per sending thread) | plan → presses, into the [`recorder::Recorder`] |
//! | observe | [`observe`] (SSE listeners), [`sample`] (per-second rows, `timeseries.csv`), [`faults`] | stack → recorder, rows |
//! | drain | [`run`] | database → the newest state covering every 202 |
//! | judge | [`verdict`] + [`topic`] (exactly once, by identity), [`summary`] (validity, cost per press, knee, asserts) | recorder, rows, topic → [`summary::Summary`] |
//! | store | [`store`], [`report`] | summary → the run's folder, the terminal table |
//!
//! Around single runs: [`repeat`] (`--repeat N`, the spread of repeats,
//! the knee every repeat met), [`lab`] (sweeps, `compare`, `report` →
//! SCALE.md, HTML pages), [`ab`] with [`paired`] (two builds compared by
//! interleaved runs), [`campaign`] (SCALE.md's headline runs in rounds),
//! [`probe`] (a burst per broker engine), `stack up` (a local stack to
//! poke by hand). [`scenario`] parses what a person types; [`measure`]
//! holds the HdrHistogram series; [`meta`] says where and with what a run
//! ran, [`fingerprint`] which code each component was built from, and
//! [`host`] how fast the machine was against its reference.

pub mod ab;
pub mod arch;
pub mod campaign;
pub mod driver;
pub mod faults;
pub mod fingerprint;
pub mod host;
pub mod lab;
pub mod load;
pub mod measure;
pub mod meta;
pub mod observe;
pub mod paired;
pub mod probe;
pub mod profile;
pub mod recorder;
pub mod repeat;
pub mod report;
pub mod run;
pub mod sample;
pub mod scenario;
pub mod schedule;
pub mod store;
pub mod summary;
pub mod topic;
pub mod verdict;
pub mod wire;

use anyhow::Context;
use button_client::{Api, SseListener};
use button_domain::Snapshot;
use button_stack::{BrokerStorage, Ingest, Stack, StackConfig};
use clap::{Parser, Subcommand};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about = "The Button lab")]
pub struct Cli {
    /// More logs (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A local stack to poke by hand.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Runs a scenario (a file, or a name under scenarios/) and stores it
    /// under experiments/. Exits non-zero when the verdict or an assert fails.
    Run {
        scenario: String,
        /// Where runs are stored (CI uses a throwaway folder).
        #[arg(long, default_value = "experiments")]
        out: std::path::PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Runs the scenario N times, each on a fresh stack, and stores an
        /// aggregate with the spread (min / median / max).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
        /// Also profiles these processes with perf (`service`, `broker`,
        /// `reducer`, `postgres`, `redis`, `loadgen`; comma-separated or
        /// repeated), beside any the scenario's [profile] names: a flame
        /// graph each in the run's folder.
        #[arg(long, value_delimiter = ',')]
        profile: Vec<String>,
        /// Overrides one key, as a sweep point would (repeatable), e.g.
        /// `--set stack.ingest=outbox` or `--set reducer.batch_max=100`.
        /// The run's stored scenario holds the result.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Runs every point of a scenario's [sweep] and stores a table and chart.
    Sweep {
        scenario: String,
        #[arg(long, default_value = "experiments")]
        out: std::path::PathBuf,
        #[arg(long)]
        quiet: bool,
        /// Runs every point N times (each on a fresh stack); the table and
        /// chart show the median and the spread.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
    },
    /// Two builds compared by interleaved runs: each revision built once
    /// (a worktree, release), then the scenario as pairs in balanced order
    /// (A B, B A, …), a fresh stack each; per metric the pairs' ratio B/A
    /// with a 95% interval and a verdict. Stored as one folder.
    Ab {
        /// A commit, branch or tag, or `.` for the work tree as it is.
        rev_a: String,
        rev_b: String,
        scenario: String,
        #[arg(long, default_value_t = 4)]
        pairs: usize,
        #[arg(long, default_value = "experiments")]
        out: std::path::PathBuf,
        /// Overrides a key for both sides (repeatable; both revisions'
        /// generators must know `--set`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Overrides a key for A only, e.g. a deliberate slowdown.
        #[arg(long = "set-a", value_name = "KEY=VALUE")]
        sets_a: Vec<String>,
        #[arg(long = "set-b", value_name = "KEY=VALUE")]
        sets_b: Vec<String>,
        /// The order's seed (default: the clock); stored with the result.
        #[arg(long)]
        seed: Option<u64>,
        /// Profiles these processes in every run (as `run --profile`).
        #[arg(long, value_delimiter = ',')]
        profile: Vec<String>,
        /// CI's end-to-end canary: exit 1 when B's CPU a press in the
        /// service or reducer is confidently over 1.25x A's, or its p99
        /// press to SSE over 1.5x (the whole interval past the limit).
        #[arg(long)]
        canary: bool,
    },
    /// Re-measures what SCALE.md's headline tables need, unattended: a
    /// plan's entries in rounds (every first repeat, then every second,
    /// shuffled per round), then each entry's aggregate; prints its wall
    /// time.
    Campaign {
        #[arg(default_value = "campaigns/headline.toml")]
        plan: std::path::PathBuf,
        #[arg(long, default_value = "experiments")]
        out: std::path::PathBuf,
        /// Skips entries that already have enough runs of the current
        /// code (by the components' fingerprints).
        #[arg(long)]
        only_stale: bool,
        /// The shuffles' seed (default: the clock).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Two stored runs side by side (folder names under experiments/ or paths).
    Compare {
        /// Two or more runs; ratios are to the first.
        #[arg(num_args = 2.., required = true)]
        runs: Vec<String>,
        #[arg(long, default_value = "experiments")]
        experiments: std::path::PathBuf,
        /// Also write the comparison, with every run's charts side by
        /// side, as an HTML page (in the experiments folder, so the charts'
        /// paths resolve), e.g. `--html compare.html`.
        #[arg(long)]
        html: Option<String>,
    },
    /// Regenerates SCALE.md's result sections from experiments/.
    Report {
        #[arg(long, default_value = "experiments")]
        experiments: std::path::PathBuf,
        #[arg(long, default_value = "SCALE.md")]
        scale: std::path::PathBuf,
        /// Also write every run's and sweep's report as an HTML page beside
        /// it, and `index.html` listing them, for a browser (no network).
        #[arg(long)]
        html: bool,
    },
    /// The host's speed against this machine kind's reference: a probe of
    /// fixed work (CPU on every core, memory, loopback round trips).
    Host {
        #[command(subcommand)]
        action: HostAction,
    },
    /// A burst of presses through a fresh local stack: press latency, time
    /// to drain, exactly-once verdict; stored under experiments/.
    Probe {
        #[arg(long, default_value = "sqlite")]
        storage: BrokerStorage,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 3000)]
        presses: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// SIGKILL the reducer mid-burst and restart it.
        #[arg(long)]
        kill_reducer: bool,
        /// Extra service variable, e.g. `BUTTON_PRODUCER=linger.ms=20` (repeatable).
        #[arg(long = "service-env", value_parser = parse_var)]
        service_env: Vec<(String, String)>,
        /// Extra reducer variable, e.g. `BUTTON_BATCH_MAX=7` (repeatable).
        #[arg(long = "reducer-env", value_parser = parse_var)]
        reducer_env: Vec<(String, String)>,
        /// Where runs are stored.
        #[arg(long, default_value = "experiments")]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostAction {
    /// Takes this machine kind's reference (on a quiet machine): the
    /// probe's median times, stored as experiments/host/<kind>-<build>.json.
    Calibrate {
        /// Probes to take the median of.
        #[arg(long, default_value_t = 15)]
        probes: usize,
        #[arg(long, default_value = "experiments")]
        out: std::path::PathBuf,
    },
    /// The light probes a run takes during its load, as a child process:
    /// one JSON line of timings every `every_ms`, until stdin closes.
    #[command(hide = true)]
    During {
        #[arg(long, default_value_t = 5000)]
        every_ms: u64,
    },
    /// Probes the host now and prints its index against the reference.
    Probe {
        #[arg(long, default_value_t = 5)]
        probes: usize,
        #[arg(long, default_value = "experiments")]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum StackAction {
    /// Starts PostgreSQL, Redis, the broker, the service and the reducer on
    /// free ports, presses a few times, then prints every new state until
    /// Ctrl-C (which tears everything down).
    Up {
        /// Partitions of the press topic.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// The broker's storage engine: sqlite (exact resume) or memory.
        #[arg(long, default_value = "sqlite")]
        storage: BrokerStorage,
        /// How presses reach the reducer: kafka, outbox (PostgreSQL's
        /// outbox and a relay) or direct (PostgreSQL alone, no broker).
        #[arg(long, default_value = "kafka")]
        ingest: Ingest,
        /// Presses to make once the stack is up.
        #[arg(long, default_value_t = 5)]
        presses: usize,
        /// Exit after the presses are shown instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Tears down the stack a `loadgen stack up` (in another terminal) runs.
    Down,
}

/// Whether every run passed (verdict clean, asserts met).
async fn run_scenario(
    name: &str,
    out: std::path::PathBuf,
    quiet: bool,
    repeat: u32,
    profile: &[String],
    sets: &[String],
) -> anyhow::Result<bool> {
    let path = scenario::resolve(name);
    let mut scenario = scenario::load(&path)?;
    for set in sets {
        scenario.set(&path, set)?;
    }
    // The folder names what was changed: `…-smoke-stack.ingest=outbox`.
    let label = (!sets.is_empty()).then(|| sets.join(","));
    for target in profile {
        if !scenario.profile.targets.contains(target) {
            scenario.profile.targets.push(target.clone());
        }
    }
    scenario
        .check_profile()
        .map_err(|(_, message)| anyhow::anyhow!("--profile: {message}"))?;
    anyhow::ensure!(
        scenario.sweep.is_empty(),
        "{}: has a [sweep]; use `loadgen sweep`",
        path.display()
    );
    let outcomes = repeat::run_repeated(&scenario, &out, None, label, repeat, !quiet).await?;
    Ok(outcomes.iter().all(|o| o.summary.passed))
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    if !k.starts_with("BUTTON_") {
        return Err(format!("`{k}` is not a BUTTON_ variable"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

pub fn init_logs(verbose: u8) {
    let filter = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Stack {
            action:
                StackAction::Up {
                    partitions,
                    storage,
                    ingest,
                    presses,
                    once,
                },
        } => stack_up(partitions, storage, ingest, presses, once).await,
        Command::Stack {
            action: StackAction::Down,
        } => stack_down().await,
        Command::Run {
            scenario,
            out,
            quiet,
            repeat,
            profile,
            sets,
        } => {
            if !run_scenario(&scenario, out, quiet, repeat, &profile, &sets).await? {
                anyhow::bail!("a run failed its verdict or an assert (see above)");
            }
            Ok(())
        }
        Command::Sweep {
            scenario,
            out,
            quiet,
            repeat,
        } => {
            if !lab::sweep(&scenario, &out, quiet, repeat).await? {
                anyhow::bail!("a sweep point failed its verdict or an assert (see above)");
            }
            Ok(())
        }
        Command::Ab {
            rev_a,
            rev_b,
            scenario,
            pairs,
            out,
            sets,
            sets_a,
            sets_b,
            seed,
            profile,
            canary,
        } => {
            let dir = ab::run(ab::AbArgs {
                rev_a,
                rev_b,
                scenario,
                pairs,
                out,
                sets,
                sets_a,
                sets_b,
                seed,
                profile,
                canary,
            })
            .await?;
            eprintln!("stored in {}", dir.display());
            Ok(())
        }
        Command::Campaign {
            plan,
            out,
            only_stale,
            seed,
        } => {
            if !campaign::campaign(&plan, &out, only_stale, seed).await? {
                anyhow::bail!("a campaign run failed (see above)");
            }
            Ok(())
        }
        Command::Compare {
            runs,
            experiments,
            html,
        } => {
            lab::compare(&runs, &experiments)?;
            if let Some(name) = html {
                let page = lab::compare_page(&runs, &experiments, &name)?;
                println!("\n{} written", page.display());
            }
            Ok(())
        }
        Command::Report {
            experiments,
            scale,
            html,
        } => {
            lab::report(&experiments, &scale)?;
            if html {
                lab::html_pages(&experiments)?;
            }
            Ok(())
        }
        Command::Host {
            action: HostAction::During { every_ms },
        } => host::during(std::time::Duration::from_millis(every_ms)),
        Command::Host {
            action: HostAction::Calibrate { probes, out },
        } => {
            let r = host::calibrate(&out, probes)?;
            println!(
                "{}: cpu {:.1} ms, memory {:.1} ms, loopback {:.2} ms (median of {}); each probe's index against them: {:?}",
                host::reference_path(&out).display(),
                r.full.cpu_ms,
                r.full.memory_ms,
                r.full.loopback_ms,
                r.probes,
                r.spread
            );
            Ok(())
        }
        Command::Host {
            action: HostAction::Probe { probes, out },
        } => {
            let reference = host::find_reference(&out)?;
            let measured = host::Probe::Full.median_of(probes)?;
            let mut report = host::HostReport::new(
                reference.as_ref().map(|(r, n)| (r, n.clone())),
                Some(measured),
            );
            report.finish(reference.as_ref().map(|(r, _)| r), None);
            println!(
                "cpu {:.1} ms, memory {:.1} ms, loopback {:.2} ms; {}",
                measured.cpu_ms,
                measured.memory_ms,
                measured.loopback_ms,
                report.describe()
            );
            Ok(())
        }
        Command::Probe {
            storage,
            partitions,
            presses,
            concurrency,
            kill_reducer,
            service_env,
            reducer_env,
            out,
        } => {
            anyhow::ensure!(
                partitions >= 1 && presses >= 1 && concurrency >= 1,
                "--partitions, --presses and --concurrency must be at least 1"
            );
            let args = probe::ProbeArgs {
                storage,
                partitions,
                presses,
                concurrency,
                kill_reducer,
                service_env: service_env.into_iter().collect(),
                reducer_env: reducer_env.into_iter().collect(),
                out_dir: out,
            };
            let dir = probe::run(args).await?;
            eprintln!("stored in {}", dir.display());
            Ok(())
        }
    }
}

async fn stack_up(
    partitions: i32,
    storage: BrokerStorage,
    ingest: Ingest,
    presses: usize,
    once: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(partitions >= 1, "--partitions must be at least 1");
    match ingest {
        Ingest::Kafka => eprintln!(
            "starting PostgreSQL, Redis, the broker ({storage}), the service and the reducer..."
        ),
        Ingest::Outbox => eprintln!(
            "starting PostgreSQL, Redis, the broker ({storage}), the service, the outbox relay and the reducer..."
        ),
        Ingest::Direct => {
            eprintln!("starting PostgreSQL, Redis, the service and the reducer (no broker)...")
        }
    }
    let stack = Stack::start(StackConfig {
        partitions,
        broker_storage: storage,
        ingest,
        ..StackConfig::default()
    })
    .await
    .context("starting the local stack")?;
    let url = stack.service_url(0);
    println!("service:  {url}");
    println!("  press:  curl -X POST {url}/v1/events/press");
    println!("  state:  curl {url}/v1/states/current");
    println!("  stream: curl -N {url}/v1/states/stream");
    println!(
        "  health: {url}/health   metrics: {url}/metrics   reducer metrics: {}/metrics",
        stack.reducer_url()
    );
    println!("database: {}", stack.database_url());
    if ingest.uses_broker() {
        println!(
            "brokers:  {} (topic {})",
            stack.brokers(),
            stack.config().topic
        );
    }
    println!("logs:     {}", stack.root().join("logs").display());
    let state = serde_json::json!({
        "pid": std::process::id(),
        "service_url": stack.service_url(0),
        "reducer_url": stack.reducer_url(),
        "database_url": stack.database_url(),
        "brokers": stack.brokers(),
        "logs": stack.root().join("logs"),
    });
    std::fs::write(stack_file(), serde_json::to_string_pretty(&state)?)
        .with_context(|| format!("writing {}", stack_file().display()))?;

    let api = Api::new(url);
    let mut sse = SseListener::connect(&api, None)
        .await
        .context("opening the state stream")?;
    let mut last_id = -1;
    for _ in 0..presses {
        match api.press().await {
            Ok(a) => match (a.position(), a.outbox_id) {
                (Some((partition, offset)), _) => println!(
                    "pressed: partition {partition} offset {offset} (request {})",
                    a.request_id
                ),
                (None, outbox_id) => println!(
                    "pressed: outbox row {} (request {})",
                    outbox_id.map_or("?".to_owned(), |i| i.to_string()),
                    a.request_id
                ),
            },
            Err(r) => println!("press refused: {} {}", r.status, r.code),
        }
    }
    // Ctrl-C here, or `loadgen stack down` (SIGTERM) from elsewhere.
    let shutdown = button_infra::shutdown::on_signals();
    loop {
        let next = sse.wait_for(Duration::from_secs(if once { 30 } else { 3600 }), |s| {
            s.id > last_id
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            state = next => {
                let Some(state) = state else {
                    if once { break } else { continue }
                };
                last_id = state.id;
                print_state(&state);
                if once && state.counter >= presses as u64 {
                    break;
                }
            }
        }
    }
    eprintln!("tearing the stack down");
    let _ = std::fs::remove_file(stack_file());
    Ok(())
}

/// Where `stack up` says which process holds the stack.
fn stack_file() -> std::path::PathBuf {
    std::env::temp_dir().join("button-lab-stack.json")
}

async fn stack_down() -> anyhow::Result<()> {
    let path = stack_file();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no stack is up ({} is missing)", path.display()))?;
    let state: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let pid = state["pid"]
        .as_u64()
        .with_context(|| format!("{}: no pid", path.display()))? as i32;
    let pid = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(pid, None).is_err() {
        let _ = std::fs::remove_file(&path);
        anyhow::bail!(
            "the stack's process {pid} is gone; removed {}",
            path.display()
        );
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .context("signalling the stack")?;
    for _ in 0..300 {
        if nix::sys::signal::kill(pid, None).is_err() {
            println!("stack down");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the stack's process {pid} is still running after 30 s")
}

fn print_state(s: &Snapshot) {
    println!(
        "state {:>5}: counter {:>6}  {:<5}  entropy {:.3}  cooldown {:>5} ms  batch {:>4}  offsets {:?}",
        s.id, s.counter, s.phase, s.entropy, s.cooldown_ms, s.batch_size, s.offsets
    );
}
