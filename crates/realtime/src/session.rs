//! What a connected socket carries: who it is, the topics it joined, its
//! presence, its event budget, and its slot in the tenant's connection count
//! (given back when the session is dropped, however the socket ended).

use crate::limits::SocketBucket;
use std::sync::Mutex;
use switchboard_cluster::Connections;
use switchboard_domain::{Role, TenantId, UserId};

/// A socket's identity and per-socket state, stored in its extensions.
pub struct Session {
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
    /// Rooms of the topics this socket joined.
    pub(crate) topics: Mutex<Vec<Box<str>>>,
    /// Rooms where this socket has a presence entry.
    pub(crate) presence: Mutex<Vec<Box<str>>>,
    pub(crate) bucket: Mutex<SocketBucket>,
    _slot: Slot,
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

impl Session {
    /// A session holding the slot just taken from `connections`.
    pub(crate) fn new(tenant: TenantId, user: UserId, role: Role, connections: Connections) -> Self {
        Self {
            tenant,
            user,
            role,
            topics: Mutex::new(Vec::new()),
            presence: Mutex::new(Vec::new()),
            bucket: Mutex::new(SocketBucket::default()),
            _slot: Slot { connections, tenant },
        }
    }

    pub(crate) fn has_topic(&self, room: &str) -> bool {
        lock(&self.topics).iter().any(|r| &**r == room)
    }

    pub(crate) fn topic_count(&self) -> usize {
        lock(&self.topics).len()
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
