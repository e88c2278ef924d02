//! `loadgen run` end to end against a running stack (the external driver):
//! exit code, summary and every stored file.

use button_stack::{Stack, StackConfig};
use std::process::Command;

/// Writes `scenario` for the external driver pointed at `stack`, runs
/// `loadgen run` on it, and returns its stdout and the stored run folder
/// (the temporary folder lives as long as the returned guard).
async fn run_loadgen(stack: &Stack, body: &str) -> (String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("external.toml");
    std::fs::write(
        &scenario,
        format!(
            "description = \"test\"\n[stack]\ndriver = \"external\"\nservice_url = \"{}\"\nreducer_url = \"{}\"\ndatabase_url = \"{}\"\n{body}",
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
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "loadgen failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = std::fs::read_dir(&out)
        .expect("runs")
        .next()
        .expect("one run")
        .expect("entry")
        .path();
    (stdout, run, dir)
}

fn summary(run: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).expect("summary"))
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_an_external_stack_stores_every_file_and_a_clean_verdict() {
    let stack = Stack::start(StackConfig {
        partitions: 2,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let (stdout, run, _dir) = run_loadgen(
        &stack,
        "[[phase]]\nduration_s = 2\nusers = 4\n[[phase]]\nduration_s = 4\nrate = 100\n[sse]\nlisteners = 3\n[assert]\nlost = 0\nduplicated = 0\n",
    )
    .await;
    assert!(
        stdout.contains("press to SSE")
            && stdout.contains("lost 0, duplicated 0")
            && stdout.contains("CLEAN"),
        "{stdout}"
    );
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
    let summary = summary(&run);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_a_stack_asking_for_proof_of_work_solves_every_press() {
    let stack = Stack::start(StackConfig {
        service_env: button_stack::env(&[
            ("BUTTON_POW_DIFFICULTY", "6"),
            ("BUTTON_SECRET", "loadgen-test-secret-0123"),
        ]),
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let (stdout, run, _dir) = run_loadgen(
        &stack,
        "[[phase]]\nduration_s = 4\nrate = 50\n[assert]\nlost = 0\nduplicated = 0\nmax_error_rate = 0.0\n",
    )
    .await;
    assert!(
        stdout.contains("proof of work 6 bits, rate limits off"),
        "{stdout}"
    );
    let summary = summary(&run);
    assert_eq!(summary["guards"]["pow_difficulty"], 6, "{summary}");
    assert_eq!(summary["accepted"], summary["sent"], "{summary}");
    assert!(summary["accepted"].as_u64().expect("accepted") >= 150);
    let report = std::fs::read_to_string(run.join("report.md")).expect("report");
    assert!(report.contains("proof of work 6 bits"), "{report}");
}
