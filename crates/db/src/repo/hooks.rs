//! Inbound webhooks of the current tenant (GitHub, Slack), and the
//! deliveries they have seen, for refusing replays. The one lookup without a
//! tenant, from a hook's id to its tenant, is on the platform path.

use crate::{DbError, PlatformTx, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use switchboard_domain::TenantId;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct Hook {
    pub id: Uuid,
    /// `github` or `slack`.
    pub provider: String,
    /// The tenant secret its requests are signed with.
    pub secret_name: String,
    /// The channel topic its events go to.
    pub topic: String,
    pub description: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, provider, secret_name, topic, description, created_by, created_at";

pub async fn create(
    tx: &mut TenantTx,
    provider: &str,
    secret_name: &str,
    topic: &str,
    description: &str,
    by: &str,
) -> Result<Hook, DbError> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO inbound_hooks (tenant_id, provider, secret_name, topic, description, created_by)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(provider)
    .bind(secret_name)
    .bind(topic)
    .bind(description)
    .bind(by)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn list(tx: &mut TenantTx, before: Option<Uuid>, limit: i64) -> Result<Vec<Hook>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM inbound_hooks
          WHERE tenant_id = $1
            AND ($2::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM inbound_hooks WHERE id = $2))
          ORDER BY created_at DESC, id DESC LIMIT $3"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Hook, DbError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM inbound_hooks WHERE tenant_id = $1 AND id = $2"))
        .bind(tx.tenant_id().as_uuid())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

pub async fn delete(tx: &mut TenantTx, id: Uuid) -> Result<(), DbError> {
    let done = sqlx::query("DELETE FROM inbound_hooks WHERE tenant_id = $1 AND id = $2")
        .bind(tx.tenant_id().as_uuid())
        .bind(id)
        .execute(tx.conn())
        .await?;
    super::one_row(done)
}

/// The tenant and provider of hook `id`, if it exists.
pub async fn owner(tx: &mut PlatformTx, id: Uuid) -> Result<Option<(TenantId, String)>, DbError> {
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, provider FROM inbound_hooks WHERE id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
    Ok(row.map(|(t, p)| (TenantId::from(t), p)))
}

/// Remembers delivery `key` of `hook`; false when it was seen before (a
/// replay). Keys older than a day are forgotten on the way.
pub async fn first_delivery(tx: &mut TenantTx, hook: Uuid, key: &str) -> Result<bool, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    sqlx::query(
        "DELETE FROM inbound_deliveries
          WHERE tenant_id = $1 AND hook_id = $2 AND received_at < now() - interval '1 day'",
    )
    .bind(tenant)
    .bind(hook)
    .execute(tx.conn())
    .await?;
    let done = sqlx::query(
        "INSERT INTO inbound_deliveries (tenant_id, hook_id, delivery_key) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(hook)
    .bind(key)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}
