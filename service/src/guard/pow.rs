//! Proof of work: `GET /v1/challenge` hands out a challenge signed with
//! HMAC-SHA256 under the configured secret (so any replica, before or after
//! a restart, can check it) and bound to the client's pseudonym; a press
//! carries it back with a nonce such that SHA-256(`challenge_id:nonce`)
//! starts with `difficulty` zero bits. A challenge is good once, before it
//! expires: the first use is recorded with one `SET NX` in Redis.

use super::{Guards, unavailable};
use crate::error::ApiError;
use button_domain::pow::meets;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

#[derive(Clone)]
pub struct PowConfig {
    pub key: Vec<u8>,
    pub difficulty: u32,
    pub ttl: Duration,
}

/// What `GET /v1/challenge` answers, and (with `nonce`) what a press
/// carries back in its `pow` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    pub challenge_id: String,
    pub expires_at: i64,
    pub difficulty: u32,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

const MAX_NONCE_LEN: usize = 64;

impl PowConfig {
    fn mac(
        &self,
        challenge_id: &str,
        expires_at: i64,
        difficulty: u32,
        client: &str,
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Length-prefixed fields: no two field lists sign the same bytes.
        for field in [
            "button/challenge/v1",
            challenge_id,
            &expires_at.to_string(),
            &difficulty.to_string(),
            client,
        ] {
            mac.update(&(field.len() as u32).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }

    pub fn issue(&self, client: &str, now_ms: i64) -> Challenge {
        let challenge_id = uuid::Uuid::new_v4().to_string();
        let expires_at = now_ms + self.ttl.as_millis() as i64;
        let signature = hex::encode(
            self.mac(&challenge_id, expires_at, self.difficulty, client)
                .finalize()
                .into_bytes(),
        );
        Challenge {
            challenge_id,
            expires_at,
            difficulty: self.difficulty,
            signature,
            nonce: None,
        }
    }

    /// Everything but single use: signature, difficulty, expiry, work.
    pub fn verify(&self, answer: &Challenge, client: &str, now_ms: i64) -> Result<(), ApiError> {
        let signature = hex::decode(&answer.signature)
            .map_err(|_| ApiError::PowInvalid("signature is not hex"))?;
        self.mac(
            &answer.challenge_id,
            answer.expires_at,
            answer.difficulty,
            client,
        )
        .verify_slice(&signature)
        .map_err(|_| ApiError::PowInvalid("signature does not match this challenge and client"))?;
        if answer.difficulty < self.difficulty {
            return Err(ApiError::PowInvalid(
                "challenge is easier than the current difficulty",
            ));
        }
        if answer.expires_at <= now_ms {
            return Err(ApiError::PowExpired);
        }
        let nonce = answer
            .nonce
            .as_deref()
            .ok_or(ApiError::PowInvalid("no nonce"))?;
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
            return Err(ApiError::PowInvalid("nonce must be 1 to 64 bytes"));
        }
        if !meets(&answer.challenge_id, nonce, answer.difficulty) {
            return Err(ApiError::PowInvalid(
                "the hash does not have enough leading zero bits",
            ));
        }
        Ok(())
    }
}

impl Guards {
    /// Checks a press's answer; records the challenge as used. `Ok` when
    /// proof of work is off.
    pub async fn check_pow(
        &self,
        answer: Option<&Challenge>,
        client: &str,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let Some(pow) = &self.pow else { return Ok(()) };
        let answer = answer.ok_or(ApiError::PowRequired)?;
        pow.verify(answer, client, now_ms)?;
        // Kept until the challenge would have expired anyway (plus slack
        // for replicas' clocks).
        let keep_ms = (answer.expires_at - now_ms).max(0) as u64 + 60_000;
        let mut redis = self.redis().map_err(|e| {
            unavailable("pow", &e);
            ApiError::GuardUnavailable("pow")
        })?;
        let first: Option<String> = redis::cmd("SET")
            .arg(format!("pow:used:{}", answer.challenge_id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(keep_ms)
            .query_async(&mut redis)
            .await
            .map_err(|e| {
                unavailable("pow", &e);
                ApiError::GuardUnavailable("pow")
            })?;
        match first {
            Some(_) => Ok(()),
            None => Err(ApiError::PowReplayed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(difficulty: u32) -> PowConfig {
        PowConfig {
            key: b"0123456789abcdef0123".to_vec(),
            difficulty,
            ttl: Duration::from_secs(30),
        }
    }

    fn solved(c: &PowConfig, client: &str, now: i64) -> Challenge {
        let mut challenge = c.issue(client, now);
        challenge.nonce = Some(button_domain::pow::solve(
            &challenge.challenge_id,
            challenge.difficulty,
        ));
        challenge
    }

    #[test]
    fn a_solved_challenge_verifies() {
        let c = config(8);
        let answer = solved(&c, "c-1", 1_000);
        assert!(c.verify(&answer, "c-1", 2_000).is_ok());
    }

    #[test]
    fn every_tampering_is_refused() {
        let c = config(8);
        let answer = solved(&c, "c-1", 1_000);
        let code = |a: &Challenge, client: &str, now: i64| {
            c.verify(a, client, now).err().map(|e| e.code())
        };
        assert_eq!(
            code(&answer, "c-2", 2_000),
            Some("pow_invalid"),
            "another client"
        );
        assert_eq!(code(&answer, "c-1", 31_000), Some("pow_expired"));
        let mut later = answer.clone();
        later.expires_at += 60_000;
        assert_eq!(
            code(&later, "c-1", 2_000),
            Some("pow_invalid"),
            "expiry moved"
        );
        let mut easier = answer.clone();
        easier.difficulty = 0;
        assert_eq!(
            code(&easier, "c-1", 2_000),
            Some("pow_invalid"),
            "difficulty lowered"
        );
        let mut no_work = answer.clone();
        no_work.nonce = Some("x".repeat(65));
        assert_eq!(code(&no_work, "c-1", 2_000), Some("pow_invalid"));
        no_work.nonce = None;
        assert_eq!(code(&no_work, "c-1", 2_000), Some("pow_invalid"));
        let mut other_id = answer.clone();
        other_id.challenge_id = uuid::Uuid::new_v4().to_string();
        assert_eq!(code(&other_id, "c-1", 2_000), Some("pow_invalid"));
        // A challenge issued at a lower difficulty than today's.
        let old = solved(&config(4), "c-1", 1_000);
        assert_eq!(code(&old, "c-1", 2_000), Some("pow_invalid"));
    }
}
