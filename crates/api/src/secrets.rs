//! `GET/POST /secrets`, `PUT/DELETE /secrets/{name}`: a tenant's secrets,
//! managed by its owners and admins (names and metadata only, never a value
//! back), and `GET /secrets/{name}/value`, for API keys with the `secrets`
//! scope alone (a worker that needs a token to call a tool). Every change and
//! every read is audited, naming the secret and its version, never its value.
//! Values are sealed with the tenant's data key before they reach Postgres
//! (see `switchboard-vault`); without `SECRETS_MASTER_KEY` these routes
//! answer 503.

use crate::AppState;
use crate::auth::{Admin, Member, SecretsReader};
use crate::error::ApiError;
use crate::extract::{ValidJson, ValidQuery, invalid_field as invalid};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_db::TenantTx;
use switchboard_db::repo::audit::{self, Entry};
use switchboard_db::repo::secrets::{self, SecretMeta};
use switchboard_domain::ErrorKind;
use switchboard_vault::{DataKey, MasterKeys, VaultError, WrappedKey};
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/secrets", get(list).post(create))
        .route("/secrets/{name}", axum::routing::put(rotate).delete(remove))
        .route("/secrets/{name}/value", get(read_value))
}

/// The most bytes a value may hold.
pub const MAX_VALUE_BYTES: usize = 65_536;

pub(crate) fn vault(state: &AppState) -> Result<&MasterKeys, ApiError> {
    state.vault.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::Unavailable,
            "secrets are not configured on this deployment (SECRETS_MASTER_KEY)",
        )
    })
}

fn vault_error(e: VaultError) -> ApiError {
    match e {
        VaultError::UnknownMasterKey(id) => {
            tracing::error!(master_key_id = %id, "a data key is wrapped by a master key this node lacks");
            // A configuration fault: the operators' log names the key id; the
            // caller learns nothing of the key setup, and no Retry-After.
            ApiError::new(ErrorKind::Internal, "internal error")
        }
        VaultError::Tampered => {
            tracing::error!("a sealed secret or data key does not open: altered, or not this tenant's");
            ApiError::new(
                ErrorKind::Internal,
                "the stored secret fails its integrity check and is not returned",
            )
        }
        VaultError::Random | VaultError::Config(_) => {
            ApiError::new(ErrorKind::Internal, "the secret could not be sealed")
        }
    }
}

/// A valid secret name: a letter or `_`, then up to 127 letters, digits,
/// `_`, `.` or `-`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(invalid("name", "a letter or `_`, then up to 127 letters, digits, `_`, `.` or `-`"))
    }
}

fn check_value(value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(invalid("value", "must not be empty"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("value is over {MAX_VALUE_BYTES} bytes"),
        )
        .with_details(json!({ "value": [format!("at most {MAX_VALUE_BYTES} bytes")] })));
    }
    Ok(())
}

/// The tenant's data key, made and stored (wrapped) on first use.
pub(crate) async fn data_key(tx: &mut TenantTx, vault: &MasterKeys) -> Result<DataKey, ApiError> {
    let tenant = tx.tenant_id().as_uuid();
    let (master_id, bytes) = match secrets::data_key(tx).await? {
        Some(stored) => stored,
        None => {
            let fresh = DataKey::generate().map_err(vault_error)?;
            let wrapped = vault.wrap(tenant, &fresh).map_err(vault_error)?;
            secrets::add_data_key(tx, &wrapped.master_id, &wrapped.bytes).await?
        }
    };
    vault.unwrap(tenant, &WrappedKey { master_id, bytes }).map_err(vault_error)
}

/// Secret `name` of the transaction's tenant: its metadata and its value,
/// opened with the tenant's data key. Not found when there is no such secret.
pub(crate) async fn open_value(
    tx: &mut TenantTx,
    vault: &MasterKeys,
    name: &str,
) -> Result<(SecretMeta, secrecy::SecretString), ApiError> {
    let stored = secrets::get(tx, name, false).await?;
    let key = data_key(tx, vault).await?;
    let value = key
        .open(tx.tenant_id().as_uuid(), stored.meta.id, name, stored.meta.version, &stored.ciphertext)
        .map_err(vault_error)?;
    Ok((stored.meta, value))
}

fn by(member: &Member) -> String {
    let actor = member.caller.actor();
    format!("{}:{}", actor.kind, actor.id)
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// A letter or `_`, then up to 127 letters, digits, `_`, `.` or `-`.
    #[schema(pattern = "^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")]
    name: String,
    /// The value: 1 byte to 64 KiB. Never returned by this route.
    #[schema(min_length = 1)]
    value: String,
    #[validate(length(max = 1000))]
    #[schema(max_length = 1000)]
    description: Option<String>,
}

impl std::fmt::Debug for CreateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecret").field("name", &self.name).finish_non_exhaustive()
    }
}

#[utoipa::path(post, path = "/api/v1/secrets", tag = "agents", request_body = CreateSecret, responses((status = 201, body = SecretMeta), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(member): Admin,
    ValidJson(body): ValidJson<CreateSecret>,
) -> Result<(StatusCode, Json<SecretMeta>), ApiError> {
    let vault = vault(&state)?;
    check_name(&body.name)?;
    check_value(&body.value)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let key = data_key(&mut tx, vault).await?;
    // The value is bound to this secret's id: a secret deleted and made again
    // under the same name opens none of the old one's values.
    let id = uuid::Uuid::new_v4();
    let sealed =
        key.seal(member.ctx.tenant_id.as_uuid(), id, &body.name, 1, &body.value).map_err(vault_error)?;
    let meta = secrets::create(
        &mut tx,
        id,
        &body.name,
        body.description.as_deref().unwrap_or(""),
        &sealed,
        &by(&member),
    )
    .await?;
    let entry = Entry {
        action: "secret.create",
        target_type: "secret",
        target_id: meta.name.clone(),
        details: json!({ "version": meta.version }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SecretQuery {
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page (a name).
    cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretPage {
    data: Vec<SecretMeta>,
    next_cursor: Option<String>,
}

/// Names and metadata, by name; never a value.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "agents", params(SecretQuery), responses((status = 200, body = SecretPage), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(member): Admin,
    ValidQuery(q): ValidQuery<SecretQuery>,
) -> Result<Json<SecretPage>, ApiError> {
    vault(&state)?;
    let limit = q.limit.unwrap_or(50);
    let mut tx = state.db.begin(&member.ctx).await?;
    let mut rows = secrets::list(&mut tx, q.cursor.as_deref(), limit + 1).await?;
    tx.commit().await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|s| s.name.clone()) } else { None };
    Ok(Json(SecretPage { data: rows, next_cursor }))
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new value: 1 byte to 64 KiB.
    #[schema(min_length = 1)]
    value: String,
    #[validate(length(max = 1000))]
    #[schema(max_length = 1000)]
    description: Option<String>,
}

impl std::fmt::Debug for RotateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateSecret").finish_non_exhaustive()
    }
}

/// A new value for an existing secret (its version goes up by one).
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "agents", params(("name" = String, Path)), request_body = RotateSecret, responses((status = 200, body = SecretMeta), crate::openapi::CommonErrors))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<RotateSecret>,
) -> Result<Json<SecretMeta>, ApiError> {
    let vault = vault(&state)?;
    check_name(&name).map_err(|_| ApiError::new(ErrorKind::NotFound, "not found"))?;
    check_value(&body.value)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let current = secrets::get(&mut tx, &name, true).await?;
    let key = data_key(&mut tx, vault).await?;
    let version = current.meta.version + 1;
    let sealed = key
        .seal(member.ctx.tenant_id.as_uuid(), current.meta.id, &name, version, &body.value)
        .map_err(vault_error)?;
    let meta =
        secrets::replace(&mut tx, &name, version, &sealed, body.description.as_deref(), &by(&member)).await?;
    let entry = Entry {
        action: "secret.rotate",
        target_type: "secret",
        target_id: meta.name.clone(),
        details: json!({ "version": meta.version }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok(Json(meta))
}

#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "agents", params(("name" = String, Path)), responses((status = 204), crate::openapi::CommonErrors))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Admin(member): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    vault(&state)?;
    check_name(&name).map_err(|_| ApiError::new(ErrorKind::NotFound, "not found"))?;
    let mut tx = state.db.begin(&member.ctx).await?;
    secrets::delete(&mut tx, &name).await?;
    let entry =
        Entry { action: "secret.delete", target_type: "secret", target_id: name.clone(), details: json!({}) };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretValue {
    name: String,
    version: i32,
    value: String,
}

/// The value, to an API key with the `secrets` scope only; audited.
#[utoipa::path(get, path = "/api/v1/secrets/{name}/value", tag = "agents", params(("name" = String, Path)), responses((status = 200, body = SecretValue), crate::openapi::CommonErrors))]
pub(crate) async fn read_value(
    State(state): State<AppState>,
    SecretsReader(member): SecretsReader,
    Path(name): Path<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let vault = vault(&state)?;
    check_name(&name).map_err(|_| ApiError::new(ErrorKind::NotFound, "not found"))?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let (meta, value) = open_value(&mut tx, vault, &name).await?;
    let entry = Entry {
        action: "secret.read",
        target_type: "secret",
        target_id: name.clone(),
        details: json!({ "version": meta.version }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    let body = SecretValue { name, version: meta.version, value: value.expose_secret().to_owned() };
    // Never kept by a cache on the way (the key travels in X-API-Key, which
    // caches do not treat as Authorization).
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], Json(body)))
}
