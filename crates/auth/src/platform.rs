//! The platform operator's credential (`PLATFORM_KEY`): a long random secret
//! the operator sends as `Authorization: Bearer <key>` to the platform routes
//! (tenants, drain). It is deliberately apart from user tokens: no JWT, however
//! it is signed and whatever its `role` claim, is a platform operator, so a
//! Supabase project's widely shared `service_role` key cannot manage tenants.

use ring::hmac;
use secrecy::{ExposeSecret, SecretString};

/// The shortest platform key accepted.
pub const MIN_LEN: usize = 32;

/// A configured platform key, compared in constant time.
#[derive(Clone)]
pub struct PlatformKey {
    /// A per-process HMAC key and the key's tag under it: `hmac::verify`
    /// compares tags in constant time, whatever the candidate's length or how
    /// much of it matches, and the key itself is not kept.
    mac: hmac::Key,
    tag: Vec<u8>,
}

impl std::fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformKey([redacted])")
    }
}

impl PlatformKey {
    /// `None` when the key is shorter than [`MIN_LEN`] characters.
    pub fn new(key: &SecretString) -> Option<Self> {
        let key = key.expose_secret().trim();
        if key.chars().count() < MIN_LEN {
            return None;
        }
        let mac = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).ok()?;
        let tag = hmac::sign(&mac, key.as_bytes()).as_ref().to_vec();
        Some(Self { mac, tag })
    }

    /// Whether `candidate` is the platform key.
    pub fn matches(&self, candidate: &str) -> bool {
        hmac::verify(&self.mac, candidate.trim().as_bytes(), &self.tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_exact_key_matches_and_short_keys_are_refused() {
        let key = PlatformKey::new(&SecretString::from("k".repeat(40))).unwrap();
        assert!(key.matches(&"k".repeat(40)));
        assert!(!key.matches(&"k".repeat(39)) && !key.matches("") && !key.matches(&"k".repeat(41)));
        assert!(PlatformKey::new(&SecretString::from("short")).is_none());
        assert!(!format!("{key:?}").contains('k'));
    }
}
