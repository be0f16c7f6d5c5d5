//! Conversations of the current tenant. Private ones are visible (by RLS) to
//! their participants, their creator, and the tenant's owners, admins and services.

use super::one_row;
use crate::{DbError, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use switchboard_domain::{ConversationId, ProjectId};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Conversation {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub visibility: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, project_id, title, visibility, created_by, created_at";

pub async fn create(
    tx: &mut TenantTx,
    id: Option<ConversationId>,
    project: ProjectId,
    title: &str,
    private: bool,
) -> Result<Conversation, DbError> {
    let (tenant, user) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    Ok(sqlx::query_as(&format!(
        "INSERT INTO conversations (id, tenant_id, project_id, title, visibility, created_by)
         VALUES (COALESCE($1, gen_random_uuid()), $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(id.map(|c| c.as_uuid()))
    .bind(tenant)
    .bind(project.as_uuid())
    .bind(title)
    .bind(if private { "private" } else { "public" })
    .bind(user)
    .fetch_one(tx.conn())
    .await?)
}

/// A conversation the caller can see; anything else (another tenant's, a private
/// one the caller is not in) is not found.
pub async fn get(tx: &mut TenantTx, id: ConversationId) -> Result<Conversation, DbError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM conversations WHERE id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

pub async fn add_participant(tx: &mut TenantTx, id: ConversationId, user: Uuid) -> Result<(), DbError> {
    let tenant = tx.tenant_id().as_uuid();
    sqlx::query(
        "INSERT INTO conversation_participants (tenant_id, conversation_id, user_id)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(id.as_uuid())
    .bind(user)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A project's conversations the caller can see, newest first, before `before`.
pub async fn list(
    tx: &mut TenantTx,
    project: ProjectId,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Conversation>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM conversations
          WHERE tenant_id = $1 AND project_id = $2
            AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM conversations WHERE id = $3))
          ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(project.as_uuid())
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// Deletes a conversation with its messages and participants.
pub async fn delete(tx: &mut TenantTx, id: ConversationId) -> Result<(), DbError> {
    let done =
        sqlx::query("DELETE FROM conversations WHERE id = $1").bind(id.as_uuid()).execute(tx.conn()).await?;
    one_row(done)
}
