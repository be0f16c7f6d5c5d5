//! `switchboard token`: mints an HS256 development token for a tenant user with
//! `JWT_SECRET`, in the claim layout clients use (`sub`, `tenant_id`,
//! `tenant_role`, `exp`, `iat`). There is no platform token: platform
//! operations authenticate with `PLATFORM_KEY`.

use secrecy::SecretString;
use switchboard_auth::{Claims, mint_token};
use switchboard_domain::{Role, TenantId, UserId};

/// What to put in the token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
    pub ttl_secs: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Parses `90`, `30s`, `15m`, `12h` or `7d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is not a duration like 3600, 15m, 12h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("`{s}` must be positive and reasonable")),
        Some(v) => Ok(v),
    }
}

pub fn mint(secret: &SecretString, request: &TokenRequest) -> Result<String, String> {
    let now = u64::try_from(chrono_now()).map_err(|_| "the clock is before 1970".to_owned())?;
    let claims = Claims {
        sub: Some(request.user.to_string()),
        tenant_id: Some(request.tenant.to_string()),
        tenant_role: Some(request.role.as_str().to_owned()),
        role: Some("authenticated".to_owned()),
        exp: now + request.ttl_secs,
        iat: Some(now),
        iss: request.issuer.clone(),
        aud: request.audience.clone(),
        ..Claims::default()
    };
    mint_token(secret, &claims).map_err(|e| format!("cannot sign the token: {e}"))
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_take_the_common_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("12h"), Ok(43_200));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("0").is_err() && parse_ttl("1w").is_err() && parse_ttl("h").is_err());
    }

    #[tokio::test]
    async fn a_minted_token_verifies_with_the_same_secret() {
        let secret = SecretString::from("0123456789abcdef0123");
        let request = TokenRequest {
            tenant: TenantId::new(),
            user: UserId::new(),
            role: Role::Owner,
            ttl_secs: 60,
            issuer: None,
            audience: None,
        };
        let token = mint(&secret, &request).unwrap();
        let verifier = switchboard_auth::Verifier::new(&switchboard_auth::JwtConfig {
            secret: Some(secret),
            jwks_url: None,
            issuer: None,
            audience: None,
        });
        let principal = verifier.verify(&token).await.unwrap();
        assert_eq!(principal.tenant_id(), Some(request.tenant));
        assert_eq!(principal.role(), Some(Role::Owner));
    }
}
