//! What a stored run says about where it ran: the commit, the machine and
//! the versions of every component.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    /// The tracked files that differed from the commit: a run from a tree
    /// whose only edits are to documents still measured the commit's code.
    #[serde(default)]
    pub git_dirty_paths: Option<Vec<String>>,
    pub machine: Machine,
    pub versions: Versions,
    /// How the lab's binaries (loadgen, service, reducer: one cargo build)
    /// were compiled; absent in runs stored before it was recorded.
    #[serde(default)]
    pub build: Option<Build>,
    /// The environment every stack process started from (the caller's is
    /// cleared), before each component's own variables.
    #[serde(default)]
    pub stack_env: BTreeMap<String, String>,
    pub driver: String,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Build {
    /// cargo's profile family: "release" (release and any profile that
    /// inherits it) or "debug".
    pub profile: String,
    pub opt_level: String,
    pub rustc: String,
    pub target: String,
    /// `-C target-cpu`, "generic" when none was given.
    pub target_cpu: String,
}

impl Build {
    /// This binary's build.
    pub fn current() -> Build {
        Build {
            profile: env!("BUTTON_BUILD_PROFILE").to_owned(),
            opt_level: env!("BUTTON_BUILD_OPT_LEVEL").to_owned(),
            rustc: env!("BUTTON_BUILD_RUSTC").to_owned(),
            target: env!("BUTTON_BUILD_TARGET").to_owned(),
            target_cpu: env!("BUTTON_BUILD_TARGET_CPU").to_owned(),
        }
    }

    /// Measurements of unoptimised code say little about the design.
    pub fn optimised(&self) -> bool {
        !matches!(self.opt_level.as_str(), "0" | "")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: Option<String>,
    pub cores: usize,
    pub memory_kib: Option<u64>,
    pub kernel: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    pub broker: Option<String>,
    pub postgres: Option<String>,
    pub redis: Option<String>,
}

fn run(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn collect(driver: &str, started_at: String, local_stack: bool) -> Meta {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let git = PathBuf::from("git");
    let dirty = run(&git, &["status", "--porcelain", "--untracked-files=no"]).map(|s| {
        s.lines()
            .filter_map(|l| l.get(3..))
            // A rename reads "old -> new": both sides changed.
            .flat_map(|p| p.split(" -> "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    Meta {
        git_commit: run(&git, &["rev-parse", "HEAD"]),
        git_dirty: dirty.as_ref().map(|p| !p.is_empty()),
        git_dirty_paths: dirty,
        machine: Machine {
            cpu_model: cpuinfo.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            }),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_kib: meminfo.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            }),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
        },
        versions: Versions {
            broker: button_stack::locate::tansu()
                .ok()
                .and_then(|t| run(&t, &["--version"])),
            postgres: button_stack::locate::postgres_bin()
                .ok()
                .and_then(|b| run(&b.join("postgres"), &["--version"])),
            redis: button_stack::locate::redis_server()
                .ok()
                .and_then(|r| run(&r, &["--version"])),
        },
        build: Some(Build::current()),
        stack_env: if local_stack {
            button_stack::pinned_env()
        } else {
            BTreeMap::new()
        },
        driver: driver.to_owned(),
        started_at,
    }
}

/// A stored run's `meta.json`.
pub fn read(dir: &Path) -> anyhow::Result<Meta> {
    let path = dir.join("meta.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
