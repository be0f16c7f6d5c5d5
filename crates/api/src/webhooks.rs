//! Outbound webhooks, managed by owners and admins: `GET/POST /webhooks`,
//! `GET/PATCH/DELETE /webhooks/{id}`, the delivery log `GET
//! /webhooks/{id}/deliveries`, and `POST
//! /webhooks/{id}/deliveries/{delivery_id}/retry` to send one again.
//!
//! An endpoint's URL must be http(s) and, unless `WEBHOOK_ALLOW_PRIVATE`,
//! resolve only to public addresses. Its signing secret (`whsec_…`) is made
//! here, shown once (at creation, and when rotated with `rotate_secret`),
//! and stored sealed with the tenant's data key, like the tenant's secrets.
//! Every change is audited.

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{Page, Paged, ValidJson, invalid_field as invalid, path_id};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_db::repo::audit::{self, Entry};
use switchboard_db::repo::webhooks::{self as repo, Delivery, Endpoint, EndpointChange};
use switchboard_domain::ErrorKind;
use switchboard_webhooks::guard::{UrlError, check_url};
use switchboard_webhooks::worker::SEALED_NAME;
use uuid::Uuid;
use validator::Validate;

/// The most endpoints one tenant may have.
pub const MAX_ENDPOINTS: i64 = 50;

/// What an audit row says of a URL: no query or fragment (they may carry a
/// token of the receiver's).
fn audited_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => String::new(),
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).patch(update).delete(remove))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/deliveries/{delivery_id}/retry", post(retry))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where events are posted: an http(s) URL.
    #[validate(length(min = 1, max = 2048))]
    #[schema(min_length = 1, max_length = 2048)]
    url: String,
    /// Event types (`task.updated`), categories (`task.*`) or `*`; at least one.
    #[validate(length(min = 1, max = 32))]
    #[schema(min_items = 1, max_items = 32)]
    events: Vec<String>,
    #[validate(length(max = 1000))]
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Defaults to true.
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[validate(length(min = 1, max = 2048))]
    #[schema(min_length = 1, max_length = 2048)]
    url: Option<String>,
    #[validate(length(min = 1, max = 32))]
    #[schema(min_items = 1, max_items = 32)]
    events: Option<Vec<String>>,
    #[validate(length(max = 1000))]
    #[schema(max_length = 1000)]
    description: Option<String>,
    enabled: Option<bool>,
    /// Replace the signing secret; the answer shows the new one, once.
    rotate_secret: Option<bool>,
}

/// An endpoint, and its signing secret when it was just made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// `whsec_…`: verifies `webhook-signature`. Shown only here.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

async fn checked_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    match check_url(url, state.webhook_allow_private).await {
        Ok(u) => Ok(u.to_string()),
        Err(UrlError::Private) => Err(invalid(
            "url",
            "resolves to a private, loopback or internal address; webhook endpoints must be public",
        )),
        Err(e) => Err(invalid("url", e.to_string())),
    }
}

fn checked_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        if !switchboard_webhooks::valid_subscription(e) {
            return Err(invalid(
                "events",
                format!(
                    "`{}` is not an event type, a category (`task.*`) or `*`; the types are {}",
                    e.chars().take(100).collect::<String>(),
                    switchboard_webhooks::EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// A fresh secret, and it sealed for version `version` of endpoint `id`.
async fn sealed_secret(
    state: &AppState,
    tx: &mut switchboard_db::TenantTx,
    id: Uuid,
    version: i32,
) -> Result<(secrecy::SecretString, Vec<u8>), ApiError> {
    let vault = crate::secrets::vault(state)?;
    let key = crate::secrets::data_key(tx, vault).await?;
    let secret = switchboard_webhooks::new_secret()
        .ok_or_else(|| ApiError::new(ErrorKind::Internal, "the signing secret could not be made"))?;
    let sealed = key
        .seal(tx.tenant_id().as_uuid(), id, SEALED_NAME, version, secret.expose_secret())
        .map_err(|_| ApiError::new(ErrorKind::Internal, "the signing secret could not be sealed"))?;
    Ok((secret, sealed))
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "agents", request_body = CreateEndpoint, responses((status = 201, body = EndpointWithSecret), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(member): Admin,
    ValidJson(body): ValidJson<CreateEndpoint>,
) -> Result<(StatusCode, Json<EndpointWithSecret>), ApiError> {
    let events = checked_events(&body.events)?;
    let url = checked_url(&state, &body.url).await?;
    let id = Uuid::new_v4();
    let mut tx = state.db.begin(&member.ctx).await?;
    if repo::count(&mut tx).await? >= MAX_ENDPOINTS {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!(
                "the tenant has {MAX_ENDPOINTS} webhook endpoints, the most it may have; delete one first"
            ),
        ));
    }
    let (secret, sealed) = sealed_secret(&state, &mut tx, id, 1).await?;
    let actor = member.caller.actor();
    let by = format!("{}:{}", actor.kind, actor.id);
    let mut endpoint =
        repo::create(&mut tx, id, &url, body.description.as_deref().unwrap_or(""), &events, &sealed, &by)
            .await?;
    if body.enabled == Some(false) {
        endpoint =
            repo::update(&mut tx, id, &EndpointChange { enabled: Some(false), ..Default::default() }).await?;
    }
    let entry = Entry {
        action: "webhook.create",
        target_type: "webhook",
        target_id: id.to_string(),
        details: json!({ "url": audited_url(&endpoint.url), "events": endpoint.events, "enabled": endpoint.enabled }),
    };
    audit::record(&mut tx, &actor, &entry).await?;
    tx.commit().await?;
    let secret = Some(secret.expose_secret().to_owned());
    Ok((StatusCode::CREATED, Json(EndpointWithSecret { endpoint, secret })))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "agents", params(crate::extract::PageQuery), responses((status = 200, body = Paged<Endpoint>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(member): Admin,
    page: Page,
) -> Result<Json<Paged<Endpoint>>, ApiError> {
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows = repo::list(&mut tx, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(rows, page, |e: &Endpoint| e.id)))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "agents", params(("id" = Uuid, Path)), responses((status = 200, body = Endpoint), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let endpoint = repo::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(endpoint))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "agents", params(("id" = Uuid, Path)), request_body = UpdateEndpoint, responses((status = 200, body = EndpointWithSecret), crate::openapi::CommonErrors))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<UpdateEndpoint>,
) -> Result<Json<EndpointWithSecret>, ApiError> {
    let id: Uuid = path_id(&id)?;
    let events = body.events.as_deref().map(checked_events).transpose()?;
    let url = match &body.url {
        Some(u) => Some(checked_url(&state, u).await?),
        None => None,
    };
    let mut tx = state.db.begin(&member.ctx).await?;
    let version = repo::lock_secret_version(&mut tx, id).await?;
    let rotated = if body.rotate_secret == Some(true) {
        Some(sealed_secret(&state, &mut tx, id, version + 1).await?)
    } else {
        None
    };
    let change = EndpointChange {
        url: url.as_deref(),
        description: body.description.as_deref(),
        events: events.as_deref(),
        enabled: body.enabled,
        secret: rotated.as_ref().map(|(_, sealed)| (sealed.as_slice(), version + 1)),
    };
    let endpoint = repo::update(&mut tx, id, &change).await?;
    let entry = Entry {
        action: "webhook.update",
        target_type: "webhook",
        target_id: id.to_string(),
        details: json!({
            "url": url.as_deref().map(audited_url),
            "events": events,
            "description_changed": body.description.is_some(),
            "enabled": body.enabled,
            "secret_rotated": rotated.is_some(),
        }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    let secret = rotated.map(|(s, _)| s.expose_secret().to_owned());
    Ok(Json(EndpointWithSecret { endpoint, secret }))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "agents", params(("id" = Uuid, Path)), responses((status = 204), crate::openapi::CommonErrors))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    repo::delete(&mut tx, id).await?;
    let entry = Entry {
        action: "webhook.delete",
        target_type: "webhook",
        target_id: id.to_string(),
        details: json!({}),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "agents", params(("id" = Uuid, Path), crate::extract::PageQuery), responses((status = 200, body = Paged<Delivery>), crate::openapi::CommonErrors))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(id): Path<String>,
    page: Page,
) -> Result<Json<Paged<Delivery>>, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    repo::get(&mut tx, id).await?;
    let rows = repo::deliveries(&mut tx, id, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(rows, page, |d: &Delivery| d.id)))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "agents", params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)), responses((status = 202, body = Delivery), crate::openapi::CommonErrors))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let id: Uuid = path_id(&id)?;
    let delivery: Uuid = path_id(&delivery)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    if !repo::get(&mut tx, id).await?.enabled {
        return Err(ApiError::new(ErrorKind::Conflict, "the endpoint is disabled; enable it first"));
    }
    let queued = repo::redeliver(&mut tx, id, delivery).await?;
    let entry = Entry {
        action: "webhook.redeliver",
        target_type: "webhook",
        target_id: id.to_string(),
        details: json!({ "delivery_id": delivery, "redelivery_id": queued.id, "event_id": queued.event_id }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}
