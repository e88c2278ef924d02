//! The load generator's own cost per measured press: recording a latency
//! in an HdrHistogram series (two histograms behind a mutex), which every
//! goose user does once per request.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loadgen::measure::Series;
use std::hint::black_box;
use std::time::Duration;

fn record(c: &mut Criterion) {
    let series = Series::new("press");
    let latencies: Vec<Duration> = (0..1024u64)
        .map(|i| Duration::from_micros(500 + (i * 7919) % 250_000))
        .collect();
    let mut group = c.benchmark_group("hdr_series");
    group.throughput(Throughput::Elements(latencies.len() as u64));
    group.bench_function("record_1024", |b| {
        b.iter(|| {
            for l in &latencies {
                series.record(black_box(*l));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
