//! `GET /conversations/{id}/messages?limit&before` and `POST` the same, which
//! honours `Idempotency-Key`: the same key again stores nothing new and answers
//! with the stored message (`200`, `Idempotent-Replayed: true`); the same key for
//! a different message is `409`. A newly stored message goes out as
//! `message:new` to the conversation's subscribers (the same path as the
//! `message:send` socket event).

use crate::AppState;
use crate::auth::Member;
use crate::error::ApiError;
use crate::extract::{Paged, ValidJson, ValidQuery, check_json, created_response, idempotency_key, path_id};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_db::repo::conversations;
use switchboard_db::repo::messages::{self, Message};
use switchboard_domain::ConversationId;
use switchboard_domain::json::{JsonCap, Shape};
use switchboard_realtime::messages::{MessageView, Outgoing, send_message};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new().route("/conversations/{id}/messages", get(list).post(create))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    #[validate(length(min = 1, max = 65536))]
    #[schema(min_length = 1, max_length = 65536)]
    content: String,
    /// An object, at most 16 KiB of JSON.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// The most content and metadata one page of messages carries (besides its
/// first message, which always comes).
const PAGE_BYTES: i64 = 4 * 1024 * 1024;

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    before: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "messages", params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key, same message: stored once", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$")), request_body = SendMessage, responses((status = 201, body = MessageView), (status = 200, body = MessageView, description = "Replayed for a repeated Idempotency-Key"), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<SendMessage>,
) -> Result<Response, ApiError> {
    let conversation: ConversationId = path_id(&id)?;
    let key = idempotency_key(&headers)?;
    let metadata = body.metadata.unwrap_or_else(|| json!({}));
    check_json("metadata", &metadata, Shape::Object, JsonCap::Metadata)?;
    // Its message:new stays in the conversation's history.
    let bytes =
        body.content.len() + metadata.to_string().len() + switchboard_realtime::messages::EVENT_OVERHEAD;
    if let Err(wait) = state.realtime.charge_history(member.ctx.tenant_id, &member.tenant.limits, bytes).await
    {
        return Err(crate::ratelimit::quota_exceeded(wait, "history"));
    }
    let out = Outgoing {
        conversation,
        sender_kind: member.sender_kind(),
        content: &body.content,
        metadata: &metadata,
        idempotency_key: key.as_ref(),
    };
    let created =
        send_message(&state.realtime, &member.ctx, &out, member.tenant.limits.max_payload_bytes).await?;
    Ok(created_response(created.map(MessageView::from)))
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "messages", params(("id" = Uuid, Path), ListQuery), responses((status = 200, body = Paged<MessageView>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Json<Paged<MessageView>>, ApiError> {
    let conversation: ConversationId = path_id(&id)?;
    let limit = query.limit.unwrap_or(50);
    let mut tx = state.db.begin(&member.ctx).await?;
    conversations::get(&mut tx, conversation).await?;
    let slice = messages::list(&mut tx, conversation, query.before, limit, PAGE_BYTES).await?;
    tx.commit().await?;
    Ok(Json(Paged::from_slice(slice, |m: &Message| m.id, MessageView::from)))
}
