//! Metric names are the contract between the binaries, the dashboards and
//! the runner's scraper: every metric a dashboard or the runner queries is
//! declared in a binary's metrics contract.

use std::path::Path;

/// Every metric the binaries declare (`client/tests/metrics.rs` checks
/// that the running binaries expose exactly these).
fn declared() -> Vec<&'static str> {
    button_service::metrics::METRICS
        .iter()
        .chain(button_reducer::metrics::METRICS)
        .map(|m| m.name)
        .collect()
}

/// Metric names in `text`; with `quoted`, only those opening a string literal.
fn metric_names(text: &str, quoted: bool) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !text.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        if (rest.starts_with("service_") || rest.starts_with("reducer_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
            && (!quoted || (i > 0 && bytes[i - 1] == b'"'))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            // `reducer_stage_duration_seconds_{what}` in a format string.
            let mut name = rest[..end].trim_end_matches('_').to_owned();
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    name = base.to_owned();
                }
            }
            names.push(name);
            i += end;
        } else {
            i += 1;
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_dashboard_metric_is_exposed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let declared = declared();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("grafana/dashboards"))
        .expect("dashboards")
        .flatten()
    {
        let dashboard = std::fs::read_to_string(entry.path()).expect("dashboard");
        let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
        for panel in json["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                for name in metric_names(target["expr"].as_str().expect("expr"), false) {
                    assert!(
                        declared.contains(&name.as_str()),
                        "{}: `{name}` is not exposed by either binary",
                        entry.path().display()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} metric references found");
}

#[test]
fn every_metric_the_runner_scrapes_is_exposed() {
    let declared = declared();
    // The sampler is what scrapes the binaries' metrics.
    let runner =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sample.rs"))
            .expect("sample.rs");
    let names = metric_names(&runner, true);
    assert!(!names.is_empty());
    for name in names {
        assert!(
            declared.contains(&name.as_str()),
            "sample.rs scrapes `{name}`, which neither binary exposes"
        );
    }
}
