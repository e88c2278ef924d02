//! Instruction counts (callgrind, through gungraun) of the domain's hot
//! paths: the fold of a batch and the record codec. Counts are the same
//! for the same binary and input whatever else the machine does, so
//! `scripts/bench-gate ir` can compare them with the parent at a tight
//! threshold; criterion's wall-time benches (`fold.rs`) stay for what
//! counts miss.

use button_domain::{PressEvent, PressRecord, Ruleset, State, apply_batch};
use gungraun::{library_benchmark, library_benchmark_group, main};
use std::hint::black_box;

fn presses(n: i64) -> (Vec<PressEvent>, Ruleset) {
    let events = (0..n)
        .map(|i| PressEvent {
            accepted_at_ms: 1_700_000_000_000 + i * 7,
            partition: (i % 4) as i32,
            offset: i,
        })
        .collect();
    (events, Ruleset::default())
}

// One reducer batch of 1,000 presses over four partitions.
#[library_benchmark]
#[bench::batch_1000(args = (1_000), setup = presses)]
fn fold(input: (Vec<PressEvent>, Ruleset)) -> State {
    let (events, rules) = input;
    black_box(apply_batch(State::default(), black_box(&events), &rules))
}

fn records(n: usize) -> Vec<PressRecord> {
    (0..n)
        .map(|i| {
            PressRecord::new(
                format!("0b1c6f9e-3f7a-4a39-9a43-{i:012x}"),
                "c-5f2a9d0e7b1c4a83".into(),
                1_700_000_000_000 + i as i64,
            )
            .with_country("DE".into())
        })
        .collect()
}

fn encoded(n: usize) -> Vec<Vec<u8>> {
    records(n).iter().map(PressRecord::encode).collect()
}

// What the service does to each press before producing it.
#[library_benchmark]
#[bench::records_100(args = (100), setup = records)]
fn encode(records: Vec<PressRecord>) -> Vec<Vec<u8>> {
    black_box(records.iter().map(|r| black_box(r).encode()).collect())
}

// What the reducer does to each record it reads.
#[library_benchmark]
#[bench::records_100(args = (100), setup = encoded)]
fn decode(raw: Vec<Vec<u8>>) -> Vec<PressRecord> {
    black_box(
        raw.iter()
            .filter_map(|r| PressRecord::decode(Some(black_box(r))).ok())
            .collect(),
    )
}

library_benchmark_group!(name = domain, benchmarks = [fold, encode, decode]);

main!(library_benchmark_groups = domain);
