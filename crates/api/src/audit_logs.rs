//! `GET /audit-logs` (owners and admins): newest first, filtered by action,
//! actor, target and time range, paged by cursor.

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{Page, Paged, ValidQuery};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use switchboard_db::repo::audit::{self, AuditLog, Filter};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new().route("/audit-logs", get(list))
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<Uuid>,
    #[validate(length(min = 1, max = 100))]
    #[param(min_length = 1, max_length = 100)]
    action: Option<String>,
    #[validate(length(min = 1, max = 200))]
    #[param(min_length = 1, max_length = 200)]
    actor_id: Option<String>,
    #[validate(length(min = 1, max = 100))]
    #[param(min_length = 1, max_length = 100)]
    target_type: Option<String>,
    #[validate(length(min = 1, max = 200))]
    #[param(min_length = 1, max_length = 200)]
    target_id: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/audit-logs", tag = "audit", params(AuditQuery), responses((status = 200, body = Paged<AuditLog>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(member): Admin,
    ValidQuery(q): ValidQuery<AuditQuery>,
) -> Result<Json<Paged<AuditLog>>, ApiError> {
    let page = Page { limit: q.limit.unwrap_or(50), cursor: q.cursor };
    let filter = Filter {
        action: q.action,
        actor_id: q.actor_id,
        target_type: q.target_type,
        target_id: q.target_id,
        since: q.since,
        until: q.until,
    };
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows = audit::list(&mut tx, &filter, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(rows, page, |l: &AuditLog| l.id)))
}
