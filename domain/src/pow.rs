//! The proof-of-work puzzle clients and the service agree on: find a
//! nonce such that SHA-256(`challenge_id:nonce`) starts with `difficulty`
//! zero bits. Expected work: 2^difficulty hashes.

use sha2::{Digest, Sha256};

pub fn work_hash(challenge_id: &str, nonce: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(challenge_id.as_bytes());
    h.update(b":");
    h.update(nonce.as_bytes());
    h.finalize().into()
}

pub fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

pub fn meets(challenge_id: &str, nonce: &str, difficulty: u32) -> bool {
    leading_zero_bits(&work_hash(challenge_id, nonce)) >= difficulty
}

/// The smallest decimal nonce meeting `difficulty`.
pub fn solve(challenge_id: &str, difficulty: u32) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|n| meets(challenge_id, n, difficulty))
        .expect("a nonce exists below 2^64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zero_bits_counts_across_bytes() {
        assert_eq!(leading_zero_bits(&[0, 0, 0b0001_0000, 0xff]), 19);
        assert_eq!(leading_zero_bits(&[0xff]), 0);
        assert_eq!(leading_zero_bits(&[0; 4]), 32);
    }

    #[test]
    fn a_solution_meets_its_difficulty() {
        let nonce = solve("challenge", 10);
        assert!(meets("challenge", &nonce, 10));
        assert!(leading_zero_bits(&work_hash("challenge", &nonce)) >= 10);
    }
}
