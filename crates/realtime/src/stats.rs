//! Counters of what the Socket.IO layer did, for `/metrics`: handshakes
//! accepted and refused (the refusal codes are counted in
//! [`switchboard_telemetry`], by code).

use std::sync::atomic::{AtomicU64, Ordering};

/// Handshake outcomes since start.
#[derive(Debug, Default)]
pub struct Handshakes {
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl Handshakes {
    /// Counts one handshake: `None` accepted, `Some(code)` refused with `code`.
    pub(crate) fn record(&self, refusal: Option<&'static str>) {
        match refusal {
            None => self.accepted.fetch_add(1, Ordering::Relaxed),
            Some(code) => {
                switchboard_telemetry::metrics().refused("handshake", code);
                self.refused.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}
