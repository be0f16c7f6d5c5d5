//! `POST /admin/drain` (platform operators): readiness turns 503, new sockets are
//! refused, open ones are told `system:drain` and closed in batches, then the
//! process exits, as on SIGTERM.

use crate::AppState;
use crate::auth::Platform;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/drain", post(drain))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Draining {
    node_id: String,
    /// Sockets open on this node when the drain began.
    sockets: usize,
}

#[utoipa::path(post, path = "/admin/drain", tag = "operations", security(("platform_key" = [])), responses((status = 202, body = Draining), crate::openapi::CommonErrors))]
pub(crate) async fn drain(
    State(state): State<AppState>,
    Platform(caller): Platform,
) -> Result<(StatusCode, Json<Draining>), ApiError> {
    let sockets = state.realtime.local_sockets();
    tracing::warn!(actor = ?caller.actor().id, sockets, "drain requested");
    state.request_shutdown();
    Ok((StatusCode::ACCEPTED, Json(Draining { node_id: state.node_id.to_string(), sockets })))
}
