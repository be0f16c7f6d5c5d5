//! Platform routes for the tenants registry: `POST/GET /tenants`,
//! `GET/PATCH/DELETE /tenants/{id}`. Each change writes the tenant's audit row
//! in the same transaction.

use crate::AppState;
use crate::auth::Platform;
use crate::error::ApiError;
use crate::extract::{Page, Paged, ValidJson, path_id};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_db::repo::audit::{self, Entry};
use switchboard_db::repo::tenants::{self, Tenant};
use switchboard_domain::{ErrorKind, LimitOverrides, Limits, TenantId, TenantStatus};
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tenants", get(list).post(create))
        .route("/tenants/{id}", get(show).patch(update).delete(remove))
}

/// A tenant as the API shows it: stored overrides and the effective limits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    #[serde(flatten)]
    tenant: Tenant,
    #[schema(value_type = Object)]
    effective_limits: Limits,
}

impl From<Tenant> for TenantView {
    fn from(tenant: Tenant) -> Self {
        let effective_limits = Limits::default().with_overrides(&tenant.limits);
        Self { tenant, effective_limits }
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(value_type = Option<Object>)]
    limits: Option<Value>,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(value_type = Option<String>, example = "suspended")]
    status: Option<TenantStatus>,
    #[schema(value_type = Option<Object>)]
    limits: Option<Value>,
}

/// Limit overrides as sent, parsed into their typed form (unknown names and
/// out-of-range values are 422) and written back normalised for storage.
fn overrides(limits: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(v) = limits else { return Ok(None) };
    let parsed = LimitOverrides::parse(v).map_err(|e| {
        ApiError::new(ErrorKind::Validation, "invalid fields")
            .with_details(json!({ "limits": [e.to_string()] }))
    })?;
    serde_json::to_value(parsed)
        .map(Some)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "limits could not be encoded"))
}

#[utoipa::path(post, path = "/api/v1/tenants", tag = "platform", security(("platform_key" = [])), request_body = CreateTenant, responses((status = 201, body = TenantView), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Platform(caller): Platform,
    ValidJson(body): ValidJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    let limits = overrides(body.limits.as_ref())?;
    let mut tx = state.db.begin_platform().await?;
    let tenant = tenants::create(&mut tx, None, &body.name, limits.as_ref().unwrap_or(&json!({}))).await?;
    let id = TenantId(tenant.id);
    let entry = Entry {
        action: "tenant.create",
        target_type: "tenant",
        target_id: tenant.id.to_string(),
        details: json!({ "name": tenant.name, "limits": tenant.limits }),
    };
    audit::record_platform(&mut tx, id, &caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "platform", security(("platform_key" = [])), params(crate::extract::PageQuery), responses((status = 200, body = Paged<TenantView>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Platform(_): Platform,
    page: Page,
) -> Result<Json<Paged<TenantView>>, ApiError> {
    let mut tx = state.db.begin_platform().await?;
    let rows = tenants::list(&mut tx, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    let views = rows.into_iter().map(TenantView::from).collect();
    Ok(Json(Paged::new(views, page, |t: &TenantView| t.tenant.id)))
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "platform", security(("platform_key" = [])), params(("id" = Uuid, Path)), responses((status = 200, body = TenantView), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Platform(_): Platform,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    let mut tx = state.db.begin_platform().await?;
    let tenant = tenants::get(&mut tx, path_id::<TenantId>(&id)?).await?;
    tx.commit().await?;
    Ok(Json(tenant.into()))
}

#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "platform", security(("platform_key" = [])), params(("id" = Uuid, Path)), request_body = PatchTenant, responses((status = 200, body = TenantView), crate::openapi::CommonErrors))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Platform(caller): Platform,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<PatchTenant>,
) -> Result<Json<TenantView>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let limits = overrides(body.limits.as_ref())?;
    if body.name.is_none() && body.status.is_none() && body.limits.is_none() {
        return Err(ApiError::new(ErrorKind::Validation, "send at least one of name, status, limits")
            .with_details(json!({ "body": ["empty"] })));
    }
    let mut tx = state.db.begin_platform().await?;
    let tenant = tenants::update(&mut tx, id, body.name.as_deref(), body.status, limits.as_ref()).await?;
    let entry = Entry {
        action: "tenant.update",
        target_type: "tenant",
        target_id: id.to_string(),
        details: json!({ "name": body.name, "status": body.status, "limits": limits }),
    };
    audit::record_platform(&mut tx, id, &caller.actor(), &entry).await?;
    tx.commit().await?;
    state.directory.tenant_changed(id).await;
    if body.status == Some(TenantStatus::Suspended) {
        // Open sockets go too, on every node; new ones are refused by the guard.
        if let Err(kind) = state.realtime.disconnect_tenant(id).await {
            tracing::error!(?kind, tenant_id = %id, "suspended tenant's sockets not disconnected");
        }
    }
    Ok(Json(tenant.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "platform", security(("platform_key" = [])), params(("id" = Uuid, Path)), responses((status = 204), crate::openapi::CommonErrors))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Platform(caller): Platform,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let mut tx = state.db.begin_platform().await?;
    tenants::delete(&mut tx, id).await?;
    tx.commit().await?;
    state.directory.tenant_changed(id).await;
    state.directory.api_keys_changed().await;
    if let Err(kind) = state.realtime.disconnect_tenant(id).await {
        tracing::error!(?kind, tenant_id = %id, "deleted tenant's sockets not disconnected");
    }
    // The tenant's audit log goes with it, so the deletion is recorded in the log stream.
    tracing::info!(tenant_id = %id, actor = %caller.actor().id, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}
