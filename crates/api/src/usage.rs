//! `GET /usage?from&to&metric`: the tenant's usage per day and metric (tokens,
//! cost, …), oldest first. The range defaults to the last 30 days (with only
//! `from`: a year from it, at most up to today) and spans at most 366 days.

use crate::AppState;
use crate::auth::Member;
use crate::error::ApiError;
use crate::extract::ValidQuery;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Days, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_db::repo::usage;
use switchboard_domain::ErrorKind;

pub fn router() -> Router<AppState> {
    Router::new().route("/usage", get(show))
}

#[derive(Debug, Deserialize, validator::Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    metric: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", params(UsageQuery), responses((status = 200, body = Object), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    member: Member,
    ValidQuery(q): ValidQuery<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let today = Utc::now().date_naive();
    let (from, to) = match (q.from, q.to) {
        (Some(from), Some(to)) => (from, to),
        // Only `from`: a year from it, or up to today.
        (Some(from), None) => {
            (from, from.checked_add_days(Days::new(365)).unwrap_or(from).min(today).max(from))
        }
        (None, Some(to)) => (to.checked_sub_days(Days::new(29)).unwrap_or(to), to),
        (None, None) => (today.checked_sub_days(Days::new(29)).unwrap_or(today), today),
    };
    let span = (to - from).num_days();
    if !(0..366).contains(&span) {
        return Err(ApiError::new(ErrorKind::Validation, "invalid range")
            .with_details(json!({ "from": ["must be on or before `to`, at most 366 days earlier"] })));
    }
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows = usage::list(&mut tx, from, to, q.metric.as_deref()).await?;
    tx.commit().await?;
    Ok(Json(json!({ "from": from, "to": to, "data": rows })))
}
