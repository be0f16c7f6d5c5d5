//! `POST /broadcast` `{ topic, event, data }`: an event to a topic's subscribers on
//! every node, through the same bus, history and offsets as client events. For
//! API keys with the `broadcast` (or `admin`) scope and tenant owners and admins;
//! audited in its own transaction before it is sent.

use crate::AppState;
use crate::auth::Broadcaster;
use crate::error::ApiError;
use crate::extract::ValidJson;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_db::repo::audit::{self, Entry};
use switchboard_domain::{ErrorKind, Topic};
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new().route("/broadcast", post(broadcast))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Broadcast {
    /// `conversation:<uuid>`, `project:<uuid>`, `run:<uuid>` or `channel:<name>`.
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    topic: String,
    /// 1 to 64 of `A-Z a-z 0-9 _ . : -`, not a server event name.
    #[validate(length(min = 1, max = 64))]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    event: String,
    #[schema(value_type = Object)]
    #[serde(default)]
    data: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Broadcasted {
    topic: String,
    /// The event's offset in the topic's history.
    offset: String,
}

#[utoipa::path(post, path = "/api/v1/broadcast", tag = "realtime", request_body = Broadcast, responses((status = 202, body = Broadcasted), crate::openapi::CommonErrors))]
pub(crate) async fn broadcast(
    State(state): State<AppState>,
    Broadcaster(member): Broadcaster,
    ValidJson(body): ValidJson<Broadcast>,
) -> Result<(StatusCode, Json<Broadcasted>), ApiError> {
    let invalid = |field: &str, why: String| {
        ApiError::new(ErrorKind::Validation, format!("invalid {field}")).with_details(json!({ field: [why] }))
    };
    let topic = Topic::parse(&body.topic).map_err(|e| invalid("topic", e.to_string()))?;
    switchboard_realtime::check_event_name(&body.event).map_err(|why| invalid("event", why))?;
    let max_payload = member.tenant.limits.max_payload_bytes;
    let data = serde_json::value::to_raw_value(&body.data)
        .map_err(|_| ApiError::new(ErrorKind::Validation, "data is not JSON"))?;
    if data.get().len() > max_payload as usize {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("data is over the tenant's {max_payload} bytes"),
        ));
    }
    // The node's room for publishes under way, as for socket publishes.
    let Some(_slot) = state.realtime.publish_slot() else {
        return Err(crate::ratelimit::too_many_error(switchboard_realtime::Realtime::PUBLISH_RETRY));
    };
    if let Err(wait) =
        state.realtime.charge_history(member.ctx.tenant_id, &member.tenant.limits, data.get().len()).await
    {
        return Err(crate::ratelimit::quota_exceeded(wait, "history"));
    }
    let mut tx = state.db.begin(&member.ctx).await?;
    let entry = Entry {
        action: "broadcast",
        target_type: "topic",
        target_id: topic.to_string(),
        details: json!({ "event": body.event, "bytes": data.get().len() }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    let from = member.sender();
    let offset = state
        .realtime
        .publish(member.ctx.tenant_id, &topic, &body.event, &data, Some(&from), None)
        .await
        .map_err(|kind| ApiError::new(kind, "the event could not be sent; try again"))?;
    Ok((StatusCode::ACCEPTED, Json(Broadcasted { topic: topic.to_string(), offset: offset.to_string() })))
}
