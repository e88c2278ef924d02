//! Every key can be set in the TOML file named by `BUTTON_CONFIG` or as
//! `BUTTON_<KEY>` in the environment (see the README's table).

use button_infra::KafkaProperties;
use button_infra::config::{Ingest, defaults};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    Manual,
    Group,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the reducer's health and metrics endpoints.
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub redis_url: String,
    pub redis_channel: String,
    pub kafka_brokers: String,
    pub topic: String,
    /// Where poison records go, with the reason in headers.
    pub dlq_topic: String,
    pub group_id: String,
    /// `manual`: this reducer reads every partition of the topic itself
    /// (the global state has one writer; a second reducer is a standby that
    /// loses every write race). `group`: partitions come from the Kafka
    /// consumer group, each assignment starting at PostgreSQL's offsets.
    pub assignment: Assignment,
    /// Static group membership (`group.instance.id`): a restarted reducer
    /// takes its partitions back at once instead of waiting for the session
    /// timeout. Give each instance its own; empty = dynamic membership.
    pub group_instance_id: String,
    /// librdkafka consumer properties, over the reducer's own defaults.
    pub consumer: KafkaProperties,
    /// librdkafka properties of the dead-letter producer.
    pub dlq_producer: KafkaProperties,
    /// A batch closes at this many records...
    pub batch_max: usize,
    /// ...or this long after its first record, whichever comes first.
    pub batch_linger_ms: u64,
    /// Commit offsets to Kafka every N persisted batches (0 = not by count).
    pub commit_every_batches: u64,
    /// Commit offsets to Kafka at least this often (0 = not by time).
    pub commit_interval_ms: u64,
    /// How often an idle reducer checks whether a decay tick is due.
    pub idle_check_ms: u64,
    /// Database (or dead-letter) failures are retried this many times with
    /// exponential backoff; then the reducer exits non-zero.
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// A Redis publish gives up after this long (publishing is best effort).
    pub publish_timeout_ms: u64,
    pub db_max_connections: u32,
    /// PostgreSQL ends a session of the reducer's that sits this long
    /// inside a transaction without a statement (0 = never). A member
    /// frozen mid-write holds the writers' lock; this bounds how long the
    /// others wait for it. Keep it below the group's session timeout.
    pub db_idle_in_transaction_ms: u64,
    /// Where presses come from. `kafka`: the topic. `outbox`: the topic
    /// too, filled by the relay from PostgreSQL's `outbox`. `direct`:
    /// PostgreSQL's `presses` table, folded in id order (see
    /// [`crate::direct`]); no broker, so no consumer and no dead-letter
    /// producer.
    pub ingest: Ingest,
    /// `direct`: how often `presses` is read when no notification came (a
    /// notification lost while the listener reconnects costs at most this).
    pub direct_poll_ms: u64,
    /// How many recent request ids are remembered to send a repeated one
    /// to the dead-letter topic (0 = off; see `dedupe`).
    pub dedupe_window: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9101)),
            database_url: defaults::DATABASE_URL.to_owned(),
            redis_url: defaults::REDIS_URL.to_owned(),
            redis_channel: defaults::REDIS_CHANNEL.to_owned(),
            kafka_brokers: defaults::KAFKA_BROKERS.to_owned(),
            topic: defaults::TOPIC.to_owned(),
            dlq_topic: "press_button.dlq".to_owned(),
            group_id: "button-reducer".to_owned(),
            assignment: Assignment::Manual,
            group_instance_id: "button-reducer-0".to_owned(),
            consumer: KafkaProperties::default(),
            dlq_producer: KafkaProperties::default(),
            batch_max: 500,
            batch_linger_ms: 20,
            commit_every_batches: 1,
            commit_interval_ms: 0,
            idle_check_ms: 100,
            max_attempts: 8,
            backoff_initial_ms: 100,
            backoff_max_ms: 5_000,
            publish_timeout_ms: 500,
            db_max_connections: 4,
            db_idle_in_transaction_ms: 5_000,
            ingest: Ingest::Kafka,
            direct_poll_ms: 100,
            dedupe_window: 100_000,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_max == 0 {
            return Err("batch_max must be at least 1".to_owned());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".to_owned());
        }
        if self.direct_poll_ms == 0 {
            return Err("direct_poll_ms must be at least 1".to_owned());
        }
        if self.commit_every_batches == 0 && self.commit_interval_ms == 0 {
            return Err("commit_every_batches and commit_interval_ms cannot both be 0".to_owned());
        }
        Ok(())
    }
}
