//! Sending a message: one code path for `message:send` and
//! `POST /conversations/{id}/messages`. The message and its idempotency key are
//! stored in one tenant transaction; only a newly stored message is broadcast
//! (`message:new` on `conversation:<id>`), after the commit. The same key again
//! with the same request (sender, conversation, content, metadata) stores and
//! broadcasts nothing and answers with the stored message; any other request
//! under the key is a conflict. [`MessageView`] is how a message is shown, over
//! REST, in acks and in events; an event larger than the tenant's payload cap
//! carries a preview of the content and no metadata (the whole message is over
//! REST).

use crate::codes::EventError;
use crate::event::{Ack, Ev, admit, payload, reply, traced};
use crate::{From, Realtime};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::TryData;
use std::borrow::Cow;
use switchboard_db::repo::Created;
use switchboard_db::repo::conversations;
use switchboard_db::repo::messages::{self, Message, NewMessage};
use switchboard_db::repo::webhooks;
use switchboard_db::{DbError, TenantContext};
use switchboard_domain::json::{self, JsonCap, Shape};
use switchboard_domain::{ConversationId, ErrorKind, IdempotencyKey, Topic};
use uuid::Uuid;

/// The longest message content, in characters.
pub const MAX_CONTENT_CHARS: usize = 65_536;

/// What a `message:new` adds to history beside the content and metadata
/// (ids, times, the envelope), generously.
pub const EVENT_OVERHEAD: usize = 512;

/// A message as clients see it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub sender_id: Option<Uuid>,
    /// `user`, `agent` or `system`.
    pub sender_kind: String,
    /// The text; in a `message:new` event over the tenant's payload cap, its
    /// first characters (then `truncated` is true).
    pub content: String,
    #[schema(value_type = Object)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub idempotency_key: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Only in events: the content was cut to fit the tenant's payload cap.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl std::convert::From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            id: m.id,
            conversation_id: m.conversation_id,
            sender_id: m.sender_id,
            sender_kind: m.sender_kind,
            content: m.content,
            metadata: Some(m.metadata),
            idempotency_key: m.idempotency_key,
            created_at: m.created_at,
            truncated: false,
        }
    }
}

impl MessageView {
    /// The `message:new` event for `message`, within `max_bytes`: whole if it
    /// fits, else a preview of the content without metadata.
    pub fn event(message: &Message, max_bytes: usize) -> Self {
        let whole = Self::from(message.clone());
        let fits = serde_json::to_vec(&whole).map(|v| v.len() <= max_bytes).unwrap_or(false);
        if fits {
            return whole;
        }
        // What the rest of the envelope takes, generously.
        let room = max_bytes.saturating_sub(1024);
        let (preview, _) = json::clip(&message.content, room.min(json::PREVIEW_BYTES));
        Self { content: preview.to_owned(), metadata: None, truncated: true, ..whole }
    }
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub conversation: ConversationId,
    /// `user` or `agent`.
    pub sender_kind: &'static str,
    pub content: &'a str,
    pub metadata: &'a Value,
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

/// Stores the message (once per idempotency key) and broadcasts it if new,
/// within the tenant's payload cap `max_event_bytes`.
pub async fn send_message(
    rt: &Realtime,
    ctx: &TenantContext,
    out: &Outgoing<'_>,
    max_event_bytes: u32,
) -> Result<Created<Message>, DbError> {
    let mut tx = rt.inner.db.begin(ctx).await?;
    conversations::get(&mut tx, out.conversation).await?;
    let new = NewMessage {
        conversation: out.conversation,
        sender_kind: out.sender_kind,
        content: out.content,
        metadata: out.metadata,
        idempotency_key: out.idempotency_key,
    };
    let created = messages::create(&mut tx, &new).await?;
    if let Created::New(message) = &created {
        let data = serde_json::to_value(MessageView::event(message, max_event_bytes as usize))
            .unwrap_or(Value::Null);
        webhooks::event(&mut tx, "message.created", data).await?;
    }
    tx.commit().await?;
    if let Created::New(message) = &created {
        broadcast(rt, ctx, out.sender_kind, message, max_event_bytes).await;
    }
    Ok(created)
}

async fn broadcast(
    rt: &Realtime,
    ctx: &TenantContext,
    sender_kind: &'static str,
    message: &Message,
    max_bytes: u32,
) {
    let topic = Topic::Conversation(ConversationId::from(message.conversation_id));
    let event = MessageView::event(message, max_bytes as usize);
    let Ok(data) = serde_json::value::to_raw_value(&event) else { return };
    let from = From { user_id: ctx.user_id.map(|u| u.as_uuid()), kind: Cow::Borrowed(sender_kind) };
    // The message is committed: a failed broadcast is logged, and subscribers
    // who missed it find it over REST.
    if let Err(kind) = rt.publish(ctx.tenant_id, &topic, "message:new", &data, Some(&from), None).await {
        tracing::error!(?kind, message_id = %message.id, "message stored but not broadcast");
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendReq {
    conversation_id: Uuid,
    content: String,
    idempotency_key: String,
    metadata: Option<Value>,
}

pub(crate) async fn send(Ev { s, rt, session }: Ev, TryData(data): TryData<Value>, ack: Ack) {
    let result = traced("message:send", &session, async {
        let limits = admit(&rt, &s, &session).await?;
        let req: SendReq = payload(data)?;
        let chars = req.content.chars().count();
        if chars == 0 || chars > MAX_CONTENT_CHARS {
            return Err(EventError::invalid(format!("content must be 1 to {MAX_CONTENT_CHARS} characters")));
        }
        if req.content.len() > limits.max_payload_bytes as usize {
            return Err(EventError::too_large("content", limits.max_payload_bytes));
        }
        let key = IdempotencyKey::parse(&req.idempotency_key).map_err(|_| {
            EventError::invalid("idempotency_key must be 1 to 200 printable ASCII characters")
        })?;
        let metadata = req.metadata.unwrap_or_else(|| json!({}));
        json::check(&metadata, Shape::Object, JsonCap::Metadata).map_err(|e| {
            if e.is_too_large() {
                EventError::too_large("metadata", JsonCap::Metadata.bytes() as u32)
            } else {
                EventError::invalid(format!("metadata {e}"))
            }
        })?;
        // Its message:new stays in the conversation's history.
        let bytes = req.content.len() + metadata.to_string().len() + EVENT_OVERHEAD;
        rt.charge_history(session.tenant, &limits, bytes).await.map_err(EventError::quota)?;
        let ctx = TenantContext::new(session.tenant, Some(session.user), session.role());
        let out = Outgoing {
            conversation: ConversationId::from(req.conversation_id),
            sender_kind: "user",
            content: &req.content,
            metadata: &metadata,
            idempotency_key: Some(&key),
        };
        match send_message(&rt, &ctx, &out, limits.max_payload_bytes).await {
            Ok(Created::New(m)) => {
                Ok(json!({ "ok": true, "message": MessageView::from(m), "replayed": false }))
            }
            Ok(Created::Replayed(m)) => {
                Ok(json!({ "ok": true, "message": MessageView::from(m), "replayed": true }))
            }
            Err(DbError::NotFound) => Err(EventError::new(ErrorKind::Forbidden, "no such conversation")),
            Err(e) => {
                let kind = e.kind();
                if kind == ErrorKind::Internal || kind == ErrorKind::Unavailable {
                    tracing::error!(error = %e, "message:send failed");
                    return Err(EventError::new(
                        kind,
                        "the message could not be stored; retry with the same key",
                    ));
                }
                Err(EventError::new(kind, e.public_message()))
            }
        }
    })
    .await;
    reply(ack, "message:send", result).await;
}
