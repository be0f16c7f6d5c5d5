//! Who is asking: a tenant member (user token), a tenant service (API key) or a
//! platform operator (the platform key).

use crate::{TenantId, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A role inside a tenant. `Service` is an API key acting for the tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Service => "service",
        }
    }

    /// Owners and admins manage keys, audit logs and tenant settings.
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    /// The roles a user token may carry (`service` is never a token claim).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(format!("unknown tenant role `{other}` (owner, admin or member)")),
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A person in a tenant, from a user token.
    User { tenant_id: TenantId, user_id: UserId, role: Role },
    /// A tenant API key; `scopes` bound what it may do.
    ApiKey { tenant_id: TenantId, key_id: uuid::Uuid, scopes: Vec<String> },
    /// A platform operator, authenticated by the platform key (never by a token).
    Platform { subject: String },
}

impl Principal {
    /// The tenant this principal acts in; `None` for platform operators.
    pub fn tenant_id(&self) -> Option<TenantId> {
        match self {
            Principal::User { tenant_id, .. } | Principal::ApiKey { tenant_id, .. } => Some(*tenant_id),
            Principal::Platform { .. } => None,
        }
    }

    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Principal::User { user_id, .. } => Some(*user_id),
            _ => None,
        }
    }

    /// The role RLS sees in `app.role`.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::User { role, .. } => Some(*role),
            Principal::ApiKey { .. } => Some(Role::Service),
            Principal::Platform { .. } => None,
        }
    }
}

/// The address a request comes from: the peer, or, behind a trusted proxy, the
/// client the proxy names. Set once per request, read by the limiters, audit
/// rows and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

impl ClientAddr {
    /// The address as per-client limits count it: an IPv4 address whole, an
    /// IPv6 address by its /64 (the block one subscriber usually holds).
    pub fn bucket(&self) -> u128 {
        use std::net::IpAddr;
        match self.0 {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u128::from(u32::from(v4)),
                None => u128::from(v6) & !((1u128 << 64) - 1),
            },
        }
    }
}
