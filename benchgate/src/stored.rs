//! A stored baseline: one commit's benchmark rounds, recorded on a known
//! machine and committed to the repository, for when the base commit
//! cannot be checked out (a shallow or single-commit clone with no remote
//! to deepen it from). It is from another time and maybe another machine,
//! so the comparison against it is looser, and says so.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub about: String,
    /// The commit whose benchmarks were measured (full hash).
    pub commit: String,
    /// UTC, as `date -u` gave it when recording began.
    pub recorded_at: String,
    pub machine: Machine,
    /// `rustc -V` in the recorded checkout.
    pub rustc: String,
    pub entries: Vec<Entry>,
}

/// One bench target's rounds, with the settings they were measured with;
/// the head is measured with the same ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub package: String,
    pub bench: String,
    pub filter: Option<String>,
    pub rounds: usize,
    pub warm_up: f64,
    pub measurement: f64,
    /// Criterion's median per round, ns per iteration, by benchmark id.
    pub medians_ns: BTreeMap<String, Vec<f64>>,
}

impl Entry {
    fn same_target(&self, package: &str, bench: &str, filter: Option<&str>) -> bool {
        self.package == package && self.bench == bench && self.filter.as_deref() == filter
    }
}

const ABOUT: &str = "Benchmark rounds of one commit, recorded by `scripts/bench-gate baseline` \
on the machine named here. scripts/bench-gate compares against them, with a looser threshold, \
only when the base commit cannot be checked out. Record again on the reference machine when \
the benchmarks or the code they measure change.";

impl Baseline {
    pub fn new(commit: &str, recorded_at: &str, machine: Machine, rustc: &str) -> Baseline {
        Baseline {
            about: ABOUT.to_owned(),
            commit: commit.to_owned(),
            recorded_at: recorded_at.to_owned(),
            machine,
            rustc: rustc.to_owned(),
            entries: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Baseline> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the stored baseline {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing the stored baseline {}", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn find(&self, package: &str, bench: &str, filter: Option<&str>) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.same_target(package, bench, filter))
    }

    /// Adds `entry`, replacing one of the same target. Entries of another
    /// commit or machine are refused: one file describes one measurement.
    pub fn insert(&mut self, commit: &str, machine: &Machine, entry: Entry) -> anyhow::Result<()> {
        if self.commit != commit {
            bail!(
                "the stored baseline holds commit {}, not {commit}; record into a new file",
                self.commit
            );
        }
        if &self.machine != machine {
            bail!(
                "the stored baseline was recorded on {}, not {}; record into a new file",
                self.machine.describe(),
                machine.describe()
            );
        }
        self.entries
            .retain(|e| !e.same_target(&entry.package, &entry.bench, entry.filter.as_deref()));
        self.entries.push(entry);
        Ok(())
    }

    /// One line naming what the baseline is: commit, date, machine,
    /// compiler.
    pub fn describe(&self) -> String {
        format!(
            "stored baseline of commit {} recorded {} on {}, {}",
            short(&self.commit),
            self.recorded_at,
            self.machine.describe(),
            self.rustc
        )
    }
}

fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// What identifies the machine a measurement was taken on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
}

impl Machine {
    pub fn current() -> Machine {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let or_unknown = |s: String| {
            if s.is_empty() {
                "unknown".to_owned()
            } else {
                s
            }
        };
        Machine {
            hostname: or_unknown(read("/proc/sys/kernel/hostname")),
            cpu: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".to_owned()),
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: or_unknown(read("/proc/sys/kernel/osrelease")),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {} cores, Linux {})",
            self.hostname, self.cpu, self.cores, self.kernel
        )
    }

    /// How `self` (this machine) differs from `recorded`, one phrase each.
    pub fn differences(&self, recorded: &Machine) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |what: &str, here: String, there: String| {
            if here != there {
                out.push(format!("{what} {here} here, {there} recorded"));
            }
        };
        differ("host", self.hostname.clone(), recorded.hostname.clone());
        differ("CPU", self.cpu.clone(), recorded.cpu.clone());
        differ("cores", self.cores.to_string(), recorded.cores.to_string());
        differ("kernel", self.kernel.clone(), recorded.kernel.clone());
        out
    }
}

/// The CPU's model name in `/proc/cpuinfo` (x86's `model name`, or the
/// `Hardware`/`cpu model` lines other architectures use).
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            hostname: "vm".into(),
            cpu: "Intel(R) Xeon(R) Processor".into(),
            cores: 2,
            kernel: "6.18.44".into(),
        }
    }

    fn entry(filter: Option<&str>, ns: f64) -> Entry {
        Entry {
            package: "button-domain".into(),
            bench: "fold".into(),
            filter: filter.map(str::to_owned),
            rounds: 2,
            warm_up: 0.2,
            measurement: 0.5,
            medians_ns: BTreeMap::from([("apply_batch/1000".to_owned(), vec![ns, ns + 1.0])]),
        }
    }

    #[test]
    fn round_trips_through_its_file() {
        let mut b = Baseline::new(
            "0123456789abcdef",
            "2026-11-23T00:40Z",
            machine(),
            "rustc 1.95.0",
        );
        b.insert("0123456789abcdef", &machine(), entry(Some("^x$"), 10.0))
            .expect("same commit");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("baseline").join("baseline.json");
        b.save(&path).expect("saved");
        assert_eq!(Baseline::load(&path).expect("loaded"), b);
    }

    #[test]
    fn finds_an_entry_by_package_bench_and_filter() {
        let mut b = Baseline::new("abc", "now", machine(), "rustc");
        b.insert("abc", &machine(), entry(Some("^x$"), 10.0))
            .expect("ok");
        b.insert("abc", &machine(), entry(None, 20.0)).expect("ok");
        assert_eq!(
            b.find("button-domain", "fold", Some("^x$"))
                .map(|e| e.medians_ns["apply_batch/1000"][0]),
            Some(10.0)
        );
        assert_eq!(
            b.find("button-domain", "fold", None)
                .map(|e| e.medians_ns["apply_batch/1000"][0]),
            Some(20.0)
        );
        assert!(b.find("button-domain", "fold", Some("other")).is_none());
        assert!(b.find("button-service", "fold", None).is_none());
    }

    #[test]
    fn recording_a_target_again_replaces_it() {
        let mut b = Baseline::new("abc", "now", machine(), "rustc");
        b.insert("abc", &machine(), entry(None, 10.0)).expect("ok");
        b.insert("abc", &machine(), entry(None, 30.0)).expect("ok");
        assert_eq!(b.entries.len(), 1);
        assert_eq!(b.entries[0].medians_ns["apply_batch/1000"][0], 30.0);
    }

    #[test]
    fn refuses_to_mix_commits_or_machines() {
        let mut b = Baseline::new("abc", "now", machine(), "rustc");
        let err = b
            .insert("def", &machine(), entry(None, 1.0))
            .expect_err("another commit");
        assert!(err.to_string().contains("holds commit abc"), "{err}");
        let other = Machine {
            cores: 8,
            ..machine()
        };
        assert!(b.insert("abc", &other, entry(None, 1.0)).is_err());
        assert!(b.entries.is_empty());
    }

    #[test]
    fn describes_commit_date_machine_and_compiler() {
        let b = Baseline::new(
            "5077fd7c0ffee0123456789",
            "2026-11-23T00:40Z",
            machine(),
            "rustc 1.95.0",
        );
        assert_eq!(
            b.describe(),
            "stored baseline of commit 5077fd7c0f recorded 2026-11-23T00:40Z on vm (Intel(R) Xeon(R) Processor, 2 cores, Linux 6.18.44), rustc 1.95.0"
        );
    }

    #[test]
    fn names_what_differs_between_machines() {
        assert!(machine().differences(&machine()).is_empty());
        let here = Machine {
            hostname: "ci-7".into(),
            cores: 4,
            ..machine()
        };
        assert_eq!(
            here.differences(&machine()),
            vec!["host ci-7 here, vm recorded", "cores 4 here, 2 recorded"]
        );
    }

    #[test]
    fn reads_the_cpu_model() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu\n";
        assert_eq!(
            cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\n\nHardware\t: BCM2835\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("BCM2835"));
        assert_eq!(cpu_model(""), None);
    }
}
