//! What stands between a request and the topic: who the client is
//! ([`identity`]), how often it may press ([`ratelimit`]), whether it did
//! the work asked ([`pow`]), and whether it already asked ([`idempotency`]).
//!
//! The shared state lives in Redis so replicas agree; every check there is
//! one atomic command or script. When Redis cannot be reached, rate limits
//! fail open by default (presses still count, `service_guard_unavailable_total`
//! says so; `rate_limit_redis_down = "closed"` refuses them instead), proof
//! of work and idempotency fail closed (503): admitting a
//! replayed challenge or a second press for one key would break their
//! promise, a missed rate limit only delays it.

pub mod idempotency;
pub mod identity;
pub mod pow;
pub mod ratelimit;

use crate::config::{Config, RedisDownPolicy};
use identity::Identity;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// The guards' configuration and their Redis connection.
#[derive(Clone)]
pub struct Guards {
    pub identity: Identity,
    pub pow: Option<pow::PowConfig>,
    pub rate: Option<ratelimit::RateConfig>,
    pub rate_redis_down: RedisDownPolicy,
    pub idempotency_ttl: Duration,
    redis: Option<ConnectionManager>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardConfigError {
    #[error(
        "BUTTON_SECRET must be set (at least 16 bytes) when proof of work or rate limits are on: replicas must agree on it"
    )]
    NoSecret,
    #[error("BUTTON_POW_DIFFICULTY is {0}; at most 32 leading zero bits are supported")]
    Difficulty(u32),
    #[error("BUTTON_RATE_LIMIT_BURST must be at least 1 when BUTTON_RATE_LIMIT_PER_S is set")]
    Burst,
    #[error("invalid BUTTON_REDIS_URL: {0}")]
    Redis(String),
}

impl Guards {
    /// Builds the guards; connects to Redis lazily (first use), reconnecting
    /// on its own after an outage.
    pub fn new(config: &Config) -> Result<Guards, GuardConfigError> {
        let guarded = config.pow_difficulty > 0 || config.rate_limit_per_s > 0.0;
        if guarded && config.secret.len() < 16 {
            return Err(GuardConfigError::NoSecret);
        }
        if config.pow_difficulty > 32 {
            return Err(GuardConfigError::Difficulty(config.pow_difficulty));
        }
        if config.rate_limit_per_s > 0.0 && config.rate_limit_burst == 0 {
            return Err(GuardConfigError::Burst);
        }
        let identity = if config.secret.is_empty() {
            // Pseudonyms stay stable for this process only; nothing that
            // must agree across replicas depends on them.
            Identity::ephemeral()
        } else {
            Identity::new(config.secret.as_bytes(), false)
        }
        .trusting_forwarded_for(config.trust_forwarded_for);
        let redis = redis::Client::open(config.redis_url.as_str())
            .and_then(|client| {
                ConnectionManager::new_lazy_with_config(
                    client,
                    ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(Duration::from_millis(500)))
                        .set_response_timeout(Some(Duration::from_millis(500)))
                        .set_number_of_retries(1),
                )
            })
            .map_err(|e| GuardConfigError::Redis(e.to_string()))?;
        Ok(Guards {
            identity,
            pow: (config.pow_difficulty > 0).then(|| pow::PowConfig {
                key: config.secret.as_bytes().to_vec(),
                difficulty: config.pow_difficulty,
                ttl: Duration::from_millis(config.pow_ttl_ms),
            }),
            rate: (config.rate_limit_per_s > 0.0).then_some(ratelimit::RateConfig {
                per_second: config.rate_limit_per_s,
                burst: config.rate_limit_burst,
            }),
            rate_redis_down: config.rate_limit_redis_down,
            idempotency_ttl: Duration::from_millis(config.idempotency_ttl_ms),
            redis: Some(redis),
        })
    }

    /// Guards with no Redis: every check that needs it is unavailable
    /// (benchmarks and fuzzing of the HTTP layer).
    pub fn offline(config: &Config) -> Result<Guards, GuardConfigError> {
        let mut guards = Guards::new(config)?;
        guards.redis = None;
        Ok(guards)
    }

    fn redis(&self) -> Result<ConnectionManager, redis::RedisError> {
        self.redis
            .clone()
            .ok_or_else(|| (redis::ErrorKind::Io, "no Redis configured").into())
    }

    /// Whether the press path needs Redis for this request's guards.
    pub fn any_on(&self) -> bool {
        self.pow.is_some() || self.rate.is_some()
    }
}

/// Counts a guard that could not reach Redis.
fn unavailable(guard: &'static str, error: &redis::RedisError) {
    metrics::counter!("service_guard_unavailable_total", "guard" => guard).increment(1);
    tracing::warn!(guard, error = %error, "Redis unreachable for a guard");
}
