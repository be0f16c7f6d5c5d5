//! Inbound webhooks. Owners and admins register a hook (`GET/POST
//! /inbound-hooks`, `DELETE /inbound-hooks/{id}`): a provider (`github` or
//! `slack`), the tenant secret its requests are signed with, and a channel
//! topic. GitHub and Slack then post to `POST /hooks/github/{id}` and `POST
//! /hooks/slack/{id}`, with no bearer token: each request is verified with the
//! secret (GitHub's `X-Hub-Signature-256`; Slack's v0 signature over its
//! timestamp, which must be within five minutes), a delivery seen before is
//! refused (GitHub's delivery id; Slack's timestamp and signature), and what
//! passes goes out as an event on the hook's topic: `github:<event>` or
//! `slack:<type>`. A forged, stale or replayed request changes nothing.

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{Page, Paged, ValidJson, invalid_field as invalid, path_id};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ring::hmac;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_db::TenantContext;
use switchboard_db::repo::audit::{self, Entry};
use switchboard_db::repo::hooks::{self, Hook};
use switchboard_db::repo::secrets;
use switchboard_domain::{ErrorKind, Role, TenantStatus, Topic};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/inbound-hooks", get(list).post(create))
        .route("/inbound-hooks/{id}", delete(remove))
        .route("/hooks/github/{id}", post(github))
        .route("/hooks/slack/{id}", post(slack))
}

/// How far a Slack request's timestamp may be from now.
const SLACK_WINDOW_SECS: i64 = 300;

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHook {
    /// `github` or `slack`.
    #[schema(pattern = "^(github|slack)$")]
    provider: String,
    /// The tenant secret (see `/secrets`) the provider signs with: GitHub's
    /// webhook secret, Slack's signing secret.
    #[validate(length(min = 1, max = 128))]
    #[schema(min_length = 1, max_length = 128)]
    secret_name: String,
    /// Where its events go: a `channel:<name>` topic.
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    topic: String,
    #[validate(length(max = 1000))]
    #[schema(max_length = 1000)]
    description: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/inbound-hooks", tag = "agents", request_body = CreateHook, responses((status = 201, body = Hook), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(member): Admin,
    ValidJson(body): ValidJson<CreateHook>,
) -> Result<(StatusCode, Json<Hook>), ApiError> {
    if !matches!(body.provider.as_str(), "github" | "slack") {
        return Err(invalid("provider", "`github` or `slack`"));
    }
    match Topic::parse(&body.topic) {
        Ok(Topic::Channel(_)) => {}
        _ => return Err(invalid("topic", "a `channel:<name>` topic")),
    }
    let mut tx = state.db.begin(&member.ctx).await?;
    if secrets::get(&mut tx, &body.secret_name, false).await.is_err() {
        return Err(invalid("secret_name", "no secret of this tenant has this name"));
    }
    let actor = member.caller.actor();
    let hook = hooks::create(
        &mut tx,
        &body.provider,
        &body.secret_name,
        &body.topic,
        body.description.as_deref().unwrap_or(""),
        &format!("{}:{}", actor.kind, actor.id),
    )
    .await?;
    let entry = Entry {
        action: "inbound_hook.create",
        target_type: "inbound_hook",
        target_id: hook.id.to_string(),
        details: json!({ "provider": hook.provider, "secret_name": hook.secret_name, "topic": hook.topic }),
    };
    audit::record(&mut tx, &actor, &entry).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(hook)))
}

#[utoipa::path(get, path = "/api/v1/inbound-hooks", tag = "agents", params(crate::extract::PageQuery), responses((status = 200, body = Paged<Hook>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(member): Admin,
    page: Page,
) -> Result<Json<Paged<Hook>>, ApiError> {
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows = hooks::list(&mut tx, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(rows, page, |h: &Hook| h.id)))
}

#[utoipa::path(delete, path = "/api/v1/inbound-hooks/{id}", tag = "agents", params(("id" = Uuid, Path)), responses((status = 204), crate::openapi::CommonErrors))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    hooks::delete(&mut tx, id).await?;
    let entry = Entry {
        action: "inbound_hook.delete",
        target_type: "inbound_hook",
        target_id: id.to_string(),
        details: json!({}),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

fn unauthenticated(why: &str) -> ApiError {
    ApiError::new(ErrorKind::Unauthenticated, format!("the request's signature does not verify: {why}"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A verified request's hook, tenant context and signing check done.
struct Verified {
    hook: Hook,
    ctx: TenantContext,
    limits: switchboard_domain::Limits,
}

/// Finds hook `id` of `provider`, opens its secret, and checks `message`
/// against `signature` (hex HMAC-SHA256) with it; then remembers `delivery`,
/// refusing one seen before. An unknown hook, or one of another provider,
/// is 404; a bad signature 401; a replay 409.
async fn verify(
    state: &AppState,
    provider: &str,
    id: &str,
    message: &[u8],
    signature: &str,
    delivery: &str,
) -> Result<Verified, ApiError> {
    let id: Uuid = path_id(id)?;
    let mut ptx = state.db.begin_platform().await?;
    let owner = hooks::owner(&mut ptx, id).await?;
    ptx.commit().await?;
    let Some((tenant, _)) = owner.filter(|(_, p)| p == provider) else {
        return Err(ApiError::new(ErrorKind::NotFound, "not found"));
    };
    let info = state
        .directory
        .tenant(tenant)
        .await?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "not found"))?;
    if info.status == TenantStatus::Suspended {
        return Err(ApiError::new(ErrorKind::TenantSuspended, "the tenant is suspended"));
    }
    let vault = crate::secrets::vault(state)?;
    let expected = from_hex(signature).ok_or_else(|| unauthenticated("not a hex signature"))?;
    let ctx = TenantContext::new(tenant, None, Role::Service);
    let mut tx = state.db.begin(&ctx).await?;
    let hook = hooks::get(&mut tx, id).await?;
    let secret = match crate::secrets::open_value(&mut tx, vault, &hook.secret_name).await {
        Ok((_, value)) => value,
        Err(e) if e.kind == ErrorKind::NotFound => {
            tracing::warn!(hook_id = %id, "an inbound hook names a secret that is gone");
            return Err(unauthenticated("the hook's secret is gone"));
        }
        Err(e) => return Err(e),
    };
    let mac = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
    hmac::verify(&mac, message, &expected)
        .map_err(|_| unauthenticated("it was not made with the hook's secret"))?;
    if !hooks::first_delivery(&mut tx, id, delivery).await? {
        return Err(ApiError::new(ErrorKind::Conflict, "this delivery was received before"));
    }
    tx.commit().await?;
    Ok(Verified { hook, ctx, limits: info.limits })
}

/// Sends `event` with `data` on the hook's topic; the payload is left out
/// (`truncated: true`) when it is over the tenant's `max_payload_bytes`.
async fn announce(
    state: &AppState,
    v: &Verified,
    event: &str,
    mut data: Value,
    payload: Value,
) -> Result<Response, ApiError> {
    let topic =
        Topic::parse(&v.hook.topic).map_err(|_| ApiError::new(ErrorKind::Internal, "internal error"))?;
    let max = v.limits.max_payload_bytes as usize;
    if payload.to_string().len() + 512 <= max {
        data["payload"] = payload;
    } else {
        data["truncated"] = Value::Bool(true);
    }
    let raw = serde_json::value::to_raw_value(&data)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "internal error"))?;
    let from = switchboard_realtime::From { user_id: None, kind: std::borrow::Cow::Borrowed("system") };
    let event = clip_event(event);
    let offset = state
        .realtime
        .publish(v.ctx.tenant_id, &topic, &event, &raw, Some(&from), None)
        .await
        .map_err(|kind| ApiError::new(kind, "the event could not be sent; the provider will retry"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "ok": true, "topic": topic.to_string(), "offset": offset.to_string() })),
    )
        .into_response())
}

/// An event name the Socket.IO layer accepts: `A-Z a-z 0-9 _ . : -`, at
/// most 64 characters.
fn clip_event(event: &str) -> String {
    event.chars().filter(|c| c.is_ascii_alphanumeric() || "_.:-".contains(*c)).take(64).collect()
}

/// `POST /hooks/github/{id}`: `X-Hub-Signature-256: sha256=<hex>` over the
/// body; `X-GitHub-Delivery` names the delivery; `X-GitHub-Event` the event.
#[utoipa::path(post, path = "/api/v1/hooks/github/{id}", tag = "agents", params(("id" = Uuid, Path)), request_body(content = Object, description = "GitHub's JSON payload"), responses((status = 202, description = "Verified and sent to the hook's topic"), crate::openapi::CommonErrors), security(()))]
pub(crate) async fn github(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signature = header(&headers, "x-hub-signature-256")
        .and_then(|s| s.strip_prefix("sha256="))
        .ok_or_else(|| unauthenticated("no X-Hub-Signature-256"))?
        .to_owned();
    let delivery = header(&headers, "x-github-delivery")
        .filter(|d| (1..=200).contains(&d.len()))
        .ok_or_else(|| invalid("X-GitHub-Delivery", "required, 1 to 200 characters"))?
        .to_owned();
    let event = header(&headers, "x-github-event").unwrap_or("unknown").to_owned();
    let verified = verify(&state, "github", &id, &body, &signature, &format!("github:{delivery}")).await?;
    if event == "ping" {
        return Ok((StatusCode::OK, Json(json!({ "ok": true }))).into_response());
    }
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|_| invalid("body", "GitHub deliveries are sent as application/json"))?;
    let data = json!({ "hook_id": verified.hook.id, "delivery": delivery, "event": event });
    announce(&state, &verified, &format!("github:{event}"), data, payload).await
}

/// `POST /hooks/slack/{id}`: `X-Slack-Signature: v0=<hex>` over
/// `v0:<X-Slack-Request-Timestamp>:<body>`; answers Slack's `url_verification`
/// with its challenge.
#[utoipa::path(post, path = "/api/v1/hooks/slack/{id}", tag = "agents", params(("id" = Uuid, Path)), request_body(content = Object, description = "Slack's JSON event, or a form post"), responses((status = 202, description = "Verified and sent to the hook's topic"), (status = 200, description = "Slack's url_verification, answered with its challenge"), crate::openapi::CommonErrors), security(()))]
pub(crate) async fn slack(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let timestamp = header(&headers, "x-slack-request-timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| unauthenticated("no X-Slack-Request-Timestamp"))?;
    if (chrono::Utc::now().timestamp() - timestamp).abs() > SLACK_WINDOW_SECS {
        return Err(unauthenticated("its timestamp is more than five minutes from now"));
    }
    let signature = header(&headers, "x-slack-signature")
        .and_then(|s| s.strip_prefix("v0="))
        .ok_or_else(|| unauthenticated("no X-Slack-Signature"))?
        .to_owned();
    let mut message = format!("v0:{timestamp}:").into_bytes();
    message.extend_from_slice(&body);
    let delivery = format!("slack:{timestamp}:{signature}");
    let verified = verify(&state, "slack", &id, &message, &signature, &delivery).await?;
    let form =
        header(&headers, "content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let payload: Value = if form {
        Value::Object(
            url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
    } else {
        serde_json::from_slice(&body).map_err(|_| invalid("body", "a JSON event or a form post"))?
    };
    if payload["type"] == "url_verification" {
        return Ok((StatusCode::OK, Json(json!({ "challenge": payload["challenge"] }))).into_response());
    }
    let kind = payload["event"]["type"]
        .as_str()
        .or_else(|| payload["type"].as_str())
        .or_else(|| payload["command"].as_str().map(|c| c.trim_start_matches('/')))
        .unwrap_or("request")
        .to_owned();
    let data = json!({ "hook_id": verified.hook.id, "type": kind });
    announce(&state, &verified, &format!("slack:{kind}"), data, payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_event_names() {
        assert_eq!(from_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
        assert_eq!(clip_event("github:pull_request"), "github:pull_request");
        assert_eq!(clip_event("slack:a b/c"), "slack:abc");
        assert_eq!(clip_event(&"x".repeat(100)).len(), 64);
    }
}
