//! Latency recording: one HdrHistogram per measured latency (µs, 3
//! significant digits) for the whole run, plus one per second, written as a
//! standard HdrHistogram interval log (V2, compressed) and a `.hgrm`
//! percentile table that other HdrHistogram tools read.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
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
}

impl Series {
    pub fn new(name: &'static str) -> Series {
        Series {
            name,
            inner: Mutex::new(Inner {
                total: new_histogram(),
                current: new_histogram(),
                intervals: Vec::new(),
            }),
        }
    }

    pub fn record(&self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, HIGHEST_US);
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.total.saturating_record(us);
        inner.current.saturating_record(us);
    }

    /// Closes the current interval; returns its histogram.
    pub fn rotate(&self, start: Duration, length: Duration) -> Histogram<u64> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let closed = std::mem::replace(&mut inner.current, new_histogram());
        inner.intervals.push((start, length, closed.clone()));
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
    pub fn write(&self, dir: &Path, run_start: SystemTime) -> anyhow::Result<()> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write_interval_log(
            &dir.join(format!("{}.hlog", self.name)),
            run_start,
            self.name,
            &inner.intervals,
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

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn interval_logs_round_trip() {
        let series = Series::new("press_to_sse");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for second in 0..3u64 {
            for i in 1..=100u64 {
                series.record(Duration::from_micros(i * 100 * (second + 1)));
            }
            series.rotate(Duration::from_secs(second), Duration::from_secs(1));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        series.write(dir.path(), start).expect("written");

        let bytes = std::fs::read(dir.path().join("press_to_sse.hlog")).expect("log");
        let mut deserializer = Deserializer::new();
        let mut merged = new_histogram();
        let mut intervals = 0;
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(ih) = entry.expect("parses") {
                assert_eq!(ih.tag().map(|t| t.as_str()), Some("press_to_sse"));
                let raw = base64_decode(ih.encoded_histogram());
                let h: Histogram<u64> = deserializer
                    .deserialize(&mut raw.as_slice())
                    .expect("decodes");
                assert_eq!(h.len(), 100);
                merged.add(&h).expect("same bounds");
                intervals += 1;
            }
        }
        assert_eq!(intervals, 3);
        let total = series.total();
        assert_eq!(merged.len(), total.len());
        assert_eq!(
            merged.value_at_quantile(0.99),
            total.value_at_quantile(0.99)
        );
        assert_eq!(merged.max(), total.max());

        let table = std::fs::read_to_string(dir.path().join("press_to_sse.hgrm")).expect("hgrm");
        assert!(table.contains("Total count    =          300"), "{table}");
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64")
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
