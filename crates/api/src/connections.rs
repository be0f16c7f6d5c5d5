//! `POST /connections/{user_id}/disconnect` (owners and admins): closes every
//! socket of one of the tenant's users, on every node; audited.

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::path_id;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use switchboard_db::repo::audit::{self, Entry};
use switchboard_domain::UserId;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/connections/{user_id}/disconnect", post(disconnect))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Disconnected {
    user_id: Uuid,
}

#[utoipa::path(post, path = "/api/v1/connections/{user_id}/disconnect", tag = "realtime", params(("user_id" = Uuid, Path)), responses((status = 202, body = Disconnected), crate::openapi::CommonErrors))]
pub(crate) async fn disconnect(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(user_id): Path<String>,
) -> Result<(StatusCode, Json<Disconnected>), ApiError> {
    let user: UserId = path_id(&user_id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let entry = Entry {
        action: "connection.disconnect",
        target_type: "user",
        target_id: user.to_string(),
        details: json!({}),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    state
        .realtime
        .disconnect_user(member.ctx.tenant_id, user)
        .await
        .map_err(|k| ApiError::new(k, "the disconnect could not be sent; try again"))?;
    Ok((StatusCode::ACCEPTED, Json(Disconnected { user_id: user.as_uuid() })))
}
