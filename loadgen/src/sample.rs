//! Once a second during a run: throughput, latency of the last second, the
//! binaries' own metrics (lag, batch sizes, database time, SSE clients) and
//! CPU and memory of every process of the stack.

use std::collections::BTreeMap;

/// Sums every sample of `name` (any labels) in a Prometheus text page.
pub fn metric_sum(page: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// CPU time and memory of a process or a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User and system CPU time, seconds.
    pub cpu_s: f64,
    /// Resident memory, KiB. Summed over a tree it counts shared pages (a
    /// PostgreSQL backend's view of shared buffers) once per process.
    pub rss_kib: u64,
    /// Proportional set size, KiB: each shared page divided among the
    /// processes that map it, so a tree's sum is what it really holds.
    pub pss_kib: Option<u64>,
}

/// CPU time and memory of a process.
pub fn process_usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |text: &str, field: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    let rss_kib = kib(&status, "VmRSS:")?;
    let pss_kib = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|rollup| kib(&rollup, "Pss:"));
    // USER_HZ is 100 on Linux.
    Some(Usage {
        cpu_s: ticks / 100.0,
        rss_kib,
        pss_kib,
    })
}

/// Open file descriptors of a process (sockets included).
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Open file descriptors of a process and its direct children.
pub fn tree_open_fds(pid: u32) -> Option<u64> {
    let mut total = open_fds(pid)?;
    for child in children(pid) {
        total += open_fds(child).unwrap_or(0);
    }
    Some(total)
}

/// CPU time and memory of a process and its direct children (PostgreSQL's
/// backends are children of the postmaster).
pub fn tree_usage(pid: u32) -> Option<Usage> {
    let mut total = process_usage(pid)?;
    for child in children(pid) {
        if let Some(u) = process_usage(child) {
            total.cpu_s += u.cpu_s;
            total.rss_kib += u.rss_kib;
            total.pss_kib = total.pss_kib.zip(u.pss_kib).map(|(a, b)| a + b);
        }
    }
    Some(total)
}

/// Processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                })
                == Some(pid)
        })
        .collect()
}

/// CPU use between two readings, per component, in percent of one core.
pub fn cpu_percent(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    seconds: f64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, a)| {
            before
                .get(k)
                .map(|b| (k.clone(), ((a - b) / seconds * 100.0).max(0.0)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_labelled_samples_and_ignores_prefixes() {
        let page = "# TYPE reducer_consumer_lag gauge\nreducer_consumer_lag{partition=\"0\"} 3\nreducer_consumer_lag{partition=\"1\"} 4\nreducer_consumer_lag_total 7\n";
        assert_eq!(metric_sum(page, "reducer_consumer_lag"), Some(7.0));
        assert_eq!(metric_sum(page, "absent"), None);
    }

    #[test]
    fn counts_this_process_open_files() {
        let before = open_fds(std::process::id()).expect("own process");
        let _file = std::fs::File::open("/proc/self/stat").expect("a file");
        assert!(open_fds(std::process::id()).expect("own process") > before);
    }

    #[test]
    fn reads_this_process() {
        let u = process_usage(std::process::id()).expect("own process");
        assert!(u.cpu_s >= 0.0 && u.rss_kib > 0);
        let pss = u.pss_kib.expect("smaps_rollup");
        assert!(pss > 0 && pss <= u.rss_kib + 1024, "{u:?}");
    }

    #[test]
    fn a_tree_counts_shared_pages_once_in_pss() {
        // A child sharing its parent's pages: summed RSS counts them twice,
        // summed PSS once.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let parent = std::process::id();
        let alone = process_usage(parent).expect("own process");
        let tree = tree_usage(parent).expect("tree");
        let _ = child.kill();
        let _ = child.wait();
        assert!(tree.rss_kib > alone.rss_kib, "{tree:?} {alone:?}");
        assert!(tree.pss_kib.is_some());
    }
}
