//! `GET/POST /api-keys`, `DELETE /api-keys/{id}` (owners and admins): the key is
//! returned once, at creation; listing shows its prefix and scopes only.
//! Creation and revocation are audited in the same transaction.

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{Page, Paged, ValidJson, path_id};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_db::repo::api_keys::{self, ApiKey};
use switchboard_db::repo::audit::{self, Entry};
use switchboard_domain::{ErrorKind, Principal, Role};
use uuid::Uuid;
use validator::{Validate, ValidationError};

pub fn router() -> Router<AppState> {
    Router::new().route("/api-keys", get(list).post(create)).route("/api-keys/{id}", delete(revoke))
}

/// What a key may do: `read` (GET), `write` (changes), `broadcast`, `admin`
/// (all of those), `secrets` (read secret values; nothing else implies it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Write,
    Broadcast,
    Admin,
    Secrets,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Broadcast => "broadcast",
            Scope::Admin => "admin",
            Scope::Secrets => "secrets",
        }
    }
}

fn known_scopes(scopes: &[Scope]) -> Result<(), ValidationError> {
    if scopes.is_empty() {
        return Err(ValidationError::new("scopes")
            .with_message("at least one of read, write, broadcast, admin, secrets".into()));
    }
    Ok(())
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[validate(custom(function = "known_scopes"))]
    #[schema(min_items = 1)]
    scopes: Vec<Scope>,
}

/// The one response that carries the key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    api_key: ApiKey,
    key: String,
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api keys", request_body = CreateKey, responses((status = 201, body = CreatedKey), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(member): Admin,
    ValidJson(mut body): ValidJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    body.scopes.sort();
    body.scopes.dedup();
    // A key that reads secret values is made by an owner, a person: no admin,
    // and no key (whatever its scopes), can mint one for itself.
    let owner = matches!(member.caller.principal, Principal::User { role: Role::Owner, .. });
    if body.scopes.contains(&Scope::Secrets) && !owner {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "only a tenant owner (a person, not an API key) creates a key with the `secrets` scope",
        ));
    }
    let generated = state
        .key_hasher
        .generate()
        .map_err(|_| ApiError::new(ErrorKind::Internal, "the system random generator failed"))?;
    let hash = state.key_hasher.hash(&generated.key);
    let mut tx = state.db.begin(&member.ctx).await?;
    let scopes: Vec<String> = body.scopes.iter().map(|s| s.as_str().to_owned()).collect();
    let api_key = api_keys::create(&mut tx, &body.name, &generated.prefix, &hash, &scopes).await?;
    let entry = Entry {
        action: "api_key.create",
        target_type: "api_key",
        target_id: api_key.id.to_string(),
        details: json!({ "name": api_key.name, "scopes": api_key.scopes, "prefix": api_key.prefix }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { api_key, key: generated.key })))
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api keys", params(crate::extract::PageQuery), responses((status = 200, body = Paged<ApiKey>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(member): Admin,
    page: Page,
) -> Result<Json<Paged<ApiKey>>, ApiError> {
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows = api_keys::list(&mut tx, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(rows, page, |k: &ApiKey| k.id)))
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api keys", params(("id" = Uuid, Path)), responses((status = 204), crate::openapi::CommonErrors))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    api_keys::revoke(&mut tx, id).await?;
    let entry = Entry {
        action: "api_key.revoke",
        target_type: "api_key",
        target_id: id.to_string(),
        details: json!({}),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    state.directory.api_keys_changed().await;
    Ok(StatusCode::NO_CONTENT)
}
