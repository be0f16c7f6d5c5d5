//! `GET /health` (the process is alive) and `GET /health/ready` (Postgres and, when
//! configured, Redis answer, and the node is not draining).

use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(alive)).route("/health/ready", get(ready))
}

async fn alive(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "node_id": &*state.node_id }))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (postgres, redis) = tokio::join!(state.db.ping(), async {
        match &state.redis {
            Some(r) => Some(r.ping().await),
            None => None,
        }
    });
    let postgres_ok = postgres.is_ok();
    if let Err(e) = &postgres {
        tracing::warn!(error = %e, "readiness: postgres unreachable");
    }
    let redis_status = match &redis {
        None => "not_configured",
        Some(Ok(())) => "ok",
        Some(Err(e)) => {
            tracing::warn!(error = %e, "readiness: redis unreachable");
            "unreachable"
        }
    };
    let draining = state.is_draining();
    let ok = postgres_ok && !matches!(redis, Some(Err(_))) && !draining;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ok { "ready" } else if draining { "draining" } else { "unavailable" },
        "node_id": &*state.node_id,
        "checks": {
            "postgres": if postgres_ok { "ok" } else { "unreachable" },
            "redis": redis_status,
        },
    });
    (status, Json(body))
}
