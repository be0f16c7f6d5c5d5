//! Messages of a conversation, stored once per idempotency key (see
//! [`switchboard_domain::Fingerprint`]: the same key for any other request is a
//! conflict). Pages are bounded in bytes as well as in count.

use super::{Created, Sender, Sized, Slice, bounded, bounded_page_sql, by_key};
use crate::{DbError, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::{ConversationId, Fingerprint, IdempotencyKey};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub sender_id: Option<Uuid>,
    pub sender_kind: String,
    pub content: String,
    pub metadata: Value,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, conversation_id, sender_id, sender_kind, content, metadata, idempotency_key, created_at";

/// What to store. Every field but the key is part of the request's fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct NewMessage<'a> {
    pub conversation: ConversationId,
    pub sender_kind: &'static str,
    pub content: &'a str,
    pub metadata: &'a Value,
    #[serde(skip)]
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

/// Stores a message unless its idempotency key was used before: the same
/// request again answers the stored message, any other request under the key
/// is a conflict.
pub async fn create(tx: &mut TenantTx, new: &NewMessage<'_>) -> Result<Created<Message>, DbError> {
    let (tenant, user) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    let fingerprint =
        new.idempotency_key.map(|_| Fingerprint::of("message", &(Sender::of(tx.context()), new)));
    let inserted: Option<Message> = sqlx::query_as(&format!(
        "INSERT INTO messages (tenant_id, conversation_id, sender_id, sender_kind, content, metadata,
                               idempotency_key, idempotency_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(new.conversation.as_uuid())
    .bind(user)
    .bind(new.sender_kind)
    .bind(new.content)
    .bind(new.metadata)
    .bind(new.idempotency_key.map(IdempotencyKey::as_str))
    .bind(fingerprint.as_ref().map(Fingerprint::as_bytes))
    .fetch_optional(tx.conn())
    .await?;
    if let Some(message) = inserted {
        return Ok(Created::New(message));
    }
    let (Some(key), Some(fingerprint)) = (new.idempotency_key, fingerprint) else {
        return Err(DbError::Conflict("the message conflicts with a stored one".to_owned()));
    };
    let stored = by_key::<Message>(tx, "messages", COLUMNS, key).await?;
    // The row under the key went with its conversation meanwhile: nothing to replay.
    let stored = stored.ok_or_else(|| DbError::Conflict("nothing was stored; retry".to_owned()))?;
    Ok(Created::Replayed(stored.replay(&fingerprint)?))
}

/// Newest first, older than the message `before`: at most `limit` messages and,
/// after the first, at most `max_bytes` of content and metadata.
pub async fn list(
    tx: &mut TenantTx,
    conversation: ConversationId,
    before: Option<Uuid>,
    limit: i64,
    max_bytes: i64,
) -> Result<Slice<Message>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    let rows: Vec<Sized<Message>> = sqlx::query_as(&bounded_page_sql(
        COLUMNS,
        "octet_length(content) + octet_length(metadata::text)",
        "messages WHERE tenant_id = $1 AND conversation_id = $2
           AND ($3::uuid IS NULL OR seq < (SELECT seq FROM messages WHERE id = $3 AND tenant_id = $1))",
        "seq DESC",
    ))
    .bind(tenant)
    .bind(conversation.as_uuid())
    .bind(before)
    .bind(limit)
    .bind(max_bytes)
    .fetch_all(tx.conn())
    .await?;
    Ok(bounded(rows, limit, max_bytes))
}
