//! Tenant secrets as stored: sealed values and the tenant's wrapped data key
//! (the sealing and unwrapping happen in `switchboard-vault`; nothing here
//! ever sees a value or a key in the clear). The re-wrap under a new master
//! key works on the platform path, tenant after tenant, and touches only
//! wrapped keys.

use crate::{DbError, PlatformTx, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use switchboard_domain::TenantId;
use uuid::Uuid;

/// A secret as listed: everything but its value.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct SecretMeta {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// 1 for the first value; each rotation adds one.
    pub version: i32,
    pub created_by: Option<String>,
    pub updated_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const META: &str = "id, name, description, version, created_by, updated_by, created_at, updated_at";

/// A secret with its sealed value.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Sealed {
    #[sqlx(flatten)]
    pub meta: SecretMeta,
    pub ciphertext: Vec<u8>,
}

/// The tenant's data key, wrapped: (master key id, bytes).
pub async fn data_key(tx: &mut TenantTx) -> Result<Option<(String, Vec<u8>)>, DbError> {
    Ok(sqlx::query_as("SELECT master_key_id, wrapped_key FROM tenant_data_keys WHERE tenant_id = $1")
        .bind(tx.tenant_id().as_uuid())
        .fetch_optional(tx.conn())
        .await?)
}

/// Stores the tenant's first data key; the one already stored (by a request
/// that got there first) wins and is answered.
pub async fn add_data_key(
    tx: &mut TenantTx,
    master_id: &str,
    wrapped: &[u8],
) -> Result<(String, Vec<u8>), DbError> {
    sqlx::query(
        "INSERT INTO tenant_data_keys (tenant_id, master_key_id, wrapped_key) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(master_id)
    .bind(wrapped)
    .execute(tx.conn())
    .await?;
    data_key(tx).await?.ok_or(DbError::NotFound)
}

/// Names and metadata, by name, after `after` (a name), at most `limit`.
pub async fn list(tx: &mut TenantTx, after: Option<&str>, limit: i64) -> Result<Vec<SecretMeta>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {META} FROM secrets WHERE tenant_id = $1 AND ($2::text IS NULL OR name > $2)
          ORDER BY name LIMIT $3"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(after)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// A secret with its sealed value; `lock` holds it until the transaction
/// ends (a rotation seals the next version knowing no other will).
pub async fn get(tx: &mut TenantTx, name: &str, lock: bool) -> Result<Sealed, DbError> {
    sqlx::query_as(&format!(
        "SELECT {META}, ciphertext FROM secrets WHERE tenant_id = $1 AND name = $2 {}",
        if lock { "FOR UPDATE" } else { "" }
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(name)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Stores a new secret under `id` (chosen by the caller: the value was sealed
/// for it).
pub async fn create(
    tx: &mut TenantTx,
    id: Uuid,
    name: &str,
    description: &str,
    ciphertext: &[u8],
    by: &str,
) -> Result<SecretMeta, DbError> {
    let created: Option<SecretMeta> = sqlx::query_as(&format!(
        "INSERT INTO secrets (id, tenant_id, name, description, ciphertext, created_by, updated_by)
         VALUES ($6, $1, $2, $3, $4, $5, $5)
         ON CONFLICT (tenant_id, name) DO NOTHING RETURNING {META}"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(name)
    .bind(description)
    .bind(ciphertext)
    .bind(by)
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    created.ok_or_else(|| DbError::Conflict(format!("a secret named `{name}` exists; PUT rotates its value")))
}

/// Stores a new value (sealed for `version`) and, if given, description.
pub async fn replace(
    tx: &mut TenantTx,
    name: &str,
    version: i32,
    ciphertext: &[u8],
    description: Option<&str>,
    by: &str,
) -> Result<SecretMeta, DbError> {
    sqlx::query_as(&format!(
        "UPDATE secrets SET version = $3, ciphertext = $4, description = COALESCE($5, description),
                updated_by = $6, updated_at = now()
          WHERE tenant_id = $1 AND name = $2 RETURNING {META}"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(name)
    .bind(version)
    .bind(ciphertext)
    .bind(description)
    .bind(by)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn delete(tx: &mut TenantTx, name: &str) -> Result<(), DbError> {
    let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
        .bind(tx.tenant_id().as_uuid())
        .bind(name)
        .execute(tx.conn())
        .await?;
    super::one_row(done)
}

/// A wrapped data key, for the re-wrap.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WrappedRow {
    pub tenant_id: Uuid,
    pub master_key_id: String,
    pub wrapped_key: Vec<u8>,
}

/// Wrapped keys not under `current` (of tenant `only`, or all), by tenant,
/// after `after`, at most `limit`.
pub async fn keys_to_rewrap(
    tx: &mut PlatformTx,
    current: &str,
    only: Option<TenantId>,
    after: Option<TenantId>,
    limit: i64,
) -> Result<Vec<WrappedRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, master_key_id, wrapped_key FROM tenant_data_keys
          WHERE master_key_id <> $1 AND ($2::uuid IS NULL OR tenant_id > $2) AND ($4::uuid IS NULL OR tenant_id = $4)
          ORDER BY tenant_id LIMIT $3",
    )
    .bind(current)
    .bind(after.map(|t| t.as_uuid()))
    .bind(limit)
    .bind(only.map(|t| t.as_uuid()))
    .fetch_all(tx.conn())
    .await?)
}

/// Replaces a tenant's wrapped key if it is still the one read (wrapped
/// under `was`); whether it did.
pub async fn rewrap(
    tx: &mut PlatformTx,
    tenant: Uuid,
    was: &str,
    master_id: &str,
    wrapped: &[u8],
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE tenant_data_keys SET master_key_id = $3, wrapped_key = $4, rewrapped_at = now()
          WHERE tenant_id = $1 AND master_key_id = $2",
    )
    .bind(tenant)
    .bind(was)
    .bind(master_id)
    .bind(wrapped)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many data keys (of tenant `only`, or all) are wrapped under another
/// master key than `current`.
pub async fn count_not_under(
    tx: &mut PlatformTx,
    current: &str,
    only: Option<TenantId>,
) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM tenant_data_keys WHERE master_key_id <> $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
    )
    .bind(current)
    .bind(only.map(|t| t.as_uuid()))
        .fetch_one(tx.conn())
        .await?)
}
