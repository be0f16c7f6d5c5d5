//! Typed configuration from the environment (docs/configuration.md), read once and
//! validated before anything starts. Every problem is reported on its own line,
//! naming the variable; no secret is ever echoed.

use secrecy::SecretString;
use std::fmt;
use std::net::IpAddr;

/// Everything `serve` needs.
#[derive(Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// `METRICS_ADDR`: where `/metrics` is served, apart from the public port.
    pub metrics_addr: std::net::SocketAddr,
    pub database_url: SecretString,
    pub redis_url: Option<SecretString>,
    /// `REDIS_CA_CERT`: PEM certificates a `rediss://` server must chain to.
    pub redis_ca_cert: Option<std::path::PathBuf>,
    pub jwt_secret: Option<SecretString>,
    pub jwt_jwks_url: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Keys the stored hashes of API keys; falls back to JWT_SECRET.
    pub api_key_secret: SecretString,
    pub cors_allowed_origins: Vec<String>,
    /// `PLATFORM_KEY`: the operator's credential for the platform routes.
    pub platform_key: Option<switchboard_auth::PlatformKey>,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: switchboard_api::client_addr::TrustedProxies,
    /// `AUTH_FAILURES_PER_SECOND`: failed authentications one client address
    /// may make per second (four times that at once) before it is refused.
    pub auth_failures_per_second: u32,
    pub node_id: String,
    /// `TOPIC_HISTORY_SIZE`, `TOPIC_HISTORY_TTL_SECONDS`, `SOCKET_EVENTS_PER_SECOND`,
    /// `DRAIN_SECONDS`, `NODE_PUBLISHES_IN_FLIGHT`: the Socket.IO layer's
    /// node-wide settings.
    pub realtime: switchboard_realtime::RealtimeConfig,
    /// `EMBEDDING_MODEL_DIR`, `EMBEDDING_URL`/`_MODEL`/`_API_KEY`,
    /// `RERANK_URL`/`_MODEL`/`_API_KEY`: where knowledge gets its vectors and
    /// its reranking.
    pub knowledge: switchboard_knowledge::Settings,
    /// `APPROVAL_TTL_SECONDS`: how long an approval a tool policy asks for
    /// waits for a person before it expires.
    pub approval_ttl: std::time::Duration,
    /// `SECRETS_MASTER_KEY`, `SECRETS_MASTER_KEY_ID`, `SECRETS_PREVIOUS_KEYS`:
    /// the master keys that wrap tenants' data keys; `None` without them.
    pub secrets: Option<std::sync::Arc<switchboard_vault::MasterKeys>>,
    /// `WEBHOOK_ALLOW_PRIVATE`, `WEBHOOK_TIMEOUT_MS`, `WEBHOOK_RETRY_BASE_MS`,
    /// `WEBHOOK_MAX_ATTEMPTS`, `WEBHOOK_CIRCUIT_COOL_DOWN_MS`: how outbound
    /// webhooks are delivered (the node name is filled in at start).
    pub webhooks: switchboard_webhooks::worker::Settings,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("metrics_addr", &self.metrics_addr)
            .field("redis", &self.redis_url.is_some())
            .field("jwt_secret", &self.jwt_secret.is_some())
            .field("jwt_jwks_url", &self.jwt_jwks_url)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("platform_key", &self.platform_key.is_some())
            .field("node_id", &self.node_id)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// All the problems found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads variables through `get`, so tests need not touch the process environment.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// The variable, trimmed; empty counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(&Env(process_env))
    }

    pub fn from<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();

        let host = match env.get("HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(h) if h == "localhost" => IpAddr::from([127, 0, 0, 1]),
            Some(h) => h.parse().unwrap_or_else(|_| {
                problems.push(format!("HOST: `{h}` is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"));
                IpAddr::from([127, 0, 0, 1])
            }),
        };
        let port = match env.get("PORT") {
            None => 8080,
            Some(p) => p.parse::<u16>().unwrap_or_else(|_| {
                problems.push(format!("PORT: `{p}` is not a port number (0-65535)"));
                0
            }),
        };
        let metrics_addr = match env.get("METRICS_ADDR") {
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
            Some(a) => a.parse().unwrap_or_else(|_| {
                problems.push(format!(
                    "METRICS_ADDR: `{a}` is not an address and port (e.g. 127.0.0.1:9464 or 0.0.0.0:9464)"
                ));
                std::net::SocketAddr::from(([127, 0, 0, 1], 0))
            }),
        };

        let database_url = match env.get("DATABASE_URL") {
            None => {
                problems.push(
                    "DATABASE_URL: required; a postgres:// URL for the application role (see `scripts/services env`)"
                        .to_owned(),
                );
                String::new()
            }
            Some(u) if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) => {
                problems.push("DATABASE_URL: must start with postgres:// or postgresql://".to_owned());
                u
            }
            Some(u) => u,
        };

        // One Redis, or a Redis Cluster named by one or more of its masters
        // (`redis-cluster://host:port?node=host:port&node=…`); `s` for TLS.
        let redis_url = env.get("REDIS_URL");
        let tls_redis = |u: &str| u.starts_with("rediss://") || u.starts_with("rediss-cluster://");
        if let Some(u) = &redis_url
            && !(u.starts_with("redis://") || u.starts_with("redis-cluster://") || tls_redis(u))
        {
            problems.push(
                "REDIS_URL: must start with redis://, rediss://, redis-cluster:// or rediss-cluster://"
                    .to_owned(),
            );
        }

        let redis_ca_cert = env.get("REDIS_CA_CERT").map(std::path::PathBuf::from);
        if let Some(ca) = &redis_ca_cert {
            if !ca.is_file() {
                problems.push(format!("REDIS_CA_CERT: `{}` is not a readable file", ca.display()));
            }
            if !redis_url.as_deref().is_some_and(tls_redis) {
                problems.push(
                    "REDIS_CA_CERT: set, but REDIS_URL is not a rediss:// or rediss-cluster:// URL"
                        .to_owned(),
                );
            }
        }

        let jwt_secret = env.get("JWT_SECRET");
        let jwt_jwks_url = env.get("JWT_JWKS_URL");
        if jwt_secret.is_none() && jwt_jwks_url.is_none() {
            problems.push("JWT_SECRET or JWT_JWKS_URL: one of them is required to verify tokens".to_owned());
        }
        if let Some(s) = &jwt_secret
            && s.len() < 16
        {
            problems.push(
                "JWT_SECRET: too short; use at least 16 characters (32 random bytes is better)".to_owned(),
            );
        }
        if let Some(u) = &jwt_jwks_url
            && let Err(why) = switchboard_auth::jwks::check_url(u)
        {
            problems.push(format!("JWT_JWKS_URL: {why}"));
        }

        let api_key_secret = env.get("API_KEY_SECRET").or_else(|| jwt_secret.clone());
        if api_key_secret.is_none() && jwt_jwks_url.is_some() {
            problems.push(
                "API_KEY_SECRET: required when JWT_SECRET is not set; it keys the stored hashes of API keys"
                    .to_owned(),
            );
        }

        let mut cors_allowed_origins = Vec::new();
        for origin in env.get("CORS_ALLOWED_ORIGINS").iter().flat_map(|v| v.split(',')) {
            let origin = origin.trim();
            if origin.is_empty() {
                continue;
            }
            if !valid_origin(origin) {
                problems.push(format!(
                    "CORS_ALLOWED_ORIGINS: `{origin}` is not an exact origin like https://app.example.com (no wildcard, no path)"
                ));
            } else {
                cors_allowed_origins.push(origin.to_owned());
            }
        }

        let platform_key = env.get("PLATFORM_KEY").and_then(|k| {
            let key = switchboard_auth::PlatformKey::new(&k.into());
            if key.is_none() {
                problems.push(format!(
                    "PLATFORM_KEY: too short; use at least {} random characters (e.g. `openssl rand -hex 32`)",
                    switchboard_auth::platform::MIN_LEN
                ));
            }
            key
        });

        let trusted_proxies = match env.get("TRUSTED_PROXIES") {
            None => Default::default(),
            Some(list) => switchboard_api::client_addr::TrustedProxies::parse(&list).unwrap_or_else(|why| {
                problems.push(format!("TRUSTED_PROXIES: {why}"));
                Default::default()
            }),
        };

        let node_id = env.get("NODE_ID").unwrap_or_else(default_node_id);

        let mut realtime = switchboard_realtime::RealtimeConfig::default();
        let mut number = |name: &str, max: u64, why: &str| -> Option<u64> {
            let raw = env.get(name)?;
            match raw.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Some(n),
                _ => {
                    problems.push(format!("{name}: `{raw}` is not a whole number from 1 to {max} ({why})"));
                    None
                }
            }
        };
        if let Some(n) = number("TOPIC_HISTORY_SIZE", 1_000_000, "events kept per topic for recovery") {
            realtime.history.max_len = n as u32;
        }
        if let Some(n) =
            number("TOPIC_HISTORY_TTL_SECONDS", 30 * 24 * 3600, "how long a topic's events are kept")
        {
            realtime.history.ttl = std::time::Duration::from_secs(n);
        }
        if let Some(n) =
            number("SOCKET_EVENTS_PER_SECOND", 1_000_000, "events one socket may send per second")
        {
            realtime.socket_events_per_second = n as u32;
        }
        let mut auth_failures_per_second = 5;
        if let Some(n) = number(
            "AUTH_FAILURES_PER_SECOND",
            1_000_000,
            "failed authentications one address may make per second",
        ) {
            auth_failures_per_second = n as u32;
        }
        let mut approval_ttl = std::time::Duration::from_secs(24 * 3600);
        if let Some(n) = number(
            "APPROVAL_TTL_SECONDS",
            30 * 24 * 3600,
            "how long a tool call held for approval waits for a decision",
        ) {
            approval_ttl = std::time::Duration::from_secs(n);
        }
        if let Some(n) = number(
            "NODE_PUBLISHES_IN_FLIGHT",
            1_000_000,
            "client publishes one node has under way before it refuses more",
        ) {
            realtime.publishes_in_flight = n as usize;
        }
        if let Some(n) = number("DRAIN_SECONDS", 3600, "how long a drain spreads its socket closes") {
            realtime.drain_window = std::time::Duration::from_secs(n);
        }
        realtime.replay_limit = realtime.replay_limit.min(realtime.history.max_len);

        let mut knowledge = switchboard_knowledge::Settings {
            model_dir: env
                .get("EMBEDDING_MODEL_DIR")
                .map(Into::into)
                .unwrap_or_else(|| "models/all-MiniLM-L6-v2".into()),
            ..Default::default()
        };
        let mut endpoint = |prefix: &str, what: &str| -> Option<switchboard_knowledge::embed::Endpoint> {
            let url = env.get(&format!("{prefix}_URL"))?;
            let model = env.get(&format!("{prefix}_MODEL"));
            let parsed =
                url::Url::parse(&url).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if parsed.is_none() {
                problems.push(format!("{prefix}_URL: not an http(s) URL ({what})"));
            }
            if model.is_none() {
                problems.push(format!(
                    "{prefix}_MODEL: required with {prefix}_URL (the model the endpoint runs)"
                ));
            }
            Some(switchboard_knowledge::embed::Endpoint {
                url,
                model: model.unwrap_or_default(),
                api_key: env.get(&format!("{prefix}_API_KEY")),
            })
        };
        knowledge.embedding = endpoint("EMBEDDING", "an OpenAI-compatible embeddings endpoint");
        knowledge.rerank = endpoint("RERANK", "a Cohere/Jina-compatible rerank endpoint");
        let mut patience = switchboard_knowledge::embed::Patience::default();
        let mut millis = |name: &str, max: u64, why: &str| -> Option<std::time::Duration> {
            let raw = env.get(name)?;
            match raw.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Some(std::time::Duration::from_millis(n)),
                _ => {
                    problems.push(format!(
                        "{name}: `{raw}` is not a whole number of milliseconds from 1 to {max} ({why})"
                    ));
                    None
                }
            }
        };
        if let Some(d) = millis(
            "OUTSIDE_TIMEOUT_MS",
            600_000,
            "how long one call to an embedding or rerank endpoint may take",
        ) {
            patience.timeout = d;
        }
        if let Some(d) = millis(
            "OUTSIDE_BREAKER_COOL_DOWN_MS",
            3_600_000,
            "how long an open circuit breaker refuses calls",
        ) {
            patience.breaker_cool_down = d;
        }
        knowledge.patience = Some(patience);

        let mut webhooks = switchboard_webhooks::worker::Settings::new(node_id.clone());
        if let Some(d) =
            millis("WEBHOOK_TIMEOUT_MS", 120_000, "how long one webhook delivery attempt may take")
        {
            webhooks.timeout = d;
        }
        if let Some(d) = millis(
            "WEBHOOK_RETRY_BASE_MS",
            3_600_000,
            "the wait before a failed webhook delivery's first retry",
        ) {
            webhooks.retry_base = d;
        }
        if let Some(d) = millis(
            "WEBHOOK_CIRCUIT_COOL_DOWN_MS",
            86_400_000,
            "how long a webhook endpoint's open circuit waits before trying again",
        ) {
            webhooks.cool_down = d;
        }
        match env.get("WEBHOOK_MAX_ATTEMPTS").map(|raw| (raw.parse::<i32>(), raw)) {
            None => {}
            Some((Ok(n), _)) if (1..=100).contains(&n) => webhooks.max_attempts = n,
            Some((_, raw)) => problems.push(format!(
                "WEBHOOK_MAX_ATTEMPTS: `{raw}` is not a whole number from 1 to 100 (attempts before a webhook delivery is given up)"
            )),
        }
        match env.get("WEBHOOK_ALLOW_PRIVATE").as_deref() {
            None | Some("false" | "0") => {}
            Some("true" | "1") => webhooks.allow_private = true,
            Some(other) => problems.push(format!(
                "WEBHOOK_ALLOW_PRIVATE: `{other}` is not true or false (whether webhook endpoints may be private or loopback addresses)"
            )),
        }

        let secrets = match (env.get("SECRETS_MASTER_KEY"), env.get("SECRETS_MASTER_KEY_ID")) {
            (None, None) => {
                if env.get("SECRETS_PREVIOUS_KEYS").is_some() {
                    problems.push("SECRETS_PREVIOUS_KEYS: set without SECRETS_MASTER_KEY".to_owned());
                }
                None
            }
            (Some(key), Some(id)) => {
                let previous = env.get("SECRETS_PREVIOUS_KEYS");
                match switchboard_vault::MasterKeys::from_config(&key.into(), &id, previous.as_deref()) {
                    Ok(keys) => Some(std::sync::Arc::new(keys)),
                    Err(e) => {
                        problems.push(e.to_string());
                        None
                    }
                }
            }
            (Some(_), None) => {
                problems.push("SECRETS_MASTER_KEY_ID: required with SECRETS_MASTER_KEY (it names the key for rotations)".to_owned());
                None
            }
            (None, Some(_)) => {
                problems.push("SECRETS_MASTER_KEY: required with SECRETS_MASTER_KEY_ID".to_owned());
                None
            }
        };

        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Config {
            host,
            port,
            metrics_addr,
            database_url: database_url.into(),
            redis_url: redis_url.map(Into::into),
            redis_ca_cert,
            jwt_secret: jwt_secret.map(Into::into),
            jwt_jwks_url,
            jwt_issuer: env.get("JWT_ISSUER"),
            jwt_audience: env.get("JWT_AUDIENCE"),
            api_key_secret: api_key_secret.unwrap_or_default().into(),
            cors_allowed_origins,
            platform_key,
            trusted_proxies,
            auth_failures_per_second,
            node_id,
            realtime,
            knowledge,
            approval_ttl,
            secrets,
            webhooks,
        })
    }
}

fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', '*', '?', '#', '@', ' '])
}

/// Host name plus a random suffix, so two nodes on one host differ.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..6])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from(&Env(move |k: &str| map.get(k).cloned()))
    }

    const GOOD: [(&str, &str); 2] =
        [("DATABASE_URL", "postgres://app:pw@127.0.0.1/db"), ("JWT_SECRET", "0123456789abcdef0123")];

    #[test]
    fn defaults_apply_when_only_the_required_variables_are_set() {
        let c = env(&GOOD).unwrap();
        assert_eq!((c.host.to_string().as_str(), c.port), ("127.0.0.1", 8080));
        assert!(c.redis_url.is_none() && c.cors_allowed_origins.is_empty());
        assert!(!c.node_id.is_empty());
    }

    #[test]
    fn every_problem_is_reported_on_its_own_line_naming_its_variable() {
        let err = env(&[("PORT", "eighty"), ("CORS_ALLOWED_ORIGINS", "*")]).unwrap_err();
        let text = err.to_string();
        for var in ["DATABASE_URL", "PORT", "JWT_SECRET or JWT_JWKS_URL", "CORS_ALLOWED_ORIGINS"] {
            assert!(err.0.iter().any(|p| p.starts_with(var)), "{var} missing from {text}");
        }
        assert_eq!(err.0.len(), 4);
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug_output() {
        let err = env(&[("DATABASE_URL", "mysql://root:hunter2@db"), ("JWT_SECRET", "short")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2") && !err.to_string().contains("short\""));
        let c = env(&GOOD).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("0123456789abcdef0123") && !debug.contains("pw@"));
    }

    #[test]
    fn cors_origins_must_be_exact() {
        let mut pairs = GOOD.to_vec();
        pairs.push(("CORS_ALLOWED_ORIGINS", "https://app.example.com, http://localhost:3000"));
        assert_eq!(env(&pairs).unwrap().cors_allowed_origins.len(), 2);
        for bad in ["https://*.example.com", "https://a.com/path", "app.example.com"] {
            let mut pairs = GOOD.to_vec();
            pairs.push(("CORS_ALLOWED_ORIGINS", bad));
            assert!(env(&pairs).is_err(), "{bad}");
        }
    }
}
