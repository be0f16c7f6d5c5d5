//! Outbound webhooks: the event types an endpoint may subscribe to, its
//! signing secret and the Standard Webhooks signature ([`sign`]), the guard
//! that keeps deliveries off private and loopback addresses ([`guard`]), and
//! the worker that sends each endpoint's outbox in order ([`worker`]).
//!
//! The outbox itself is written by the changes, in their own transactions,
//! through [`event`].

pub mod guard;
pub mod worker;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

pub use switchboard_db::repo::webhooks::{EVENT_TYPES, event};

/// Whether `pattern` names a known event type, a category of them, or `*`.
pub fn valid_subscription(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(category) = pattern.strip_suffix(".*") {
        return EVENT_TYPES.iter().any(|t| t.split_once('.').is_some_and(|(c, _)| c == category));
    }
    EVENT_TYPES.contains(&pattern)
}

/// What a signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> Option<SecretString> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(format!("{SECRET_PREFIX}{}", B64.encode(bytes)).into())
}

/// The signature of a message: `v1,` and the base64 HMAC-SHA256, keyed by the
/// secret's bytes, of `{id}.{timestamp}.{body}` (Standard Webhooks). `None`
/// when `secret` is not a `whsec_` secret.
pub fn sign(secret: &SecretString, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = B64.decode(secret.expose_secret().strip_prefix(SECRET_PREFIX)?).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Some(format!("v1,{}", B64.encode(ctx.sign().as_ref())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_reference_does() {
        // The example of the Standard Webhooks specification.
        let secret: SecretString = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned().into();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(sign(&"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned().into(), "m", 1, b"").is_none());
    }

    #[test]
    fn subscriptions_name_known_types_categories_or_everything() {
        for ok in ["*", "task.*", "message.created", "approval.decided", "document.*"] {
            assert!(valid_subscription(ok), "{ok}");
        }
        for bad in ["", "task", "tasks.*", "task.deleted", "*.*", "run.*.x", "TASK.created"] {
            assert!(!valid_subscription(bad), "{bad}");
        }
    }
}
