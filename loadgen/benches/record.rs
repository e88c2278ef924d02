//! The load generator's own cost per measured press: recording a latency
//! in an HdrHistogram series (two histograms behind a mutex), and the whole
//! bookkeeping of one press in the recorder (its send against the plan,
//! its answer's latency, its 202 kept for the verdict and matched against
//! the state that covers it), which every press of a run goes through.

use button_client::Accepted;
use button_domain::Snapshot;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loadgen::measure::Series;
use loadgen::recorder::Recorder;
use loadgen::schedule::Plan;
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

/// 1,024 presses through the recorder, then the state that covers them.
fn per_press(c: &mut Criterion) {
    let plan = Plan::steady(20_000.0, Duration::from_secs(3600));
    let accepted: Vec<Accepted> = (0..1024i64)
        .map(|i| Accepted {
            request_id: format!("0191f3b2-7c1e-7000-8000-{i:012x}"),
            partition: Some((i % 2) as i32),
            offset: Some(i),
            outbox_id: None,
            accepted_at_ms: 0,
        })
        .collect();
    let mut state = Snapshot::genesis("bench".into());
    let mut group = c.benchmark_group("generator");
    group.throughput(Throughput::Elements(accepted.len() as u64));
    group.bench_function("press_bookkeeping_1024", |b| {
        // A fresh recorder per batch, so kept 202s do not pile up.
        b.iter_batched(
            || Recorder::new(plan.clone(), std::time::Instant::now()),
            |recorder| {
                let due = std::time::Instant::now();
                for a in &accepted {
                    recorder.sending(0, due, due);
                    recorder.answered(0, due);
                    recorder.accept(black_box(a), due, 0);
                }
                state.offsets = [(0, 1023), (1, 1023)].into();
                recorder.on_tracked_state(&state);
                recorder
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, record, per_press);
criterion_main!(benches);
