//! `Idempotency-Key`: a retried press with the same key (from the same
//! client) gets the first answer and produces nothing new. The first
//! request reserves the key with one `SET NX`; it stores its answer there
//! once the broker acknowledged, or removes the reservation if the press
//! failed, so a retry may try again. A request that finds the reservation
//! waits for the answer, at most the produce deadline. A request dropped
//! before it finished (cut off by `request_timeout_ms`, or its client gone)
//! releases its reservation on the way out ([`Held`]), so a retry need not
//! wait for the reservation to expire.
//!
//! A failed or cut-off first attempt does not mean its press was not
//! stored: a produce whose ack never came may still be delivered by the
//! producer later (and an insert past its deadline may still commit). So
//! a press with a key never gets a random request id: its id is derived
//! from (client pseudonym, key) with the service secret
//! ([`super::identity::Identity::request_id`]), and every attempt carries
//! the same one. What absorbs the second copy is downstream: on ingest
//! `direct` and `outbox` the table's unique `request_id` (migration 0005;
//! the retry is answered with the first row's id), and on ingest `kafka`
//! (and for an outbox row the relay sent twice) the reducer, which drops a
//! request id it applied within its last `dedupe_window`
//! (`BUTTON_DEDUPE_WINDOW`, default 100000 ids). So with a key, a press is
//! counted at most once even when its first attempt's outcome was unknown,
//! as long as a retry on ingest `kafka` comes within that window. The id is stable across
//! replicas and restarts only with `BUTTON_SECRET` set (as the client
//! pseudonym is).

use super::{Guards, unavailable};
use crate::error::ApiError;
use redis::aio::ConnectionManager;
use std::time::Duration;

const PENDING: &str = "pending";
const MAX_KEY_LEN: usize = 255;

/// What the reservation found.
pub enum Reservation {
    /// This request goes ahead; finish it with [`Guards::idempotency_done`].
    Reserved(Held),
    /// The first request's answer, as it was sent.
    Replay(String),
}

/// A reservation this request holds. Dropped without
/// [`Guards::idempotency_done`] having finished (the handler cancelled),
/// it releases the key in the background, if it is still pending: an
/// answer stored meanwhile stays.
pub struct Held {
    slot: String,
    redis: Option<ConnectionManager>,
}

/// Deletes the key only while it holds the reservation, never an answer.
const RELEASE_PENDING: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

async fn release_pending(redis: &mut ConnectionManager, slot: &str) -> redis::RedisResult<()> {
    redis::cmd("EVAL")
        .arg(RELEASE_PENDING)
        .arg(1)
        .arg(slot)
        .arg(PENDING)
        .query_async(redis)
        .await
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(mut redis) = self.redis.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let slot = std::mem::take(&mut self.slot);
        runtime.spawn(async move {
            if let Err(e) = release_pending(&mut redis, &slot).await {
                // The reservation then expires on its own.
                unavailable("idempotency", &e);
            }
        });
    }
}

pub fn validate_key(key: &[u8]) -> Result<&str, ApiError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    if !valid {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    std::str::from_utf8(key).map_err(|_| ApiError::InvalidIdempotencyKey)
}

fn unreachable_redis(e: &redis::RedisError) -> ApiError {
    unavailable("idempotency", e);
    ApiError::GuardUnavailable("idempotency")
}

impl Guards {
    fn idempotency_redis(&self) -> Result<ConnectionManager, ApiError> {
        self.redis().map_err(|e| unreachable_redis(&e))
    }

    /// Reserves `key` for `client`, or returns the answer already given.
    /// `wait` bounds how long an in-flight first request is waited for.
    pub async fn idempotency_reserve(
        &self,
        client: &str,
        key: &str,
        wait: Duration,
    ) -> Result<Reservation, ApiError> {
        let mut redis = self.idempotency_redis()?;
        let slot = format!("idem:{client}:{key}");
        // The reservation outlives the produce deadline, so a crashed
        // request's key frees itself soon after.
        let pending_ms = wait.as_millis() as u64 + 5_000;
        let reserved: Option<String> = redis::cmd("SET")
            .arg(&slot)
            .arg(PENDING)
            .arg("NX")
            .arg("PX")
            .arg(pending_ms)
            .query_async(&mut redis)
            .await
            .map_err(|e| unreachable_redis(&e))?;
        if reserved.is_some() {
            return Ok(Reservation::Reserved(Held {
                slot,
                redis: Some(redis),
            }));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let value: Option<String> = redis::cmd("GET")
                .arg(&slot)
                .query_async(&mut redis)
                .await
                .map_err(|e| unreachable_redis(&e))?;
            match value {
                Some(v) if v != PENDING => return Ok(Reservation::Replay(v)),
                // The first request failed and let go: this one goes ahead
                // if it wins the key now.
                None => return Box::pin(self.idempotency_reserve(client, key, wait)).await,
                Some(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(ApiError::IdempotencyInProgress);
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Stores the answer (`Some`) or releases the key (`None`).
    pub async fn idempotency_done(&self, mut held: Held, answer: Option<&str>) {
        let Some(mut redis) = held.redis.clone() else {
            return;
        };
        let slot = held.slot.as_str();
        let result: Result<(), _> = match answer {
            Some(answer) => {
                redis::cmd("SET")
                    .arg(slot)
                    .arg(answer)
                    .arg("XX")
                    .arg("PX")
                    .arg(self.idempotency_ttl.as_millis() as u64)
                    .query_async(&mut redis)
                    .await
            }
            None => release_pending(&mut redis, slot).await,
        };
        // Finished: nothing left for the drop to release.
        held.redis = None;
        if let Err(e) = result {
            // The answer was sent; a retry within the pending window waits
            // and then gets 409, after it produces again (logged here).
            unavailable("idempotency", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255_bytes() {
        assert!(validate_key(b"order-42").is_ok());
        assert!(validate_key(b"a b").is_ok());
        assert!(validate_key(&[b'k'; 255]).is_ok());
        assert!(validate_key(&[b'k'; 256]).is_err());
        assert!(validate_key(b"").is_err());
        assert!(validate_key(b"tab\there").is_err());
        assert!(validate_key("é".as_bytes()).is_err());
    }
}
