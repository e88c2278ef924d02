//! Every key can be set in the TOML file named by `BUTTON_CONFIG` or as
//! `BUTTON_<KEY>` in the environment (see the README's table).

use button_infra::KafkaProperties;
use button_infra::config::{Ingest, defaults};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds (port 0 picks a free one).
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub redis_url: String,
    /// Redis channel the reducer publishes states on.
    pub redis_channel: String,
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    pub topic: String,
    /// Where an accepted press goes: `kafka` (produced to `topic`),
    /// `outbox` (PostgreSQL's `outbox`, for `button-relay`) or `direct`
    /// (PostgreSQL's `presses`, read by the reducer; no broker).
    pub ingest: Ingest,
    /// librdkafka producer properties, over the service's own defaults.
    pub producer: KafkaProperties,
    /// A press is answered within this deadline: 202 after the broker's
    /// acknowledgement, 503 otherwise. Also librdkafka's `message.timeout.ms`.
    pub produce_timeout_ms: u64,
    /// Largest accepted press body.
    pub max_body_bytes: usize,
    /// SSE connections past this number get 503.
    pub sse_max_clients: usize,
    /// Open SSE connections one client (its pseudonym) may hold; past it,
    /// 429. 0 (the default) turns the per-client cap off: without
    /// `trust_forwarded_for` behind a proxy every client has the proxy's
    /// address, and the lab's load generator opens its listeners from one.
    pub sse_max_per_client: usize,
    pub sse_keepalive_ms: u64,
    /// Kernel send buffer of each connection (`SO_SNDBUF`; the kernel
    /// doubles it); 0 leaves it to the kernel's autotuning. It bounds what
    /// an SSE client that stops reading pins in kernel memory, and so how
    /// many old states it is still sent before it skips to the newest.
    pub tcp_send_buffer_bytes: usize,
    /// How often to read the newest state from PostgreSQL while Redis is down.
    pub db_poll_ms: u64,
    /// How often to check PostgreSQL while Redis is up (catches a publish
    /// the reducer could not make).
    pub db_safety_poll_ms: u64,
    pub db_max_connections: u32,
    /// Deadline of every request but the SSE stream: past it, 503
    /// `request_timeout`. 0 turns it off.
    pub request_timeout_ms: u64,
    /// How long `/v1/countries` serves one answer before querying again;
    /// 0 queries on every request.
    pub countries_cache_ms: u64,
    /// How long SIGTERM waits for in-flight requests before closing.
    pub shutdown_grace_ms: u64,
    /// Key for challenge signatures and client pseudonyms; the same on
    /// every replica. Required (16+ bytes) with proof of work or rate limits.
    pub secret: String,
    /// Take the client's address from the last `X-Forwarded-For` entry
    /// (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Leading zero bits a press's proof of work needs; 0 turns it off.
    pub pow_difficulty: u32,
    /// How long a challenge can be used.
    pub pow_ttl_ms: u64,
    /// Sustained presses per second per client; 0 turns limits off.
    pub rate_limit_per_s: f64,
    /// Presses a client may make at once before the rate applies.
    pub rate_limit_burst: u32,
    /// What rate limits do while Redis is unreachable: `open` lets presses
    /// through, `closed` answers 503 `rate_limit_unavailable`.
    pub rate_limit_redis_down: RedisDownPolicy,
    /// How long an Idempotency-Key's first answer is kept.
    pub idempotency_ttl_ms: u64,
    /// The country database (MMDB); empty or missing = every country
    /// `unknown`.
    pub geoip_db: String,
    /// Iterations of a fixed arithmetic loop added to every press: a
    /// known, deliberate cost, for showing that the lab's comparisons
    /// (`loadgen ab`, the benchmark gate) find a slowdown of that size.
    /// 0 (the default) everywhere else.
    pub press_extra_work: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: defaults::DATABASE_URL.to_owned(),
            redis_url: defaults::REDIS_URL.to_owned(),
            redis_channel: defaults::REDIS_CHANNEL.to_owned(),
            kafka_brokers: defaults::KAFKA_BROKERS.to_owned(),
            topic: defaults::TOPIC.to_owned(),
            ingest: Ingest::Kafka,
            producer: KafkaProperties::default(),
            produce_timeout_ms: 5_000,
            max_body_bytes: 1_024,
            sse_max_clients: 10_000,
            sse_max_per_client: 0,
            sse_keepalive_ms: 15_000,
            tcp_send_buffer_bytes: 0,
            db_poll_ms: 250,
            db_safety_poll_ms: 2_000,
            db_max_connections: 8,
            request_timeout_ms: 10_000,
            countries_cache_ms: 1_000,
            shutdown_grace_ms: 5_000,
            secret: String::new(),
            trust_forwarded_for: false,
            pow_difficulty: 0,
            pow_ttl_ms: 60_000,
            rate_limit_per_s: 0.0,
            rate_limit_burst: 20,
            rate_limit_redis_down: RedisDownPolicy::Open,
            idempotency_ttl_ms: 86_400_000,
            geoip_db: "/usr/local/share/button-lab/geo-whois-asn-country.mmdb".to_owned(),
            press_extra_work: 0,
        }
    }
}

/// A guard's answer when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisDownPolicy {
    /// Admit the press (counted in `service_guard_unavailable_total`).
    #[default]
    Open,
    /// Refuse the press with 503.
    Closed,
}
