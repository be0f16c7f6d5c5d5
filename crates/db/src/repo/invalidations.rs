//! Cache invalidations that could not reach Redis, kept in Postgres until one
//! node has pushed them there (see the migration that creates the table). Every
//! node polls them, so a revocation or a suspension made while Redis is away
//! holds on every node meanwhile, and cannot come back with Redis's old entries.

use crate::{DbError, PlatformTx};
use uuid::Uuid;

/// One recorded invalidation: the namespace's tenant and kind (`tenant`,
/// `api_key`, `authz`, `run`). A namespace has at most one pending row; a
/// change while it is pending moves its `seq` on.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Invalidation {
    pub id: i64,
    pub seq: i64,
    pub tenant_id: Uuid,
    pub kind: String,
    /// Whether a node has already bumped the namespace's version in Redis.
    pub pushed: bool,
}

/// Records that `kind` of `tenant` changed while Redis could not be told.
pub async fn record(tx: &mut PlatformTx, tenant: Uuid, kind: &str) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO cache_invalidations (tenant_id, kind) VALUES ($1, $2)
         ON CONFLICT (tenant_id, kind) WHERE pushed_at IS NULL
         DO UPDATE SET seq = nextval('cache_invalidations_seq'), created_at = now()",
    )
    .bind(tenant)
    .bind(kind)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Invalidations recorded (or moved on) after sequence number `after`, and
/// every one not yet pushed, oldest first.
pub async fn poll(tx: &mut PlatformTx, after: i64) -> Result<Vec<Invalidation>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, seq, tenant_id, kind, pushed_at IS NOT NULL AS pushed FROM cache_invalidations
          WHERE seq > $1 OR pushed_at IS NULL ORDER BY seq LIMIT 10000",
    )
    .bind(after)
    .fetch_all(tx.conn())
    .await?)
}

/// Marks the rows `(id, seq)` as pushed to Redis, unless a newer change moved
/// one on meanwhile (it stays pending, to be pushed again), and forgets those
/// pushed a minute ago (every node has polled them by then).
pub async fn pushed(tx: &mut PlatformTx, rows: &[(i64, i64)]) -> Result<(), DbError> {
    let (ids, seqs): (Vec<i64>, Vec<i64>) = rows.iter().copied().unzip();
    sqlx::query(
        "UPDATE cache_invalidations SET pushed_at = now()
          WHERE (id, seq) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[])) AND pushed_at IS NULL",
    )
    .bind(ids)
    .bind(seqs)
    .execute(tx.conn())
    .await?;
    sqlx::query("DELETE FROM cache_invalidations WHERE pushed_at < now() - interval '1 minute'")
        .execute(tx.conn())
        .await?;
    Ok(())
}
