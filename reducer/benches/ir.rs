//! Instruction counts of the reducer's batch without the database: each
//! record decoded, checked against the recent request ids, added to the
//! pending batch with its country, then the batch folded onto the state
//! in hand, as `pipeline.rs` does between a poll and the write.

use button_domain::{PressEvent, PressRecord, Ruleset, State};
use button_reducer::dedupe::RecentIds;
use button_reducer::persist::{Folded, Pending};
use gungraun::{library_benchmark, library_benchmark_group, main};
use std::hint::black_box;

const COUNTRIES: [&str; 4] = ["DE", "FR", "US", "unknown"];

struct Input {
    records: Vec<(i32, i64, Vec<u8>)>,
    recent: RecentIds,
    rules: Ruleset,
    base: State,
}

/// A batch of `n` records over four partitions, and a dedup window that
/// has already seen a full window of other ids (the steady state).
fn batch(n: usize) -> Input {
    let records = (0..n)
        .map(|i| {
            let record = PressRecord::new(
                format!("0191f3b2-7c1e-7000-8000-{i:012x}"),
                "c-5f2a9d0e7b1c4a83".into(),
                1_700_000_000_000 + i as i64,
            )
            .with_country(COUNTRIES[i % COUNTRIES.len()].into());
            ((i % 4) as i32, (i / 4) as i64, record.encode())
        })
        .collect();
    let mut recent = RecentIds::new(10_000);
    for i in 0..10_000 {
        recent.first_time(&format!("00000000-0000-7000-8000-{i:012x}"));
    }
    Input {
        records,
        recent,
        rules: Ruleset::default(),
        base: State::default(),
    }
}

#[library_benchmark]
#[bench::records_1000(args = (1_000), setup = batch)]
fn reduce_batch(input: Input) -> (Option<Folded>, RecentIds) {
    let Input {
        records,
        mut recent,
        rules,
        base,
    } = input;
    let mut pending = Pending::default();
    for (partition, offset, raw) in &records {
        match PressRecord::decode(Some(black_box(raw))) {
            Ok(record) if recent.first_time(&record.request_id) => pending.push(
                PressEvent {
                    accepted_at_ms: record.accepted_at_ms,
                    partition: *partition,
                    offset: *offset,
                },
                record.country.as_deref().unwrap_or("unknown"),
            ),
            _ => pending.skipped.push((*partition, *offset)),
        }
    }
    (black_box(pending.fold_onto(&base, &rules)), recent)
}

library_benchmark_group!(name = reducer, benchmarks = [reduce_batch]);

main!(library_benchmark_groups = reducer);
