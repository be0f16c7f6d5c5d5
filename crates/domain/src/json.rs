//! Client-supplied JSON that is stored or broadcast (metadata, a run's input
//! and output, a step's data, a tool call's arguments and result): bounded in
//! size and depth, with numbers that survive Postgres's `jsonb` (which keeps
//! them as exact decimals: beyond ±1e300 they no longer read back as doubles).
//! [`JsonCap`] names each field's cap; [`check`] applies it.

use serde_json::Value;

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// How large a stored JSON field may be, by what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonCap {
    /// Metadata of projects and messages, a streamed delta's data: 16 KiB.
    Metadata,
    /// A run's input or output, a step's data, a tool call's arguments or
    /// result: 256 KiB.
    Document,
}

impl JsonCap {
    pub const fn bytes(self) -> usize {
        match self {
            JsonCap::Metadata => 16 * 1024,
            JsonCap::Document => 256 * 1024,
        }
    }
}

/// Whether a field must be an object or may be any JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Object,
    Any,
}

/// Why a JSON field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("must be an object")]
    NotAnObject,
    #[error("nested too deeply (at most {MAX_DEPTH} levels)")]
    TooDeep,
    #[error("has a number beyond ±1e300")]
    HugeNumber,
    #[error("is over {0} bytes of JSON")]
    TooLarge(usize),
}

impl JsonError {
    /// Size is a 413 for clients; the rest are invalid input (422).
    pub fn is_too_large(&self) -> bool {
        matches!(self, JsonError::TooLarge(_))
    }
}

/// Checks `value` against `shape` and `cap`; its encoded size is measured
/// without allocating the encoding.
pub fn check(value: &Value, shape: Shape, cap: JsonCap) -> Result<(), JsonError> {
    if shape == Shape::Object && !value.is_object() {
        return Err(JsonError::NotAnObject);
    }
    walk(value, 0)?;
    let mut size = ByteCount(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut size, value);
    if size.0 > cap.bytes() {
        return Err(JsonError::TooLarge(cap.bytes()));
    }
    Ok(())
}

fn walk(v: &Value, depth: usize) -> Result<(), JsonError> {
    if depth > MAX_DEPTH {
        return Err(JsonError::TooDeep);
    }
    match v {
        Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() > 1e300) => Err(JsonError::HugeNumber),
        Value::Array(items) => items.iter().try_for_each(|i| walk(i, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|i| walk(i, depth + 1)),
        _ => Ok(()),
    }
}

/// The longest preview a server event carries of a long text.
pub const PREVIEW_BYTES: usize = 1024;

/// The longest prefix of `text` within `max_bytes` that ends on a character
/// boundary, and whether anything was cut.
pub fn clip(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clip("héllo", 100), ("héllo", false));
        assert_eq!(clip("héllo", 2), ("h", true));
        assert_eq!(clip("héllo", 3), ("hé", true));
        assert_eq!(clip("", 0), ("", false));
    }

    #[test]
    fn size_depth_shape_and_numbers_are_checked() {
        assert_eq!(check(&json!({ "a": 1 }), Shape::Object, JsonCap::Metadata), Ok(()));
        assert_eq!(check(&json!([1]), Shape::Object, JsonCap::Metadata), Err(JsonError::NotAnObject));
        assert_eq!(check(&json!([1]), Shape::Any, JsonCap::Metadata), Ok(()));
        let big = json!({ "s": "x".repeat(16 * 1024) });
        assert_eq!(check(&big, Shape::Object, JsonCap::Metadata), Err(JsonError::TooLarge(16 * 1024)));
        assert_eq!(check(&big, Shape::Object, JsonCap::Document), Ok(()));
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        assert_eq!(check(&deep, Shape::Any, JsonCap::Document), Err(JsonError::TooDeep));
        assert_eq!(
            check(&json!({ "n": 1e301 }), Shape::Object, JsonCap::Document),
            Err(JsonError::HugeNumber)
        );
    }
}
