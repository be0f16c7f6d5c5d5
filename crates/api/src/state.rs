//! What every handler can reach.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use switchboard_auth::{ApiKeyHasher, Verifier};
use switchboard_cluster::{RateLimiter, Redis};
use switchboard_db::Database;
use switchboard_realtime::Directory;

#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Database,
    pub redis: Option<Redis>,
    pub node_id: Arc<str>,
    pub verifier: Arc<Verifier>,
    pub key_hasher: ApiKeyHasher,
    pub directory: Directory,
    pub limiter: RateLimiter,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(
        db: Database,
        redis: Option<Redis>,
        verifier: Verifier,
        key_hasher: ApiKeyHasher,
        directory: Directory,
        limiter: RateLimiter,
        node_id: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            db,
            redis,
            node_id: node_id.into(),
            verifier: Arc::new(verifier),
            key_hasher,
            directory,
            limiter,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the node as draining: readiness answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
