//! Repositories, one module per aggregate. Each function takes the transaction
//! that scopes it ([`TenantTx`](crate::TenantTx) or, for the registry,
//! [`PlatformTx`](crate::PlatformTx)); none can reach the pool.

pub mod api_keys;
pub mod audit;
pub mod conversations;
pub mod messages;
pub mod projects;
pub mod seed;
pub mod tenants;
pub mod usage;
