//! The host probe sees what steal and foreign CPU do not: a whole run
//! under a CPU quota (cgroup v1 `cpu.cfs_quota_us`, 1.3 cores of this
//! machine's 2) is flagged by its host index, while the kernel's own
//! counters call the machine quiet. Runs alone (see .config/nextest.toml):
//! any other test's CPU would be foreign CPU here.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CGROUP_CPU: &str = "/sys/fs/cgroup/cpu";

/// A cgroup v1 `cpu` group, removed on drop.
struct Quota(PathBuf);

impl Quota {
    fn new(cores: f64) -> Quota {
        let root = Path::new(CGROUP_CPU);
        assert!(
            root.join("cgroup.procs").is_file(),
            "this test needs the cgroup v1 cpu controller at {CGROUP_CPU} (as root)"
        );
        let dir = root.join(format!("button-lab-quota-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the cgroup (as root)");
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(
            dir.join("cpu.cfs_quota_us"),
            format!("{}", (cores * 100_000.0) as u64),
        )
        .unwrap();
        Quota(dir)
    }

    fn throttled_periods(&self) -> u64 {
        std::fs::read_to_string(self.0.join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        // Anything left in it goes back to the root group first.
        if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(Path::new(CGROUP_CPU).join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn loadgen() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

const SCENARIO: &str = r#"
description = "A short steady load: the host probe's test."

[[phase]]
name = "warm-up"
warmup = true
duration_s = 2
rate = 100

[[phase]]
name = "steady"
duration_s = 10
rate = 300
"#;

fn only_run(out: &Path) -> (Value, PathBuf) {
    let dir = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("summary.json").is_file())
        .expect("a stored run");
    let summary = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
        .expect("summary.json");
    (summary, dir)
}

/// The machine's busy share of all cores over `window`, from /proc/stat.
fn busy_share(window: std::time::Duration) -> f64 {
    let read = || -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // idle and iowait are the idle columns.
        let idle = cpu[3] + cpu.get(4).copied().unwrap_or(0);
        (cpu.iter().sum(), idle)
    };
    let (total_a, idle_a) = read();
    std::thread::sleep(window);
    let (total_b, idle_b) = read();
    let total = (total_b - total_a).max(1) as f64;
    1.0 - (idle_b - idle_a) as f64 / total
}

/// Waits (up to a minute) for the machine to be quiet: servers other tests
/// stopped may still be winding down, and their CPU would be this run's
/// foreign CPU.
fn wait_for_a_quiet_machine() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let busy = busy_share(std::time::Duration::from_secs(1));
        if busy < 0.05 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the machine stayed busy ({:.0}% of its cores over the last second): this test measures foreign CPU and needs it quiet",
            busy * 100.0
        );
    }
}

#[test]
fn a_run_under_a_cpu_quota_is_flagged_by_its_host_index_while_steal_and_foreign_stay_near_zero() {
    let out = tempfile::tempdir().unwrap();
    let scenario = out.path().join("host-probe.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();

    wait_for_a_quiet_machine();
    // The reference, unthrottled, in the run's own folder.
    let calibrate = loadgen()
        .args(["host", "calibrate", "--probes", "5", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(calibrate.status.success(), "{calibrate:?}");

    // The whole run, stack and generator, under 1.3 cores.
    let quota = Quota::new(1.3);
    let procs = quota.0.join("cgroup.procs");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec {} run {} --out {} --quiet",
            procs.display(),
            env!("CARGO_BIN_EXE_loadgen"),
            scenario.display(),
            out.path().display()
        ))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the throttled run failed its verdict: {status}"
    );
    assert!(
        quota.throttled_periods() > 0,
        "the quota never throttled the run"
    );

    let (summary, dir) = only_run(out.path());
    let host = &summary["host"];
    let index = host["index"].as_f64().expect("a host index");
    let reasons: Vec<&str> = summary["validity"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        index < 0.9 && reasons.iter().any(|r| r.contains("host slow")),
        "index {index}, reasons {reasons:?} ({})",
        dir.display()
    );
    // What the kernel's counters said of the same run: nothing amiss.
    let steady = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "steady")
        .unwrap();
    let steal = steady["steal_pct"].as_f64().unwrap_or(0.0);
    let foreign = steady["foreign_pct"].as_f64().unwrap_or(0.0);
    assert!(
        steal < 1.0 && foreign < 5.0,
        "steal {steal}%, foreign {foreign}%"
    );
    assert!(
        !reasons
            .iter()
            .any(|r| r.contains("steal") || r.contains("foreign")),
        "{reasons:?}"
    );
    // The light probes ran as their own process, not billed to the generator.
    assert!(
        summary["cost_us_per_press"]
            .as_object()
            .is_some_and(|c| c.contains_key("host-probe")),
        "no host-probe process in the run's costs: {}",
        summary["cost_us_per_press"]
    );
    // The light probes during the load saw it too.
    assert!(
        host["during"].as_array().is_some_and(|d| !d.is_empty()),
        "no probe during the load: {host}"
    );
}
