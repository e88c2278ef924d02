//! The observe stage's sampler: once a second during a run, throughput
//! (planned, sent, accepted), latency of the last second, how late the
//! generator started its sends, the binaries' own metrics (lag, batch
//! sizes, database time, SSE clients), CPU and memory of every process of
//! the stack and of the load generator itself, and the machine's CPU split
//! (user, system, iowait, steal, and what processes outside the run used).
//!
//! Rows are kept in memory as [`Row`]s for judging and written to
//! `timeseries.csv` as they come; [`read_columns`] reads a stored file back
//! for charts.

use crate::measure::Percentiles;
use crate::recorder::Recorder;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The load generator's name among the sampled processes.
pub const LOADGEN: &str = "loadgen";

/// One process's second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// CPU used in this second, % of one core.
    pub cpu_pct: f64,
    /// The system (kernel) part of it.
    pub sys_pct: f64,
    /// CPU seconds used in this second.
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub pss_kib: Option<u64>,
    pub fds: Option<u64>,
}

/// The machine's CPU in one second, % of all its cores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineSample {
    pub user_pct: f64,
    pub system_pct: f64,
    pub iowait_pct: f64,
    pub steal_pct: f64,
    pub idle_pct: f64,
    /// User and system time of processes that are neither the stack nor
    /// the load generator.
    pub foreign_pct: f64,
}

/// One second of a run: the second (t_s - 1, t_s] after the load started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub t_s: f64,
    pub planned: u64,
    pub sent: u64,
    pub accepted: u64,
    pub errors: u64,
    pub schedule_lag_p99_ms: f64,
    pub schedule_lag_max_ms: f64,
    pub press: Percentiles,
    pub press_to_sse: Percentiles,
    pub fanout: Percentiles,
    pub lag: Option<f64>,
    pub batch_size_avg: f64,
    pub db_write_ms_avg: f64,
    pub sse_clients: f64,
    pub machine: Option<MachineSample>,
    pub processes: BTreeMap<String, ProcessSample>,
}

impl Row {
    fn csv_header(processes: &[String]) -> String {
        let mut header = "t_s,planned_per_s,sent_per_s,accepted_per_s,errors_per_s,schedule_lag_p99_ms,schedule_lag_max_ms,press_p50_ms,press_p99_ms,press_to_sse_p50_ms,press_to_sse_p99_ms,fanout_p99_ms,lag,batch_size_avg,db_write_ms_avg,sse_clients,machine_user_pct,machine_system_pct,machine_iowait_pct,machine_steal_pct,machine_idle_pct,foreign_pct".to_owned();
        for c in processes {
            header.push_str(&format!(
                ",{c}_cpu_pct,{c}_sys_pct,{c}_rss_kib,{c}_pss_kib,{c}_fds"
            ));
        }
        header
    }

    fn csv(&self, processes: &[String]) -> String {
        let opt =
            |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
        let m = self.machine;
        let mut row = format!(
            "{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{:.1},{:.3},{},{},{},{},{},{},{}",
            self.t_s,
            self.planned,
            self.sent,
            self.accepted,
            self.errors,
            self.schedule_lag_p99_ms,
            self.schedule_lag_max_ms,
            self.press.p50_ms,
            self.press.p99_ms,
            self.press_to_sse.p50_ms,
            self.press_to_sse.p99_ms,
            self.fanout.p99_ms,
            self.lag.map_or(String::new(), |l| format!("{l}")),
            self.batch_size_avg,
            self.db_write_ms_avg,
            self.sse_clients,
            opt(m.map(|m| m.user_pct), 1),
            opt(m.map(|m| m.system_pct), 1),
            opt(m.map(|m| m.iowait_pct), 1),
            opt(m.map(|m| m.steal_pct), 1),
            opt(m.map(|m| m.idle_pct), 1),
            opt(m.map(|m| m.foreign_pct), 1),
        );
        for c in processes {
            let u = self.processes.get(c);
            row.push_str(&format!(
                ",{},{},{},{},{}",
                opt(u.map(|u| u.cpu_pct), 1),
                opt(u.map(|u| u.sys_pct), 1),
                u.map_or(String::new(), |u| u.rss_kib.to_string()),
                u.and_then(|u| u.pss_kib)
                    .map_or(String::new(), |v| v.to_string()),
                u.and_then(|u| u.fds)
                    .map_or(String::new(), |v| v.to_string()),
            ));
        }
        row
    }
}

/// `timeseries.csv` read back by column name (charts, SCALE.md). Empty
/// cells read as NaN; a missing file reads as no columns.
pub fn read_columns(path: &Path) -> BTreeMap<String, Vec<f64>> {
    let mut columns = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return columns;
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return columns;
    };
    let names: Vec<&str> = header.split(',').collect();
    for line in lines {
        for (name, cell) in names.iter().zip(line.split(',')) {
            columns
                .entry((*name).to_owned())
                .or_insert_with(Vec::new)
                .push(cell.parse().unwrap_or(f64::NAN));
        }
    }
    columns
}

/// What the sampler reads besides the recorder.
pub struct Sources {
    /// Every reducer: lag, batches and database time are summed over them.
    pub reducer_urls: Vec<String>,
    pub service_url: String,
    /// Outbox relays (ingest `outbox`): their backlog is part of the lag.
    pub relay_urls: Vec<String>,
    /// The stack's processes by name, as they are now (a restarted
    /// component has a new pid).
    pub pids: Box<dyn Fn() -> BTreeMap<String, u32> + Send + Sync>,
    /// Where the lag of a partition no reducer reads is found (ingest
    /// `kafka` and `outbox`); `None` when the topic cannot be reached.
    pub topic: Option<TopicSource>,
}

/// A topic the reducers read, and the database holding their offsets.
pub struct TopicSource {
    pub brokers: String,
    pub topic: String,
    pub database_url: String,
}

/// The lag of the partitions no reducer reports holding: each one's high
/// watermark against the offset PostgreSQL's newest snapshot applied. A
/// reducer reports only the partitions it reads, so without this a
/// partition orphaned by a dead or frozen member, or every partition while
/// the only reducer is down, would show no lag at all.
struct OrphanLag {
    source: TopicSource,
    watermarks: Option<crate::topic::Watermarks>,
    pool: Option<sqlx::PgPool>,
}

impl OrphanLag {
    /// Bounds every read: the sampler must not stall on a frozen broker or
    /// database.
    const WAIT: Duration = Duration::from_millis(500);

    fn new(source: TopicSource) -> Self {
        OrphanLag {
            source,
            watermarks: None,
            pool: None,
        }
    }

    /// `None` when it cannot be read this second.
    async fn lag(&mut self, held: &std::collections::BTreeSet<i32>) -> Option<f64> {
        tokio::time::timeout(Self::WAIT * 2, self.read(held))
            .await
            .ok()
            .flatten()
    }

    async fn read(&mut self, held: &std::collections::BTreeSet<i32>) -> Option<f64> {
        if self.watermarks.is_none() {
            self.watermarks = crate::topic::Watermarks::open(
                &self.source.brokers,
                &self.source.topic,
                Self::WAIT,
            )
            .await
            .ok();
        }
        let watermarks = self.watermarks.as_ref()?;
        let orphans: Vec<i32> = watermarks
            .partitions
            .iter()
            .copied()
            .filter(|p| !held.contains(p))
            .collect();
        if orphans.is_empty() {
            return Some(0.0);
        }
        let high = watermarks.read(&orphans, Self::WAIT).await.ok()?;
        if self.pool.is_none() {
            self.pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Self::WAIT)
                .connect(&self.source.database_url)
                .await
                .ok();
        }
        let newest = button_store::latest_snapshot(self.pool.as_ref()?)
            .await
            .ok()?;
        Some(orphan_lag(
            &high,
            &newest.map(|s| s.offsets).unwrap_or_default(),
        ))
    }
}

/// Records past the applied offset of each partition in `high`.
fn orphan_lag(high: &BTreeMap<i32, i64>, applied: &BTreeMap<i32, i64>) -> f64 {
    high.iter()
        .map(|(p, &hw)| (hw - applied.get(p).map_or(0, |o| o + 1)).max(0) as f64)
        .sum()
}

/// The partitions some reducer reports reading (`reducer_partition_held`
/// at 1) on `page`.
fn held_partitions(page: &str) -> std::collections::BTreeSet<i32> {
    page.lines()
        .filter_map(|line| line.strip_prefix("reducer_partition_held{"))
        .filter(|rest| rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0))
        .filter_map(|rest| {
            let (_, after) = rest.split_once("partition=\"")?;
            after.split_once('"')?.0.parse().ok()
        })
        .collect()
}

/// The sampler's result: every row, and the peak consumer lag.
pub struct Sampled {
    pub rows: Vec<Row>,
    pub lag_peak: f64,
}

/// Samples once a second until `stop`, writing each row to `csv_path` as
/// it comes.
pub async fn sample_loop(
    recorder: Arc<Recorder>,
    sources: Sources,
    csv_path: std::path::PathBuf,
    progress: indicatif::ProgressBar,
    stop: button_infra::CancellationToken,
) -> anyhow::Result<Sampled> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let mut processes: Vec<String> = (sources.pids)().into_keys().collect();
    processes.push(LOADGEN.to_owned());
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path)?);
    writeln!(csv, "{}", Row::csv_header(&processes))?;
    let own_pid = std::process::id();
    let mut ticker = tokio::time::interval_at(
        (recorder.start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let (mut last_sent, mut last_accepted, mut last_errors, mut last_planned) = (0, 0, 0, 0);
    let (mut last_batches, mut last_records, mut last_db_sum, mut last_db_count) =
        (0.0, 0.0, 0.0, 0.0);
    // Readings before the first second, so it has deltas like the rest.
    let mut last_cpu: BTreeMap<String, Usage> = (sources.pids)()
        .into_iter()
        .filter_map(|(name, pid)| Some((name, tree_usage(pid)?)))
        .chain(process_usage(own_pid).map(|u| (LOADGEN.to_owned(), u)))
        .collect();
    let mut last_stat = MachineTicks::read();
    let mut rows = Vec::new();
    let mut lag_peak: f64 = 0.0;
    let mut orphans = sources.topic.map(OrphanLag::new);
    let mut second = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        second += 1;
        let start = Duration::from_secs(second - 1);
        let one = Duration::from_secs(1);
        let press = Percentiles::of(&recorder.press.rotate(start, one));
        let p2s = Percentiles::of(&recorder.press_to_sse.rotate(start, one));
        let fan = Percentiles::of(&recorder.fanout.rotate(start, one));
        let lag_hist = Percentiles::of(&recorder.schedule_lag.rotate(start, one));
        let planned = recorder.plan.planned_by(Duration::from_secs(second));
        let sent = recorder.sent.load(Ordering::Relaxed);
        let accepted = recorder.accepted.load(Ordering::Relaxed);
        let errors = recorder.error_count();

        // CPU first, so the scrapes below do not land in this second.
        let mut now_usage = BTreeMap::new();
        let mut fds = BTreeMap::new();
        for (name, pid) in (sources.pids)() {
            if let Some(u) = tree_usage(pid) {
                now_usage.insert(name.clone(), u);
                if let Some(n) = tree_open_fds(pid) {
                    fds.insert(name, n);
                }
            }
        }
        if let Some(u) = process_usage(own_pid) {
            now_usage.insert(LOADGEN.to_owned(), u);
            if let Some(n) = open_fds(own_pid) {
                fds.insert(LOADGEN.to_owned(), n);
            }
        }
        let stat = MachineTicks::read();
        let mut samples = BTreeMap::new();
        let mut ours_s = 0.0;
        for (name, u) in &now_usage {
            // A restarted component's counters start again from zero; a
            // component new this second counts from zero.
            let before = last_cpu.get(name).filter(|b| b.cpu_s <= u.cpu_s);
            let cpu_s = before.map_or(u.cpu_s, |b| u.cpu_s - b.cpu_s);
            let sys_s = before.map_or(u.sys_s, |b| (u.sys_s - b.sys_s).max(0.0));
            ours_s += cpu_s;
            samples.insert(
                name.clone(),
                ProcessSample {
                    cpu_pct: cpu_s * 100.0,
                    sys_pct: sys_s * 100.0,
                    cpu_s,
                    rss_kib: u.rss_kib,
                    pss_kib: u.pss_kib,
                    fds: fds.get(name).copied(),
                },
            );
        }
        let machine = last_stat
            .zip(stat)
            .map(|(before, after)| MachineTicks::split(&before, &after, ours_s));
        last_cpu = now_usage;
        last_stat = stat;

        // One page of every reducer's samples: sums add up across members
        // (each reports lag only for the partitions it reads).
        let mut reducer: Option<String> = None;
        for url in &sources.reducer_urls {
            if let Some(page) = scrape(&http, url).await {
                let all = reducer.get_or_insert_with(String::new);
                all.push_str(&page);
                all.push('\n');
            }
        }
        let service = scrape(&http, &sources.service_url).await;
        let mut lag = reducer
            .as_deref()
            .and_then(|p| metric_sum(p, "reducer_consumer_lag"));
        if let Some(orphans) = orphans.as_mut()
            && let Some(more) = orphans
                .lag(&held_partitions(reducer.as_deref().unwrap_or_default()))
                .await
        {
            lag = Some(lag.unwrap_or(0.0) + more);
        }
        // Presses the relays have not kept up with are lag the topic does
        // not show yet. Only rows pending for over a second count: at any
        // rate some rows are always in the relay's hands for a few ms, and
        // counting those would keep the lag (and so recovery) off zero.
        // Every relay reads the one table: the largest reading counts.
        let mut outbox: Option<f64> = None;
        for url in &sources.relay_urls {
            if let Some(pending) = scrape(&http, url)
                .await
                .as_deref()
                .and_then(|p| metric_sum(p, "relay_outbox_overdue"))
            {
                outbox = Some(outbox.unwrap_or(0.0).max(pending));
            }
        }
        if let Some(pending) = outbox {
            lag = Some(lag.unwrap_or(0.0) + pending);
        }
        lag_peak = lag_peak.max(lag.unwrap_or(0.0));
        let reducer_sum = |name: &str, last: f64| {
            reducer
                .as_deref()
                .and_then(|p| metric_sum(p, name))
                .unwrap_or(last)
        };
        let batches = reducer_sum("reducer_batch_size_count", last_batches);
        let records = reducer_sum("reducer_batch_size_sum", last_records);
        let db_sum = reducer
            .as_deref()
            .and_then(|p| db_stage(p, "sum"))
            .unwrap_or(last_db_sum);
        let db_count = reducer
            .as_deref()
            .and_then(|p| db_stage(p, "count"))
            .unwrap_or(last_db_count);
        let row = Row {
            t_s: second as f64,
            planned: planned - last_planned,
            sent: sent - last_sent,
            accepted: accepted - last_accepted,
            errors: errors - last_errors,
            schedule_lag_p99_ms: lag_hist.p99_ms,
            schedule_lag_max_ms: lag_hist.max_ms,
            press,
            press_to_sse: p2s,
            fanout: fan,
            lag,
            batch_size_avg: if batches > last_batches {
                (records - last_records) / (batches - last_batches)
            } else {
                0.0
            },
            db_write_ms_avg: if db_count > last_db_count {
                (db_sum - last_db_sum) / (db_count - last_db_count) * 1000.0
            } else {
                0.0
            },
            sse_clients: service
                .as_deref()
                .and_then(|p| metric_sum(p, "service_sse_clients"))
                .unwrap_or(0.0),
            machine,
            processes: samples,
        };
        (last_batches, last_records, last_db_sum, last_db_count) =
            (batches, records, db_sum, db_count);
        writeln!(csv, "{}", row.csv(&processes))?;
        progress.set_position(second);
        progress.set_message(format!(
            "{}/s ok {} err  press p99 {:.1} ms  to SSE p99 {:.1} ms  lag {}  send lag p99 {:.1} ms",
            row.accepted,
            row.errors,
            row.press.p99_ms,
            row.press_to_sse.p99_ms,
            lag.map_or("?".to_owned(), |l| format!("{l}")),
            row.schedule_lag_p99_ms,
        ));
        (last_sent, last_accepted, last_errors, last_planned) = (sent, accepted, errors, planned);
        rows.push(row);
    }
    csv.flush()?;
    Ok(Sampled { rows, lag_peak })
}

/// Summed over the pages joined in `page` (one per reducer).
fn db_stage(page: &str, what: &str) -> Option<f64> {
    let prefix = format!("reducer_stage_duration_seconds_{what}{{stage=\"db\"}}");
    page.lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

async fn scrape(http: &reqwest::Client, base: &str) -> Option<String> {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The machine's CPU counters (`/proc/stat`, first line), in ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineTicks {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

impl MachineTicks {
    pub fn read() -> Option<MachineTicks> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    pub fn parse(stat: &str) -> Option<MachineTicks> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        Some(MachineTicks {
            user: *v.first()?,
            nice: *v.get(1)?,
            system: *v.get(2)?,
            idle: *v.get(3)?,
            iowait: *v.get(4)?,
            irq: *v.get(5)?,
            softirq: *v.get(6)?,
            steal: v.get(7).copied().unwrap_or(0),
        })
    }

    fn total(&self) -> u64 {
        // guest time is already inside user.
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }

    /// The split between two readings; `ours_s` is the CPU seconds the
    /// sampled processes used meanwhile.
    pub fn split(before: &MachineTicks, after: &MachineTicks, ours_s: f64) -> MachineSample {
        let total = after.total().saturating_sub(before.total()).max(1) as f64;
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
        let pct = |ticks: f64| ticks / total * 100.0;
        let user = d(after.user, before.user) + d(after.nice, before.nice);
        let system = d(after.system, before.system)
            + d(after.irq, before.irq)
            + d(after.softirq, before.softirq);
        // USER_HZ is 100 on Linux. Interrupt time is left out of the
        // foreign share: loopback traffic's softirq work is the run's own.
        let process_ticks = user + d(after.system, before.system);
        MachineSample {
            user_pct: pct(user),
            system_pct: pct(system),
            iowait_pct: pct(d(after.iowait, before.iowait)),
            steal_pct: pct(d(after.steal, before.steal)),
            idle_pct: pct(d(after.idle, before.idle)),
            foreign_pct: pct((process_ticks - ours_s * 100.0).max(0.0)),
        }
    }
}

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
    /// The system part of `cpu_s`.
    pub sys_s: f64,
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
    let user_ticks: f64 = fields.get(11)?.parse().ok()?;
    let sys_ticks: f64 = fields.get(12)?.parse().ok()?;
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
        cpu_s: (user_ticks + sys_ticks) / 100.0,
        sys_s: sys_ticks / 100.0,
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
            total.sys_s += u.sys_s;
            total.rss_kib += u.rss_kib;
            total.pss_kib = total.pss_kib.zip(u.pss_kib).map(|(a, b)| a + b);
        }
    }
    Some(total)
}

/// Processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_split_separates_steal_and_what_other_processes_used() {
        let before =
            MachineTicks::parse("cpu  1000 0 500 8000 10 0 0 0 0 0\ncpu0 1 2 3\n").expect("parses");
        // 200 ticks in the second (two cores): 60 user, 40 system, 80
        // idle, 4 iowait, 16 steal.
        let after = MachineTicks::parse("cpu  1060 0 540 8080 14 0 0 16 0 0\n").expect("parses");
        // The sampled processes used 0.7 s of the 1.0 s of user+system.
        let m = MachineTicks::split(&before, &after, 0.7);
        assert!((m.user_pct - 30.0).abs() < 1e-9, "{m:?}");
        assert!((m.system_pct - 20.0).abs() < 1e-9, "{m:?}");
        assert!((m.idle_pct - 40.0).abs() < 1e-9, "{m:?}");
        assert!((m.iowait_pct - 2.0).abs() < 1e-9, "{m:?}");
        assert!((m.steal_pct - 8.0).abs() < 1e-9, "{m:?}");
        assert!((m.foreign_pct - 15.0).abs() < 1e-9, "{m:?}");
        // Never negative when the processes' clocks run ahead of /proc/stat.
        assert_eq!(MachineTicks::split(&before, &after, 5.0).foreign_pct, 0.0);
        assert!(MachineTicks::read().is_some(), "this machine's /proc/stat");
    }

    #[test]
    fn a_row_is_written_and_read_back_by_column_name() {
        let processes = vec!["service-0".to_owned(), LOADGEN.to_owned()];
        let mut row = Row {
            t_s: 3.0,
            planned: 100,
            sent: 99,
            accepted: 98,
            schedule_lag_p99_ms: 1.5,
            machine: Some(MachineSample {
                steal_pct: 2.5,
                ..MachineSample::default()
            }),
            ..Row::default()
        };
        row.processes.insert(
            LOADGEN.to_owned(),
            ProcessSample {
                cpu_pct: 42.0,
                rss_kib: 1234,
                ..ProcessSample::default()
            },
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("timeseries.csv");
        std::fs::write(
            &path,
            format!("{}\n{}\n", Row::csv_header(&processes), row.csv(&processes)),
        )
        .expect("written");
        let columns = read_columns(&path);
        assert_eq!(columns["planned_per_s"], vec![100.0]);
        assert_eq!(columns["sent_per_s"], vec![99.0]);
        assert_eq!(columns["machine_steal_pct"], vec![2.5]);
        assert_eq!(columns["loadgen_cpu_pct"], vec![42.0]);
        assert_eq!(columns["loadgen_rss_kib"], vec![1234.0]);
        assert!(
            columns["service-0_cpu_pct"][0].is_nan(),
            "not sampled: empty"
        );
    }

    #[test]
    fn sums_labelled_samples_and_ignores_prefixes() {
        let page = "# TYPE reducer_consumer_lag gauge\nreducer_consumer_lag{partition=\"0\"} 3\nreducer_consumer_lag{partition=\"1\"} 4\nreducer_consumer_lag_total 7\n";
        assert_eq!(metric_sum(page, "reducer_consumer_lag"), Some(7.0));
        assert_eq!(metric_sum(page, "absent"), None);
    }

    #[test]
    fn a_partition_is_held_when_some_member_reports_it_at_one() {
        // Two members' pages, one after the other: 0 and 3 are held, 1 by
        // nobody (reported at 0 by both), 2 by no member that answered.
        let pages = "# TYPE reducer_partition_held gauge\n\
            reducer_partition_held{partition=\"0\"} 1\n\
            reducer_partition_held{partition=\"1\"} 0\n\
            reducer_partition_held{instance=\"b\",partition=\"3\"} 1\n\
            reducer_partition_held{partition=\"1\"} 0\n\
            reducer_partition_held_total 9\n";
        assert_eq!(
            held_partitions(pages).into_iter().collect::<Vec<_>>(),
            vec![0, 3]
        );
        assert!(held_partitions("").is_empty());
    }

    #[test]
    fn orphan_lag_counts_records_past_each_applied_offset() {
        let high = BTreeMap::from([(0, 10), (1, 5), (2, 7)]);
        // Partition 0 applied through 9 (nothing left), 1 through 2 (two
        // left), 2 never (all seven).
        let applied = BTreeMap::from([(0, 9), (1, 2), (5, 100)]);
        assert_eq!(orphan_lag(&high, &applied), 9.0);
        // A snapshot ahead of a stale watermark is no negative lag.
        assert_eq!(orphan_lag(&BTreeMap::from([(0, 3)]), &applied), 0.0);
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
