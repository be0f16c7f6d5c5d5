//! Drain: take a node out of service without clients noticing more than a
//! reconnect. From the first moment new handshakes are refused (`over_capacity`,
//! code `node_draining`) and readiness answers 503, so the load balancer sends
//! reconnects elsewhere. Sockets get `system:drain { reconnect_after_ms }` in
//! batches spread over the drain window, each with its own jitter, so a client
//! that honours it reconnects (and resumes from its offsets) before the node
//! goes; at the end the remaining transports are closed, which socket.io-client
//! treats as a lost connection and reconnects by itself.

use crate::Inner;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

const BATCHES: usize = 10;

fn jitter(max: Duration) -> Duration {
    let ms = max.as_millis().max(1);
    Duration::from_millis((uuid::Uuid::new_v4().as_u128() % ms) as u64)
}

pub(crate) async fn drain(inner: &Inner) {
    if inner.draining.swap(true, Ordering::SeqCst) {
        return;
    }
    let Some(io) = inner.io.get() else { return };
    let sockets = io.sockets();
    // A few sockets need no long window: about 10 ms each, at most the configured one.
    let window = inner.config.drain_window.min(Duration::from_millis(10 * sockets.len() as u64));
    tracing::info!(sockets = sockets.len(), window_ms = window.as_millis() as u64, "draining");
    if !sockets.is_empty() {
        let batches = BATCHES.min(sockets.len());
        let per_batch = sockets.len().div_ceil(batches);
        let pause = window / batches as u32;
        for batch in sockets.chunks(per_batch) {
            for s in batch {
                let after = jitter(pause);
                let body = json!({ "reconnect_after_ms": after.as_millis() as u64 });
                if let Err(e) = s.emit("system:drain", &body) {
                    tracing::debug!(error = %e, sid = %s.id, "drain notice not sent");
                }
            }
            tokio::time::sleep(pause).await;
        }
    }
    io.close().await;
    tracing::info!("drained: every socket closed");
}
