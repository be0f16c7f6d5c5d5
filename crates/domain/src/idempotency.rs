//! Idempotent writes: the key a client sends with a write it may retry, and the
//! fingerprint of the request stored beside it.
//!
//! Every idempotent write (a message, a run, a step, a tool call, a batch of
//! deltas) stores its key with the [`Fingerprint`] of the whole request: who
//! sent it, where to, and every field of the body. A later request with the
//! same key replays the first answer only if its fingerprint is the same; any
//! difference, in any field, is a conflict. One rule, on every node and under
//! concurrency (the key is unique where it is stored).

use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// A client's idempotency key: 1 to 200 printable ASCII characters (spaces
/// inside are fine), surrounding whitespace ignored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Box<str>);

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key is 1 to 200 printable ASCII characters")]
pub struct BadIdempotencyKey;

impl IdempotencyKey {
    pub const MAX_LEN: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, BadIdempotencyKey> {
        let key = raw.trim();
        let ok = (1..=Self::MAX_LEN).contains(&key.len()) && key.bytes().all(|b| (b' '..=b'~').contains(&b));
        if ok { Ok(Self(key.into())) } else { Err(BadIdempotencyKey) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a request's kind and its canonical JSON (object keys sorted at
/// every level), so two requests have the same fingerprint exactly when they
/// are the same request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl Fingerprint {
    /// The fingerprint of a request of `kind` (`message`, `run`, …) whose
    /// every field is in `request`.
    pub fn of(kind: &str, request: &impl Serialize) -> Self {
        let value = serde_json::to_value(request).unwrap_or(Value::Null);
        let mut text = String::with_capacity(128);
        text.push_str(kind);
        text.push('\n');
        canonical(&value, &mut text);
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
        Self(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A fingerprint read back from storage; `None` if it is not 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

/// Writes `value` as JSON with object keys sorted, whatever order they came in.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_trimmed_printable_ascii_of_bounded_length() {
        assert_eq!(IdempotencyKey::parse("  abc-1 ").unwrap().as_str(), "abc-1");
        assert_eq!(IdempotencyKey::parse("a b").unwrap().as_str(), "a b");
        for bad in ["", "   ", "é", "a\tb", &"k".repeat(201)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(200)).is_ok());
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint_and_any_difference_changes_it() {
        let a = Fingerprint::of("step", &json!({ "content": "hi", "data": { "x": 1, "y": [1, 2] } }));
        let reordered = Fingerprint::of("step", &json!({ "data": { "y": [1, 2], "x": 1 }, "content": "hi" }));
        assert_eq!(a, reordered);
        for other in [
            Fingerprint::of("step", &json!({ "content": "hi!", "data": { "x": 1, "y": [1, 2] } })),
            Fingerprint::of("step", &json!({ "content": "hi", "data": { "x": 1, "y": [2, 1] } })),
            Fingerprint::of("step", &json!({ "content": "hi", "data": { "x": 1.5, "y": [1, 2] } })),
            Fingerprint::of("tool_call", &json!({ "content": "hi", "data": { "x": 1, "y": [1, 2] } })),
        ] {
            assert_ne!(a, other);
        }
        assert_eq!(Fingerprint::from_hex(&a.to_hex()), Some(a));
        assert_eq!(Fingerprint::from_bytes(a.as_bytes()), Some(a));
        assert!(Fingerprint::from_hex("zz").is_none() && Fingerprint::from_bytes(&[1, 2]).is_none());
    }
}
