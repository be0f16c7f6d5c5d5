//! `GET /me`: who the caller is, in which tenant, with the tenant's status and
//! effective limits.

use crate::AppState;
use crate::auth::Member;
use crate::error::ApiError;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use switchboard_db::repo::tenants;
use switchboard_domain::{Limits, Principal};

pub fn router() -> Router<AppState> {
    Router::new().route("/me", get(me))
}

#[utoipa::path(get, path = "/api/v1/me", tag = "tenant", responses((status = 200, body = Object), crate::openapi::CommonErrors))]
pub(crate) async fn me(State(state): State<AppState>, member: Member) -> Result<Json<Value>, ApiError> {
    let mut tx = state.db.begin(&member.ctx).await?;
    let tenant = tenants::own(&mut tx).await?;
    tx.commit().await?;
    let (kind, scopes) = match &member.caller.principal {
        Principal::ApiKey { scopes, .. } => ("api_key", Some(scopes.clone())),
        _ => ("user", None),
    };
    Ok(Json(json!({
        "kind": kind,
        "user_id": member.ctx.user_id,
        "role": member.ctx.role,
        "scopes": scopes,
        "tenant": {
            "id": tenant.id,
            "name": tenant.name,
            "status": tenant.status,
            "limits": Limits::default().with_overrides(&tenant.limits),
        },
    })))
}
