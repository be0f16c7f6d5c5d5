//! The tenants registry (platform path), and a tenant's view of its own row.

use super::one_row;
use crate::{DbError, PlatformTx, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::{TenantId, TenantStatus};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    #[schema(value_type = Object)]
    pub limits: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    pub fn status(&self) -> TenantStatus {
        TenantStatus::parse(&self.status).unwrap_or(TenantStatus::Suspended)
    }
}

const COLUMNS: &str = "id, name, status, limits, created_at, updated_at";

/// Creates a tenant; `id` lets a caller choose it (seeding), else one is generated.
pub async fn create(
    tx: &mut PlatformTx,
    id: Option<TenantId>,
    name: &str,
    limits: &Value,
) -> Result<Tenant, DbError> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO tenants (id, name, limits) VALUES (COALESCE($1, gen_random_uuid()), $2, $3) RETURNING {COLUMNS}"
    ))
    .bind(id.map(|t| t.as_uuid()))
    .bind(name)
    .bind(limits)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn get(tx: &mut PlatformTx, id: TenantId) -> Result<Tenant, DbError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// The caller's own tenant, as RLS lets a tenant see it.
pub async fn own(tx: &mut TenantTx) -> Result<Tenant, DbError> {
    let id = tx.tenant_id();
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// Tenants in creation order, after the cursor `after` (an id), at most `limit`.
pub async fn list(tx: &mut PlatformTx, after: Option<Uuid>, limit: i64) -> Result<Vec<Tenant>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenants
          WHERE $1::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM tenants WHERE id = $1)
          ORDER BY created_at, id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn delete(tx: &mut PlatformTx, id: TenantId) -> Result<(), DbError> {
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1").bind(id.as_uuid()).execute(tx.conn()).await?;
    one_row(done)
}

/// Changes name, status and/or limits (limits replace the stored overrides).
pub async fn update(
    tx: &mut PlatformTx,
    id: TenantId,
    name: Option<&str>,
    status: Option<TenantStatus>,
    limits: Option<&Value>,
) -> Result<Tenant, DbError> {
    sqlx::query_as(&format!(
        "UPDATE tenants SET name = COALESCE($2, name), status = COALESCE($3, status),
                limits = COALESCE($4, limits), updated_at = now()
          WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id.as_uuid())
    .bind(name)
    .bind(status.map(TenantStatus::as_str))
    .bind(limits)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}
