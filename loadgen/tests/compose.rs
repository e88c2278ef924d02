//! The compose file parses with a compose implementation (Debian's
//! `docker-compose`, installed by scripts/setup). No container is started:
//! there is no Docker engine where these tests run.

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
