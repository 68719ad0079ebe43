//! Personal access tokens: 32 random bytes, shown once, stored as SHA-256.
//!
//! PATs are high-entropy random strings, so a fast hash is the right
//! storage form (as GitHub does): there is nothing to brute-force.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Every PAT starts with this, so scanners can spot leaked ones.
pub const PREFIX: &str = "ferry_pat_";

/// Makes a new PAT.
pub fn generate() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Whether a string has the shape of a PAT (not whether it is valid).
pub fn looks_like_pat(token: &str) -> bool {
    token.len() == PREFIX.len() + 43
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The stored form of a PAT: lowercase hex SHA-256.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_well_formed_and_hash_stably() {
        let first = generate().expect("random");
        let second = generate().expect("random");
        assert_ne!(first, second);
        assert!(looks_like_pat(&first), "{first}");
        assert_eq!(hash(&first), hash(&first));
        assert_ne!(hash(&first), hash(&second));
        assert_eq!(hash(&first).len(), 64);
        assert!(!hash(&first).contains(&first[PREFIX.len()..]));
    }

    #[test]
    fn malformed_tokens_are_not_pats() {
        assert!(!looks_like_pat(""));
        assert!(!looks_like_pat("ferry_pat_short"));
        assert!(!looks_like_pat(&format!("{PREFIX}{}", "!".repeat(43))));
        assert!(!looks_like_pat(&format!("other_{}", "a".repeat(47))));
    }
}
