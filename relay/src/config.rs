//! Every key can be set in the TOML file named by `BUTTON_CONFIG` or as
//! `BUTTON_<KEY>` in the environment (see the README's table).

use button_infra::KafkaProperties;
use button_infra::config::defaults;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the relay's health and metrics endpoints.
    pub http_addr: SocketAddr,
    /// PostgreSQL holding the `outbox` table (migrations run at start-up).
    pub database_url: String,
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    /// The press topic the rows are produced to.
    pub topic: String,
    /// librdkafka producer properties, over the relay's own defaults
    /// (`acks=all`, `enable.idempotence=true`, `linger.ms=2`).
    pub producer: KafkaProperties,
    /// Rows claimed (and produced) per transaction.
    pub batch_max: u32,
    /// How often to look for due rows while no notification arrives: rows
    /// waiting out a backoff, and notifications lost while the listening
    /// connection was down.
    pub poll_ms: u64,
    /// After a notification wakes the relay, how long a batch that would
    /// not be full yet may grow before it is claimed.
    pub linger_ms: u64,
    /// Every row of a batch is acknowledged by the broker within this long
    /// or counted as a failed send (also `message.timeout.ms`).
    pub produce_timeout_ms: u64,
    /// Failed sends of one row before it is marked `dead` and left alone.
    pub max_attempts: u32,
    /// A row's first retry waits this long, doubled per failed send...
    pub backoff_initial_ms: u64,
    /// ...up to this. Also the longest pause after PostgreSQL or the
    /// broker failed a whole batch.
    pub backoff_max_ms: u64,
    /// Sent rows are kept this long, then deleted.
    pub prune_after_ms: u64,
    /// How often sent rows are pruned.
    pub prune_every_ms: u64,
    /// Rows deleted per pruning statement (repeated until fewer go).
    pub prune_batch: u32,
    /// Pool size: a batch, pruning and the gauges each hold a connection.
    pub db_max_connections: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9102)),
            database_url: defaults::DATABASE_URL.to_owned(),
            kafka_brokers: defaults::KAFKA_BROKERS.to_owned(),
            topic: defaults::TOPIC.to_owned(),
            producer: KafkaProperties::default(),
            batch_max: 500,
            poll_ms: 100,
            linger_ms: 5,
            produce_timeout_ms: 5_000,
            max_attempts: 10,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            prune_after_ms: 60_000,
            prune_every_ms: 1_000,
            prune_batch: 10_000,
            db_max_connections: 4,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("batch_max", u64::from(self.batch_max)),
            ("poll_ms", self.poll_ms),
            ("produce_timeout_ms", self.produce_timeout_ms),
            ("max_attempts", u64::from(self.max_attempts)),
            ("backoff_initial_ms", self.backoff_initial_ms),
            ("prune_every_ms", self.prune_every_ms),
            ("prune_batch", u64::from(self.prune_batch)),
        ];
        for (key, value) in nonzero {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        for (key, value) in [
            ("database_url", &self.database_url),
            ("kafka_brokers", &self.kafka_brokers),
            ("topic", &self.topic),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{key} must not be empty"));
            }
        }
        // librdkafka's message.timeout.ms is a 32-bit integer.
        if self.produce_timeout_ms > i32::MAX as u64 {
            return Err(format!(
                "produce_timeout_ms must be at most {} (librdkafka's message.timeout.ms)",
                i32::MAX
            ));
        }
        // `outbox.attempts` is an integer column.
        if self.max_attempts > i32::MAX as u32 {
            return Err(format!("max_attempts must be at most {}", i32::MAX));
        }
        if self.backoff_initial_ms > self.backoff_max_ms {
            return Err(format!(
                "backoff_initial_ms ({}) must not exceed backoff_max_ms ({})",
                self.backoff_initial_ms, self.backoff_max_ms
            ));
        }
        if self.db_max_connections < 3 {
            return Err(
                "db_max_connections must be at least 3 (a batch, pruning and the gauges each hold one)"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// How long a row that failed `attempts` times before waits after one
    /// more failure: `backoff_initial_ms · 2^attempts`, capped.
    pub fn retry_in(&self, attempts: u32) -> Duration {
        let factor = 1u64.checked_shl(attempts).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.backoff_initial_ms
                .saturating_mul(factor)
                .min(self.backoff_max_ms),
        )
    }

    /// Whether a row that failed `attempts` times before is dead after one
    /// more failure.
    pub fn dead_after_failure(&self, attempts: u32) -> bool {
        attempts.saturating_add(1) >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().expect("defaults");
    }

    #[test]
    fn invalid_values_are_named() {
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().expect_err("invalid")
        };
        assert!(bad(|c| c.batch_max = 0).contains("batch_max"));
        assert!(bad(|c| c.max_attempts = 0).contains("max_attempts"));
        assert!(bad(|c| c.topic = " ".to_owned()).contains("topic"));
        assert!(bad(|c| c.backoff_initial_ms = 60_000).contains("backoff_initial_ms"));
        assert!(bad(|c| c.db_max_connections = 2).contains("db_max_connections"));
        assert!(bad(|c| c.produce_timeout_ms = u64::MAX).contains("produce_timeout_ms"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_overflows() {
        let c = Config {
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            ..Config::default()
        };
        let ms = |a| c.retry_in(a).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4)],
            [100, 200, 400, 800, 1_000]
        );
        assert_eq!(ms(63), 1_000);
        assert_eq!(ms(64), 1_000);
        assert_eq!(ms(u32::MAX), 1_000);
    }

    #[test]
    fn a_row_dies_on_its_last_allowed_failure() {
        let c = Config {
            max_attempts: 3,
            ..Config::default()
        };
        assert!(!c.dead_after_failure(0));
        assert!(!c.dead_after_failure(1));
        assert!(c.dead_after_failure(2));
        assert!(c.dead_after_failure(7));
    }
}
