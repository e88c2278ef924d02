//! Cost of folding presses: the reducer's hot path, without I/O.

use button_domain::{PressEvent, Ruleset, State, apply_batch};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn fold(c: &mut Criterion) {
    let rules = Ruleset::default();
    let mut group = c.benchmark_group("apply_batch");
    for size in [1usize, 100, 10_000] {
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

fn decode(c: &mut Criterion) {
    let raw = button_domain::PressRecord::new(
        "0b1c6f9e-3f7a-4a39-9a43-4c1f1f6f8e11".into(),
        "client-17".into(),
        1_700_000_000_000,
    )
    .encode();
    c.bench_function("press_record_decode", |b| {
        b.iter(|| button_domain::PressRecord::decode(Some(black_box(&raw))))
    });
}

criterion_group!(benches, fold, decode);
criterion_main!(benches);
