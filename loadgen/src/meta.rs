//! What a stored run says about where it ran: the commit, the machine and
//! the versions of every component.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Serialize)]
pub struct Meta {
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub machine: Machine,
    pub versions: Versions,
    pub driver: String,
    pub started_at: String,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu_model: Option<String>,
    pub cores: usize,
    pub memory_kib: Option<u64>,
    pub kernel: Option<String>,
}

#[derive(Debug, Serialize)]
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

pub fn collect(driver: &str, started_at: String, broker_log: Option<&Path>) -> Meta {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let git = PathBuf::from("git");
    Meta {
        git_commit: run(&git, &["rev-parse", "HEAD"]),
        git_dirty: run(&git, &["status", "--porcelain", "--untracked-files=no"])
            .map(|s| !s.is_empty()),
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
            // The broker names itself on its first log line.
            broker: broker_log
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|log| log.lines().next().map(str::to_owned)),
            postgres: button_stack::locate::postgres_bin()
                .ok()
                .and_then(|b| run(&b.join("postgres"), &["--version"])),
            redis: button_stack::locate::redis_server()
                .ok()
                .and_then(|r| run(&r, &["--version"])),
        },
        driver: driver.to_owned(),
        started_at,
    }
}
