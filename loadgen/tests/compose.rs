//! The compose file parses with a compose implementation (Debian's
//! `docker-compose`, installed by scripts/setup). No container is started:
//! there is no Docker engine where these tests run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

#[test]
fn compose_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("docker-compose")
        .args(["-f", "compose/docker-compose.yml", "config"])
        .current_dir(&root)
        .env("PARTITIONS", "4")
        .output()
        .expect("docker-compose is installed (scripts/setup)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "docker-compose config failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for service in [
        "kafka",
        "topics",
        "postgres",
        "redis",
        "service",
        "reducer",
        "prometheus",
        "grafana",
    ] {
        assert!(
            stdout.contains(&format!("\n  {service}:")),
            "service {service} missing from the resolved file"
        );
    }
    assert!(
        stdout.contains("--partitions 4"),
        "the scenario's partitions reach the topic creation"
    );
}

/// `docker-compose ... config` over `files`, with `PARTITIONS=4`.
fn resolve(files: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new("docker-compose");
    for file in files {
        command.args(["-f", file]);
    }
    let output = command
        .arg("config")
        .current_dir(&root)
        .env("PARTITIONS", "4")
        .output()
        .expect("docker-compose is installed (scripts/setup)");
    assert!(
        output.status.success(),
        "docker-compose config failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the resolved file is UTF-8")
}

/// The resolved file's services, each its block's text with whitespace
/// collapsed (the resolved file folds long strings over several lines).
fn services(resolved: &str) -> BTreeMap<String, String> {
    let mut services = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in resolved.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            if let Some((name, lines)) = current.take() {
                services.insert(name, lines.join(" "));
            }
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line
            .strip_prefix("  ")
            .filter(|rest| !rest.starts_with(' '))
            .and_then(|rest| rest.strip_suffix(':'))
        {
            if let Some((name, lines)) = current.take() {
                services.insert(name, lines.join(" "));
            }
            current = Some((name.to_owned(), Vec::new()));
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    if let Some((name, lines)) = current.take() {
        services.insert(name, lines.join(" "));
    }
    services
        .into_iter()
        .map(|(name, text)| (name, text.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

/// A service's block, or a failure naming the missing service.
fn block<'a>(services: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    services
        .get(name)
        .unwrap_or_else(|| panic!("service {name} missing from the resolved cluster shape"))
}

/// The value of `key: value` in a collapsed block (quotes removed).
fn value<'a>(block: &'a str, key: &str) -> Option<&'a str> {
    let start = block.find(&format!("{key}: "))? + key.len() + 2;
    block[start..]
        .split(' ')
        .next()
        .map(|value| value.trim_matches(|c| c == '\'' || c == '"'))
}

#[test]
fn cluster_shape_is_valid() {
    let resolved = resolve(&["compose/docker-compose.yml", "compose/cluster.yml"]);
    let services = services(&resolved);
    let brokers = "kafka:9092,kafka-2:9092,kafka-3:9092";

    // Three combined broker+controller nodes, one quorum of three voters.
    let kafka: Vec<&String> = services
        .keys()
        .filter(|name| *name == "kafka" || name.starts_with("kafka-"))
        .collect();
    assert_eq!(kafka.len(), 3, "three Kafka services: {kafka:?}");
    let mut node_ids = Vec::new();
    for (name, host) in [
        ("kafka", "kafka"),
        ("kafka-2", "kafka-2"),
        ("kafka-3", "kafka-3"),
    ] {
        let broker = block(&services, name);
        assert!(
            broker.contains("image: apache/kafka:3.9.0"),
            "{name}: image"
        );
        assert_eq!(
            value(broker, "KAFKA_CONTROLLER_QUORUM_VOTERS"),
            Some("1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"),
            "{name}: the quorum voters name all three"
        );
        assert_eq!(
            value(broker, "KAFKA_PROCESS_ROLES"),
            Some("broker,controller")
        );
        assert_eq!(
            value(broker, "KAFKA_ADVERTISED_LISTENERS"),
            Some(format!("PLAINTEXT://{host}:9092").as_str()),
            "{name}: its own advertised listener"
        );
        for (key, expected) in [
            ("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"),
            ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "2"),
        ] {
            assert_eq!(value(broker, key), Some(expected), "{name}: {key}");
        }
        assert!(
            value(broker, "CLUSTER_ID").is_some(),
            "{name}: a shared cluster id"
        );
        node_ids.push(value(broker, "KAFKA_NODE_ID").expect("a node id"));
    }
    assert_eq!(node_ids, ["1", "2", "3"], "distinct node ids");
    let cluster_ids: Vec<_> = ["kafka", "kafka-2", "kafka-3"]
        .iter()
        .map(|name| value(block(&services, name), "CLUSTER_ID"))
        .collect();
    assert!(
        cluster_ids.windows(2).all(|w| w[0] == w[1]),
        "one cluster id"
    );

    // The topic: three replicas, min ISR 2, the scenario's partitions.
    let topics = block(&services, "topics");
    assert!(
        topics.contains(
            "--topic press_button --partitions 4 --replication-factor 3 \
             --config min.insync.replicas=2"
        ),
        "topic creation: {topics}"
    );
    assert!(topics.contains(&format!("--bootstrap-server {brokers}")));
    for name in ["kafka", "kafka-2", "kafka-3"] {
        assert!(
            topics.contains(&format!("{name}: condition: service_healthy")),
            "topics waits for {name}"
        );
    }

    // Every Button process knows all three brokers.
    let instances = [
        "service-1",
        "service-2",
        "service-3",
        "reducer-1",
        "reducer-2",
    ];
    for name in instances {
        assert_eq!(
            value(block(&services, name), "BUTTON_KAFKA_BROKERS"),
            Some(brokers),
            "{name}: brokers"
        );
    }

    // Two reducers in one consumer group, each with its own static id.
    let mut instance_ids = Vec::new();
    for name in ["reducer-1", "reducer-2"] {
        let reducer = block(&services, name);
        assert!(reducer.contains("- button-reducer"), "{name}: command");
        assert_eq!(value(reducer, "BUTTON_ASSIGNMENT"), Some("group"), "{name}");
        assert_eq!(
            value(reducer, "BUTTON_GROUP_ID"),
            Some("button-reducer"),
            "{name}"
        );
        instance_ids.push(value(reducer, "BUTTON_GROUP_INSTANCE_ID").expect("an instance id"));
    }
    assert!(
        !instance_ids[0].is_empty() && instance_ids[0] != instance_ids[1],
        "distinct group instance ids: {instance_ids:?}"
    );

    // Three services, trusting the load balancer's X-Forwarded-For and
    // publishing nothing themselves.
    for name in ["service-1", "service-2", "service-3"] {
        let service = block(&services, name);
        assert!(service.contains("- button-service"), "{name}: command");
        assert_eq!(
            value(service, "BUTTON_TRUST_FORWARDED_FOR"),
            Some("true"),
            "{name}"
        );
        assert!(
            !service.contains("ports:"),
            "{name} is reached through lb only"
        );
    }
    // The base file's single instances are left out (profile `single`).
    for name in ["service", "reducer"] {
        assert!(
            block(&services, name).contains("profiles: - single"),
            "{name} is out of the cluster shape"
        );
    }

    // One published port in front of the three.
    let lb = block(&services, "lb");
    assert_eq!(
        lb.matches("published:").count(),
        1,
        "lb publishes one port: {lb}"
    );
    assert!(lb.contains("published: 8080 target: 8080"), "{lb}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let nginx = std::fs::read_to_string(root.join("compose/nginx-cluster.conf")).unwrap();
    for line in [
        "server service-1:8080;",
        "server service-2:8080;",
        "server service-3:8080;",
        "proxy_buffering off;",
        "proxy_read_timeout 1h;",
        "proxy_http_version 1.1;",
        "proxy_set_header X-Forwarded-For",
    ] {
        assert!(nginx.contains(line), "nginx-cluster.conf lacks `{line}`");
    }
    assert!(
        lb.contains("compose/nginx-cluster.conf:/etc/nginx/conf.d/default.conf"),
        "{lb}"
    );

    // Prometheus scrapes every instance, each with its own `instance` label.
    let prometheus = block(&services, "prometheus");
    assert!(
        prometheus.contains("compose/prometheus-cluster.yml:/etc/prometheus/prometheus.yml"),
        "{prometheus}"
    );
    let scrape = std::fs::read_to_string(root.join("compose/prometheus-cluster.yml")).unwrap();
    let scrape = scrape.split_whitespace().collect::<Vec<_>>().join(" ");
    for (name, port) in [
        ("service-1", 8080),
        ("service-2", 8080),
        ("service-3", 8080),
        ("reducer-1", 9101),
        ("reducer-2", 9101),
    ] {
        assert!(
            scrape.contains(&format!(
                "- targets: [\"{name}:{port}\"] labels: instance: {name}"
            )),
            "prometheus-cluster.yml: target {name}:{port} labelled instance={name}"
        );
    }
}
