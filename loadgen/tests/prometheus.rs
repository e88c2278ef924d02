//! The dashboards against a real Prometheus: two local stacks (ingest
//! `kafka` and ingest `outbox`, two service instances each), every process
//! scraped under its own `instance` label, presses and stream clients for
//! a while, then every panel query of `grafana/dashboards/*.json` must
//! answer with at least one series holding a number.
//!
//! Two stacks because the panels span both paths: the produce latency
//! exists only where the service produces (`kafka`), the relay only under
//! `outbox`.

use button_client::{Api, SseListener, init_test_logs};
use button_stack::{Ingest, Stack, StackConfig};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long presses flow before the panels are queried: longer than the
/// widest `rate` window that needs samples from pressing (30 s quantiles
/// work from two samples on).
const PRESSING: Duration = Duration::from_secs(18);

/// A Prometheus server, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, config: &str) -> Prometheus {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!("no prometheus binary: run scripts/setup (Debian package `prometheus`)")
            });
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus.yml");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn query(&self, http: &reqwest::Client, expr: &str) -> Result<serde_json::Value, String> {
        let answer = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        answer
            .json::<serde_json::Value>()
            .await
            .map_err(|e| format!("not JSON: {e}"))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A scrape target: the job the dashboards' metrics come from, and a
/// distinct `instance` label (the port alone says nothing on a chart).
struct Target {
    job: &'static str,
    instance: String,
    address: String,
}

fn targets(name: &str, stack: &Stack) -> Vec<Target> {
    let e = stack.endpoints();
    let mut targets = Vec::new();
    for (i, port) in e.service_ports.iter().enumerate() {
        targets.push(Target {
            job: "button-service",
            instance: format!("{name}-service-{}", i + 1),
            address: format!("127.0.0.1:{port}"),
        });
    }
    for (i, port) in e.reducer_ports.iter().enumerate() {
        targets.push(Target {
            job: "button-reducer",
            instance: format!("{name}-reducer-{}", i + 1),
            address: format!("127.0.0.1:{port}"),
        });
    }
    for (i, port) in e.relay_ports.iter().enumerate() {
        targets.push(Target {
            job: "button-relay",
            instance: format!("{name}-relay-{}", i + 1),
            address: format!("127.0.0.1:{port}"),
        });
    }
    targets
}

/// The same shape as `compose/prometheus-cluster.yml`: one job per binary,
/// each target labelled with its own `instance`.
fn prometheus_yml(targets: &[Target]) -> String {
    let mut yml = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for job in ["button-service", "button-reducer", "button-relay"] {
        writeln!(yml, "  - job_name: {job}\n    static_configs:").unwrap();
        for t in targets.iter().filter(|t| t.job == job) {
            writeln!(
                yml,
                "      - targets: [\"{}\"]\n        labels:\n          instance: {}",
                t.address, t.instance
            )
            .unwrap();
        }
    }
    yml
}

/// A panel query as Prometheus gets it: Grafana's interval variables as
/// fixed windows, template variables (and `$instance`, `$job`) as "any".
fn substitute(expr: &str, variables: &[String]) -> String {
    let mut out = expr.to_owned();
    // Longest first: `$__interval_ms` before `$__interval`.
    for (var, value) in [
        ("__rate_interval", "30s"),
        ("__interval_ms", "5000"),
        ("__interval", "5s"),
        ("__range_ms", "60000"),
        ("__range_s", "60"),
        ("__range", "1m"),
    ] {
        out = out
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("[[{var}]]"), value)
            .replace(&format!("${var}"), value);
    }
    let mut names: Vec<&str> = variables.iter().map(String::as_str).collect();
    names.extend(["instance", "job"]);
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("[[{name}]]"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    // An exact match on "any" matches nothing: make it a regex match.
    out.replace("!=\".*\"", "!~\".*\"")
        .replace("=\".*\"", "=~\".*\"")
}

/// Every `(dashboard, panel title, expr)`, rows and nested panels included.
fn panel_queries(root: &Path) -> Vec<(String, String, String)> {
    fn walk(
        file: &str,
        panels: &[serde_json::Value],
        variables: &[String],
        out: &mut Vec<(String, String, String)>,
    ) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((file.to_owned(), title.clone(), substitute(expr, variables)));
                }
            }
            if let Some(nested) = panel["panels"].as_array() {
                walk(file, nested, variables, out);
            }
        }
    }
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root)
        .expect("grafana/dashboards")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
                .expect("dashboard is JSON");
        let variables: Vec<String> = json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect();
        for key in ["panels", "rows"] {
            if let Some(panels) = json[key].as_array() {
                walk(&file, panels, &variables, &mut out);
            }
        }
    }
    out
}

/// Why an instant-query answer shows nothing, if it does not.
fn emptiness(answer: &serde_json::Value) -> Option<String> {
    if answer["status"] != "success" {
        return Some(format!(
            "status {}: {} {}",
            answer["status"], answer["errorType"], answer["error"]
        ));
    }
    let data = &answer["data"];
    let finite = |v: &serde_json::Value| {
        v[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    match data["resultType"].as_str() {
        Some("scalar") => (!finite(&data["result"])).then(|| "a scalar with no number".to_owned()),
        Some("vector") => {
            let series = data["result"].as_array().cloned().unwrap_or_default();
            if series.is_empty() {
                Some("no series".to_owned())
            } else if !series.iter().any(|s| finite(&s["value"])) {
                Some(format!("{} series, none with a number (NaN)", series.len()))
            } else {
                None
            }
        }
        other => Some(format!("unexpected result type {other:?}")),
    }
}

/// Presses through every instance until stopped, a few dozen a second
/// each: enough for every rate and quantile, little enough for a shared
/// machine.
fn press_everywhere(
    apis: Vec<Api>,
    done: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    apis.into_iter()
        .map(|api| {
            let done = done.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    if api.press().await.is_ok() {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_has_data_in_a_real_prometheus() {
    init_test_logs();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let queries = panel_queries(&root.join("grafana/dashboards"));
    assert!(
        queries.len() >= 10,
        "only {} panel queries found",
        queries.len()
    );

    // Two of each, so every per-instance panel must tell them apart: two
    // reducers share the partitions as one consumer group.
    let config = |ingest, relays| StackConfig {
        services: 2,
        reducers: 2,
        partitions: 2,
        reducer_env: button_stack::env(&[("BUTTON_ASSIGNMENT", "group")]),
        ingest,
        relays,
        ..StackConfig::default()
    };
    let kafka = Stack::start(config(Ingest::Kafka, 0))
        .await
        .expect("kafka stack starts");
    let outbox = Stack::start(config(Ingest::Outbox, 1))
        .await
        .expect("outbox stack starts");
    let stacks = [("kafka", &kafka), ("outbox", &outbox)];

    let mut all_targets = Vec::new();
    for (name, stack) in stacks {
        all_targets.extend(targets(name, stack));
    }
    let dir = tempfile::Builder::new()
        .prefix("prometheus-")
        .tempdir()
        .expect("temp dir");
    let prometheus = Prometheus::start(dir.path(), &prometheus_yml(&all_targets));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // Every target scraped once before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prometheus.query(&http, "sum(up)").await.ok();
        let n = up
            .as_ref()
            .and_then(|a| a["data"]["result"][0]["value"][1].as_str())
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
        if n as usize == all_targets.len() {
            break;
        }
        if Instant::now() > deadline {
            let targets = http
                .get(format!("{}/api/v1/targets", prometheus.url))
                .send()
                .await
                .expect("targets")
                .json::<serde_json::Value>()
                .await
                .expect("targets JSON");
            let down: Vec<String> = targets["data"]["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["health"] != "up")
                .map(|t| {
                    format!(
                        "{} {}: {}",
                        t["labels"]["instance"], t["scrapeUrl"], t["lastError"]
                    )
                })
                .collect();
            panic!(
                "{n} of {} targets up after 60 s: {down:?}; prometheus log:\n{}",
                all_targets.len(),
                prometheus.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let apis: Vec<Api> = stacks
        .iter()
        .flat_map(|(_, s)| {
            (0..s.endpoints().service_ports.len()).map(|i| Api::new(s.service_url(i)))
        })
        .collect();
    let mut streams = Vec::new();
    for api in &apis {
        streams.push(SseListener::connect(api, None).await.expect("stream opens"));
    }
    let done = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let pressers = press_everywhere(apis, done.clone(), accepted.clone());
    tokio::time::sleep(PRESSING).await;

    // Queried while presses still flow, so the short rate windows hold them.
    let mut failures = Vec::new();
    for (file, title, expr) in &queries {
        let why = match prometheus.query(&http, expr).await {
            Ok(answer) => emptiness(&answer),
            Err(e) => Some(e),
        };
        if let Some(why) = why {
            failures.push(format!("{file} / {title}: {why}\n    {expr}"));
        }
    }
    done.store(true, Ordering::Relaxed);
    for p in pressers {
        p.await.expect("presser");
    }
    let accepted = accepted.load(Ordering::Relaxed);
    let frames: usize = streams.iter().map(SseListener::frames).sum();
    assert!(accepted >= 100, "only {accepted} presses accepted");
    assert!(frames > 0, "no state frame reached a stream client");
    assert!(
        failures.is_empty(),
        "{} of {} panel queries show nothing ({accepted} presses, {frames} frames):\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}
