//! Counters of what the Socket.IO layer did, for `/metrics`: handshakes
//! accepted and refused (by refusal code, a small fixed vocabulary, so the
//! label set stays bounded).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Handshake outcomes since start.
#[derive(Debug, Default)]
pub struct Handshakes {
    accepted: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Handshakes {
    /// Counts one handshake: `None` accepted, `Some(code)` refused with `code`.
    pub(crate) fn record(&self, refusal: Option<&'static str>) {
        match refusal {
            None => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Some(code) => {
                let mut refused = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *refused.entry(code).or_insert(0) += 1;
            }
        }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Refusals by code.
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        let refused = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        refused.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
