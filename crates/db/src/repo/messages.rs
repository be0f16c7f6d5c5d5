//! Messages of a conversation, stored once per idempotency key.

use super::Created;
use crate::{DbError, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::ConversationId;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub sender_id: Option<Uuid>,
    pub sender_kind: String,
    pub content: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, conversation_id, sender_id, sender_kind, content, metadata, idempotency_key, created_at";

/// What to store.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub conversation: ConversationId,
    pub sender_kind: &'static str,
    pub content: &'a str,
    pub metadata: &'a Value,
    pub idempotency_key: Option<&'a str>,
}

/// Stores a message unless its idempotency key was used before. A key reused for a
/// different message (another conversation or content) is a conflict.
pub async fn create(tx: &mut TenantTx, new: &NewMessage<'_>) -> Result<Created<Message>, DbError> {
    let (tenant, user) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    let inserted: Option<Message> = sqlx::query_as(&format!(
        "INSERT INTO messages (tenant_id, conversation_id, sender_id, sender_kind, content, metadata, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(new.conversation.as_uuid())
    .bind(user)
    .bind(new.sender_kind)
    .bind(new.content)
    .bind(new.metadata)
    .bind(new.idempotency_key)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(message) = inserted {
        return Ok(Created::New(message));
    }
    let existing: Message = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM messages WHERE tenant_id = $1 AND idempotency_key = $2"
    ))
    .bind(tenant)
    .bind(new.idempotency_key)
    .fetch_one(tx.conn())
    .await?;
    if existing.conversation_id != new.conversation.as_uuid() || existing.content != new.content {
        return Err(DbError::IdempotencyMismatch);
    }
    Ok(Created::Replayed(existing))
}

/// Newest first, older than the message `before`, at most `limit`.
pub async fn list(
    tx: &mut TenantTx,
    conversation: ConversationId,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Message>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM messages
          WHERE tenant_id = $1 AND conversation_id = $2
            AND ($3::uuid IS NULL OR seq < (SELECT seq FROM messages WHERE id = $3 AND tenant_id = $1))
          ORDER BY seq DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(conversation.as_uuid())
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}
