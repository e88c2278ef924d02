//! A run on two service instances, one SIGKILLed under load and started
//! again, driven in-process through the library as `loadgen run` drives
//! it: the presses that found it dead went to the other instance, and the
//! verdict still finds every 202 counted exactly once.

use loadgen::run::{RunOptions, run};
use std::path::Path;

const SCENARIO: &str = r#"
description = "two instances, service-1 killed under load"

[stack]
partitions = 2
services = 2

[[phase]]
name = "steady"
duration_s = 20
rate = 300

[sse]
listeners = 4

[assert]
lost = 0
duplicated = 0

[[fault]]
at_s = 5
action = "kill"
target = "service-1"
for_s = 5

[load]
max_in_flight = 4096
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_loses_no_accepted_press_and_its_presses_go_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = loadgen::scenario::parse(Path::new("replicas-kill.toml"), SCENARIO)
        .expect("scenario parses");
    let outcome = run(
        &scenario,
        &RunOptions {
            out_dir: dir.path().to_path_buf(),
            sweep_point: None,
            label: None,
            progress: false,
        },
    )
    .await
    .expect("the run completes");
    let s = &outcome.summary;
    let v = &s.verdict;
    eprintln!(
        "retried {}, accepted {} of {}, errors {:?}; {}",
        s.retried,
        s.accepted,
        s.sent,
        s.errors,
        v.describe()
    );
    assert!(v.clean, "{}", v.describe());
    assert!(v.identity_checked, "{}", v.describe());
    assert_eq!((v.lost, v.duplicated), (0, 0), "{}", v.describe());
    assert!(
        s.retried > 0,
        "presses to the dead instance were retried on the other: {} retried, errors {:?}",
        s.retried,
        s.errors
    );
    // Retries made most presses of the outage land: far more accepted
    // than the 3,000 the live instance alone was dealt.
    assert!(
        s.accepted > 5_000,
        "accepted {} of {}, errors {:?}",
        s.accepted,
        s.sent,
        s.errors
    );
    assert!(s.asserts.iter().all(|a| a.passed), "{:?}", s.asserts);
    // The stored summary says so too.
    let stored = std::fs::read_to_string(outcome.dir.join("summary.json")).expect("summary.json");
    assert!(stored.contains("\"retried\""), "{stored}");
}
