//! The reducer's hot path without I/O: folding presses, and the record
//! codec on the topic. `scripts/bench-gate` compares these against the
//! parent commit.

use button_domain::{PressEvent, PressRecord, Ruleset, State, apply_batch};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn fold(c: &mut Criterion) {
    let rules = Ruleset::default();
    let mut group = c.benchmark_group("apply_batch");
    for size in [1usize, 10, 100, 1_000, 10_000] {
        let events: Vec<PressEvent> = (0..size as i64)
            .map(|i| PressEvent {
                accepted_at_ms: 1_700_000_000_000 + i * 7,
                partition: (i % 4) as i32,
                offset: i,
            })
            .collect();
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &events, |b, events| {
            b.iter(|| apply_batch(black_box(State::default()), black_box(events), &rules))
        });
    }
    group.finish();
}

fn record() -> PressRecord {
    PressRecord::new(
        "0b1c6f9e-3f7a-4a39-9a43-4c1f1f6f8e11".into(),
        "c-5f2a9d0e7b1c4a83".into(),
        1_700_000_000_000,
    )
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("press_record");
    group.throughput(Throughput::Elements(1));
    let record = record();
    group.bench_function("encode", |b| b.iter(|| black_box(&record).encode()));
    let raw = record.encode();
    group.bench_function("decode", |b| {
        b.iter(|| PressRecord::decode(Some(black_box(&raw))))
    });
    group.finish();
}

criterion_group!(benches, fold, codec);
criterion_main!(benches);
