//! Subscribers that missed events they can no longer get live: the socket's
//! queue was full when an event was broadcast to its topic (a slow consumer),
//! or the bus lost events (Redis went away and came back without them).
//!
//! Such a socket is never skipped silently. It is taken out of the topic's
//! room at once, before the next event is delivered, so nothing after the gap
//! reaches it as if nothing had happened; then, in the background, it leaves
//! the topic as an `unsubscribe` would and is told `system:lagging { topic,
//! offset }` as soon as its queue has room. `offset` is the last event of the
//! topic delivered before the gap: subscribing again with `since: offset`
//! replays what was missed, or answers `recovered: false` when history no
//! longer holds it (then the client refetches over REST). A socket that cannot
//! take even the notice within [`NOTICE_TIME`] is disconnected: it reconnects
//! and recovers from its own offsets.

use crate::{Inner, Realtime, Session};
use serde_json::json;
use socketioxide::extract::SocketRef;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchboard_cluster::Offset;
use switchboard_domain::Topic;

/// How long a lagging socket has to make room for its notice.
const NOTICE_TIME: Duration = Duration::from_secs(10);

/// How often a full queue is tried again for the notice.
const NOTICE_RETRY: Duration = Duration::from_millis(20);

/// Subscribers this node took off a topic, and those it disconnected because
/// they could not take even the notice (metrics).
#[derive(Debug, Default)]
pub(crate) struct LaggingStats {
    pub detached: AtomicU64,
    pub disconnects: AtomicU64,
}

/// Takes `s` out of `room` now, and off the topic and told in the background.
/// `offset` is the room's last delivered event before the gap (`None` when
/// nothing was delivered yet).
pub(crate) fn detach(inner: &Arc<Inner>, s: SocketRef, room: &str, offset: Option<&Offset>) {
    s.leave(room.to_owned());
    inner.lagging.detached.fetch_add(1, Ordering::Relaxed);
    let rt = Realtime { inner: inner.clone() };
    let room: Arc<str> = Arc::from(room);
    let offset = offset.map(Offset::to_string);
    tokio::spawn(async move {
        if let Some(session) = s.extensions.get::<Arc<Session>>() {
            // Waits for the socket's own handlers (one at a time per socket).
            if let Some(ops) = session.ops().await {
                crate::subscribe::leave(&rt, &s, &ops, &room).await;
            }
        }
        let topic = Topic::from_room(&room).map_or_else(|| room.to_string(), |(_, t)| t.to_string());
        tracing::info!(sid = %s.id, topic, "subscriber lagging: taken off the topic");
        let body = json!({ "topic": topic, "offset": offset });
        let deadline = tokio::time::Instant::now() + NOTICE_TIME;
        loop {
            match s.emit("system:lagging", &body) {
                Ok(()) => return,
                Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(NOTICE_RETRY).await;
                }
                Err(e) => {
                    tracing::info!(error = %e, sid = %s.id, "lagging socket cannot take its notice; disconnecting");
                    rt.inner.lagging.disconnects.fetch_add(1, Ordering::Relaxed);
                    let _ = s.disconnect();
                    return;
                }
            }
        }
    });
}
