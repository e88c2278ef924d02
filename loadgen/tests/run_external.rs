//! `loadgen run` end to end against a running stack (the external driver):
//! exit code, summary and every stored file.

use button_stack::{Ingest, Stack, StackConfig};
use std::process::Command;

/// Writes `scenario` for the external driver pointed at `stack`, runs
/// `loadgen run` on it, and returns its stdout and the stored run folder
/// (the temporary folder lives as long as the returned guard).
async fn run_loadgen(stack: &Stack, body: &str) -> (String, std::path::PathBuf, tempfile::TempDir) {
    run_loadgen_expecting(stack, body, true).await
}

async fn run_loadgen_expecting(
    stack: &Stack,
    body: &str,
    success: bool,
) -> (String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("external.toml");
    std::fs::write(
        &scenario,
        format!(
            "description = \"test\"\n[stack]\ndriver = \"external\"\nservice_url = \"{}\"\nreducer_url = \"{}\"\ndatabase_url = \"{}\"\nbrokers = \"{}\"\n{body}",
            stack.service_url(0),
            stack.reducer_url(),
            stack.database_url(),
            stack.brokers()
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
    assert_eq!(
        output.status.success(),
        success,
        "loadgen's exit status:\n{stdout}\n{}",
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

/// Listeners on WebSockets: the same measurement, the same verdict, and
/// the transport in the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_websocket_listeners_sees_every_press_and_records_the_transport() {
    let stack = Stack::start(StackConfig::default())
        .await
        .expect("stack starts");
    let (stdout, run, _dir) = run_loadgen(
        &stack,
        "[[phase]]\nduration_s = 3\nrate = 100\n[sse]\nlisteners = 2\ntransport = \"ws\"\n[assert]\nlost = 0\nduplicated = 0\n",
    )
    .await;
    assert!(stdout.contains("CLEAN"), "{stdout}");
    let summary = summary(&run);
    assert_eq!(summary["transport"], "ws", "{summary}");
    assert_eq!(summary["verdict"]["clean"], true, "{summary}");
    let accepted = summary["accepted"].as_u64().expect("accepted");
    assert!(accepted >= 250, "{accepted} presses accepted");
    assert_eq!(
        summary["press_to_sse"]["count"].as_u64(),
        Some(accepted),
        "every accepted press was seen on the socket"
    );
    assert!(
        summary["fanout"]["count"].as_u64() > Some(0),
        "fan-out timed on the sockets: {summary}"
    );
}

/// The other two ingest paths, judged the same way: every 202 found by
/// identity (in the topic by request id for the outbox, in the `presses`
/// table for direct), and every press's press-to-SSE latency measured.
async fn a_run_on_ingest_path_counts_every_press_once(ingest: Ingest) {
    let stack = Stack::start(StackConfig {
        partitions: 2,
        ingest,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    let (stdout, run, _dir) = run_loadgen(
        &stack,
        &format!(
            "ingest = \"{ingest}\"\n[[phase]]\nduration_s = 5\nrate = 200\n[sse]\nlisteners = 3\n[assert]\nlost = 0\nduplicated = 0\n"
        ),
    )
    .await;
    assert!(stdout.contains("CLEAN"), "{stdout}");
    let summary = summary(&run);
    assert_eq!(summary["ingest"], ingest.as_str());
    assert_eq!(summary["verdict"]["clean"], true, "{summary}");
    assert_eq!(summary["verdict"]["identity_checked"], true, "{summary}");
    let accepted = summary["accepted"].as_u64().expect("accepted");
    assert!(accepted >= 900, "{accepted} presses accepted");
    assert_eq!(
        summary["verdict"]["records_applied"].as_u64(),
        Some(accepted),
        "{summary}"
    );
    assert_eq!(
        summary["press_to_sse"]["count"].as_u64(),
        Some(accepted),
        "every accepted press was seen on the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_the_outbox_counts_every_press_once() {
    a_run_on_ingest_path_counts_every_press_once(Ingest::Outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_postgresql_alone_counts_every_press_once() {
    a_run_on_ingest_path_counts_every_press_once(Ingest::Direct).await;
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

/// Sums the counts of every interval in an `.hlog`.
fn hlog_count(path: &std::path::Path) -> u64 {
    loadgen::measure::interval_log_count(path).expect("the interval log decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_beyond_the_machine_is_sent_late_in_full_and_the_run_marked_invalid() {
    let stack = Stack::start(StackConfig {
        partitions: 2,
        ..StackConfig::default()
    })
    .await
    .expect("stack starts");
    // Far beyond what this machine sends (tests run unoptimised builds):
    // the generator falls behind, sends every planned press late, and
    // says so.
    let (stdout, run, _dir) = run_loadgen(
        &stack,
        "[[phase]]\nname = \"flood\"\nduration_s = 1\nrate = 30000\n[sse]\nlisteners = 2\n",
    )
    .await;
    let summary = summary(&run);
    assert_eq!(summary["validity"]["valid"], false, "{summary}");
    let reasons = summary["validity"]["reasons"].to_string();
    assert!(reasons.contains("generator fell behind"), "{reasons}");
    assert!(
        stdout.contains("INVALID") && stdout.contains("generator fell behind"),
        "{stdout}"
    );
    let phase = &summary["phases"][0];
    assert_eq!(phase["planned"], 30000, "{phase}");
    assert_eq!(
        phase["sent"], 30000,
        "every planned press was sent: {phase}"
    );
    assert!(
        phase["sent_on_time"].as_u64().expect("sent_on_time") < 30000 * 99 / 100,
        "{phase}"
    );
    assert_eq!(summary["planned"], 30000);
    assert_eq!(summary["sent"], 30000);
    // Every planned press has a latency, timed from when it was due.
    assert_eq!(summary["press_latency"]["count"], 30000, "{summary}");
    assert!(
        summary["press_latency"]["max_ms"].as_f64().expect("max") > 100.0,
        "late sends count their lateness: {summary}"
    );
    assert_eq!(hlog_count(&run.join("press.hlog")), 30000);
    assert_eq!(
        hlog_count(&run.join("press_to_sse.hlog")),
        summary["press_to_sse"]["count"].as_u64().expect("count")
    );
    assert_eq!(
        hlog_count(&run.join("schedule_lag.hlog")),
        30000,
        "a schedule lag per send"
    );
    assert_eq!(summary["verdict"]["clean"], true, "{summary}");
    let csv = loadgen::sample::read_columns(&run.join("timeseries.csv"));
    for column in [
        "planned_per_s",
        "sent_per_s",
        "schedule_lag_p99_ms",
        "machine_steal_pct",
        "foreign_pct",
        "loadgen_cpu_pct",
        "loadgen_rss_kib",
    ] {
        assert!(
            csv.contains_key(column),
            "{column} missing: {:?}",
            csv.keys()
        );
    }
    let planned: f64 = csv["planned_per_s"].iter().filter(|v| v.is_finite()).sum();
    assert_eq!(planned, 30000.0, "the plan, second by second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_live_phase_reports_the_press_path_and_keeps_its_checks_out_of_the_verdict() {
    let stack = Stack::start(StackConfig::default())
        .await
        .expect("stack starts");
    let (stdout, run, _dir) = run_loadgen(
        &stack,
        "[[phase]]\nname = \"trivial\"\nendpoint = \"live\"\nduration_s = 2\nrate = 200\n[[phase]]\nname = \"press\"\nduration_s = 2\nrate = 100\n[assert]\nlost = 0\nduplicated = 0\nmax_error_rate = 0.0\n",
    )
    .await;
    let summary = summary(&run);
    assert_eq!(summary["verdict"]["clean"], true, "{summary}");
    let path = &summary["press_path"];
    let ratio = path["ratio"].as_f64().expect("a press path");
    assert!(ratio.is_finite() && ratio > 0.0, "{path}");
    assert_eq!(
        (path["live_phase"].as_str(), path["press_phase"].as_str()),
        (Some("trivial"), Some("press")),
        "{path}"
    );
    assert!(
        path["client"].as_str().is_some_and(|c| c.contains("hyper")),
        "{path}"
    );
    let (live, press) = (&summary["phases"][0], &summary["phases"][1]);
    assert_eq!(live["endpoint"], "live", "{live}");
    assert_eq!(live["served"], 400, "every check answered 200: {live}");
    assert_eq!(live["accepted"], 0, "{live}");
    assert!(live["served_per_s"].as_f64().expect("served/s") > 0.0);
    assert_eq!(press["endpoint"], "press", "{press}");
    // The run's figures are the presses': the checks are in their phase only.
    assert_eq!(summary["planned"], 200, "{summary}");
    assert_eq!(summary["sent"], press["sent"], "{summary}");
    assert_eq!(summary["accepted"], press["accepted"], "{summary}");
    assert_eq!(summary["verdict"]["accepted"], press["accepted"]);
    assert_eq!(summary["press_latency"]["count"], press["sent"]);
    assert!(stdout.contains("press path: press/trivial"), "{stdout}");
    let report = std::fs::read_to_string(run.join("report.md")).expect("report");
    assert!(
        report.contains("Press path: press/trivial") && report.contains("GET /health/live"),
        "{report}"
    );
}

/// The external driver knows no process of the stack, but the load
/// generator is always there to profile: its flame graph must name its
/// own functions (frame pointers, symbols) and the report must link it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiled_run_stores_a_flame_graph_naming_the_profiled_process_functions() {
    loadgen::profile::check_access()
        .expect("perf can profile here (scripts/setup installs linux-perf; CI runs as root)");
    let stack = Stack::start(StackConfig::default())
        .await
        .expect("stack starts");
    let (stdout, run, _dir) = run_loadgen(
        &stack,
        "[[phase]]\nname = \"steady\"\nduration_s = 3\nrate = 500\n[profile]\ntargets = [\"loadgen\"]\nphase = \"steady\"\nfrequency_hz = 999\n[assert]\nlost = 0\nduplicated = 0\n",
    )
    .await;
    let summary = summary(&run);
    let profile = &summary["profiles"][0];
    assert_eq!(profile["target"], "loadgen", "{profile}");
    assert_eq!(profile["window"], "phase steady", "{profile}");
    assert!(
        profile["samples"].as_u64().expect("samples") > 0,
        "{profile}"
    );
    let svg = std::fs::read_to_string(run.join("flamegraph-loadgen.svg")).expect("the flame graph");
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "not an SVG"
    );
    let folded =
        std::fs::read_to_string(run.join("profile-loadgen.folded")).expect("folded stacks");
    // The sending threads' stacks, walked through the generator's own code.
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("press-") && l.contains("loadgen::")),
        "no stack of a sending thread names a loadgen function:\n{}",
        folded.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(
        svg.contains("loadgen::"),
        "the graph names no loadgen function"
    );
    let report = std::fs::read_to_string(run.join("report.md")).expect("report");
    assert!(
        report.contains("(flamegraph-loadgen.svg)") && report.contains("Most self time"),
        "{report}"
    );
    assert!(stdout.contains("profile of loadgen"), "{stdout}");
}

/// A profile of a process the scenario's stack does not have is refused
/// before anything starts, naming the key.
#[test]
fn a_profile_of_an_unknown_process_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("bad.toml");
    std::fs::write(
        &scenario,
        "[[phase]]\nduration_s = 1\nrate = 1\n[profile]\ntargets = [\"service-3\"]\n",
    )
    .expect("scenario written");
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", scenario.to_str().expect("utf-8"), "--out"])
        .arg(dir.path().join("runs"))
        .output()
        .expect("loadgen runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml")
            && stderr.contains("profile.targets[0]")
            && stderr.contains("service-3"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "smoke", "--profile", "nginx", "--out"])
        .arg(dir.path().join("runs"))
        .current_dir(env!("CARGO_MANIFEST_DIR").to_owned() + "/..")
        .output()
        .expect("loadgen runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--profile") && stderr.contains("nginx"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("runs").exists(),
        "nothing may start or be stored"
    );
}
