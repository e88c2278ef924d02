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
    /// A fingerprint of each component the run started (see
    /// [`crate::fingerprint`]); absent in runs stored before it was
    /// recorded, which are judged by their commit instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fingerprints: BTreeMap<String, String>,
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

/// Where and with what a run ran; `components` are those it started (see
/// [`crate::fingerprint::COMPONENTS`]).
pub fn collect(driver: &str, started_at: String, local_stack: bool, components: &[&str]) -> Meta {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let git = PathBuf::from("git");
    let dirty = dirty_paths(Path::new("."));
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
            cores: crate::host::machine_cores(),
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
        fingerprints: fingerprints(components),
    }
}

/// The fingerprints of `components` in the work tree the lab runs from
/// (the tree `scripts/loadgen` has just built).
fn fingerprints(components: &[&str]) -> BTreeMap<String, String> {
    let root = run(Path::new("git"), &["rev-parse", "--show-toplevel"])
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    match crate::fingerprint::of_workspace(&root) {
        Ok(all) => all
            .into_iter()
            .filter(|(c, _)| components.contains(&c.as_str()))
            .collect(),
        Err(e) => {
            eprintln!("warning: no component fingerprints for this run: {e:#}");
            BTreeMap::new()
        }
    }
}

/// The tracked paths of the work tree at `repo` that differ from its
/// commit; none when git cannot say.
pub fn dirty_paths(repo: &Path) -> Option<Vec<String>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["status", "--porcelain=v1", "-z", "--untracked-files=no"])
        .output()
        .ok()?;
    out.status.success().then(|| porcelain_paths(&out.stdout))
}

/// Paths from `git status --porcelain=v1 -z`: NUL-separated `XY path`
/// entries, where a rename or copy is followed by its source path as one
/// more field. Nothing is trimmed: the status columns are positional, and
/// a path may begin with any character.
fn porcelain_paths(raw: &[u8]) -> Vec<String> {
    let mut fields = raw.split(|&b| b == 0).filter(|f| !f.is_empty());
    let mut paths = Vec::new();
    while let Some(entry) = fields.next() {
        let Some(path) = entry.get(3..) else { continue };
        paths.push(String::from_utf8_lossy(path).into_owned());
        // Both sides of a rename or copy changed.
        if entry[..2].iter().any(|&c| c == b'R' || c == b'C')
            && let Some(from) = fields.next()
        {
            paths.push(String::from_utf8_lossy(from).into_owned());
        }
    }
    paths
}

/// A stored run's `meta.json`.
pub fn read(dir: &Path) -> anyhow::Result<Meta> {
    let path = dir.join("meta.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_paths_keep_every_letter_and_both_sides_of_a_rename() {
        let raw = b" M service/src/app.rs\0M  README.md\0R  store/src/new.rs\0store/src/old.rs\0";
        assert_eq!(
            porcelain_paths(raw),
            [
                "service/src/app.rs",
                "README.md",
                "store/src/new.rs",
                "store/src/old.rs"
            ]
        );
    }

    /// The first dirty path is a source file modified in the work tree
    /// only: its status line starts with a space, which must not shift
    /// the path.
    #[test]
    fn the_first_dirty_path_of_a_real_repository_is_read_whole() {
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args([
                    "-c",
                    "user.name=lab",
                    "-c",
                    "user.email=lab@example.invalid",
                ])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        git(&["init", "-q"]);
        std::fs::create_dir_all(repo.path().join("service/src")).unwrap();
        std::fs::write(repo.path().join("service/src/app.rs"), "fn a() {}\n").unwrap();
        std::fs::write(repo.path().join("z.md"), "x\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "first"]);
        std::fs::write(repo.path().join("service/src/app.rs"), "fn b() {}\n").unwrap();
        std::fs::write(repo.path().join("z.md"), "y\n").unwrap();
        let dirty = dirty_paths(repo.path()).unwrap();
        assert_eq!(dirty, ["service/src/app.rs", "z.md"]);
        // And the lab's freshness sees the source file.
        assert!(dirty.iter().any(|p| crate::lab::exercised(p)));
    }
}
