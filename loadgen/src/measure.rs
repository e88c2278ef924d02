//! Latency recording: one HdrHistogram per measured latency (µs, 3
//! significant digits) for the whole run, plus one per second, written as a
//! standard HdrHistogram interval log (V2, compressed) and a `.hgrm`
//! percentile table that other HdrHistogram tools read. Every recorded
//! value is in both: the interval log ends with the interval still open
//! when it is written (see [`Series::write`]).

use anyhow::Context;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const HIGHEST_US: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static bounds are valid")
}

/// One measured latency: whole-run and current-interval histograms.
pub struct Series {
    pub name: &'static str,
    inner: Mutex<Inner>,
}

struct Inner {
    total: Histogram<u64>,
    current: Histogram<u64>,
    /// (start offset from the run's start, length, histogram)
    intervals: Vec<(Duration, Duration, Histogram<u64>)>,
    /// End of the last closed interval: where the open one starts.
    closed_until: Duration,
}

impl Series {
    pub fn new(name: &'static str) -> Series {
        Series {
            name,
            inner: Mutex::new(Inner {
                total: new_histogram(),
                current: new_histogram(),
                intervals: Vec::new(),
                closed_until: Duration::ZERO,
            }),
        }
    }

    pub fn record(&self, latency: Duration) {
        self.record_in(latency, None);
    }

    /// Records a latency observed `at` (from the run's start) after the
    /// fact: into the closed interval holding `at`, or the open one.
    pub fn record_at(&self, latency: Duration, at: Duration) {
        self.record_in(latency, Some(at));
    }

    fn record_in(&self, latency: Duration, at: Option<Duration>) {
        let us = (latency.as_micros() as u64).clamp(1, HIGHEST_US);
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.total.saturating_record(us);
        let Some(at) = at else {
            inner.current.saturating_record(us);
            return;
        };
        let closed = inner
            .intervals
            .partition_point(|(start, _, _)| *start <= at)
            .checked_sub(1)
            .filter(|&i| {
                let (start, length, _) = &inner.intervals[i];
                at < *start + *length
            });
        match closed {
            Some(i) => inner.intervals[i].2.saturating_record(us),
            None => inner.current.saturating_record(us),
        }
    }

    /// Closes the current interval, `start..start + length` from the run's
    /// start; returns its histogram. The next interval starts where this
    /// one ends.
    pub fn rotate(&self, start: Duration, length: Duration) -> Histogram<u64> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let closed = std::mem::replace(&mut inner.current, new_histogram());
        inner.intervals.push((start, length, closed.clone()));
        inner.closed_until = start + length;
        closed
    }

    pub fn total(&self) -> Histogram<u64> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .total
            .clone()
    }

    /// Writes `<name>.hlog` (interval log) and `<name>.hgrm` (percentiles).
    ///
    /// `end` is the end of the measurement as an offset from the run's
    /// start (the same clock as `rotate`'s offsets). The log holds every
    /// closed interval and then a last one from the end of the last closed
    /// interval to `end` with everything recorded since (the last partial
    /// second, the drain), so its values add up to the total's. That last
    /// interval is written, not closed: writing again gives the same
    /// files, and values recorded later go into the next write.
    pub fn write(&self, dir: &Path, run_start: SystemTime, end: Duration) -> anyhow::Result<()> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut intervals = inner.intervals.clone();
        // An empty last interval is kept when it has a length, so the log
        // covers the run up to `end` as the per-second ones do.
        if !inner.current.is_empty() || end > inner.closed_until {
            intervals.push((
                inner.closed_until,
                end.saturating_sub(inner.closed_until),
                inner.current.clone(),
            ));
        }
        write_interval_log(
            &dir.join(format!("{}.hlog", self.name)),
            run_start,
            self.name,
            &intervals,
        )?;
        std::fs::write(
            dir.join(format!("{}.hgrm", self.name)),
            percentile_table(&inner.total),
        )?;
        Ok(())
    }
}

pub fn write_interval_log(
    path: &Path,
    run_start: SystemTime,
    tag: &str,
    intervals: &[(Duration, Duration, Histogram<u64>)],
) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!("The Button lab: {tag} latency in microseconds"))
            .with_start_time(run_start)
            .with_base_time(run_start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut file, &mut serializer)?;
        let tag = Tag::new(tag).ok_or_else(|| anyhow::anyhow!("invalid tag {tag}"))?;
        for (start, length, h) in intervals {
            log.write_histogram(h, *start, *length, Some(tag))?;
        }
    }
    file.flush()?;
    Ok(())
}

/// The number of values in an interval log: the sum of its intervals'
/// counts, whatever their tags.
pub fn interval_log_count(path: &Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut deserializer = Deserializer::new();
    let mut count = 0u64;
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry
            .map_err(|e| anyhow::anyhow!("{}: unreadable log line ({e:?})", path.display()))?;
        if let LogEntry::Interval(interval) = entry {
            let raw = base64_decode(interval.encoded_histogram())
                .with_context(|| format!("{}: an interval's histogram", path.display()))?;
            let h: Histogram<u64> = deserializer
                .deserialize(&mut raw.as_slice())
                .with_context(|| format!("{}: decoding an interval's histogram", path.display()))?;
            count += h.len();
        }
    }
    Ok(count)
}

/// Standard base64 with padding, as interval logs encode histograms
/// (hdrhistogram leaves the decoding to its caller).
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let text = text.trim().as_bytes();
    if !text.len().is_multiple_of(4) {
        anyhow::bail!("base64 of length {} (not a multiple of 4)", text.len());
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, chunk) in text.chunks(4).enumerate() {
        let last = (i + 1) * 4 == text.len();
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            anyhow::bail!("misplaced base64 padding");
        }
        let mut word = 0u32;
        for &c in &chunk[..4 - padding] {
            let v = sextet(c).ok_or_else(|| anyhow::anyhow!("not base64: {:?}", c as char))?;
            word = (word << 6) | v;
        }
        word <<= 6 * padding as u32;
        let bytes = word.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - padding]);
    }
    Ok(out)
}

/// The classic `.hgrm` table, values in milliseconds.
pub fn percentile_table(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if h.is_empty() {
        out.push_str("#[Mean    =        0.000, StdDeviation   =        0.000]\n#[Max     =        0.000, Total count    =            0]\n");
        return out;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:14.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:12.3} {:14.12} {:10} {}\n",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration(),
            inv
        ));
    }
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len(),
        h.buckets(),
        h.distinct_values()
    ));
    out
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// The 95% confidence interval of p99 from the count alone: the
    /// values at the ranks n·0.99 ∓ 1.96·√(n·0.99·0.01) (order
    /// statistics, no assumption about the distribution). A step of 10 s
    /// at 1,000/s has 100 presses above its p99; at 100/s, ten.
    #[serde(default)]
    pub p99_low_ms: f64,
    #[serde(default)]
    pub p99_high_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
            p99_low_ms: ms(h.value_at_quantile(quantile_bound(h.len(), 0.99, -1.96))),
            p99_high_ms: ms(h.value_at_quantile(quantile_bound(h.len(), 0.99, 1.96))),
        }
    }
}

/// The quantile whose rank is `z` standard errors from `q`'s among `n`
/// values (the binomial's normal approximation), within [0, 1].
pub fn quantile_bound(n: u64, q: f64, z: f64) -> f64 {
    if n == 0 {
        return q;
    }
    let n = n as f64;
    let rank = n * q + z * (n * q * (1.0 - q)).sqrt();
    (rank / n).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_has_an_interval_that_narrows_with_the_count() {
        let mut few = Histogram::<u64>::new(3).unwrap();
        let mut many = Histogram::<u64>::new(3).unwrap();
        // Uniform 1..=1000 ms, once and a hundred times over.
        for v in 1..=1000u64 {
            few.record(v * 1000).unwrap();
            many.record_n(v * 1000, 100).unwrap();
        }
        let (f, m) = (Percentiles::of(&few), Percentiles::of(&many));
        assert!(f.p99_low_ms < f.p99_ms && f.p99_ms < f.p99_high_ms, "{f:?}");
        // n=1000: ranks 990 ∓ 6.2: about 984 to 996 ms.
        assert!((980.0..=988.0).contains(&f.p99_low_ms), "{f:?}");
        assert!((992.0..=1000.0).contains(&f.p99_high_ms), "{f:?}");
        assert!(
            m.p99_high_ms - m.p99_low_ms < (f.p99_high_ms - f.p99_low_ms) / 5.0,
            "{m:?}"
        );
        assert_eq!(quantile_bound(0, 0.99, 1.96), 0.99);
    }

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// Every interval of a log: (start, length, histogram).
    fn read_log(path: &Path) -> Vec<(Duration, Duration, Histogram<u64>)> {
        let bytes = std::fs::read(path).expect("log");
        let mut deserializer = Deserializer::new();
        IntervalLogIterator::new(&bytes)
            .filter_map(|entry| match entry.expect("parses") {
                LogEntry::Interval(ih) => {
                    assert_eq!(ih.tag().map(|t| t.as_str()), Some("press_to_sse"));
                    let raw = base64_decode(ih.encoded_histogram()).expect("base64");
                    let h: Histogram<u64> = deserializer
                        .deserialize(&mut raw.as_slice())
                        .expect("decodes");
                    Some((ih.start_timestamp(), ih.duration(), h))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn interval_logs_round_trip() {
        let series = Series::new("press_to_sse");
        for second in 0..3u64 {
            for i in 1..=100u64 {
                series.record(Duration::from_micros(i * 100 * (second + 1)));
            }
            series.rotate(Duration::from_secs(second), Duration::from_secs(1));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        series
            .write(dir.path(), start(), Duration::from_secs(3))
            .expect("written");

        let path = dir.path().join("press_to_sse.hlog");
        let intervals = read_log(&path);
        // Nothing after the last rotate and no time either: no extra interval.
        assert_eq!(intervals.len(), 3);
        let mut merged = new_histogram();
        for (_, _, h) in &intervals {
            assert_eq!(h.len(), 100);
            merged.add(h).expect("same bounds");
        }
        let total = series.total();
        assert_eq!(merged.len(), total.len());
        assert_eq!(interval_log_count(&path).expect("counted"), 300);
        assert_eq!(
            merged.value_at_quantile(0.99),
            total.value_at_quantile(0.99)
        );
        assert_eq!(merged.max(), total.max());

        let table = std::fs::read_to_string(dir.path().join("press_to_sse.hgrm")).expect("hgrm");
        assert!(table.contains("Total count    =          300"), "{table}");
    }

    #[test]
    fn values_after_the_last_rotate_are_in_the_log() {
        let series = Series::new("press_to_sse");
        for second in 0..2u64 {
            for i in 1..=100u64 {
                series.record(Duration::from_micros(i * 100));
            }
            series.rotate(Duration::from_secs(second), Duration::from_secs(1));
        }
        // The last partial second and the drain after the sampler stopped,
        // with a slow straggler that sets the run's maximum.
        for i in 1..=37u64 {
            series.record(Duration::from_micros(i * 1000));
        }
        series.record(Duration::from_secs(9));
        let end = Duration::from_millis(2_750);
        let dir = tempfile::tempdir().expect("tempdir");
        series.write(dir.path(), start(), end).expect("written");

        let path = dir.path().join("press_to_sse.hlog");
        let intervals = read_log(&path);
        assert_eq!(intervals.len(), 3);
        let (last_start, last_length, last) = &intervals[2];
        assert_eq!(*last_start, Duration::from_secs(2));
        assert_eq!(*last_length, Duration::from_millis(750));
        assert_eq!(last.len(), 38);
        assert_eq!(last.max(), series.total().max());

        let total = series.total();
        assert_eq!(total.len(), 238);
        assert_eq!(interval_log_count(&path).expect("counted"), total.len());
        let table = std::fs::read_to_string(dir.path().join("press_to_sse.hgrm")).expect("hgrm");
        assert!(table.contains("Total count    =          238"), "{table}");

        // Writing is not closing: a second write gives the same log, and
        // values recorded since are in the next one.
        series
            .write(dir.path(), start(), end)
            .expect("written again");
        assert_eq!(interval_log_count(&path).expect("counted"), 238);
        series.record(Duration::from_millis(5));
        series
            .write(dir.path(), start(), Duration::from_secs(3))
            .expect("written later");
        assert_eq!(interval_log_count(&path).expect("counted"), 239);
    }

    #[test]
    fn a_run_without_rotate_is_one_interval() {
        // A run shorter than the sampler's first tick.
        let series = Series::new("press_to_sse");
        for i in 1..=10u64 {
            series.record(Duration::from_micros(i));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        series
            .write(dir.path(), start(), Duration::from_millis(400))
            .expect("written");
        let path = dir.path().join("press_to_sse.hlog");
        let intervals = read_log(&path);
        assert_eq!(intervals.len(), 1);
        assert_eq!(intervals[0].0, Duration::ZERO);
        assert_eq!(intervals[0].1, Duration::from_millis(400));
        assert_eq!(interval_log_count(&path).expect("counted"), 10);
    }

    #[test]
    fn an_end_short_of_the_last_rotate_loses_no_values() {
        // An end measured on a clock a little behind the sampler's.
        let series = Series::new("press_to_sse");
        series.record(Duration::from_micros(10));
        series.rotate(Duration::ZERO, Duration::from_secs(1));
        series.record(Duration::from_micros(20));
        let dir = tempfile::tempdir().expect("tempdir");
        series
            .write(dir.path(), start(), Duration::from_millis(900))
            .expect("written");
        let path = dir.path().join("press_to_sse.hlog");
        let intervals = read_log(&path);
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[1].0, Duration::from_secs(1));
        assert_eq!(intervals[1].1, Duration::ZERO);
        assert_eq!(interval_log_count(&path).expect("counted"), 2);
    }

    #[test]
    fn an_empty_series_writes_a_log_of_no_values() {
        let series = Series::new("press_to_sse");
        let dir = tempfile::tempdir().expect("tempdir");
        series
            .write(dir.path(), start(), Duration::ZERO)
            .expect("written");
        let path = dir.path().join("press_to_sse.hlog");
        assert!(read_log(&path).is_empty());
        assert_eq!(interval_log_count(&path).expect("counted"), 0);
    }

    #[test]
    fn counting_a_missing_or_broken_log_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(interval_log_count(&dir.path().join("none.hlog")).is_err());
        let broken = dir.path().join("broken.hlog");
        std::fs::write(&broken, "Tag=press,0.000,1.000,1.000,not*base64\n").expect("write");
        assert!(interval_log_count(&broken).is_err());
    }

    #[test]
    fn base64_decodes_as_the_reference_does() {
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        for len in 0..40usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 97 + len * 31) as u8).collect();
            let text = engine.encode(&data);
            assert_eq!(base64_decode(&text).expect("decodes"), data, "{text}");
        }
        assert!(base64_decode("abc").is_err());
        assert!(base64_decode("ab=c").is_err());
        assert!(base64_decode("a===").is_err());
        assert!(base64_decode("ab==abcd").is_err());
    }

    #[test]
    fn percentiles_of_empty_and_known_data() {
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).expect("in range");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!(
            (p.p50_ms - 500.0).abs() < 1.0 && (p.p99_ms - 990.0).abs() < 1.0,
            "{p:?}"
        );
    }
}
