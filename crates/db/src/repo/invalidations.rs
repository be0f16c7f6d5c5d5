//! Cache invalidations that could not reach Redis, kept in Postgres until one
//! node has pushed them there (see the migration that creates the table). Every
//! node polls them, so a revocation or a suspension made while Redis is away
//! holds on every node meanwhile, and cannot come back with Redis's old entries.

use crate::{DbError, PlatformTx};
use uuid::Uuid;

/// One recorded invalidation: the namespace's tenant and kind (`tenant`,
/// `api_key`, `authz`, `run`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Invalidation {
    pub id: i64,
    pub tenant_id: Uuid,
    pub kind: String,
    /// Whether a node has already bumped the namespace's version in Redis.
    pub pushed: bool,
}

/// Records that `kind` of `tenant` changed while Redis could not be told.
pub async fn record(tx: &mut PlatformTx, tenant: Uuid, kind: &str) -> Result<(), DbError> {
    sqlx::query("INSERT INTO cache_invalidations (tenant_id, kind) VALUES ($1, $2)")
        .bind(tenant)
        .bind(kind)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Invalidations recorded after `after`, and every one not yet pushed, oldest first.
pub async fn poll(tx: &mut PlatformTx, after: i64) -> Result<Vec<Invalidation>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, kind, pushed_at IS NOT NULL AS pushed FROM cache_invalidations
          WHERE id > $1 OR pushed_at IS NULL ORDER BY id LIMIT 10000",
    )
    .bind(after)
    .fetch_all(tx.conn())
    .await?)
}

/// Marks `ids` as pushed to Redis, and forgets those pushed a minute ago (every
/// node has polled them by then).
pub async fn pushed(tx: &mut PlatformTx, ids: &[i64]) -> Result<(), DbError> {
    sqlx::query("UPDATE cache_invalidations SET pushed_at = now() WHERE id = ANY($1) AND pushed_at IS NULL")
        .bind(ids)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM cache_invalidations WHERE pushed_at < now() - interval '1 minute'")
        .execute(tx.conn())
        .await?;
    Ok(())
}
