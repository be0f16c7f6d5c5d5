//! `GET /presence?topic=`: who is on a topic, across every node, for members who
//! may subscribe to it.

use crate::AppState;
use crate::auth::Member;
use crate::error::ApiError;
use crate::extract::ValidQuery;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_domain::{ErrorKind, Topic};
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new().route("/presence", get(show))
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// The topic, as clients name it.
    #[validate(length(min = 1, max = 200))]
    #[param(min_length = 1, max_length = 200)]
    topic: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PresenceList {
    topic: String,
    /// `{ user_id, conn_id, state }` per tracked connection.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<Value>,
}

#[utoipa::path(get, path = "/api/v1/presence", tag = "realtime", params(PresenceQuery), responses((status = 200, body = PresenceList), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    member: Member,
    ValidQuery(query): ValidQuery<PresenceQuery>,
) -> Result<Json<PresenceList>, ApiError> {
    let topic = Topic::parse(&query.topic).map_err(|e| {
        ApiError::new(ErrorKind::Validation, "invalid topic")
            .with_details(json!({ "topic": [e.to_string()] }))
    })?;
    let may =
        state.realtime.may_subscribe(&member.ctx, &topic).await.map_err(|k| ApiError::new(k, "try again"))?;
    if !may {
        return Err(ApiError::new(ErrorKind::NotFound, "no such topic"));
    }
    let entries = state
        .realtime
        .presence(member.ctx.tenant_id, &topic)
        .await
        .map_err(|k| ApiError::new(k, "presence is unavailable; try again"))?;
    Ok(Json(PresenceList { topic: topic.to_string(), entries }))
}
