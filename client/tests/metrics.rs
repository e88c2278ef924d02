//! The metrics contract, checked on the running binaries: what they expose
//! passes `promtool check metrics`, every declared metric is exposed once
//! traffic went through, and nothing undeclared is.

use button_client::{Api, Ledger, init_test_logs, press_many, wait_db_covers};
use button_infra::metrics::Metric;
use button_stack::{Stack, StackConfig};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `promtool check metrics` on an exposition; its findings on failure.
fn promtool(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("promtool (Debian package `prometheus`, scripts/setup installs it): {e}")
        })?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Metric families named in `# TYPE` lines.
fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn check(binary: &str, exposition: &str, contract: &[Metric]) {
    if let Err(findings) = promtool(exposition) {
        panic!(
            "promtool check metrics failed on the {binary}'s output:\n{findings}\n---\n{exposition}"
        );
    }
    let exposed = families(exposition);
    let declared: BTreeSet<String> = contract.iter().map(|m| m.name.to_owned()).collect();
    let missing: Vec<_> = declared.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the {binary} declares but does not expose {missing:?}"
    );
    let undeclared: Vec<_> = exposed
        .iter()
        .filter(|n| n.starts_with("service_") || n.starts_with("reducer_"))
        .filter(|n| !declared.contains(*n))
        .collect();
    assert!(
        undeclared.is_empty(),
        "the {binary} exposes undeclared {undeclared:?}"
    );
    for m in contract {
        let kind = format!("# TYPE {} {}", m.name, m.kind.as_str());
        assert!(
            exposition.contains(&kind),
            "the {binary}: expected `{kind}`"
        );
        assert!(
            exposition.contains(&format!("# HELP {} ", m.name)),
            "the {binary}: no help text for {}",
            m.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_expose_their_contract_and_pass_promtool() {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    init_test_logs();
    let stack = Stack::start(StackConfig::default())
        .await
        .expect("stack starts");
    let api = Api::new(stack.service_url(0));
    // Traffic that touches every series: presses, a refusal, a poison record.
    let mut ledger = Ledger::default();
    for answer in press_many(&api, 50, 8).await {
        ledger.record(&answer.expect("accepted"));
    }
    let refused = api
        .http()
        .post(api.url("/v1/events/press"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status().as_u16(), 400);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::<(), [u8]>::to("press_button")
                .partition(0)
                .payload(b"not json".as_slice()),
            Duration::from_secs(5),
        )
        .await
        .expect("poison record stored");
    ledger.record(&api.press().await.expect("press after the poison record"));
    wait_db_covers(&stack.database_url(), &ledger, Duration::from_secs(60))
        .await
        .expect("the reducer catches up");
    let _sse = api
        .http()
        .get(api.url("/v1/states/stream"))
        .send()
        .await
        .expect("stream opens");

    let scrape = |url: String| {
        let http = api.http().clone();
        async move {
            http.get(format!("{url}/metrics"))
                .send()
                .await
                .expect("metrics answer")
                .text()
                .await
                .expect("metrics body")
        }
    };
    // The reducer publishes and commits after the transaction: give the
    // last batch's stages a moment to be recorded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let service = scrape(stack.service_url(0)).await;
    // The lag gauges follow librdkafka's statistics (once a second), which
    // may not have come yet when a fast run has already caught up.
    let declared: BTreeSet<String> = button_reducer::metrics::METRICS
        .iter()
        .map(|m| m.name.to_owned())
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reducer = scrape(stack.reducer_url()).await;
    while !declared.is_subset(&families(&reducer)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        reducer = scrape(stack.reducer_url()).await;
    }
    check("service", &service, button_service::metrics::METRICS);
    check("reducer", &reducer, button_reducer::metrics::METRICS);
}
