//! Projects of the current tenant.

use super::one_row;
use crate::{DbError, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::ProjectId;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Project {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, name, description, metadata, created_at, updated_at";

pub async fn create(
    tx: &mut TenantTx,
    id: Option<ProjectId>,
    name: &str,
    description: &str,
) -> Result<Project, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "INSERT INTO projects (id, tenant_id, name, description)
         VALUES (COALESCE($1, gen_random_uuid()), $2, $3, $4) RETURNING {COLUMNS}"
    ))
    .bind(id.map(|p| p.as_uuid()))
    .bind(tenant)
    .bind(name)
    .bind(description)
    .fetch_one(tx.conn())
    .await?)
}

/// A project by id; another tenant's id is simply not found.
pub async fn get(tx: &mut TenantTx, id: ProjectId) -> Result<Project, DbError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM projects WHERE id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// Newest first, before the cursor `before` (an id), at most `limit`.
pub async fn list(tx: &mut TenantTx, before: Option<Uuid>, limit: i64) -> Result<Vec<Project>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM projects
          WHERE tenant_id = $1
            AND ($2::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM projects WHERE id = $2))
          ORDER BY created_at DESC, id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// Changes the given fields; `None` leaves a field as it is.
pub async fn update(
    tx: &mut TenantTx,
    id: ProjectId,
    name: Option<&str>,
    description: Option<&str>,
    metadata: Option<&Value>,
) -> Result<Project, DbError> {
    sqlx::query_as(&format!(
        "UPDATE projects SET name = COALESCE($2, name), description = COALESCE($3, description),
                metadata = COALESCE($4, metadata), updated_at = now()
          WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id.as_uuid())
    .bind(name)
    .bind(description)
    .bind(metadata)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Deletes a project with its conversations, messages and runs.
pub async fn delete(tx: &mut TenantTx, id: ProjectId) -> Result<(), DbError> {
    // Deleting the project deletes its conversations too, and a cascade does
    // not ask row-level security: a caller who cannot see one of them may not
    // delete it this way.
    let role = tx.context().role;
    if !role.is_admin() && role != switchboard_domain::Role::Service {
        // Locked first, so no conversation can be added between the count and the delete.
        sqlx::query("SELECT 1 FROM projects WHERE id = $1 FOR UPDATE")
            .bind(id.as_uuid())
            .execute(tx.conn())
            .await?;
        let hidden: i64 = sqlx::query_scalar("SELECT app.hidden_private_conversations($1)")
            .bind(id.as_uuid())
            .fetch_one(tx.conn())
            .await?;
        if hidden > 0 {
            return Err(DbError::Forbidden(
                "the project holds private conversations you cannot see; an owner or admin can delete it"
                    .to_owned(),
            ));
        }
    }
    let done =
        sqlx::query("DELETE FROM projects WHERE id = $1").bind(id.as_uuid()).execute(tx.conn()).await?;
    one_row(done)
}
