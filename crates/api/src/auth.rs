//! Who is calling: extractors that authenticate the request and say, in the
//! handler's signature, which principal and role it needs.
//!
//! - [`Caller`]: any authenticated principal, with the request id and client IP.
//! - [`Member`]: a principal of a tenant (user token or API key).
//! - [`Admin`]: a tenant's owner or admin (or an API key with the `admin` scope).
//! - [`Broadcaster`]: a tenant's owner or admin, or a key with `broadcast`.
//! - [`Platform`]: a platform operator (the platform key, `PLATFORM_KEY`).
//!
//! Credentials come as `Authorization: Bearer …` (a JWT, verified by the same
//! verifier the Socket.IO handshake uses, an `sb_…` API key, or the platform
//! key) or `X-API-Key`. No JWT is ever a platform operator.
//! An API key acts as its tenant's `service` role within its scopes: `read` for
//! GET, `write` for changes, `admin` for everything.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::net::IpAddr;
use switchboard_db::TenantContext;
use switchboard_db::repo::audit::Actor;
use switchboard_domain::{ClientAddr, ErrorKind, Principal, TenantStatus};
use switchboard_realtime::TenantInfo;

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: Option<String>,
    pub ip: Option<IpAddr>,
}

impl Caller {
    /// The audit log's view of this caller.
    pub fn actor(&self) -> Actor {
        let (kind, id) = match &self.principal {
            Principal::User { user_id, .. } => ("user", user_id.to_string()),
            Principal::ApiKey { key_id, .. } => ("api_key", key_id.to_string()),
            Principal::Platform { subject } => ("platform", subject.clone()),
        };
        Actor { kind, id, request_id: self.request_id.clone(), ip: self.ip }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn x_api_key(parts: &Parts) -> Option<&str> {
    parts.headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

/// An authentication that failed once in this request (kept so the handler's
/// extractor does not verify, or count, the same credentials again).
#[derive(Clone, Debug)]
pub(crate) struct Rejected(pub ApiError);

async fn api_key_principal(state: &AppState, key: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::new(ErrorKind::TokenInvalid, "the API key is not valid or was revoked");
    if !switchboard_auth::api_key::is_api_key(key) {
        return Err(invalid());
    }
    let hash = state.key_hasher.hash(key);
    let grant = state.directory.api_key(&hash).await?.ok_or_else(invalid)?;
    Ok(Principal::ApiKey { tenant_id: grant.tenant(), key_id: grant.id, scopes: grant.scopes })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Already authenticated (or refused) by the rate-limit middleware.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        if let Some(Rejected(e)) = parts.extensions.get::<Rejected>() {
            return Err(e.clone());
        }
        let ip = parts.extensions.get::<ClientAddr>().map(|c| c.0);
        let credentials = (x_api_key(parts), bearer(parts));
        if matches!(credentials, (None, None)) {
            return Err(ApiError::new(
                ErrorKind::Unauthenticated,
                "send a token as `Authorization: Bearer …` or an API key as `X-API-Key`",
            ));
        }
        // An address that keeps failing is refused before any verification work.
        if let Some(wait) = ip.and_then(|ip| state.auth_failures.blocked(ip)) {
            return Err(ApiError::new(
                ErrorKind::RateLimited,
                "too many failed authentications from this address",
            )
            .with_retry_after(wait));
        }
        let principal = match credentials {
            (Some(key), _) => api_key_principal(state, key).await,
            (None, Some(token)) if token.starts_with(switchboard_auth::api_key::PREFIX) => {
                api_key_principal(state, token).await
            }
            (None, Some(token)) if state.platform_key.as_ref().is_some_and(|k| k.matches(token)) => {
                Ok(Principal::Platform { subject: "platform-key".to_owned() })
            }
            (None, Some(token)) => {
                state.verifier.verify(token).await.map_err(|e| ApiError::new(e.kind(), e.to_string()))
            }
            (None, None) => Err(ApiError::new(ErrorKind::Unauthenticated, "no credentials")),
        };
        let principal = match principal {
            Ok(p) => p,
            Err(e) => {
                if let (Some(ip), true) = (ip, credential_failure(e.kind)) {
                    state.auth_failures.failed(ip);
                }
                return Err(e);
            }
        };
        let request_id =
            parts.headers.get(&crate::REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Some(tenant) = principal.tenant_id() {
            tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
        }
        Ok(Caller { principal, request_id, ip })
    }
}

/// A failure of the credentials themselves (not of a lookup behind them).
fn credential_failure(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::TokenInvalid | ErrorKind::TokenExpired | ErrorKind::Forbidden)
}

/// A caller acting inside a tenant.
#[derive(Debug, Clone)]
pub struct Member {
    pub caller: Caller,
    pub ctx: TenantContext,
    /// The tenant's status and limits, as checked for this request.
    pub tenant: TenantInfo,
}

impl Member {
    /// How events this caller sends are signed: `agent` for an API key, `user`
    /// for a person.
    pub fn sender_kind(&self) -> &'static str {
        match self.caller.principal {
            Principal::ApiKey { .. } => "agent",
            _ => "user",
        }
    }

    /// The `from` of events this caller sends.
    pub fn sender(&self) -> switchboard_realtime::From {
        switchboard_realtime::From {
            user_id: self.ctx.user_id.map(|u| u.as_uuid()),
            kind: std::borrow::Cow::Borrowed(self.sender_kind()),
        }
    }

    /// A tenant principal of a tenant that exists and is active; scopes unchecked.
    async fn of_active_tenant(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let ctx = TenantContext::for_principal(&caller.principal).ok_or_else(|| {
            ApiError::new(ErrorKind::Forbidden, "this route acts inside a tenant; a platform token has none")
        })?;
        let info = match parts.extensions.get::<TenantInfo>() {
            Some(info) => Some(*info),
            None => state.directory.tenant(ctx.tenant_id).await?,
        };
        let tenant = match info {
            None => return Err(ApiError::new(ErrorKind::Forbidden, "the tenant does not exist")),
            Some(info) if info.status == TenantStatus::Suspended => {
                return Err(ApiError::new(ErrorKind::TenantSuspended, "the tenant is suspended"));
            }
            Some(info) => info,
        };
        Ok(Member { caller, ctx, tenant })
    }
}

impl FromRequestParts<AppState> for Member {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let member = Member::of_active_tenant(parts, state).await?;
        if let Principal::ApiKey { scopes, .. } = &member.caller.principal {
            let needed = if parts.method.is_safe() { "read" } else { "write" };
            if !scopes.iter().any(|s| s == needed || s == "admin") {
                return Err(ApiError::new(
                    ErrorKind::Forbidden,
                    format!("this API key lacks the `{needed}` scope"),
                ));
            }
        }
        Ok(member)
    }
}

/// A member who reads, whatever the method (a search is a POST): an API key
/// needs `read` (or `admin`).
#[derive(Debug, Clone)]
pub struct Reader(pub Member);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let member = Member::of_active_tenant(parts, state).await?;
        if let Principal::ApiKey { scopes, .. } = &member.caller.principal
            && !scopes.iter().any(|s| s == "read" || s == "admin")
        {
            return Err(ApiError::new(ErrorKind::Forbidden, "this API key lacks the `read` scope"));
        }
        Ok(Reader(member))
    }
}

/// An API key with the `secrets` scope: the only caller that reads a
/// secret's value (no other scope, role or person implies it).
#[derive(Debug, Clone)]
pub struct SecretsReader(pub Member);

impl FromRequestParts<AppState> for SecretsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let member = Member::of_active_tenant(parts, state).await?;
        match &member.caller.principal {
            Principal::ApiKey { scopes, .. } if scopes.iter().any(|s| s == "secrets") => {
                Ok(SecretsReader(member))
            }
            _ => Err(ApiError::new(
                ErrorKind::Forbidden,
                "reading a secret's value needs an API key with the `secrets` scope",
            )),
        }
    }
}

/// A caller who may broadcast: an API key with the `broadcast` (or `admin`)
/// scope, or a tenant's owner or admin.
#[derive(Debug, Clone)]
pub struct Broadcaster(pub Member);

impl FromRequestParts<AppState> for Broadcaster {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let member = Member::of_active_tenant(parts, state).await?;
        let allowed = match &member.caller.principal {
            Principal::User { role, .. } => role.is_admin(),
            Principal::ApiKey { scopes, .. } => scopes.iter().any(|s| s == "broadcast" || s == "admin"),
            Principal::Platform { .. } => false,
        };
        if !allowed {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "broadcasting needs an API key with the `broadcast` scope, or a tenant owner or admin",
            ));
        }
        Ok(Broadcaster(member))
    }
}

/// A tenant's owner or admin.
#[derive(Debug, Clone)]
pub struct Admin(pub Member);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let member = Member::from_request_parts(parts, state).await?;
        let allowed = match &member.caller.principal {
            Principal::User { role, .. } => role.is_admin(),
            Principal::ApiKey { scopes, .. } => scopes.iter().any(|s| s == "admin"),
            Principal::Platform { .. } => false,
        };
        if !allowed {
            return Err(ApiError::new(ErrorKind::Forbidden, "this route needs a tenant owner or admin"));
        }
        Ok(Admin(member))
    }
}

/// A platform operator.
#[derive(Debug, Clone)]
pub struct Platform(pub Caller);

impl FromRequestParts<AppState> for Platform {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if state.platform_key.is_none() {
            return Err(ApiError::new(
                ErrorKind::Unauthenticated,
                "platform operations are disabled on this node: PLATFORM_KEY is not set",
            ));
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        if !matches!(caller.principal, Principal::Platform { .. }) {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "this route is for platform operators: send the platform key as `Authorization: Bearer`",
            ));
        }
        Ok(Platform(caller))
    }
}
