//! The metrics contract: every metric a binary exposes is declared once, in
//! a table of [`Metric`]s, with its kind, unit, labels, help text and
//! histogram buckets. The recorder is installed from that table, the README
//! lists it, and tests check that the exposition, the dashboards and the
//! runner's scraper agree with it.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One label and, when they are known in advance, its values. Series with
/// known values are created at start-up, so `rate()` and dashboards see
/// them before the first event.
#[derive(Debug, Clone, Copy)]
pub struct Label {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Base unit, as in the name (`seconds`, `records`, ...).
    pub unit: &'static str,
    pub labels: &'static [Label],
    pub help: &'static str,
    /// Upper bounds for histograms; empty otherwise.
    pub buckets: &'static [f64],
}

/// A counter without labels.
pub const fn counter(name: &'static str, unit: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        unit,
        labels: &[],
        help,
        buckets: &[],
    }
}

/// A gauge without labels.
pub const fn gauge(name: &'static str, unit: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        unit,
        labels: &[],
        help,
        buckets: &[],
    }
}

/// Request and produce latencies, 0.5 ms to 10 s. Accepted presses take
/// 5-15 ms on the reference machine and refusals under 1 ms; the upper
/// buckets cover the producer's delivery timeout.
pub const REQUEST_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Reducer stage durations, 10 µs to 5 s: folding a batch takes
/// microseconds, a PostgreSQL transaction milliseconds, collecting a batch
/// up to its linger, a retried write seconds.
pub const STAGE_SECONDS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Records per batch, 1 to the largest configurable batch.
pub const BATCH_RECORDS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// Installs the global Prometheus recorder for `contract`: buckets per
/// histogram, help text and unit for every metric, and a zero series for
/// every metric whose label values are all known.
pub fn install(contract: &'static [Metric]) -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for m in contract.iter().filter(|m| m.kind == Kind::Histogram) {
        builder = builder.set_buckets_for_metric(Matcher::Full(m.name.to_owned()), m.buckets)?;
    }
    let handle = builder.install_recorder()?;
    register(contract);
    Ok(handle)
}

/// Describes every metric of `contract` to the current recorder and creates
/// its series with known label values.
pub fn register(contract: &'static [Metric]) {
    for m in contract {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
        for labels in known_label_sets(m.labels) {
            match m.kind {
                Kind::Counter => {
                    metrics::counter!(m.name, &labels).increment(0);
                }
                Kind::Gauge => {
                    metrics::gauge!(m.name, &labels).increment(0.0);
                }
                // A histogram with no observation renders no series; its
                // description is enough until the first one.
                Kind::Histogram => {
                    let _ = metrics::histogram!(m.name, &labels);
                }
            }
        }
    }
}

/// Every combination of known label values; none when a label's values
/// are only known at run time (partitions).
fn known_label_sets(labels: &[Label]) -> Vec<Vec<(&'static str, &'static str)>> {
    let mut sets = vec![Vec::new()];
    for label in labels {
        if label.values.is_empty() {
            return Vec::new();
        }
        sets = sets
            .into_iter()
            .flat_map(|set| {
                label.values.iter().map(move |v| {
                    let mut next = set.clone();
                    next.push((label.name, *v));
                    next
                })
            })
            .collect();
    }
    sets
}

/// The contract as a Markdown table (name, type, unit, labels, meaning),
/// the form the README documents it in.
pub fn markdown_table(contract: &[Metric]) -> String {
    let mut out =
        String::from("| Metric | Type | Unit | Labels | Meaning |\n|---|---|---|---|---|\n");
    for m in contract {
        let labels = m
            .labels
            .iter()
            .map(|l| {
                if l.values.is_empty() {
                    format!("`{}`", l.name)
                } else {
                    format!("`{}` ({})", l.name, l.values.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            m.unit,
            labels,
            m.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_are_the_product_of_known_values() {
        const A: Label = Label {
            name: "a",
            values: &["1", "2"],
        };
        const B: Label = Label {
            name: "b",
            values: &["x"],
        };
        const P: Label = Label {
            name: "partition",
            values: &[],
        };
        assert_eq!(
            known_label_sets(&[A, B]),
            vec![vec![("a", "1"), ("b", "x")], vec![("a", "2"), ("b", "x")]]
        );
        assert_eq!(known_label_sets(&[]), vec![Vec::<(&str, &str)>::new()]);
        assert!(known_label_sets(&[A, P]).is_empty());
    }
}
