//! What a connected socket carries: who it is and until when (its token's
//! expiry, moved on by `auth:refresh`), the topics it joined and its presence
//! entries, its event budget, and its slot in the tenant's connection count
//! (given back when the session is dropped, however the socket ended).
//!
//! One guard owns a socket's topic state: the handlers that change it
//! (`subscribe`, `unsubscribe`, `presence:track`) and the disconnect take the
//! session's [`Ops`] lock in turn, so parallel events on one socket cannot add
//! a topic twice or past the cap, and a disconnect waits for the handlers in
//! flight, then closes the session: whatever they joined, it leaves.

use crate::limits::SocketBucket;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use switchboard_cluster::Shares as Connections;
use switchboard_domain::{Role, TenantId, UserId};

/// A socket's identity and per-socket state, stored in its extensions.
pub struct Session {
    pub tenant: TenantId,
    pub user: UserId,
    role: AtomicU8,
    /// The token's `exp` (seconds since the epoch).
    expires_at: AtomicU64,
    /// Serialises the handlers that change `topics` and the disconnect.
    ops: tokio::sync::Mutex<()>,
    topics: Mutex<Topics>,
    pub(crate) bucket: Mutex<SocketBucket>,
    _slot: Slot,
}

/// The rooms a socket joined and where it has presence entries.
#[derive(Default)]
pub(crate) struct Topics {
    /// Set by the disconnect: no handler changes anything after it.
    closed: bool,
    pub rooms: Rooms,
    pub presence: Rooms,
}

/// A set of room names, kept sorted: every publish and every delivery asks a
/// socket whether it holds a room, and a socket may hold hundreds. As small
/// as a `Vec` (nothing allocated while empty), with a binary search instead
/// of a scan.
#[derive(Default, Clone, Debug)]
pub(crate) struct Rooms(Vec<Box<str>>);

impl Rooms {
    pub(crate) fn contains(&self, room: &str) -> bool {
        self.0.binary_search_by(|r| (**r).cmp(room)).is_ok()
    }

    /// Adds `room`; false if it was there already.
    pub(crate) fn insert(&mut self, room: Box<str>) -> bool {
        match self.0.binary_search(&room) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, room);
                true
            }
        }
    }

    /// Takes `room` out; false if it was not there.
    pub(crate) fn remove(&mut self, room: &str) -> bool {
        match self.0.binary_search_by(|r| (**r).cmp(room)) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|r| &**r)
    }
}

impl IntoIterator for Rooms {
    type Item = Box<str>;
    type IntoIter = std::vec::IntoIter<Box<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A taken connection slot, released on drop.
struct Slot {
    connections: Connections,
    tenant: TenantId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.release(self.tenant.as_uuid());
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The right to change a socket's topics: held by one handler at a time.
pub(crate) struct Ops<'a> {
    session: &'a Session,
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl Ops<'_> {
    /// The socket's topic state, to read or change.
    pub(crate) fn topics(&self) -> std::sync::MutexGuard<'_, Topics> {
        lock(&self.session.topics)
    }

    pub(crate) fn tenant(&self) -> TenantId {
        self.session.tenant
    }
}

fn role_code(role: Role) -> u8 {
    match role {
        Role::Owner => 0,
        Role::Admin => 1,
        Role::Member => 2,
        Role::Service => 3,
    }
}

impl Session {
    /// A session holding the slot just taken from `connections`.
    pub(crate) fn new(
        tenant: TenantId,
        user: UserId,
        role: Role,
        expires_at: u64,
        connections: Connections,
    ) -> Self {
        Self {
            tenant,
            user,
            role: AtomicU8::new(role_code(role)),
            expires_at: AtomicU64::new(expires_at),
            ops: tokio::sync::Mutex::new(()),
            topics: Mutex::new(Topics::default()),
            bucket: Mutex::new(SocketBucket::default()),
            _slot: Slot { connections, tenant },
        }
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            0 => Role::Owner,
            1 => Role::Admin,
            _ => Role::Member,
        }
    }

    /// When the socket's token expires (seconds since the epoch).
    pub fn expires_at(&self) -> u64 {
        self.expires_at.load(Ordering::Relaxed)
    }

    /// A fresh token was verified for this session (`auth:refresh`).
    pub(crate) fn refreshed(&self, role: Role, expires_at: u64) {
        self.role.store(role_code(role), Ordering::Relaxed);
        self.expires_at.store(expires_at, Ordering::Relaxed);
    }

    /// Waits for the handlers ahead, then the right to change the socket's
    /// topics; `None` once the socket has disconnected.
    pub(crate) async fn ops(&self) -> Option<Ops<'_>> {
        let turn = self.ops.lock().await;
        if lock(&self.topics).closed {
            return None;
        }
        Some(Ops { session: self, _turn: turn })
    }

    /// Waits for the handlers in flight, closes the session, and hands back the
    /// rooms and presence entries to undo.
    pub(crate) async fn close(&self) -> Topics {
        let _turn = self.ops.lock().await;
        let mut topics = lock(&self.topics);
        let taken = std::mem::take(&mut *topics);
        topics.closed = true;
        taken
    }

    pub(crate) fn has_topic(&self, room: &str) -> bool {
        lock(&self.topics).rooms.contains(room)
    }

    pub(crate) fn has_presence(&self, room: &str) -> bool {
        lock(&self.topics).presence.contains(room)
    }

    /// The tenant room every socket joins.
    pub fn tenant_room(tenant: TenantId) -> String {
        format!("t:{tenant}")
    }

    /// The room of every socket of one user.
    pub fn user_room(tenant: TenantId, user: UserId) -> String {
        format!("u:{tenant}:{user}")
    }
}

#[cfg(test)]
mod tests {
    use super::Rooms;

    #[test]
    fn rooms_answer_membership_whatever_the_order_they_came_in() {
        let mut rooms = Rooms::default();
        let names: Vec<String> = (0..300).map(|i| format!("t:x:channel:{}", (i * 7919) % 300)).collect();
        for n in &names {
            assert!(rooms.insert(n.clone().into_boxed_str()));
        }
        assert!(!rooms.insert("t:x:channel:5".into()), "a room is held once");
        assert_eq!(rooms.len(), 300);
        assert!(names.iter().all(|n| rooms.contains(n)));
        assert!(!rooms.contains("t:x:channel:300") && !rooms.contains("t:y:channel:5"));
        for n in names.iter().step_by(2) {
            assert!(rooms.remove(n));
        }
        assert!(!rooms.remove("t:x:channel:0"), "already gone");
        assert_eq!(rooms.len(), 150);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(rooms.contains(n), i % 2 == 1, "{n}");
        }
        assert_eq!(rooms.into_iter().count(), 150);
    }
}
