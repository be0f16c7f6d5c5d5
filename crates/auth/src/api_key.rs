//! Tenant API keys: `sb_` followed by 40 random base62 characters (about 238
//! bits). Only an HMAC-SHA-256 of the key under a server secret is stored, so a
//! leaked table reveals no usable key and cannot be checked offline without the
//! secret. The key itself is shown once, at creation.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

pub const PREFIX: &str = "sb_";
const BODY_LEN: usize = 40;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated key: `key` goes to the caller once; `prefix` and the hash
/// are stored.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub key: String,
    /// The first characters, for people to tell keys apart (`sb_AbCd1234`).
    pub prefix: String,
}

/// Hashes keys under the server's secret.
#[derive(Clone)]
pub struct ApiKeyHasher {
    key: hmac::Key,
}

impl std::fmt::Debug for ApiKeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyHasher([redacted])")
    }
}

impl ApiKeyHasher {
    pub fn new(secret: &[u8]) -> Self {
        // Domain-separate from any other use of the same secret (e.g. JWT_SECRET).
        let derived =
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), b"switchboard api-key hashing v1");
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()) }
    }

    pub fn hash(&self, key: &str) -> Vec<u8> {
        hmac::sign(&self.key, key.as_bytes()).as_ref().to_vec()
    }

    /// A new random key.
    pub fn generate(&self) -> Result<GeneratedKey, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        let mut key = String::with_capacity(PREFIX.len() + BODY_LEN);
        key.push_str(PREFIX);
        let mut buf = [0u8; 64];
        while key.len() < PREFIX.len() + BODY_LEN {
            rng.fill(&mut buf)?;
            // Rejection sampling keeps every character equally likely.
            for b in buf {
                if (b as usize) < 248 && key.len() < PREFIX.len() + BODY_LEN {
                    key.push(char::from(ALPHABET[b as usize % ALPHABET.len()]));
                }
            }
        }
        let prefix = key[..PREFIX.len() + 8].to_owned();
        Ok(GeneratedKey { key, prefix })
    }
}

/// Whether a bearer credential is an API key rather than a JWT.
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(PREFIX)
        && credential.len() == PREFIX.len() + BODY_LEN
        && credential[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_well_formed_and_hash_stably() {
        let hasher = ApiKeyHasher::new(b"secret");
        let a = hasher.generate().unwrap();
        let b = hasher.generate().unwrap();
        assert_ne!(a.key, b.key);
        assert!(is_api_key(&a.key) && a.key.starts_with(&a.prefix));
        assert_eq!(hasher.hash(&a.key), hasher.hash(&a.key));
        assert_ne!(hasher.hash(&a.key), hasher.hash(&b.key));
        assert_ne!(hasher.hash(&a.key), ApiKeyHasher::new(b"other").hash(&a.key), "the hash is keyed");
        assert!(!is_api_key("sb_short") && !is_api_key("eyJhbGciOi.x.y"));
    }
}
