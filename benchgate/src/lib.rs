//! A benchmark regression gate that holds on a small, noisy machine.
//!
//! Both checkouts' criterion benchmarks are built into the same target
//! folder, then run in alternating rounds (base, head, head, base, ...) so
//! that a slow minute hits both sides alike. For each benchmark and side,
//! the fastest of the rounds' criterion medians is kept, and head/base of
//! those is compared with the threshold. On a shared 2-core machine a
//! neighbour's burst can double one round's time (seen: 1.9× between two
//! runs of the same binary) but never makes code faster, so the fastest
//! round is the stable estimate of what the code costs. A benchmark fails
//! the gate only when both that ratio and the median of the rounds' own
//! head/base ratios exceed the threshold: a real slowdown moves both, a
//! neighbour that happened to hit every round of one side moves only the
//! first (seen twice in ten same-commit runs while the machine compiled).
//!
//! When the base commit cannot be checked out, the head is compared with
//! a stored baseline instead ([`stored`]): rounds of the base recorded
//! earlier, paired with the head's rounds now, under a looser threshold.

pub mod ir;
pub mod stored;

use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use stored::{Baseline, Entry, Machine};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bench-gate",
    about = "Compare criterion benchmarks of two checkouts; exit 1 on a regression"
)]
pub struct Args {
    /// Checkout of the baseline (usually the parent commit); with
    /// `--record`, the checkout whose rounds are recorded.
    #[arg(long, required_unless_present = "stored", conflicts_with = "stored")]
    pub base: Option<PathBuf>,
    /// Compare the head with this stored baseline (a file written by
    /// `--record`) instead of a checkout; its rounds, warm-up and
    /// measurement times replace `--rounds`, `--warm-up` and
    /// `--measurement`.
    #[arg(long)]
    pub stored: Option<PathBuf>,
    /// Record the base checkout's rounds into this stored-baseline file
    /// (created, or extended when it holds the same commit and machine)
    /// instead of comparing.
    #[arg(long, requires_all = ["base", "commit", "recorded_at"], conflicts_with = "stored")]
    pub record: Option<PathBuf>,
    /// With `--record`: the base checkout's commit.
    #[arg(long)]
    pub commit: Option<String>,
    /// With `--record`: when recording began (UTC).
    #[arg(long)]
    pub recorded_at: Option<String>,
    /// Checkout under test.
    #[arg(long, default_value = ".")]
    pub head: PathBuf,
    /// Package holding the benchmark.
    #[arg(long, short = 'p')]
    pub package: String,
    /// Benchmark target (a `[[bench]]` name).
    #[arg(long)]
    pub bench: String,
    /// Criterion filter: only benchmarks whose id matches this regex.
    #[arg(long)]
    pub filter: Option<String>,
    /// Interleaved rounds; each round runs both sides once.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Fail when head/base (fastest round of each) exceeds this.
    #[arg(long, default_value_t = 1.25)]
    pub threshold: f64,
    /// Criterion warm-up time per benchmark, seconds.
    #[arg(long, default_value_t = 0.5)]
    pub warm_up: f64,
    /// Criterion measurement time per benchmark, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub measurement: f64,
    /// Target folder for the base's build, kept between runs so only the
    /// base's own crates rebuild.
    #[arg(long, default_value = "target/bench-gate/base-target")]
    pub base_target: PathBuf,
    /// Where criterion's files, the logs and `gate.md` go.
    #[arg(long, default_value = "target/bench-gate")]
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{side} checkout has no bench `{bench}` in package `{package}`")]
    NoBench {
        side: &'static str,
        bench: String,
        package: String,
    },
    #[error(
        "{file} has no rounds of bench `{bench}` in package `{package}` with filter {filter:?}"
    )]
    NotStored {
        file: PathBuf,
        bench: String,
        package: String,
        filter: Option<String>,
    },
}

/// Whether `error` says the base (a checkout or a stored baseline) has no
/// such benchmark.
pub fn base_lacks_bench(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<GateError>(),
        Some(GateError::NoBench { side: "base", .. } | GateError::NotStored { .. })
    )
}

/// One benchmark's ratios head/base, one per round.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub id: String,
    pub base_ns: Vec<f64>,
    pub head_ns: Vec<f64>,
}

impl Comparison {
    pub fn ratios(&self) -> Vec<f64> {
        self.base_ns
            .iter()
            .zip(&self.head_ns)
            .map(|(b, h)| h / b)
            .collect()
    }

    /// Fastest head round over fastest base round.
    pub fn ratio(&self) -> f64 {
        fastest(&self.head_ns) / fastest(&self.base_ns)
    }

    /// Median of the rounds' head/base ratios.
    pub fn median_ratio(&self) -> f64 {
        median(&self.ratios())
    }

    pub fn regressed(&self, threshold: f64) -> bool {
        self.ratio() > threshold && self.median_ratio() > threshold
    }
}

#[derive(Debug)]
pub struct Verdict {
    pub threshold: f64,
    pub comparisons: Vec<Comparison>,
}

impl Verdict {
    pub fn regressions(&self) -> Vec<&Comparison> {
        self.comparisons
            .iter()
            .filter(|c| c.regressed(self.threshold))
            .collect()
    }

    pub fn regressed(&self) -> bool {
        !self.regressions().is_empty()
    }

    pub fn table(&self) -> String {
        let mut out = String::from(
            "| benchmark | base (fastest round) | head (fastest round) | head/base | median of rounds' ratios | rounds' ratios | verdict |\n|---|---:|---:|---:|---:|---|---|\n",
        );
        for c in &self.comparisons {
            let ratio = c.ratio();
            let verdict = if c.regressed(self.threshold) {
                "REGRESSED"
            } else if ratio < 1.0 / self.threshold && c.median_ratio() < 1.0 / self.threshold {
                "faster"
            } else {
                "same"
            };
            let ratios = c
                .ratios()
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {ratio:.3} | {:.3} | {ratios} | {verdict} |",
                c.id,
                human_ns(fastest(&c.base_ns)),
                human_ns(fastest(&c.head_ns)),
                c.median_ratio(),
            );
        }
        out
    }
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn fastest(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
}

fn human_ns(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.1} ns"),
    }
}

/// Builds the bench in both checkouts (or the head alone, against a
/// stored baseline), runs the rounds, prints and stores the table. Also
/// writes `base.txt` (what the head was compared with) and `compared.txt`
/// (the benchmark ids compared, one a line) into `--out`.
pub fn run(args: &Args) -> anyhow::Result<Verdict> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for stale in ["base.txt", "compared.txt"] {
        let _ = std::fs::remove_file(args.out.join(stale));
    }
    let head_exe = || {
        keep(
            &build(
                &args.head,
                &head_target(&args.head),
                "head",
                &args.package,
                &args.bench,
            )?,
            &args.out.join("head.bench"),
        )
    };
    let (label, settings, base, head) = match (&args.base, &args.stored) {
        (Some(base_dir), _) => {
            // The base builds into a target folder of its own: cargo names a
            // workspace member's artifacts by its path relative to the
            // workspace root and judges freshness by the files it last built
            // from, so in a shared folder the base would silently reuse the
            // head's binary.
            let base_exe = keep(
                &build(
                    base_dir,
                    &args.base_target,
                    "base",
                    &args.package,
                    &args.bench,
                )?,
                &args.out.join("base.bench"),
            )?;
            let head_exe = head_exe()?;
            let mut sides = rounds(
                &[("base", base_exe.as_path()), ("head", head_exe.as_path())],
                args,
            )?;
            let head = sides.pop().unwrap_or_default();
            let base = sides.pop().unwrap_or_default();
            let label = format!("checkout {}", base_dir.display());
            let settings = format!("{} interleaved rounds", args.rounds);
            (label, settings, base, head)
        }
        (None, Some(path)) => {
            let baseline = Baseline::load(path)?;
            let entry = baseline
                .find(&args.package, &args.bench, args.filter.as_deref())
                .ok_or_else(|| GateError::NotStored {
                    file: path.clone(),
                    bench: args.bench.clone(),
                    package: args.package.clone(),
                    filter: args.filter.clone(),
                })?;
            let mut label = baseline.describe();
            let differences = Machine::current().differences(&baseline.machine);
            if !differences.is_empty() {
                label.push_str(&format!(" -- NOT THIS MACHINE: {}", differences.join(", ")));
            }
            let rustc = rustc_version(&args.head)?;
            if rustc != baseline.rustc {
                label.push_str(&format!(" -- ANOTHER COMPILER: {rustc} here"));
            }
            eprintln!("bench-gate: comparing the head with a {label}");
            let measured = stored_settings(args, entry);
            let head_exe = head_exe()?;
            let head = rounds(&[("head", head_exe.as_path())], &measured)?
                .pop()
                .unwrap_or_default();
            let settings = format!(
                "{} rounds of the head now against {} stored rounds",
                measured.rounds, entry.rounds
            );
            (label, settings, entry.medians_ns.clone(), head)
        }
        (None, None) => bail!("neither --base nor --stored"),
    };
    let (comparisons, unmatched) = pair(base, head);
    if !unmatched.is_empty() {
        eprintln!(
            "bench-gate: not compared (on one side only, or rounds missing): {}",
            unmatched.join(", ")
        );
    }
    if comparisons.is_empty() {
        bail!("no benchmark ran on both sides (filter {:?})", args.filter);
    }
    let verdict = Verdict {
        threshold: args.threshold,
        comparisons,
    };
    let report = format!(
        "# bench-gate: {} / {}\n\nBase: {label}.\n\n{settings}, threshold {:.2} on head/base.\n\n{}",
        args.package,
        args.bench,
        args.threshold,
        verdict.table()
    );
    std::fs::write(args.out.join("gate.md"), &report)?;
    std::fs::write(args.out.join("base.txt"), format!("{label}\n"))?;
    let ids: String = verdict
        .comparisons
        .iter()
        .map(|c| format!("{}\n", c.id))
        .collect();
    std::fs::write(args.out.join("compared.txt"), ids)?;
    println!("{report}");
    for c in verdict.regressions() {
        println!(
            "bench-gate: REGRESSION {}: head/base {:.3} > {:.2}",
            c.id,
            c.ratio(),
            args.threshold
        );
    }
    Ok(verdict)
}

/// The arguments to measure the head with against `entry`: the stored
/// rounds' own settings, so both sides differ only in time and code.
pub fn stored_settings(args: &Args, entry: &Entry) -> Args {
    Args {
        rounds: entry.rounds,
        warm_up: entry.warm_up,
        measurement: entry.measurement,
        ..args.clone()
    }
}

/// Pairs each benchmark's base and head rounds; also returns the ids
/// found on one side only or with unequal numbers of rounds.
pub fn pair(
    mut base: BTreeMap<String, Vec<f64>>,
    head: BTreeMap<String, Vec<f64>>,
) -> (Vec<Comparison>, Vec<String>) {
    let mut comparisons = Vec::new();
    let mut unmatched = Vec::new();
    for (id, head_ns) in head {
        match base.remove(&id) {
            Some(base_ns) if base_ns.len() == head_ns.len() => comparisons.push(Comparison {
                id,
                base_ns,
                head_ns,
            }),
            _ => unmatched.push(id),
        }
    }
    unmatched.extend(base.into_keys());
    unmatched.sort();
    (comparisons, unmatched)
}

/// Runs `args.rounds` rounds of every side; each side's medians by id,
/// in the order of `sides`. With two sides the order alternates ABBA:
/// neither side always runs first (warmer caches, frequency boost, a
/// neighbour's burst).
fn rounds(
    sides: &[(&'static str, &Path)],
    args: &Args,
) -> anyhow::Result<Vec<BTreeMap<String, Vec<f64>>>> {
    let mut found: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); sides.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..sides.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (side, exe) = sides[i];
            let home = args.out.join(format!("round-{round}")).join(side);
            let _ = std::fs::remove_dir_all(&home);
            run_bench(exe, &home, args)
                .with_context(|| format!("round {round}, {side}: running {}", exe.display()))?;
            for (id, ns) in read_medians(&home)? {
                found[i].entry(id).or_default().push(ns);
            }
        }
        eprintln!("bench-gate: round {} of {} done", round + 1, args.rounds);
    }
    Ok(found)
}

/// Records the base checkout's rounds into the stored baseline
/// `--record` names; writes `base.txt` (the baseline's description) and
/// `compared.txt` (the ids recorded) into `--out` as `run` does.
pub fn record(args: &Args) -> anyhow::Result<()> {
    let (Some(path), Some(base_dir), Some(commit), Some(recorded_at)) =
        (&args.record, &args.base, &args.commit, &args.recorded_at)
    else {
        bail!("--record needs --base, --commit and --recorded-at");
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for stale in ["base.txt", "compared.txt"] {
        let _ = std::fs::remove_file(args.out.join(stale));
    }
    let machine = Machine::current();
    let rustc = rustc_version(base_dir)?;
    let mut baseline = if path.exists() {
        Baseline::load(path)?
    } else {
        Baseline::new(commit, recorded_at, machine.clone(), &rustc)
    };
    // In the base's own target folder, as when comparing (see `run`).
    let exe = keep(
        &build(
            base_dir,
            &args.base_target,
            "base",
            &args.package,
            &args.bench,
        )?,
        &args.out.join("base.bench"),
    )?;
    let medians_ns = rounds(&[("base", exe.as_path())], args)?
        .pop()
        .unwrap_or_default();
    if medians_ns.is_empty() {
        bail!("no benchmark ran (filter {:?})", args.filter);
    }
    let mut table =
        String::from("| benchmark | fastest round | median of rounds |\n|---|---:|---:|\n");
    for (id, ns) in &medians_ns {
        let _ = writeln!(
            table,
            "| {id} | {} | {} |",
            human_ns(fastest(ns)),
            human_ns(median(ns))
        );
    }
    let ids: String = medians_ns.keys().map(|id| format!("{id}\n")).collect();
    baseline.insert(
        commit,
        &machine,
        Entry {
            package: args.package.clone(),
            bench: args.bench.clone(),
            filter: args.filter.clone(),
            rounds: args.rounds,
            warm_up: args.warm_up,
            measurement: args.measurement,
            medians_ns,
        },
    )?;
    baseline.save(path)?;
    std::fs::write(
        args.out.join("base.txt"),
        format!("{}\n", baseline.describe()),
    )?;
    std::fs::write(args.out.join("compared.txt"), ids)?;
    println!(
        "# bench-gate: recorded {} / {}\n\nInto {}: {}.\n\n{} rounds.\n\n{table}",
        args.package,
        args.bench,
        path.display(),
        baseline.describe(),
        args.rounds
    );
    Ok(())
}

/// `rustc -V` as cargo would run it in `dir` (toolchain files apply).
fn rustc_version(dir: &Path) -> anyhow::Result<String> {
    let output = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
        .arg("-V")
        .current_dir(dir)
        .output()
        .context("running rustc -V")?;
    if !output.status.success() {
        bail!("rustc -V failed: {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn keep(built: &Path, copy: &Path) -> anyhow::Result<PathBuf> {
    std::fs::copy(built, copy)
        .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    Ok(copy.to_path_buf())
}

/// The head's usual target folder: `CARGO_TARGET_DIR` or `<head>/target`.
pub(crate) fn head_target(head: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| head.join("target"))
}

/// `cargo bench --no-run` in `dir`; the bench executable's path.
pub(crate) fn build(
    dir: &Path,
    target: &Path,
    side: &'static str,
    package: &str,
    bench: &str,
) -> anyhow::Result<PathBuf> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .args(["bench", "--no-run", "--message-format=json", "-p", package])
        .args(["--bench", bench])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // cargo refuses an unknown package or bench target like a build
        // error; both mean there is nothing to compare on this side.
        return Err(GateError::NoBench {
            side,
            bench: bench.to_owned(),
            package: package.to_owned(),
        })
        .with_context(|| format!("cargo bench --no-run failed in {}", dir.display()));
    }
    executable(&stdout, bench).ok_or_else(|| {
        anyhow::Error::new(GateError::NoBench {
            side,
            bench: bench.to_owned(),
            package: package.to_owned(),
        })
    })
}

/// The executable of bench target `bench` in cargo's JSON messages.
pub fn executable(messages: &str, bench: &str) -> Option<PathBuf> {
    #[derive(Deserialize)]
    struct Target {
        name: String,
        kind: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Message {
        reason: String,
        target: Option<Target>,
        executable: Option<PathBuf>,
    }
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<Message>(l).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter(|m| {
            m.target
                .as_ref()
                .is_some_and(|t| t.name == bench && t.kind.iter().any(|k| k == "bench"))
        })
        .find_map(|m| m.executable)
}

fn run_bench(exe: &Path, home: &Path, args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(home)?;
    let log = std::fs::File::create(home.join("criterion.log"))?;
    let mut command = Command::new(exe);
    command
        .arg("--bench")
        .args(["--warm-up-time", &args.warm_up.to_string()])
        .args(["--measurement-time", &args.measurement.to_string()])
        .arg("--noplot")
        // The gate reads medians only; criterion's default 100,000
        // bootstrap resamples would take longer than the measurement.
        .args(["--nresamples", "1000"])
        .env("CRITERION_HOME", home)
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(filter) = &args.filter {
        command.arg(filter);
    }
    let status = command.status()?;
    if !status.success() {
        bail!("{status}; see {}", home.join("criterion.log").display());
    }
    Ok(())
}

/// Criterion's median (ns per iteration) of every benchmark under `home`.
pub fn read_medians(home: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    #[derive(Deserialize)]
    struct Estimate {
        point_estimate: f64,
    }
    #[derive(Deserialize)]
    struct Estimates {
        median: Estimate,
    }
    #[derive(Deserialize)]
    struct Benchmark {
        full_id: String,
    }
    let mut found = BTreeMap::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                let (b, e) = (path.join("benchmark.json"), path.join("estimates.json"));
                // (criterion writes both at the end of each benchmark)
                if b.exists() && e.exists() {
                    let b: Benchmark = serde_json::from_slice(&std::fs::read(&b)?)
                        .with_context(|| format!("parsing {}", b.display()))?;
                    let e: Estimates = serde_json::from_slice(&std::fs::read(&e)?)
                        .with_context(|| format!("parsing {}", e.display()))?;
                    found.insert(b.full_id, e.median.point_estimate);
                }
            } else {
                stack.push(path);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn one_side_slow_in_every_round_alone_is_not_a_regression() {
        // Seen on a busy machine: the head's fastest round 35% slower,
        // its rounds' ratios mostly under 1.
        let c = Comparison {
            id: "press_record/decode".into(),
            base_ns: vec![1060.0, 1700.0, 1800.0, 1100.0, 2000.0, 1500.0],
            head_ns: vec![1430.0, 1650.0, 1750.0, 1583.0, 1900.0, 1400.0],
        };
        assert!(c.ratio() > 1.25);
        assert!(!c.regressed(1.25));
    }

    #[test]
    fn fastest_round() {
        assert_eq!(fastest(&[3.0, 1.0, 2.0]), 1.0);
        assert!(fastest(&[]).is_nan());
    }

    #[test]
    fn one_slow_round_does_not_fail_the_gate() {
        let c = Comparison {
            id: "apply_batch/1000".into(),
            base_ns: vec![100.0, 100.0, 100.0, 100.0, 100.0],
            head_ns: vec![101.0, 180.0, 190.0, 102.0, 100.0],
        };
        let verdict = Verdict {
            threshold: 1.25,
            comparisons: vec![c],
        };
        assert!(!verdict.regressed(), "{}", verdict.table());
    }

    #[test]
    fn a_consistent_slowdown_fails_it() {
        let c = Comparison {
            id: "apply_batch/1000".into(),
            base_ns: vec![100.0, 110.0, 95.0, 100.0],
            head_ns: vec![150.0, 170.0, 140.0, 149.0],
        };
        let verdict = Verdict {
            threshold: 1.25,
            comparisons: vec![c],
        };
        assert!(verdict.regressed());
        assert!(verdict.table().contains("REGRESSED"));
    }

    #[test]
    fn finds_the_bench_executable_in_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"button_domain","kind":["lib"]},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"fold","kind":["bench"]},"executable":"/t/release/deps/fold-1234"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable(messages, "fold"),
            Some(PathBuf::from("/t/release/deps/fold-1234"))
        );
        assert_eq!(executable(messages, "other"), None);
    }

    #[test]
    fn pairs_rounds_by_id_and_names_the_rest() {
        let base = BTreeMap::from([
            ("a/1".to_owned(), vec![1.0, 2.0]),
            ("b/1".to_owned(), vec![1.0]),
            ("only_base/1".to_owned(), vec![1.0, 1.0]),
        ]);
        let head = BTreeMap::from([
            ("a/1".to_owned(), vec![3.0, 4.0]),
            ("b/1".to_owned(), vec![1.0, 1.0]),
            ("only_head/1".to_owned(), vec![1.0, 1.0]),
        ]);
        let (comparisons, unmatched) = pair(base, head);
        assert_eq!(
            comparisons,
            vec![Comparison {
                id: "a/1".into(),
                base_ns: vec![1.0, 2.0],
                head_ns: vec![3.0, 4.0],
            }]
        );
        assert_eq!(unmatched, vec!["b/1", "only_base/1", "only_head/1"]);
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser;
        Args::try_parse_from(
            ["bench-gate", "-p", "button-domain", "--bench", "fold"]
                .iter()
                .chain(args),
        )
    }

    #[test]
    fn needs_exactly_one_base_or_stored_baseline() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--base", "b", "--stored", "s.json"]).is_err());
        assert_eq!(
            parse(&["--base", "b"]).expect("checkout").base,
            Some("b".into())
        );
        assert_eq!(
            parse(&["--stored", "s.json"]).expect("stored").stored,
            Some("s.json".into())
        );
    }

    #[test]
    fn recording_needs_a_checkout_a_commit_and_a_date() {
        assert!(parse(&["--base", "b", "--record", "s.json"]).is_err());
        assert!(
            parse(&[
                "--stored",
                "x",
                "--record",
                "s.json",
                "--commit",
                "c",
                "--recorded-at",
                "d"
            ])
            .is_err()
        );
        let args = parse(&[
            "--base",
            "b",
            "--record",
            "s.json",
            "--commit",
            "c",
            "--recorded-at",
            "d",
        ])
        .expect("complete");
        assert_eq!(args.record, Some("s.json".into()));
    }

    #[test]
    fn the_head_is_measured_as_the_stored_rounds_were() {
        let args =
            parse(&["--stored", "s.json", "--rounds", "9", "--threshold", "1.5"]).expect("ok");
        let entry = Entry {
            package: "button-domain".into(),
            bench: "fold".into(),
            filter: None,
            rounds: 6,
            warm_up: 0.2,
            measurement: 0.5,
            medians_ns: BTreeMap::new(),
        };
        let measured = stored_settings(&args, &entry);
        assert_eq!(
            (
                measured.rounds,
                measured.warm_up,
                measured.measurement,
                measured.threshold
            ),
            (6, 0.2, 0.5, 1.5)
        );
    }

    #[test]
    fn a_stored_baseline_without_the_bench_means_nothing_to_compare() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("baseline.json");
        Baseline::new("abc", "now", Machine::current(), "rustc")
            .save(&path)
            .expect("saved");
        let mut args = parse(&["--stored", path.to_str().expect("utf-8")]).expect("ok");
        args.out = dir.path().join("out");
        let err = run(&args).expect_err("no entry");
        assert!(base_lacks_bench(&err), "{err:#}");
        assert!(!args.out.join("compared.txt").exists());
    }

    #[test]
    fn reads_criterion_medians() {
        let home = tempfile::tempdir().expect("temp dir");
        let new = home.path().join("apply_batch").join("1000").join("new");
        std::fs::create_dir_all(&new).expect("dirs");
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"apply_batch","full_id":"apply_batch/1000"}"#,
        )
        .expect("write");
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":12.5},"median":{"point_estimate":12.0}}"#,
        )
        .expect("write");
        let medians = read_medians(home.path()).expect("read");
        assert_eq!(medians.get("apply_batch/1000"), Some(&12.0));
    }
}
