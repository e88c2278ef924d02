//! The host, measured: a probe of fixed work (arithmetic on every core, a
//! walk through memory, loopback TCP round trips) whose times, against a
//! reference taken on this machine kind, give a *host index* (1.0: as
//! fast as the reference; 0.8: the same work took 1.25× as long).
//!
//! Steal and foreign CPU say what the kernel saw; they miss a CPU quota,
//! a slower clock, a neighbour in the caches. The probe sees all of those,
//! because it times work rather than asking who ran.
//!
//! A run probes before its load and after its drain ([`Probe::full`],
//! every core busy for a few hundred ms: a quota works on 100 ms periods,
//! so shorter work would slip under it), and during the load every few
//! seconds ([`Probe::light`], one thread, at the stack's priority): the
//! light probe's slowdown is the CPU a runnable thread waited for.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One probe's times, in milliseconds of wall time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Timings {
    /// The same arithmetic on `threads` threads at once, until the last ends.
    pub cpu_ms: f64,
    /// A walk over a buffer larger than the caches, on as many threads.
    pub memory_ms: f64,
    /// Loopback TCP round trips of a small message.
    pub loopback_ms: f64,
}

/// How much work a probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// Every core, ~350 ms: before and after the load, and the reference.
    Full,
    /// One thread, ~30 ms of work: during the load.
    Light,
}

impl Probe {
    fn threads(self) -> usize {
        match self {
            Probe::Full => machine_cores(),
            Probe::Light => 1,
        }
    }

    fn cpu_rounds(self) -> u64 {
        match self {
            Probe::Full => 80_000_000,
            Probe::Light => 4_000_000,
        }
    }

    fn memory_passes(self) -> usize {
        match self {
            Probe::Full => 8,
            Probe::Light => 1,
        }
    }

    fn round_trips(self) -> usize {
        match self {
            Probe::Full => 1_500,
            Probe::Light => 100,
        }
    }

    /// Runs the probe once.
    pub fn run(self) -> anyhow::Result<Timings> {
        self.run_in(&mut self.buffers())
    }

    /// The memory part's buffers, one per thread, every page touched.
    fn buffers(self) -> Vec<Vec<u8>> {
        (0..self.threads())
            .map(|_| vec![1u8; MEMORY_BYTES])
            .collect()
    }

    /// Runs the probe once with buffers already made: a probe repeated
    /// every few seconds must not fault in 64 MiB each time (its own cost
    /// would then be mostly the untimed allocation).
    fn run_in(self, buffers: &mut [Vec<u8>]) -> anyhow::Result<Timings> {
        Ok(Timings {
            cpu_ms: cpu(self.threads(), self.cpu_rounds()),
            memory_ms: memory(buffers, self.memory_passes()),
            loopback_ms: loopback(self.round_trips())?,
        })
    }

    /// `n` probes, and their element-wise median.
    pub fn median_of(self, n: usize) -> anyhow::Result<Timings> {
        let runs = (0..n.max(1))
            .map(|_| self.run())
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Timings {
            cpu_ms: median(runs.iter().map(|t| t.cpu_ms)),
            memory_ms: median(runs.iter().map(|t| t.memory_ms)),
            loopback_ms: median(runs.iter().map(|t| t.loopback_ms)),
        })
    }
}

/// A fixed integer recurrence (xorshift and a multiply), the same on every
/// thread: what it measures is how much CPU the threads got, and how fast.
fn cpu(threads: usize, rounds: u64) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ t as u64;
                for _ in 0..rounds {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
                }
                black_box(x)
            });
        }
    });
    started.elapsed().as_secs_f64() * 1e3
}

const MEMORY_BYTES: usize = 64 << 20;

/// 64 MiB per thread, one read and one write per cache line, `passes`
/// times, on `threads` threads at once: the machine's memory path, not
/// one core's.
fn memory(buffers: &mut [Vec<u8>], passes: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for buffer in buffers.iter_mut() {
            s.spawn(move || {
                let mut sum = 0u64;
                for pass in 0..passes {
                    for i in (0..buffer.len()).step_by(64) {
                        sum = sum.wrapping_add(u64::from(buffer[i]));
                        buffer[i] = buffer[i].wrapping_add(pass as u8);
                    }
                    black_box(&buffer);
                }
                black_box(sum)
            });
        }
    });
    started.elapsed().as_secs_f64() * 1e3
}

/// Round trips of 64 bytes over a loopback TCP connection to an echoing
/// thread: the kernel's network path and two wake-ups each.
fn loopback(round_trips: usize) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("probe: binding")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        loop {
            match conn.read_exact(&mut buf) {
                Ok(()) => conn.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut conn = std::net::TcpStream::connect(addr).context("probe: connecting")?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [7u8; 64];
    // One round trip to settle the connection before timing.
    conn.write_all(&buf)?;
    conn.read_exact(&mut buf)?;
    let started = Instant::now();
    for _ in 0..round_trips {
        conn.write_all(&buf)?;
        conn.read_exact(&mut buf)?;
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    drop(conn);
    let _ = echo.join();
    Ok(ms)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A probe against the reference: each part's speed (reference time over
/// measured time) and their weighted geometric mean, the index. The CPU
/// part weighs half: it is the steadiest (±2% probe to probe on a quiet
/// machine, against ±5–8% for memory and loopback) and what a quota or a
/// slower clock moves first.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Index {
    pub index: f64,
    pub cpu: f64,
    pub memory: f64,
    pub loopback: f64,
}

impl Index {
    pub fn of(measured: &Timings, reference: &Timings) -> Index {
        let cpu = reference.cpu_ms / measured.cpu_ms;
        let memory = reference.memory_ms / measured.memory_ms;
        let loopback = reference.loopback_ms / measured.loopback_ms;
        Index {
            index: cpu.sqrt() * memory.powf(0.25) * loopback.powf(0.25),
            cpu,
            memory,
            loopback,
        }
    }
}

/// The reference for one machine kind and build: stored under
/// `experiments/host/`, made on a quiet machine by `loadgen host calibrate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reference {
    pub kind: String,
    pub cpu_model: Option<String>,
    pub cores: usize,
    /// The probe's own build (an unoptimised probe is slower).
    pub build_profile: String,
    pub full: Timings,
    pub light: Timings,
    /// Probes the medians are of, and when and at which commit.
    pub probes: usize,
    pub taken_at: String,
    pub git_commit: Option<String>,
    /// Each full probe's index against the medians: the reference's own
    /// spread on a quiet machine.
    pub spread: Vec<f64>,
}

/// The machine's online cores. Not `available_parallelism`, which honours
/// a cgroup's CPU quota: a run under a quota would take itself for a
/// smaller machine kind and probe with fewer threads than there are cores,
/// hiding the very slowdown the probe is there to see.
pub fn machine_cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// This machine's kind: its CPU model and core count, as a file name.
pub fn machine_kind() -> (String, Option<String>, usize) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_owned())
    });
    let cores = machine_cores();
    let slug: String = model
        .as_deref()
        .unwrap_or("unknown-cpu")
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    (format!("{slug}-{cores}-cores"), model, cores)
}

/// Where the reference for this machine kind and build is kept.
pub fn reference_path(experiments: &Path) -> PathBuf {
    let (kind, _, _) = machine_kind();
    let profile = crate::meta::Build::current().profile;
    experiments
        .join("host")
        .join(format!("{kind}-{profile}.json"))
}

/// This machine kind's reference, if one was taken.
pub fn reference(experiments: &Path) -> anyhow::Result<Option<Reference>> {
    let path = reference_path(experiments);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not a host reference", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The reference a run in `out` is judged against: `out/host/…` first (a
/// throwaway folder can carry its own), then `experiments/host/…`. With
/// the name to store, relative to its experiments folder.
pub fn find_reference(out: &Path) -> anyhow::Result<Option<(Reference, String)>> {
    for dir in [out, Path::new("experiments")] {
        if let Some(r) = reference(dir)? {
            let path = reference_path(dir);
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            return Ok(Some((r, name)));
        }
    }
    Ok(None)
}

/// Takes this machine kind's reference: `n` full and light probes, the
/// medians, and how far each full probe lay from them. Writes it and
/// returns it.
pub fn calibrate(experiments: &Path, n: usize) -> anyhow::Result<Reference> {
    let n = n.max(3);
    // The first probe warms the allocator and the page cache.
    Probe::Full.run()?;
    let full_runs = (0..n)
        .map(|_| Probe::Full.run())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let full = Timings {
        cpu_ms: median(full_runs.iter().map(|t| t.cpu_ms)),
        memory_ms: median(full_runs.iter().map(|t| t.memory_ms)),
        loopback_ms: median(full_runs.iter().map(|t| t.loopback_ms)),
    };
    let light = Probe::Light.median_of(n)?;
    let (kind, cpu_model, cores) = machine_kind();
    let reference = Reference {
        kind,
        cpu_model,
        cores,
        build_profile: crate::meta::Build::current().profile,
        full,
        light,
        probes: n,
        taken_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        git_commit: std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        spread: full_runs
            .iter()
            .map(|t| (Index::of(t, &full).index * 1000.0).round() / 1000.0)
            .collect(),
    };
    let path = reference_path(experiments);
    std::fs::create_dir_all(path.parent().expect("a folder"))?;
    std::fs::write(&path, serde_json::to_string_pretty(&reference)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(reference)
}

/// What one run measured of its host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HostReport {
    /// The reference's file, relative to the experiments folder; none when
    /// this machine kind has none (then there are no indices).
    pub reference: Option<String>,
    pub before: Option<Timings>,
    pub after: Option<Timings>,
    /// The full probes' index, before the load and after the drain.
    pub before_index: Option<Index>,
    pub after_index: Option<Index>,
    /// Their geometric mean: the run's host index.
    pub index: Option<f64>,
    /// Light probes during the load: seconds since the load began, and
    /// the index of each against the reference's light probe.
    #[serde(default)]
    pub during: Vec<DuringProbe>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct DuringProbe {
    pub at_s: f64,
    pub timings: Timings,
    pub index: Option<f64>,
}

impl HostReport {
    pub fn new(reference: Option<(&Reference, String)>, before: Option<Timings>) -> HostReport {
        let before_index = reference
            .as_ref()
            .zip(before.as_ref())
            .map(|((r, _), t)| Index::of(t, &r.full));
        HostReport {
            reference: reference.map(|(_, name)| name),
            before,
            before_index,
            index: before_index.map(|i| i.index),
            ..HostReport::default()
        }
    }

    pub fn finish(&mut self, reference: Option<&Reference>, after: Option<Timings>) {
        self.after = after;
        self.after_index = reference
            .zip(after.as_ref())
            .map(|(r, t)| Index::of(t, &r.full));
        // Both sides count alike: a slow host shows in both, one noisy
        // probe set in one.
        self.index = match (self.before_index, self.after_index) {
            (Some(a), Some(b)) => Some((a.index * b.index).sqrt()),
            (a, b) => a.or(b).map(|i| i.index),
        };
    }

    /// The median light-probe index within `[start_s, end_s)`.
    pub fn during_index(&self, start_s: f64, end_s: f64) -> Option<f64> {
        let within: Vec<f64> = self
            .during
            .iter()
            .filter(|p| p.at_s >= start_s && p.at_s < end_s)
            .filter_map(|p| p.index)
            .collect();
        (!within.is_empty()).then(|| median(within.into_iter()))
    }

    /// The one-line form, for reports.
    pub fn describe(&self) -> String {
        match (self.index, &self.before_index, &self.after_index) {
            (Some(i), b, a) => {
                let part = |x: &Option<Index>| {
                    x.map_or("–".to_owned(), |x| {
                        format!(
                            "{:.2} (cpu {:.2}, memory {:.2}, loopback {:.2})",
                            x.index, x.cpu, x.memory, x.loopback
                        )
                    })
                };
                format!("host index {i:.2}: before {}, after {}", part(b), part(a))
            }
            (None, ..) => {
                "host index: no reference for this machine kind (`loadgen host calibrate`)"
                    .to_owned()
            }
        }
    }
}

/// Light probes every `every` until stopped, in a child process of their
/// own (`loadgen host during`): at the stack's priority, and with their
/// CPU shown as its own process (`host-probe`) rather than billed to the
/// generator, whose cost a press it would otherwise inflate by a few
/// per cent.
pub struct DuringProbes {
    child: std::process::Child,
    reader: std::thread::JoinHandle<Vec<(Instant, Timings)>>,
}

/// The child's process name in samples and cost tables.
pub const DURING_PROCESS: &str = "host-probe";

impl DuringProbes {
    pub fn start(every: Duration) -> anyhow::Result<DuringProbes> {
        let exe = std::env::current_exe().context("the host probe: this program's path")?;
        let mut child = std::process::Command::new(exe)
            .args(["host", "during", "--every-ms"])
            .arg(every.as_millis().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the host probe (`loadgen host during`)")?;
        let stdout = child.stdout.take().context("the host probe's output")?;
        let reader = std::thread::Builder::new()
            .name("host-probe-reader".into())
            .spawn(move || {
                let mut out = Vec::new();
                for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                    let Ok(line) = line else { break };
                    let arrived = Instant::now();
                    if let Ok(t) = serde_json::from_str::<Timings>(&line) {
                        // Stamped when it began: its answer came at its end.
                        let took =
                            Duration::from_secs_f64((t.cpu_ms + t.memory_ms + t.loopback_ms) / 1e3);
                        out.push((arrived.checked_sub(took).unwrap_or(arrived), t));
                    }
                }
                out
            })
            .context("spawning the host probe's reader")?;
        Ok(DuringProbes { child, reader })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the child (its input closes) and returns each probe with
    /// when it started.
    pub fn finish(mut self) -> Vec<(Instant, Timings)> {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        self.reader.join().unwrap_or_default()
    }
}

/// The child's loop: a light probe every `every`, one JSON line each on
/// stdout, until stdin closes (the run ended, or died).
pub fn during(every: Duration) -> anyhow::Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut buffers = Probe::Light.buffers();
    let mut stdout = std::io::stdout().lock();
    let mut next = Instant::now() + every;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if Instant::now() >= next {
            let t = Probe::Light.run_in(&mut buffers)?;
            if writeln!(stdout, "{}", serde_json::to_string(&t)?)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break;
            }
            next += every;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(cpu: f64, memory: f64, loopback: f64) -> Timings {
        Timings {
            cpu_ms: cpu,
            memory_ms: memory,
            loopback_ms: loopback,
        }
    }

    #[test]
    fn the_index_is_the_weighted_geometric_mean_of_each_parts_speed() {
        let reference = t(100.0, 20.0, 10.0);
        let same = Index::of(&reference, &reference);
        assert!((same.index - 1.0).abs() < 1e-12);
        // Everything took twice as long: half the speed.
        let slow = Index::of(&t(200.0, 40.0, 20.0), &reference);
        assert!((slow.index - 0.5).abs() < 1e-12);
        // Only the CPU part, 1.5x as long: cpu 0.667, the index its root.
        let quota = Index::of(&t(150.0, 20.0, 10.0), &reference);
        assert!((quota.cpu - 2.0 / 3.0).abs() < 1e-12);
        assert!((quota.index - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_runs_index_is_the_geometric_mean_of_before_and_after() {
        let reference = Reference {
            kind: "k".into(),
            cpu_model: None,
            cores: 2,
            build_profile: "release".into(),
            full: t(100.0, 20.0, 10.0),
            light: t(10.0, 5.0, 2.0),
            probes: 5,
            taken_at: String::new(),
            git_commit: None,
            spread: vec![],
        };
        let mut report = HostReport::new(
            Some((&reference, "host/k.json".into())),
            Some(t(100.0, 20.0, 10.0)),
        );
        assert_eq!(report.index, Some(1.0));
        report.finish(Some(&reference), Some(t(400.0, 80.0, 40.0)));
        assert_eq!(report.index, Some(0.5));
        report.during = vec![
            DuringProbe {
                at_s: 1.0,
                timings: t(10.0, 5.0, 2.0),
                index: Some(0.9),
            },
            DuringProbe {
                at_s: 6.0,
                timings: t(10.0, 5.0, 2.0),
                index: Some(0.5),
            },
            DuringProbe {
                at_s: 11.0,
                timings: t(10.0, 5.0, 2.0),
                index: Some(0.7),
            },
        ];
        assert_eq!(report.during_index(0.0, 20.0), Some(0.7));
        assert_eq!(report.during_index(5.0, 10.0), Some(0.5));
        assert_eq!(report.during_index(20.0, 30.0), None);
        let none = HostReport::new(None, Some(t(1.0, 1.0, 1.0)));
        assert_eq!(none.index, None);
        assert!(none.describe().contains("calibrate"));
    }

    #[test]
    fn a_probe_does_its_work_and_times_it() {
        let t = Probe::Light.run().unwrap();
        assert!(
            t.cpu_ms > 0.0 && t.memory_ms > 0.0 && t.loopback_ms > 0.0,
            "{t:?}"
        );
    }
}
