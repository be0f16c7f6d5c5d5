//! JWT verification and minting (docs/rest.md, credentials).
//!
//! Claims: `sub` (user UUID), `tenant_id` or `app_metadata.tenant_id`, `exp`, and
//! optionally `tenant_role` or `app_metadata.tenant_role`. Every token names a
//! tenant: a token without one (such as a Supabase `service_role` key) is
//! refused with `tenant_required`; platform operators use `PLATFORM_KEY`
//! ([`crate::platform`]).

use crate::jwks::Jwks;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind as JwtErrorKind,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use switchboard_domain::{ErrorKind, Principal, Role, TenantId, UserId};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Why a credential was refused; `kind()` and `code()` say how to report it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token was sent")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
    #[error("the token names no tenant; use a tenant user's token (platform operations use PLATFORM_KEY)")]
    NoTenant,
}

impl AuthError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::Missing => ErrorKind::Unauthenticated,
            AuthError::Expired => ErrorKind::TokenExpired,
            AuthError::Invalid(_) => ErrorKind::TokenInvalid,
            AuthError::NoTenant => ErrorKind::Forbidden,
        }
    }

    /// The precise code clients see (`err.data.code`, REST `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired => "token_expired",
            AuthError::Invalid(_) => "token_invalid",
            AuthError::NoTenant => "tenant_required",
        }
    }
}

/// What the verifier checks beyond the signature.
#[derive(Clone)]
pub struct JwtConfig {
    pub secret: Option<SecretString>,
    /// Fetched by [`Verifier::connect`]; `new` ignores it.
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The claims Switchboard reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_metadata: Option<Value>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Verifies tokens against the configured keys: HS256 with the secret, and the
/// asymmetric algorithms through the JWKS, each key allowing only its own.
#[derive(Clone)]
pub struct Verifier {
    hs: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("hs256", &self.hs.is_some()).field("jwks", &self.jwks).finish()
    }
}

impl Verifier {
    /// A verifier with the HS256 secret only.
    pub fn new(config: &JwtConfig) -> Self {
        let hs = config.secret.as_ref().map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not merely match when present.
        let mut required = vec!["exp"];
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self { hs, jwks: None, validation }
    }

    /// A verifier with the secret and, when configured, the JWKS (fetched now
    /// and again every [`crate::jwks::REFRESH_EVERY`]).
    pub async fn connect(config: &JwtConfig) -> Self {
        Self::connect_refreshing(config, crate::jwks::REFRESH_EVERY).await
    }

    /// [`Self::connect`] with the JWKS fetched again every `every`.
    pub async fn connect_refreshing(config: &JwtConfig, every: std::time::Duration) -> Self {
        let mut verifier = Self::new(config);
        if let Some(url) = &config.jwks_url {
            let jwks = Arc::new(Jwks::new(url).await);
            Jwks::refresh_every(&jwks, every);
            verifier.jwks = Some(jwks);
        }
        verifier
    }

    /// Verifies `token` and maps its claims to a principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_until(token).await.map(|(principal, _)| principal)
    }

    /// Verifies `token`: its principal, and its `exp` (seconds since the
    /// epoch), for connections that must end with their token.
    pub async fn verify_until(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs.clone().ok_or(AuthError::Invalid("no key for this algorithm"))?,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::Invalid("no key for this algorithm"))?;
                let kid = header.kid.as_deref().ok_or(AuthError::Invalid("no kid in the header"))?;
                let entry = jwks.key(kid).await.ok_or(AuthError::Invalid("unknown signing key"))?;
                // The key decides the algorithm: an RS key never verifies an ES or HS token.
                if entry.algorithm != header.alg {
                    return Err(AuthError::Invalid("algorithm not allowed for this key"));
                }
                entry.key
            }
            _ => return Err(AuthError::Invalid("algorithm not allowed")),
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e.kind() {
            JwtErrorKind::ExpiredSignature => AuthError::Expired,
            JwtErrorKind::ImmatureSignature => AuthError::Invalid("not yet valid"),
            JwtErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
            JwtErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
            JwtErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
            _ => AuthError::Invalid("malformed"),
        })?;
        Ok((principal_from_claims(&data.claims)?, data.claims.exp))
    }
}

fn metadata_str<'a>(claims: &'a Claims, key: &str) -> Option<&'a str> {
    claims.app_metadata.as_ref()?.get(key)?.as_str()
}

/// Claims → principal, after the signature and times were checked.
pub fn principal_from_claims(claims: &Claims) -> Result<Principal, AuthError> {
    let tenant = claims.tenant_id.as_deref().or_else(|| metadata_str(claims, "tenant_id"));
    match tenant {
        None => Err(AuthError::NoTenant),
        Some(tenant) => {
            let tenant_id: TenantId =
                tenant.parse().map_err(|_| AuthError::Invalid("tenant claim is not a UUID"))?;
            let user_id: UserId = claims
                .sub
                .as_deref()
                .ok_or(AuthError::Invalid("no sub claim"))?
                .parse()
                .map_err(|_| AuthError::Invalid("sub claim is not a UUID"))?;
            let role = match claims.tenant_role.as_deref().or_else(|| metadata_str(claims, "tenant_role")) {
                None => Role::Member,
                Some(r) => r.parse().map_err(|_| AuthError::Invalid("unknown tenant role"))?,
            };
            Ok(Principal::User { tenant_id, user_id, role })
        }
    }
}

/// Signs `claims` with HS256 (for `switchboard token` and tests).
pub fn mint_token(secret: &SecretString, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn now() -> u64 {
        chrono::Utc::now().timestamp() as u64
    }

    fn config() -> JwtConfig {
        JwtConfig {
            secret: Some(SecretString::from("s3cret-for-tests")),
            jwks_url: None,
            issuer: None,
            audience: None,
        }
    }

    fn claims(tenant: TenantId, user: UserId) -> Claims {
        Claims {
            sub: Some(user.to_string()),
            tenant_id: Some(tenant.to_string()),
            exp: now() + 600,
            ..Claims::default()
        }
    }

    #[tokio::test]
    async fn a_minted_token_verifies_to_its_tenant_user_and_role() {
        let (t, u) = (TenantId::new(), UserId::new());
        let mut c = claims(t, u);
        c.tenant_role = Some("admin".into());
        let token = mint_token(config().secret.as_ref().unwrap(), &c).unwrap();
        assert_eq!(
            Verifier::new(&config()).verify(&token).await,
            Ok(Principal::User { tenant_id: t, user_id: u, role: Role::Admin })
        );
    }

    #[tokio::test]
    async fn supabase_app_metadata_carries_tenant_and_role() {
        let (t, u) = (TenantId::new(), UserId::new());
        let c = Claims {
            sub: Some(u.to_string()),
            app_metadata: Some(json!({"tenant_id": t.to_string(), "tenant_role": "owner"})),
            exp: now() + 60,
            ..Claims::default()
        };
        let token = mint_token(config().secret.as_ref().unwrap(), &c).unwrap();
        assert_eq!(
            Verifier::new(&config()).verify(&token).await,
            Ok(Principal::User { tenant_id: t, user_id: u, role: Role::Owner })
        );
    }

    #[tokio::test]
    async fn expired_forged_and_unsigned_tokens_are_refused() {
        let (t, u) = (TenantId::new(), UserId::new());
        let v = Verifier::new(&config());
        let mut expired = claims(t, u);
        expired.exp = now() - 2 * LEEWAY_SECS;
        let token = mint_token(config().secret.as_ref().unwrap(), &expired).unwrap();
        assert_eq!(v.verify(&token).await, Err(AuthError::Expired));

        let forged = mint_token(&SecretString::from("other"), &claims(t, u)).unwrap();
        assert_eq!(v.verify(&forged).await.map_err(|e| e.code()), Err("token_invalid"));

        // alg: none, with the payload of a valid token.
        let valid = mint_token(config().secret.as_ref().unwrap(), &claims(t, u)).unwrap();
        let payload = valid.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(v.verify(&none).await.map_err(|e| e.code()), Err("token_invalid"));

        assert_eq!(v.verify("").await, Err(AuthError::Missing));
        assert_eq!(v.verify("garbage").await.map_err(|e| e.code()), Err("token_invalid"));
    }

    #[tokio::test]
    async fn a_service_role_token_without_tenant_is_nobody() {
        let c = Claims { role: Some("service_role".into()), exp: now() + 60, ..Claims::default() };
        let token = mint_token(config().secret.as_ref().unwrap(), &c).unwrap();
        let refused = Verifier::new(&config()).verify(&token).await;
        assert_eq!(refused, Err(AuthError::NoTenant));
        assert_eq!(refused.map_err(|e| (e.code(), e.kind())), Err(("tenant_required", ErrorKind::Forbidden)));
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let mut cfg = config();
        cfg.issuer = Some("https://issuer.example".into());
        cfg.audience = Some("switchboard".into());
        let (t, u) = (TenantId::new(), UserId::new());
        let secret = cfg.secret.clone().unwrap();
        let bare = mint_token(&secret, &claims(t, u)).unwrap();
        assert!(Verifier::new(&cfg).verify(&bare).await.is_err());
        let mut c = claims(t, u);
        c.iss = Some("https://issuer.example".into());
        c.aud = Some("switchboard".into());
        let good = mint_token(&secret, &c).unwrap();
        assert!(Verifier::new(&cfg).verify(&good).await.is_ok());
    }
}
