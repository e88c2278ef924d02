//! CPU profiles from the lab: `perf record` samples a process of the stack
//! (or the load generator) for the whole load or one phase, with call
//! chains walked by frame pointers (the workspace builds with them, see
//! `.cargo/config.toml`); inferno folds the stacks and draws the flame
//! graph into the run's folder.
//!
//! The profiler's own CPU shows in the run as the process `perf-<target>`,
//! so a profiled run says what profiling cost.

use crate::scenario::ProfileSection;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Targets a profile may name besides the stack's components.
pub const LOADGEN: &str = "loadgen";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "profiling is not permitted: /proc/sys/kernel/perf_event_paranoid is {0} and this is not root (run as root, or `sysctl kernel.perf_event_paranoid=2`)"
    )]
    NotPermitted(i32),
    #[error("`perf` is not installed (scripts/setup installs Debian's linux-perf)")]
    NoPerf,
}

/// Whether, and how, this machine lets the lab profile: the event to
/// sample (kernel stacks too when permitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// User and kernel space.
    Full,
    /// User space only (`perf_event_paranoid` 2 without root).
    UserOnly,
}

impl Access {
    fn event(self) -> &'static str {
        match self {
            // A software clock: it works in VMs without hardware counters.
            Access::Full => "cpu-clock",
            Access::UserOnly => "cpu-clock:u",
        }
    }
}

/// Checks that `perf` can run here, before the stack starts.
pub fn check_access() -> Result<Access, ProfileError> {
    let perf = std::process::Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !perf.is_ok_and(|s| s.success()) {
        return Err(ProfileError::NoPerf);
    }
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(2);
    access_for(nix::unistd::geteuid().is_root(), paranoid)
}

fn access_for(root: bool, paranoid: i32) -> Result<Access, ProfileError> {
    match (root, paranoid) {
        (true, _) | (false, ..=1) => Ok(Access::Full),
        (false, 2) => Ok(Access::UserOnly),
        (false, n) => Err(ProfileError::NotPermitted(n)),
    }
}

/// Processes one target names, by the names the stack's pids go by.
pub fn resolve_target(target: &str, pids: &BTreeMap<String, u32>) -> Vec<(String, u32)> {
    let own = || vec![(LOADGEN.to_owned(), std::process::id())];
    match target {
        LOADGEN => own(),
        // Every instance of the service.
        "service" => pids
            .iter()
            .filter(|(name, _)| name.starts_with("service-"))
            .map(|(n, p)| (n.clone(), *p))
            .collect(),
        // Every outbox relay.
        "relay" => pids
            .iter()
            .filter(|(name, _)| name.starts_with("relay-"))
            .map(|(n, p)| (n.clone(), *p))
            .collect(),
        "kafka" => resolve_target("broker", pids),
        other => pids
            .get(other)
            .map(|p| vec![(other.to_owned(), *p)])
            .unwrap_or_default(),
    }
}

/// A recording under way: one `perf record` for every target.
pub struct Recording {
    /// Process name → pid, as the stack named them when it started.
    targets: Vec<(String, u32)>,
    access: Access,
    data: PathBuf,
    child: tokio::process::Child,
    /// What the profile covers, for its title.
    window: String,
    frequency_hz: u32,
}

impl Recording {
    /// The profiler's pid, so the sampler counts its CPU as the run's own.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Starts `perf record` after `delay`, for `length`. With full access it
/// samples every CPU and each target is picked out afterwards: perf 6.1
/// attached to a process (`-p`) spins in `poll` once one of the
/// process's threads exits (tokio ends idle blocking threads after 10 s),
/// and a machine-wide recording also catches processes a target forks
/// later (PostgreSQL's backends). Without it, the target processes only.
pub fn start(
    access: Access,
    section: &ProfileSection,
    targets: Vec<(String, u32)>,
    delay: Duration,
    length: Duration,
    window: String,
    dir: &Path,
) -> anyhow::Result<Recording> {
    let data = dir.join("profile.perf.data");
    let mut command = tokio::process::Command::new("perf");
    command
        .arg("record")
        .args(["-e", access.event()])
        .args(["-F", &section.frequency_hz.to_string()])
        .args(["--call-graph", "fp"])
        .args(["-D", &delay.as_millis().to_string()]);
    match access {
        Access::Full => {
            command.arg("-a");
        }
        Access::UserOnly => {
            let pids: Vec<String> = targets
                .iter()
                .flat_map(|(target, pid)| process_tree(target, *pid))
                .map(|p| p.to_string())
                .collect();
            command.args(["-p", &pids.join(",")]);
        }
    }
    let child = command
        .arg("-o")
        .arg(&data)
        .arg("--quiet")
        // The command only says how long to record.
        .args([
            "--",
            "sleep",
            &format!("{:.3}", (delay + length).as_secs_f64()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting perf record")?;
    Ok(Recording {
        targets,
        access,
        data,
        child,
        window,
        frequency_hz: section.frequency_hz,
    })
}

/// A target's processes: with its children (PostgreSQL's backends, say),
/// but the load generator alone (the local stack's processes are its
/// children).
fn process_tree(target: &str, pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if target != LOADGEN {
        pids.extend(crate::sample::children(pid));
    }
    pids
}

/// A profile as the run's summary lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub target: String,
    pub pids: Vec<u32>,
    /// The phase profiled, or "the whole load".
    pub window: String,
    pub frequency_hz: u32,
    /// Kernel stacks included (root, or a permissive perf_event_paranoid).
    #[serde(default)]
    pub kernel: bool,
    pub samples: u64,
    /// The flame graph and the folded stacks it was drawn from, in the
    /// run's folder; none when the profile failed.
    pub flamegraph: Option<String>,
    pub folded: Option<String>,
    /// Functions by their own (leaf) share of the samples, largest first.
    #[serde(default)]
    pub top_self: Vec<(String, f64)>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Waits for the recording to end, then folds each target's samples and
/// draws its graph. A profile that fails says why in its `error`; the run
/// goes on.
pub async fn finish(mut recording: Recording, dir: &Path) -> Vec<Profile> {
    let recorded = async {
        let status = recording.child.wait().await.context("waiting for perf")?;
        if !status.success() {
            let mut stderr = String::new();
            if let Some(mut e) = recording.child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut stderr).await;
            }
            anyhow::bail!("perf record failed ({status}): {}", stderr.trim());
        }
        Ok(())
    }
    .await;
    let mut profiles = Vec::new();
    for (target, pid) in &recording.targets {
        // Children as they are now too: a backend forked mid-run.
        let pids = process_tree(target, *pid);
        let mut profile = Profile {
            target: target.clone(),
            pids: pids.clone(),
            window: recording.window.clone(),
            frequency_hz: recording.frequency_hz,
            kernel: recording.access == Access::Full,
            samples: 0,
            flamegraph: None,
            folded: None,
            top_self: Vec::new(),
            error: None,
        };
        let drawn = match &recorded {
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
            Ok(()) => {
                let (data, dir, target) = (recording.data.clone(), dir.to_owned(), target.clone());
                let title = format!(
                    "{target} — {} — perf at {} Hz",
                    recording.window, recording.frequency_hz
                );
                tokio::task::spawn_blocking(move || draw(&data, &pids, &dir, &target, &title))
                    .await
                    .context("drawing the flame graph")
                    .and_then(|r| r)
            }
        };
        match drawn {
            Ok(drawn) => {
                profile.samples = drawn.samples;
                profile.top_self = drawn.top_self;
                profile.flamegraph = Some(drawn.flamegraph);
                profile.folded = Some(drawn.folded);
            }
            Err(e) => profile.error = Some(format!("{e:#}")),
        }
        profiles.push(profile);
    }
    let _ = std::fs::remove_file(&recording.data);
    profiles
}

struct Drawn {
    samples: u64,
    flamegraph: String,
    folded: String,
    top_self: Vec<(String, f64)>,
}

/// `perf script` → inferno's perf folder → folded stacks → flame graph.
fn draw(data: &Path, pids: &[u32], dir: &Path, target: &str, title: &str) -> anyhow::Result<Drawn> {
    use inferno::collapse::Collapse;
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut script = std::process::Command::new("perf")
        .arg("script")
        .arg("-i")
        .arg(data)
        .args(["--pid", &pids.join(",")])
        // No period: each sample counts once, so counts are samples.
        .args(["-F", "comm,pid,tid,time,event,ip,sym,dso"])
        // Inlined frames need debug info the release build does not keep;
        // looking them up anyway is what makes perf script slow.
        .arg("--no-inline")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf script")?;
    let stdout = script.stdout.take().context("perf script's output")?;
    let mut folded = Vec::new();
    inferno::collapse::perf::Folder::default()
        .collapse(BufReader::new(stdout), &mut folded)
        .context("folding perf script's stacks")?;
    let status = script.wait().context("waiting for perf script")?;
    anyhow::ensure!(status.success(), "perf script failed ({status})");
    let (samples, top_self) = leaf_shares(&folded, 15);
    anyhow::ensure!(samples > 0, "no samples: the process never ran on a CPU");
    let folded_name = format!("profile-{target}.folded");
    std::fs::write(dir.join(&folded_name), &folded)?;
    let svg_name = format!("flamegraph-{target}.svg");
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = "samples".to_owned();
    let mut svg = std::io::BufWriter::new(std::fs::File::create(dir.join(&svg_name))?);
    inferno::flamegraph::from_reader(&mut options, &folded[..], &mut svg)
        .context("drawing the flame graph")?;
    svg.flush()?;
    Ok(Drawn {
        samples,
        flamegraph: svg_name,
        folded: folded_name,
        top_self,
    })
}

/// Total samples, and the `n` leaf functions with the largest share of
/// them (self time), from folded stacks (`a;b;c 42` per line).
pub fn leaf_shares(folded: &[u8], n: usize) -> (u64, Vec<(String, f64)>) {
    let mut by_leaf: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for line in folded.lines().map_while(Result::ok) {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        total += count;
        let leaf = stack.rsplit(';').next().unwrap_or(stack);
        match by_leaf.get_mut(leaf) {
            Some(c) => *c += count,
            None => {
                by_leaf.insert(leaf.to_owned(), count);
            }
        }
    }
    let mut leaves: Vec<(String, f64)> = by_leaf
        .into_iter()
        .map(|(f, c)| (f, c as f64 * 100.0 / total.max(1) as f64))
        .collect();
    leaves.sort_by(|a, b| b.1.total_cmp(&a.1));
    leaves.truncate(n);
    (total, leaves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_follows_root_and_paranoia() {
        assert_eq!(access_for(true, 4).unwrap(), Access::Full);
        assert_eq!(access_for(false, 1).unwrap(), Access::Full);
        assert_eq!(access_for(false, -1).unwrap(), Access::Full);
        assert_eq!(access_for(false, 2).unwrap(), Access::UserOnly);
        let err = access_for(false, 3).unwrap_err().to_string();
        assert!(err.contains("perf_event_paranoid is 3"), "{err}");
    }

    #[test]
    fn targets_resolve_to_the_stacks_processes() {
        let pids: BTreeMap<String, u32> = [
            ("service-0", 10),
            ("service-1", 11),
            ("broker", 20),
            ("postgres", 30),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_owned(), p))
        .collect();
        assert_eq!(
            resolve_target("service", &pids),
            vec![("service-0".to_owned(), 10), ("service-1".to_owned(), 11)]
        );
        assert_eq!(
            resolve_target("service-1", &pids),
            vec![("service-1".to_owned(), 11)]
        );
        assert_eq!(
            resolve_target("kafka", &pids),
            vec![("broker".to_owned(), 20)]
        );
        assert_eq!(resolve_target("redis", &pids), vec![]);
        assert_eq!(resolve_target("loadgen", &pids)[0].1, std::process::id());
    }

    #[test]
    fn leaf_shares_rank_self_time() {
        let folded = b"main;a;b 6\nmain;a 2\nmain;c;b 2\nbad line\n";
        let (total, top) = leaf_shares(folded, 2);
        assert_eq!(total, 10);
        assert_eq!(top, vec![("b".to_owned(), 80.0), ("a".to_owned(), 20.0)]);
    }
}
