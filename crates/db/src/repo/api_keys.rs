//! Tenant API keys: created and revoked inside the tenant; looked up by hash on
//! the platform path (the tenant is not known until the key is found).

use super::one_row;
use crate::{DbError, PlatformTx, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use switchboard_domain::TenantId;
use uuid::Uuid;

/// A key as listed: never the key or its hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, prefix, scopes, created_by, created_at, last_used_at, revoked_at";

pub async fn create(
    tx: &mut TenantTx,
    name: &str,
    prefix: &str,
    hash: &[u8],
    scopes: &[String],
) -> Result<ApiKey, DbError> {
    let (tenant, user) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    Ok(sqlx::query_as(&format!(
        "INSERT INTO api_keys (tenant_id, name, prefix, key_hash, scopes, created_by)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(name)
    .bind(prefix)
    .bind(hash)
    .bind(scopes)
    .bind(user)
    .fetch_one(tx.conn())
    .await?)
}

/// Newest first, revoked ones included (with `revoked_at`).
pub async fn list(tx: &mut TenantTx, before: Option<Uuid>, limit: i64) -> Result<Vec<ApiKey>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1
            AND ($2::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM api_keys WHERE id = $2))
          ORDER BY created_at DESC, id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// Revokes a live key; a missing or already revoked key is not found.
pub async fn revoke(tx: &mut TenantTx, id: Uuid) -> Result<(), DbError> {
    let done = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .execute(tx.conn())
        .await?;
    one_row(done)
}

/// What authenticating with a key needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize, serde::Deserialize)]
pub struct KeyGrant {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scopes: Vec<String>,
}

/// The live key with this hash, if any.
pub async fn lookup(tx: &mut PlatformTx, hash: &[u8]) -> Result<Option<KeyGrant>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(tx.conn())
    .await?)
}

impl KeyGrant {
    pub fn tenant(&self) -> TenantId {
        TenantId(self.tenant_id)
    }
}
