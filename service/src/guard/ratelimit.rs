//! Per-client rate limits: GCRA (the generic cell rate algorithm) kept in
//! Redis, one script per decision, so concurrent presses on any number of
//! replicas see one limit exactly. `burst` presses may come at once, then
//! one per `1 / per_second` seconds.

use super::{Guards, unavailable};
use crate::config::RedisDownPolicy;
use crate::error::ApiError;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RateConfig {
    pub per_second: f64,
    pub burst: u32,
}

/// One decision, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the full burst is available again.
    pub reset: Duration,
    /// Until the next press would be allowed (zero when allowed).
    pub retry_after: Duration,
}

/// The theoretical arrival time (TAT) of the next press, in ms of Redis's
/// clock (one clock for every replica). Allowed when pushing the TAT one
/// interval further keeps it within `burst` intervals of now.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local horizon = burst * interval
if new_tat - now > horizon then
  return {0, 0, math.ceil(tat - now), math.ceil(new_tat - now - horizon)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1)
local remaining = math.floor((horizon - (new_tat - now)) / interval)
return {1, remaining, math.ceil(new_tat - now), 0}
";

impl Guards {
    /// `None` when rate limits are off, or Redis is unreachable and the
    /// policy is to fail open; an error when it is to fail closed.
    pub async fn check_rate(&self, client: &str) -> Result<Option<Decision>, ApiError> {
        let Some(rate) = self.rate else {
            return Ok(None);
        };
        let mut redis = match self.redis() {
            Ok(r) => r,
            Err(e) => return self.rate_unavailable(&e),
        };
        let interval_ms = 1000.0 / rate.per_second;
        let answer: Result<(i64, i64, i64, i64), _> = redis::Script::new(GCRA)
            .key(format!("rl:{client}"))
            .arg(interval_ms)
            .arg(rate.burst)
            .invoke_async(&mut redis)
            .await;
        match answer {
            Ok((allowed, remaining, reset_ms, retry_ms)) => Ok(Some(Decision {
                allowed: allowed == 1,
                limit: rate.burst,
                remaining: remaining.max(0) as u32,
                reset: Duration::from_millis(reset_ms.max(0) as u64),
                retry_after: Duration::from_millis(retry_ms.max(0) as u64),
            })),
            Err(e) => self.rate_unavailable(&e),
        }
    }

    fn rate_unavailable(&self, error: &redis::RedisError) -> Result<Option<Decision>, ApiError> {
        unavailable("rate_limit", error);
        match self.rate_redis_down {
            RedisDownPolicy::Open => Ok(None),
            RedisDownPolicy::Closed => Err(ApiError::GuardUnavailable("rate_limit")),
        }
    }
}
