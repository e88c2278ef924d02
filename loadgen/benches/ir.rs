//! Instruction counts of the generator's own work for each press: its
//! send against the plan, its answer's latency, its 202 kept for the
//! verdict and matched against the state that covers it (as `record.rs`
//! times it with criterion).

use button_client::Accepted;
use button_domain::Snapshot;
use gungraun::{library_benchmark, library_benchmark_group, main};
use loadgen::recorder::Recorder;
use loadgen::schedule::Plan;
use std::hint::black_box;
use std::time::{Duration, Instant};

// The allocator the binary runs with (its main.rs): the counts include
// its work, and glibc's varied by up to 2% between runs of one build.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn presses(n: i64) -> (Recorder, Vec<Accepted>, Snapshot) {
    let plan = Plan::steady(20_000.0, Duration::from_secs(3600));
    let accepted = (0..n)
        .map(|i| Accepted {
            request_id: format!("0191f3b2-7c1e-7000-8000-{i:012x}"),
            partition: Some((i % 2) as i32),
            offset: Some(i / 2),
            outbox_id: None,
            accepted_at_ms: 0,
        })
        .collect();
    let mut state = Snapshot::genesis("bench".into());
    state.offsets = [(0, n / 2), (1, n / 2)].into();
    (Recorder::new(plan, Instant::now()), accepted, state)
}

// 1,024 presses through the recorder, then the state that covers them.
#[library_benchmark]
#[bench::presses_1024(args = (1024), setup = presses)]
fn press_bookkeeping(input: (Recorder, Vec<Accepted>, Snapshot)) -> Recorder {
    let (recorder, accepted, state) = input;
    let due = Instant::now();
    for a in &accepted {
        recorder.sending(0, due, due);
        recorder.answered(0, due);
        recorder.accept(black_box(a), due, 0);
    }
    recorder.on_tracked_state(&state);
    recorder
}

library_benchmark_group!(name = generator, benchmarks = [press_bookkeeping]);

main!(library_benchmark_groups = generator);
