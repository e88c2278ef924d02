//! The client's pseudonymous id: a keyed hash of its address, so the raw
//! address never reaches the topic, the database or the logs, and a
//! pseudonym cannot be turned back into an address without the secret.
//! The same keyed hash names a press sent with an `Idempotency-Key`
//! ([`Identity::request_id`]), so every attempt of it carries one id.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};

#[derive(Clone)]
pub struct Identity {
    key: Vec<u8>,
    /// Keys [`Identity::request_id`]: its own, so request ids say nothing
    /// about pseudonyms.
    request_key: Vec<u8>,
    trust_forwarded_for: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("trust_forwarded_for", &self.trust_forwarded_for)
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn new(secret: &[u8], trust_forwarded_for: bool) -> Identity {
        // A key of its own, so pseudonyms say nothing about challenge
        // signatures made with the same secret.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"button/identity/v1");
        let key = mac.finalize().into_bytes().to_vec();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"button/request-id/v1");
        Identity {
            key,
            request_key: mac.finalize().into_bytes().to_vec(),
            trust_forwarded_for,
        }
    }

    /// A random key for this process only.
    pub fn ephemeral() -> Identity {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        Identity::new(&[a.as_bytes().as_slice(), b.as_bytes()].concat(), false)
    }

    pub fn trusting_forwarded_for(mut self, trust: bool) -> Identity {
        self.trust_forwarded_for = trust;
        self
    }

    /// The address a request comes from: the peer, or, behind a trusted
    /// proxy, the last `X-Forwarded-For` entry (the one that proxy added;
    /// earlier entries are whatever the client claimed). When that entry is
    /// not an address, the peer counts: never an earlier entry.
    pub fn address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(forwarded) = headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return Some(forwarded);
        }
        peer.map(|p| p.ip())
    }

    /// `c-` and 16 hex digits. IPv6 addresses count per /64, the block one
    /// subscriber usually gets; IPv4-mapped IPv6 counts as the IPv4.
    pub fn pseudonym(&self, address: Option<IpAddr>) -> String {
        let material: Vec<u8> = match address.map(|a| a.to_canonical()) {
            Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
            Some(IpAddr::V6(v6)) => v6.octets()[..8].to_vec(),
            None => b"unknown".to_vec(),
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&material);
        let digest = mac.finalize().into_bytes();
        format!("c-{}", hex::encode(&digest[..8]))
    }

    /// The request id of a press `client` sends with Idempotency-Key
    /// `key`: the same for every attempt (and every replica sharing the
    /// secret), different for another client or key. A UUID in form (the
    /// first 16 bytes of a keyed SHA-256, marked version 8, RFC 9562), so
    /// it reads like the random ids of presses without a key.
    pub fn request_id(&self, client: &str, key: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.request_key).expect("HMAC takes any key length");
        // Length-prefixed, so no (client, key) pair reads as another.
        mac.update(&(client.len() as u64).to_be_bytes());
        mac.update(client.as_bytes());
        mac.update(key.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    pub fn of(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
        self.pseudonym(self.address(peer, headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("address"))
    }

    #[test]
    fn pseudonyms_are_keyed_stable_and_hide_the_address() {
        let a = Identity::new(b"0123456789abcdef", false);
        let b = Identity::new(b"fedcba9876543210", false);
        let p = a.pseudonym(ip("203.0.113.77"));
        assert_eq!(p, a.pseudonym(ip("203.0.113.77")), "stable");
        assert_ne!(p, b.pseudonym(ip("203.0.113.77")), "keyed");
        assert_ne!(p, a.pseudonym(ip("203.0.113.78")));
        assert!(p.starts_with("c-") && p.len() == 18, "{p}");
        assert!(!p.contains("203") || !p.contains("113"));
    }

    #[test]
    fn request_ids_are_stable_per_client_and_key_and_keyed() {
        let a = Identity::new(b"0123456789abcdef", false);
        let b = Identity::new(b"fedcba9876543210", false);
        let id = a.request_id("c-0011223344556677", "order-42");
        assert_eq!(id, a.request_id("c-0011223344556677", "order-42"), "stable");
        assert_eq!(
            id,
            Identity::new(b"0123456789abcdef", true).request_id("c-0011223344556677", "order-42"),
            "every replica with the secret agrees"
        );
        assert_ne!(id, a.request_id("c-8899aabbccddeeff", "order-42"), "client");
        assert_ne!(id, a.request_id("c-0011223344556677", "order-43"), "key");
        assert_ne!(id, b.request_id("c-0011223344556677", "order-42"), "keyed");
        // No pair reads as another by moving the boundary.
        assert_ne!(a.request_id("ab", "c"), a.request_id("a", "bc"));
        let parsed = uuid::Uuid::parse_str(&id).expect("UUID-shaped");
        assert_eq!(parsed.to_string(), id);
        assert_eq!(parsed.get_version_num(), 8);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let id = Identity::new(b"0123456789abcdef", false);
        assert_eq!(
            id.pseudonym(ip("2001:db8:1:2::1")),
            id.pseudonym(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            id.pseudonym(ip("2001:db8:1:2::1")),
            id.pseudonym(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            id.pseudonym(ip("::ffff:192.0.2.1")),
            id.pseudonym(ip("192.0.2.1"))
        );
    }

    #[test]
    fn forwarded_for_only_when_trusted_and_its_last_entry() {
        let peer = Some(SocketAddr::from(([10, 0, 0, 1], 4000)));
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, not-an-ip, 203.0.113.9"),
        );
        let untrusted = Identity::new(b"0123456789abcdef", false);
        assert_eq!(untrusted.address(peer, &headers), ip("10.0.0.1"));
        let trusted = untrusted.trusting_forwarded_for(true);
        assert_eq!(trusted.address(peer, &headers), ip("203.0.113.9"));
        assert_eq!(trusted.address(peer, &HeaderMap::new()), ip("10.0.0.1"));
        // A client's own claim never stands in for an entry the proxy did
        // not make an address.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, unknown"),
        );
        assert_eq!(trusted.address(peer, &headers), ip("10.0.0.1"));
        // Of several header lines, the proxy's is the last.
        let mut lines = HeaderMap::new();
        lines.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        lines.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(trusted.address(peer, &lines), ip("203.0.113.9"));
    }
}
