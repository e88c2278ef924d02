//! `loadgen run` end to end against a running stack (the external driver):
//! exit code, summary and every stored file.

use button_stack::{Stack, StackConfig};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_an_external_stack_stores_every_file_and_a_clean_verdict() {
    let stack = Stack::start(StackConfig {
        partitions: 2,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("external.toml");
    std::fs::write(
        &scenario,
        format!(
            "description = \"test\"\n[stack]\ndriver = \"external\"\nservice_url = \"{}\"\nreducer_url = \"{}\"\ndatabase_url = \"{}\"\n\
             [[phase]]\nduration_s = 2\nusers = 4\n[[phase]]\nduration_s = 4\nrate = 100\n[sse]\nlisteners = 3\n[assert]\nlost = 0\nduplicated = 0\n",
            stack.service_url(0),
            stack.reducer_url(),
            stack.database_url()
        ),
    )
    .expect("scenario written");
    let out = dir.path().join("runs");
    let output = tokio::task::spawn_blocking({
        let (scenario, out) = (scenario.clone(), out.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_loadgen"))
                .args([
                    "run",
                    scenario.to_str().expect("utf-8"),
                    "--out",
                    out.to_str().expect("utf-8"),
                    "--quiet",
                ])
                .output()
                .expect("loadgen runs")
        }
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("press to SSE")
            && stdout.contains("lost 0, duplicated 0")
            && stdout.contains("CLEAN"),
        "{stdout}"
    );

    let run = std::fs::read_dir(&out)
        .expect("runs")
        .next()
        .expect("one run")
        .expect("entry")
        .path();
    for file in [
        "scenario.toml",
        "meta.json",
        "summary.json",
        "timeseries.csv",
        "report.md",
        "latency.svg",
        "timeline.svg",
        "lag.svg",
        "press.hlog",
        "press.hgrm",
        "press_to_sse.hlog",
        "press_to_sse.hgrm",
        "fanout.hlog",
        "fanout.hgrm",
    ] {
        assert!(
            run.join(file).is_file(),
            "{file} missing from {}",
            run.display()
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).expect("summary"))
            .expect("json");
    assert_eq!(summary["verdict"]["clean"], true, "{summary}");
    let accepted = summary["accepted"].as_u64().expect("accepted");
    assert!(accepted >= 300, "{accepted} presses accepted");
    assert_eq!(
        summary["press_to_sse"]["count"].as_u64(),
        Some(accepted),
        "every accepted press was seen on the stream"
    );
    assert_eq!(summary["phases"].as_array().map(Vec::len), Some(2));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("meta.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["driver"], "external");
    let csv = std::fs::read_to_string(run.join("timeseries.csv")).expect("csv");
    assert!(csv.lines().count() >= 5, "a row a second:\n{csv}");
}
