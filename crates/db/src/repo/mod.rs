//! Repositories, one module per aggregate. Each function takes the transaction
//! that scopes it ([`TenantTx`](crate::TenantTx) or, for the registry,
//! [`PlatformTx`](crate::PlatformTx)); none can reach the pool.

pub mod api_keys;
pub mod audit;
pub mod conversations;
pub mod messages;
pub mod projects;
pub mod runs;
pub mod seed;
pub mod tenants;
pub mod usage;

/// The outcome of a write that honours an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Created<T> {
    /// Stored now.
    New(T),
    /// The key was used before for this same request: what it stored then.
    Replayed(T),
}

/// The outcome of a change aimed at one row: done, or not found (absent, or not
/// visible to this tenant, which RLS makes the same thing).
pub(crate) fn one_row(done: sqlx::postgres::PgQueryResult) -> Result<(), crate::DbError> {
    if done.rows_affected() == 0 { Err(crate::DbError::NotFound) } else { Ok(()) }
}
