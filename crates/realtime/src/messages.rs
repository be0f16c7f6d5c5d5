//! Sending a message: one code path for `message:send` and
//! `POST /conversations/{id}/messages`. The message and its idempotency key are
//! stored in one tenant transaction; only a newly stored message is broadcast
//! (`message:new` on `conversation:<id>`), after the commit. The same key again
//! stores and broadcasts nothing and answers with the stored message.

use crate::codes::EventError;
use crate::event::{Ev, admit, payload, reply};
use crate::{From, Realtime};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, TryData};
use std::borrow::Cow;
use switchboard_db::repo::Created;
use switchboard_db::repo::conversations;
use switchboard_db::repo::messages::{self, Message, NewMessage};
use switchboard_db::{DbError, TenantContext};
use switchboard_domain::{ConversationId, ErrorKind, Topic};
use uuid::Uuid;

/// The longest message content, in characters.
pub const MAX_CONTENT_CHARS: usize = 65_536;

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub conversation: ConversationId,
    /// `user` or `agent`.
    pub sender_kind: &'static str,
    pub content: &'a str,
    pub metadata: &'a Value,
    pub idempotency_key: Option<&'a str>,
}

/// Stores the message (once per idempotency key) and broadcasts it if new.
pub async fn send_message(
    rt: &Realtime,
    ctx: &TenantContext,
    out: &Outgoing<'_>,
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
    tx.commit().await?;
    if let Created::New(message) = &created {
        broadcast(rt, ctx, out.sender_kind, message).await;
    }
    Ok(created)
}

async fn broadcast(rt: &Realtime, ctx: &TenantContext, sender_kind: &'static str, message: &Message) {
    let topic = Topic::Conversation(ConversationId::from(message.conversation_id));
    let Ok(data) = serde_json::value::to_raw_value(message) else { return };
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

pub(crate) async fn send(Ev { s, rt, session }: Ev, TryData(data): TryData<Value>, ack: AckSender) {
    let result = async {
        let limits = admit(&rt, &s, &session).await?;
        let req: SendReq = payload(data)?;
        let chars = req.content.chars().count();
        if chars == 0 || chars > MAX_CONTENT_CHARS {
            return Err(EventError::invalid(format!("content must be 1 to {MAX_CONTENT_CHARS} characters")));
        }
        if req.content.len() > limits.max_payload_bytes as usize {
            return Err(EventError::too_large("content", limits.max_payload_bytes));
        }
        let key = req.idempotency_key.trim();
        if !(1..=200).contains(&key.len()) || !key.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(EventError::invalid("idempotency_key must be 1 to 200 visible ASCII characters"));
        }
        let metadata = req.metadata.unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            return Err(EventError::invalid("metadata must be an object"));
        }
        let ctx = TenantContext::new(session.tenant, Some(session.user), session.role);
        let out = Outgoing {
            conversation: ConversationId::from(req.conversation_id),
            sender_kind: "user",
            content: &req.content,
            metadata: &metadata,
            idempotency_key: Some(key),
        };
        match send_message(&rt, &ctx, &out).await {
            Ok(Created::New(m)) => Ok(json!({ "ok": true, "message": m, "replayed": false })),
            Ok(Created::Replayed(m)) => Ok(json!({ "ok": true, "message": m, "replayed": true })),
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
                Err(EventError::new(kind, e.to_string()))
            }
        }
    }
    .await;
    reply(ack, result);
}
