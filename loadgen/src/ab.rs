//! `loadgen ab <rev-a> <rev-b> <scenario>`: two builds compared the only
//! way a shared, drifting machine allows, by interleaving. Each revision
//! is checked out in a worktree and built once (release, one cargo target
//! folder for every revision, its binaries kept by commit); then the
//! scenario runs as pairs in balanced order (A B, B A, …), a fresh stack
//! each, each run by its own revision's generator. Per metric the pairs'
//! ratios give an interval ([`crate::paired`]) and a verdict.
//!
//! Stored as one folder, `<time>-ab-<scenario>/`: `ab.json` (what was
//! compared, the order, every metric's pairs and verdict), `ab.md`, and
//! the runs themselves as subfolders.

use crate::paired::{Better, Comparison, Side, interleaved_order};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `loadgen ab` was asked.
pub struct AbArgs {
    pub rev_a: String,
    pub rev_b: String,
    pub scenario: String,
    pub pairs: usize,
    pub out: PathBuf,
    /// `--set` for both sides, and for one side only.
    pub sets: Vec<String>,
    pub sets_a: Vec<String>,
    pub sets_b: Vec<String>,
    pub seed: Option<u64>,
    /// Extra `loadgen run` flags for every run (e.g. `--profile service`).
    pub profile: Vec<String>,
    /// Fail (after storing) on a large, confident regression of B: see
    /// [`canary_failures`].
    pub canary: bool,
}

/// The canary's rule: B's CPU a press in the service or the reducer above
/// this times A's, with the whole 95% interval above it...
pub const CANARY_CPU: f64 = 1.25;
/// ... or its p99 from press to SSE frame above this times A's.
pub const CANARY_P99: f64 = 1.5;

/// The metrics on which B regressed beyond the canary's rule: only where
/// the interval's lower end is past the limit, so a noisy pair cannot
/// fail CI, and a smaller or unsure change is reported, not failed.
pub fn canary_failures(metrics: &[Comparison]) -> Vec<String> {
    metrics
        .iter()
        .filter_map(|m| {
            let name = m.metric.rsplit(": ").next().unwrap_or(&m.metric);
            let limit = if name.starts_with("CPU-µs/press service")
                || name.starts_with("CPU-µs/press reducer")
            {
                CANARY_CPU
            } else if name.starts_with("press→SSE p99") {
                CANARY_P99
            } else {
                return None;
            };
            let low = m.low?;
            (low > limit).then(|| {
                format!(
                    "{}: B is {:.2}x A (interval {:.2}-{:.2}), limit {limit}x",
                    m.metric,
                    m.ratio.unwrap_or(low),
                    low,
                    m.high.unwrap_or(low)
                )
            })
        })
        .collect()
}

/// One side of the comparison as built.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revision {
    /// As given (`HEAD`, a commit, a branch, or `.` for the work tree).
    pub rev: String,
    /// The commit, or none for the work tree as it is.
    pub commit: Option<String>,
    pub sets: Vec<String>,
    /// Where its binaries were, and where its runs started from.
    #[serde(skip)]
    pub bins: PathBuf,
    #[serde(skip)]
    pub tree: PathBuf,
}

/// The stored comparison.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ab {
    pub scenario: String,
    pub a: Revision,
    pub b: Revision,
    pub seed: u64,
    /// Every pair: its order and its two runs (folder names, A's first).
    pub pairs: Vec<Pair>,
    pub metrics: Vec<Comparison>,
    /// Metrics whose interval excluded 1.
    pub differing: usize,
    pub started_at: String,
    pub wall_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pair {
    pub order: [Side; 2],
    pub a: Option<String>,
    pub b: Option<String>,
}

/// Runs the comparison; returns its folder.
pub async fn run(args: AbArgs) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(args.pairs >= 2, "--pairs must be at least 2");
    let started = std::time::Instant::now();
    let root = repo_root()?;
    let scenario_path = std::fs::canonicalize(crate::scenario::resolve(&args.scenario))
        .with_context(|| format!("scenario {}", args.scenario))?;
    // Checked here, so a typo fails before any build.
    let scenario = crate::scenario::load(&scenario_path)?;
    for set in args.sets.iter().chain(&args.sets_a).chain(&args.sets_b) {
        scenario.clone().set(&scenario_path, set)?;
    }
    let cache = cache_dir();
    let mut a = prepare(
        &root,
        &cache,
        &args.rev_a,
        side_sets(&args.sets, &args.sets_a),
    )?;
    let mut b = prepare(
        &root,
        &cache,
        &args.rev_b,
        side_sets(&args.sets, &args.sets_b),
    )?;
    for side in [&mut a, &mut b] {
        build(&root, &cache, side).await?;
    }

    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let dir = args.out.join(format!(
        "{}-ab-{}",
        started_at.replace(':', ""),
        scenario.name
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let order = interleaved_order(args.pairs, seed);
    eprintln!(
        "ab: {} pairs of `{}`, A = {} ({}), B = {} ({}), order {}",
        args.pairs,
        scenario.name,
        a.rev,
        short(&a),
        b.rev,
        short(&b),
        order
            .iter()
            .map(|p| format!("{:?}{:?}", p[0], p[1]))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut pairs = Vec::new();
    for (i, o) in order.iter().enumerate() {
        let mut pair = Pair {
            order: *o,
            a: None,
            b: None,
        };
        for side in o {
            let (rev, slot) = match side {
                Side::A => (&a, &mut pair.a),
                Side::B => (&b, &mut pair.b),
            };
            eprintln!("ab: pair {} of {}: {side:?}", i + 1, args.pairs);
            *slot = run_one(rev, &scenario_path, &dir, &args.profile).await?;
        }
        pairs.push(pair);
    }
    let summaries = |pick: fn(&Pair) -> &Option<String>| -> Vec<Option<Value>> {
        pairs
            .iter()
            .map(|p| {
                pick(p)
                    .as_ref()
                    .and_then(|n| read_summary(&dir.join(n)).ok())
            })
            .collect()
    };
    let metrics = compare(&summaries(|p| &p.a), &summaries(|p| &p.b));
    let ab = Ab {
        scenario: scenario.name.clone(),
        differing: metrics.iter().filter(|m| m.differs).count(),
        a,
        b,
        seed,
        pairs,
        metrics,
        started_at,
        wall_s: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        dir.join("ab.json"),
        serde_json::to_string_pretty(&ab)? + "\n",
    )?;
    let md = markdown(&ab, &dir.file_name().unwrap_or_default().to_string_lossy());
    std::fs::write(dir.join("ab.md"), &md)?;
    println!("{md}");
    if args.canary {
        let failures = canary_failures(&ab.metrics);
        anyhow::ensure!(
            failures.is_empty(),
            "canary: B regressed beyond the limits ({} stored):\n  {}",
            dir.display(),
            failures.join("\n  ")
        );
        eprintln!(
            "canary: no regression of B beyond {CANARY_CPU}x CPU a press (service, reducer) or {CANARY_P99}x p99 press to SSE; {} metric(s) differ (above)",
            ab.differing
        );
    }
    Ok(dir)
}

fn side_sets(both: &[String], own: &[String]) -> Vec<String> {
    both.iter().chain(own).cloned().collect()
}

fn short(r: &Revision) -> String {
    r.commit
        .as_deref()
        .map_or("work tree".to_owned(), |c| c[..c.len().min(10)].to_owned())
}

fn repo_root() -> anyhow::Result<PathBuf> {
    let out = Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .context("running git")?;
    anyhow::ensure!(out.status.success(), "ab: not inside a git repository");
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Worktrees, the shared target folder and each commit's binaries.
fn cache_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    std::path::absolute(target.join("ab")).unwrap_or_else(|_| target.join("ab"))
}

fn prepare(root: &Path, cache: &Path, rev: &str, sets: Vec<String>) -> anyhow::Result<Revision> {
    if rev == "." {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        return Ok(Revision {
            rev: rev.to_owned(),
            commit: None,
            sets,
            bins: target.join("release"),
            tree: root.to_owned(),
        });
    }
    let out = Command::new("git")
        .current_dir(root)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .output()
        .context("running git rev-parse")?;
    anyhow::ensure!(
        out.status.success(),
        "ab: `{rev}` is no commit in this repository"
    );
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Revision {
        rev: rev.to_owned(),
        bins: cache.join("bins").join(&commit),
        tree: cache.join("worktrees").join(&commit),
        commit: Some(commit),
        sets,
    })
}

/// The binaries a run needs, copied out of the shared target folder.
const BINARIES: &[&str] = &[
    "loadgen",
    "button-service",
    "button-reducer",
    "button-relay",
];

async fn build(root: &Path, cache: &Path, side: &mut Revision) -> anyhow::Result<()> {
    let Some(commit) = side.commit.clone() else {
        // The work tree: built as `scripts/loadgen` builds it.
        eprintln!("ab: building the work tree (release)");
        cargo_build(root, None).await?;
        return Ok(());
    };
    if side.bins.join("loadgen").is_file() {
        eprintln!("ab: {} already built ({})", side.rev, side.bins.display());
    } else {
        if !side.tree.join("Cargo.toml").is_file() {
            let status = Command::new("git")
                .current_dir(root)
                .args(["worktree", "add", "--detach", "--force"])
                .arg(&side.tree)
                .arg(&commit)
                .status()
                .context("running git worktree add")?;
            anyhow::ensure!(status.success(), "ab: git worktree add {commit} failed");
        }
        eprintln!(
            "ab: building {} ({commit}) in {}",
            side.rev,
            side.tree.display()
        );
        let target = cache.join("target");
        // Cargo names a workspace crate's artifacts by its path relative
        // to the workspace, the same in every worktree: another
        // revision's would pass for fresh. Removing this revision's
        // workspace crates first rebuilds them alone; dependencies stay.
        clean_workspace_crates(&side.tree, &target).await?;
        cargo_build(&side.tree, Some(&target)).await?;
        let staging = side.bins.with_extension("partial");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        for name in BINARIES {
            let from = target.join("release").join(name);
            if from.is_file() {
                std::fs::copy(&from, staging.join(name))
                    .with_context(|| format!("copying {}", from.display()))?;
            }
        }
        std::fs::rename(&staging, &side.bins)?;
    }
    Ok(())
}

async fn clean_workspace_crates(tree: &Path, target: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = tokio::process::Command::new(&cargo)
        .current_dir(tree)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .await
        .context("running cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "ab: cargo metadata in {} failed",
        tree.display()
    );
    let metadata: Value = serde_json::from_slice(&out.stdout)?;
    let mut cmd = tokio::process::Command::new(&cargo);
    cmd.current_dir(tree)
        .env("CARGO_TARGET_DIR", target)
        .args(["clean", "--release", "--quiet"]);
    for name in metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
    {
        cmd.args(["-p", name]);
    }
    let status = cmd.status().await.context("running cargo clean")?;
    anyhow::ensure!(
        status.success(),
        "ab: cargo clean in {} failed",
        tree.display()
    );
    Ok(())
}

async fn cargo_build(tree: &Path, target: Option<&Path>) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.current_dir(tree).args([
        "build",
        "--workspace",
        "--bins",
        "--locked",
        "--release",
        "--quiet",
    ]);
    if let Some(t) = target {
        cmd.env("CARGO_TARGET_DIR", t);
    }
    let status = cmd.status().await.context("running cargo build")?;
    anyhow::ensure!(
        status.success(),
        "ab: cargo build in {} failed",
        tree.display()
    );
    Ok(())
}

/// One run by `rev`'s own generator, from its own tree; the new folder's
/// name, or none when the run stored nothing.
async fn run_one(
    rev: &Revision,
    scenario: &Path,
    dir: &Path,
    profile: &[String],
) -> anyhow::Result<Option<String>> {
    let before = folders(dir)?;
    let mut cmd = tokio::process::Command::new(rev.bins.join("loadgen"));
    cmd.current_dir(&rev.tree)
        .arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(dir)
        .arg("--quiet");
    for set in &rev.sets {
        cmd.arg("--set").arg(set);
    }
    if !profile.is_empty() {
        cmd.arg("--profile").arg(profile.join(","));
    }
    let status = cmd.status().await.context("running loadgen")?;
    if !status.success() {
        eprintln!("ab: the run of {} ended with {status}", rev.rev);
    }
    let new: Vec<String> = folders(dir)?
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    Ok(new.into_iter().next())
}

fn folders(dir: &Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

fn read_summary(dir: &Path) -> anyhow::Result<Value> {
    let path = dir.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Every metric both sides' summaries have, compared pair by pair. Read
/// as JSON: an older revision's summary has fewer fields, and a metric
/// only one side has is left out.
pub fn compare(a: &[Option<Value>], b: &[Option<Value>]) -> Vec<Comparison> {
    let mut values: BTreeMap<(usize, String), (Better, Vec<(f64, f64)>)> = BTreeMap::new();
    for (sa, sb) in a.iter().zip(b) {
        let (Some(sa), Some(sb)) = (sa, sb) else {
            continue;
        };
        let (ma, mb) = (metrics(sa), metrics(sb));
        for (key, (better, va)) in &ma {
            if let Some((_, vb)) = mb.get(key) {
                values
                    .entry(key.clone())
                    .or_insert_with(|| (*better, Vec::new()))
                    .1
                    .push((*va, *vb));
            }
        }
    }
    values
        .into_iter()
        .map(|((_, name), (better, pairs))| Comparison::of(&name, better, pairs))
        .collect()
}

/// One run's metrics, keyed by (display order, name).
fn metrics(s: &Value) -> BTreeMap<(usize, String), (Better, f64)> {
    let mut m = BTreeMap::new();
    let mut put = |order: usize, name: String, better: Better, v: Option<f64>| {
        if let Some(v) = v {
            m.insert((order, name), (better, v));
        }
    };
    put(
        0,
        "accepted/s".into(),
        Better::Higher,
        s["accepted_per_s"].as_f64(),
    );
    put(
        1,
        "knee (presses/s)".into(),
        Better::Higher,
        s["knee_per_s"].as_f64(),
    );
    put(
        2,
        "host index".into(),
        Better::Higher,
        s.pointer("/host/index").and_then(Value::as_f64),
    );
    put(
        3,
        "press p50 (ms)".into(),
        Better::Lower,
        s.pointer("/press_latency/p50_ms").and_then(Value::as_f64),
    );
    put(
        3,
        "press p99 (ms)".into(),
        Better::Lower,
        s.pointer("/press_latency/p99_ms").and_then(Value::as_f64),
    );
    put(
        3,
        "press→SSE p50 (ms)".into(),
        Better::Lower,
        s.pointer("/press_to_sse/p50_ms").and_then(Value::as_f64),
    );
    put(
        3,
        "press→SSE p99 (ms)".into(),
        Better::Lower,
        s.pointer("/press_to_sse/p99_ms").and_then(Value::as_f64),
    );
    if let Some(cost) = s["cost_us_per_press"].as_object() {
        for (process, v) in cost {
            put(
                4,
                format!("CPU-µs/press {process}"),
                Better::Lower,
                v.as_f64(),
            );
        }
    }
    // Per step, when there is more than one steady step (a ramp).
    let steps: Vec<&Value> = s["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["warmup"].as_bool() != Some(true)
                && p["not_run"].as_bool() != Some(true)
                && p["endpoint"].as_str().is_none_or(|e| e == "press")
                && p["rate"].is_number()
        })
        .collect();
    if steps.len() > 1 {
        for (i, p) in steps.iter().enumerate() {
            let name = p["name"].as_str().unwrap_or("?");
            let order = 10 + i;
            put(
                order,
                format!("{name}: press p50 (ms)"),
                Better::Lower,
                p.pointer("/press_latency/p50_ms").and_then(Value::as_f64),
            );
            put(
                order,
                format!("{name}: press→SSE p99 (ms)"),
                Better::Lower,
                p.pointer("/press_to_sse/p99_ms").and_then(Value::as_f64),
            );
            let accepted = p["accepted"].as_f64().unwrap_or(0.0);
            let duration = p["duration_s"].as_f64().unwrap_or(0.0);
            if let Some(cpu) = p["cpu_pct"].as_object().filter(|_| accepted > 0.0) {
                for (process, pct) in cpu {
                    let us = pct.as_f64().map(|c| c / 100.0 * duration * 1e6 / accepted);
                    put(
                        order,
                        format!("{name}: CPU-µs/press {process}"),
                        Better::Lower,
                        us,
                    );
                }
            }
        }
    }
    m
}

/// The comparison as a table.
pub fn markdown(ab: &Ab, name: &str) -> String {
    let side = |r: &Revision| {
        let mut s = format!("`{}` ({})", r.rev, short(r));
        if !r.sets.is_empty() {
            let _ = write!(s, " with `{}`", r.sets.join("`, `"));
        }
        s
    };
    let mut md = format!(
        "### `{name}`\n\n`{}`: A = {}, B = {}; {} pairs in interleaved order (seed {}), {:.0} s in all. Ratios are B/A per pair; the interval is 95% (Student's t on the log ratios); the sign test counts the pairs where B was higher / lower. {} of {} metrics differ.\n\n| metric | A (median) | B (median) | B/A | 95% interval | B↑ / B↓ | sign p | verdict |\n|---|---|---|---|---|---|---|---|\n",
        ab.scenario,
        side(&ab.a),
        side(&ab.b),
        ab.pairs.len(),
        ab.seed,
        ab.wall_s,
        ab.differing,
        ab.metrics.len()
    );
    for m in &ab.metrics {
        let med = |f: fn(&(f64, f64)) -> f64| {
            let mut v: Vec<f64> = m.pairs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).map_or("–".to_owned(), |x| fmt(*x))
        };
        let ratio = m.ratio.map_or("–".to_owned(), |r| format!("{r:.3}"));
        let interval = match (m.low, m.high) {
            (Some(l), Some(h)) => format!("{l:.3}–{h:.3}"),
            _ => "–".to_owned(),
        };
        let verdict = if m.differs {
            format!("**{}**", m.verdict())
        } else {
            m.verdict()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {ratio} | {interval} | {} / {} | {:.2} | {verdict} |",
            m.metric,
            med(|p| p.0),
            med(|p| p.1),
            m.b_higher,
            m.b_lower,
            m.sign_p
        );
    }
    md.push_str("\nRuns, in the order they ran:\n\n");
    for (i, p) in ab.pairs.iter().enumerate() {
        let name = |n: &Option<String>| {
            n.as_deref()
                .map_or("(no run stored)".to_owned(), |n| format!("`{n}`"))
        };
        let (first, second) = match p.order[0] {
            Side::A => (format!("A {}", name(&p.a)), format!("B {}", name(&p.b))),
            Side::B => (format!("B {}", name(&p.b)), format!("A {}", name(&p.a))),
        };
        let _ = writeln!(md, "{}. {first}, then {second}", i + 1);
    }
    md
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Every stored comparison under `experiments`, newest last.
pub fn stored(experiments: &Path) -> anyhow::Result<Vec<(String, Ab)>> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(experiments)
        .with_context(|| format!("reading {}", experiments.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("ab.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let path = dir.join("ab.json");
        let text = std::fs::read_to_string(&path)?;
        let ab: Ab = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        out.push((
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            ab,
        ));
    }
    Ok(out)
}

/// SCALE.md's section: every stored comparison's table.
pub fn section(experiments: &Path) -> anyhow::Result<String> {
    let stored = stored(experiments)?;
    if stored.is_empty() {
        return Ok("No interleaved comparison is stored yet (`loadgen ab`).\n".to_owned());
    }
    Ok(stored
        .iter()
        .map(|(name, ab)| markdown(ab, name))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(accepted: f64, p99: f64, service_cpu: f64) -> Value {
        serde_json::json!({
            "accepted_per_s": accepted,
            "knee_per_s": null,
            "press_latency": { "p50_ms": 2.0, "p99_ms": 9.0 },
            "press_to_sse": { "p50_ms": 20.0, "p99_ms": p99 },
            "cost_us_per_press": { "service-0": service_cpu, "broker": 40.0 },
            "host": { "index": 1.0 },
            "phases": [
                { "name": "warm-up", "warmup": true, "rate": 100.0 },
                { "name": "steady", "rate": 1500.0, "accepted": 15000, "duration_s": 10.0 }
            ]
        })
    }

    #[test]
    fn metrics_both_sides_have_are_compared_pair_by_pair() {
        let a = vec![
            Some(summary(1500.0, 50.0, 20.0)),
            Some(summary(1490.0, 55.0, 21.0)),
            None,
        ];
        let mut old = summary(1500.0, 60.0, 25.0);
        // An older summary without the host probe.
        old.as_object_mut().unwrap().remove("host");
        let b = vec![
            Some(summary(1500.0, 60.0, 25.0)),
            Some(old),
            Some(summary(1.0, 1.0, 1.0)),
        ];
        let m = compare(&a, &b);
        let names: Vec<&str> = m.iter().map(|c| c.metric.as_str()).collect();
        assert!(names.contains(&"CPU-µs/press service-0"), "{names:?}");
        assert!(
            !names.contains(&"knee (presses/s)"),
            "no knee on either side"
        );
        // Two pairs for what both have; one for the host index.
        let cpu = m
            .iter()
            .find(|c| c.metric == "CPU-µs/press service-0")
            .unwrap();
        assert_eq!(cpu.pairs, vec![(20.0, 25.0), (21.0, 25.0)]);
        let host = m.iter().find(|c| c.metric == "host index").unwrap();
        assert_eq!(host.pairs.len(), 1);
        // A single steady step has no per-step rows.
        assert!(!names.iter().any(|n| n.starts_with("steady:")));
    }

    #[test]
    fn the_canary_fails_only_a_large_confident_regression_of_the_service_reducer_or_p99() {
        let c = |metric: &str, pairs: Vec<(f64, f64)>| Comparison::of(metric, Better::Lower, pairs);
        let metrics = vec![
            // 1.4x, every pair: fails.
            c(
                "8000/s: CPU-µs/press service-0",
                vec![(20.0, 28.0), (21.0, 29.5), (19.5, 27.2)],
            ),
            // 1.1x, confident: reported, not failed.
            c(
                "8000/s: CPU-µs/press reducer",
                vec![(10.0, 11.0), (10.2, 11.2), (9.9, 10.9)],
            ),
            // 1.6x on average but unsure: not failed.
            c(
                "8000/s: press→SSE p99 (ms)",
                vec![(50.0, 40.0), (50.0, 150.0), (50.0, 70.0)],
            ),
            // The generator's CPU is not the canary's business.
            c(
                "8000/s: CPU-µs/press loadgen",
                vec![(20.0, 40.0), (20.0, 41.0), (20.0, 40.5)],
            ),
        ];
        let failures = canary_failures(&metrics);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("8000/s: CPU-µs/press service-0: B is 1.40x A"));
        // p99 at 2x in every pair fails.
        let p99 = c(
            "press→SSE p99 (ms)",
            vec![(50.0, 100.0), (52.0, 104.0), (49.0, 99.0)],
        );
        assert_eq!(canary_failures(&[p99]).len(), 1);
    }

    #[test]
    fn the_table_names_every_run_and_the_verdict() {
        let a = vec![
            Some(summary(1500.0, 50.0, 20.0)),
            Some(summary(1500.0, 52.0, 20.5)),
            Some(summary(1500.0, 51.0, 19.8)),
        ];
        let b = vec![
            Some(summary(1500.0, 50.5, 24.0)),
            Some(summary(1500.0, 51.0, 24.4)),
            Some(summary(1500.0, 51.5, 23.9)),
        ];
        let metrics = compare(&a, &b);
        let rev = |r: &str| Revision {
            rev: r.into(),
            commit: Some("0123456789abcdef".into()),
            sets: vec![],
            bins: PathBuf::new(),
            tree: PathBuf::new(),
        };
        let ab = Ab {
            scenario: "fixed".into(),
            a: rev("HEAD~1"),
            b: rev("HEAD"),
            seed: 3,
            pairs: vec![
                Pair {
                    order: [Side::A, Side::B],
                    a: Some("ra1".into()),
                    b: Some("rb1".into()),
                },
                Pair {
                    order: [Side::B, Side::A],
                    a: Some("ra2".into()),
                    b: Some("rb2".into()),
                },
                Pair {
                    order: [Side::A, Side::B],
                    a: Some("ra3".into()),
                    b: None,
                },
            ],
            differing: metrics.iter().filter(|m| m.differs).count(),
            metrics,
            started_at: String::new(),
            wall_s: 60.0,
        };
        let md = markdown(&ab, "x-ab-fixed");
        assert!(
            md.contains("| CPU-µs/press service-0 |") && md.contains("B worse"),
            "{md}"
        );
        assert!(md.contains("2. B `rb2`, then A `ra2`"), "{md}");
        assert!(md.contains("(no run stored)"), "{md}");
        let json = serde_json::to_string(&ab).unwrap();
        let back: Ab = serde_json::from_str(&json).unwrap();
        let verdicts = |a: &Ab| -> Vec<(String, bool)> {
            a.metrics
                .iter()
                .map(|m| (m.metric.clone(), m.differs))
                .collect()
        };
        assert_eq!(verdicts(&back), verdicts(&ab));
        assert_eq!(back.pairs, ab.pairs);
    }
}
