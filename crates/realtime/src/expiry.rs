//! Sockets do not outlive their tokens. Every socket is filed under its
//! token's `exp`; once a second the sweeper takes the sockets whose time has
//! come, and each that has not refreshed its token in band (`auth:refresh`)
//! gets `error { code: token_expired }` and is closed. One ordered set for the
//! node, not a timer per socket.

use crate::codes::EventError;
use crate::{Inner, Session};
use socketioxide::socket::Sid;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use switchboard_domain::ErrorKind;

/// Sockets by the time their token expires (seconds since the epoch).
#[derive(Default)]
pub(crate) struct Expiries {
    due: Mutex<BTreeSet<(u64, Sid)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Expiries {
    pub(crate) fn add(&self, at: u64, sid: Sid) {
        lock(&self.due).insert((at, sid));
    }

    pub(crate) fn remove(&self, at: u64, sid: Sid) {
        lock(&self.due).remove(&(at, sid));
    }

    /// The sockets due at or before `now`, taken out of the set.
    fn take_due(&self, now: u64) -> Vec<Sid> {
        let mut due = lock(&self.due);
        let later = due.split_off(&(now + 1, Sid::ZERO));
        let expired = std::mem::replace(&mut *due, later);
        expired.into_iter().map(|(_, sid)| sid).collect()
    }
}

pub(crate) async fn sweeper(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = now();
        let Some(io) = inner.io.get() else { continue };
        for sid in inner.expiries.take_due(now) {
            let Some(socket) = io.get_socket(sid) else { continue };
            let Some(session) = socket.extensions.get::<Arc<Session>>() else { continue };
            // Refreshed meanwhile: it was filed again under its new time.
            if session.expires_at() > now {
                continue;
            }
            tracing::info!(sid = %sid, tenant_id = %session.tenant, "token expired; closing the socket");
            let err =
                EventError::new(ErrorKind::TokenExpired, "the token expired; reconnect with a fresh one")
                    .with_code("token_expired");
            let _ = socket.emit("error", &err.body());
            let _ = socket.disconnect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_due_are_taken_and_each_once() {
        let e = Expiries::default();
        let (a, b, c) = (Sid::new(), Sid::new(), Sid::new());
        e.add(10, a);
        e.add(20, b);
        e.add(30, c);
        e.remove(30, c);
        assert_eq!(e.take_due(9), Vec::<Sid>::new());
        assert_eq!(e.take_due(20), vec![a, b]);
        assert!(e.take_due(100).is_empty());
    }
}
