//! The audit log: one row per admin action, written in the same transaction as
//! the action, so an action without its audit row cannot commit.

use crate::{DbError, PlatformTx, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use switchboard_domain::TenantId;
use uuid::Uuid;

/// Who did it and where the request came from.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `user`, `api_key`, `platform` or `system`.
    pub kind: &'static str,
    pub id: String,
    pub request_id: Option<String>,
    pub ip: Option<std::net::IpAddr>,
}

/// What was done to what.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub details: Value,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditLog {
    pub id: Uuid,
    pub actor_kind: String,
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

async fn insert(
    conn: &mut PgConnection,
    tenant: TenantId,
    actor: &Actor,
    entry: &Entry<'_>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO audit_logs (tenant_id, actor_kind, actor_id, action, target_type, target_id, request_id, ip, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9)",
    )
    .bind(tenant.as_uuid())
    .bind(actor.kind)
    .bind(&actor.id)
    .bind(entry.action)
    .bind(entry.target_type)
    .bind(&entry.target_id)
    .bind(&actor.request_id)
    .bind(actor.ip.map(|ip| ip.to_string()))
    .bind(&entry.details)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records an action inside the acting tenant's transaction.
pub async fn record(tx: &mut TenantTx, actor: &Actor, entry: &Entry<'_>) -> Result<(), DbError> {
    let tenant = tx.tenant_id();
    insert(tx.conn(), tenant, actor, entry).await
}

/// Records a platform action on `tenant` (the transaction must act for it).
pub async fn record_platform(
    tx: &mut PlatformTx,
    tenant: TenantId,
    actor: &Actor,
    entry: &Entry<'_>,
) -> Result<(), DbError> {
    tx.act_for(tenant).await?;
    insert(tx.conn(), tenant, actor, entry).await
}

/// Filters for [`list`]; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Newest first, matching `filter`, older than the entry `before`, at most `limit`.
pub async fn list(
    tx: &mut TenantTx,
    filter: &Filter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AuditLog>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(
        "SELECT id, actor_kind, actor_id, action, target_type, target_id, request_id, host(ip) AS ip, details, created_at
           FROM audit_logs
          WHERE tenant_id = $1
            AND ($2::text IS NULL OR action = $2)
            AND ($3::text IS NULL OR actor_id = $3)
            AND ($4::text IS NULL OR target_type = $4)
            AND ($5::text IS NULL OR target_id = $5)
            AND ($6::timestamptz IS NULL OR created_at >= $6)
            AND ($7::timestamptz IS NULL OR created_at < $7)
            AND ($8::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM audit_logs WHERE id = $8 AND tenant_id = $1))
          ORDER BY created_at DESC, id DESC LIMIT $9",
    )
    .bind(tenant)
    .bind(&filter.action)
    .bind(&filter.actor_id)
    .bind(&filter.target_type)
    .bind(&filter.target_id)
    .bind(filter.since)
    .bind(filter.until)
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}
