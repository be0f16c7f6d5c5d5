//! Test support (dev-only): the application on port 0 against the real Postgres
//! and Redis that `scripts/services` starts ([`TestApp`], in process), separate
//! `switchboard` processes for cross-node tests ([`Node`]), token minting, and
//! fixtures.
//!
//! Reads `DATABASE_URL`, `DATABASE_ADMIN_URL` and `REDIS_URL` from the environment
//! (`scripts/test` exports them); a missing one fails the test with a clear message
//! rather than skipping it.

pub mod otlp;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod sio;
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use postgres::PostgresServer;
pub use proxy::TcpProxy;
pub use redis::{RedisCluster, RedisServer};
pub use sio::SioClient;

use secrecy::SecretString;
use std::net::SocketAddr;
use switchboard::config::{Config, Env};
use switchboard_auth::{Claims, mint_token};
use switchboard_domain::{Role, TenantId, UserId};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The HS256 secret test apps verify with.
pub const JWT_SECRET: &str = "switchboard-test-secret-0123456789";

/// The platform key test apps and nodes accept (`PLATFORM_KEY`).
pub const PLATFORM_KEY: &str = "switchboard-test-platform-key-0123456789abcdef";

/// A required variable, or a panic saying how to get it.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set: run the tests through scripts/test"))
}

/// A configuration for a test node: port 0, the test services, `overrides` on top.
pub fn config(overrides: &[(&str, &str)]) -> Result<Config, switchboard::config::ConfigError> {
    let overrides: Vec<(String, String)> =
        overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from(&Env(move |name: &str| {
        if let Some((_, v)) = overrides.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        match name {
            "PORT" => Some("0".to_owned()),
            "METRICS_ADDR" => Some("127.0.0.1:0".to_owned()),
            "HOST" => Some("127.0.0.1".to_owned()),
            "JWT_SECRET" => Some(JWT_SECRET.to_owned()),
            "PLATFORM_KEY" => Some(PLATFORM_KEY.to_owned()),
            "DATABASE_URL" | "REDIS_URL" | "EMBEDDING_MODEL_DIR" => std::env::var(name).ok(),
            _ => None,
        }
    }))
}

/// A running application; stopped (gracefully) on [`TestApp::stop`] or drop.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where the app serves `/metrics`.
    pub metrics_addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(overrides: &[(&str, &str)]) -> Self {
        let config = config(overrides).unwrap_or_else(|e| panic!("{e}"));
        let app = switchboard::Application::build(&config).await.unwrap_or_else(|e| panic!("{e}"));
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { addr, metrics_addr, http: reqwest::Client::new(), stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The app's `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics_text(&self.http, self.metrics_addr).await
    }

    /// Stops the app and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A user token for `tenant` signed with [`JWT_SECRET`].
pub fn user_token(tenant: TenantId, user: UserId, role: Role) -> String {
    let claims = Claims {
        sub: Some(user.to_string()),
        tenant_id: Some(tenant.to_string()),
        tenant_role: Some(role.as_str().to_owned()),
        exp: now() + 600,
        ..Claims::default()
    };
    mint_token(&SecretString::from(JWT_SECRET), &claims).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The platform operator's credential: the platform key, sent as a bearer.
pub fn platform_token() -> String {
    PLATFORM_KEY.to_owned()
}

/// A `service_role` token with no tenant signed with `JWT_SECRET`: what a
/// Supabase project's service key looks like. It must manage nothing.
pub fn service_role_token() -> String {
    let claims = Claims {
        sub: Some("service-role".to_owned()),
        role: Some("service_role".to_owned()),
        exp: now() + 600,
        ..Claims::default()
    };
    mint_token(&SecretString::from(JWT_SECRET), &claims).unwrap_or_else(|e| panic!("{e}"))
}

/// A token signed with `JWT_SECRET` that expired ten minutes ago.
pub fn expired_token(tenant: TenantId, user: UserId) -> String {
    let claims = Claims {
        sub: Some(user.to_string()),
        tenant_id: Some(tenant.to_string()),
        exp: now() - 600,
        ..Claims::default()
    };
    mint_token(&SecretString::from(JWT_SECRET), &claims).unwrap_or_else(|e| panic!("{e}"))
}

impl TestApp {
    /// Creates a tenant through the platform route; returns its id.
    pub async fn create_tenant(&self, name: &str) -> TenantId {
        create_tenant_at(&self.http, &self.url("/api/v1/tenants"), name).await
    }

    /// A tenant with these limit overrides.
    pub async fn create_tenant_with(&self, name: &str, limits: serde_json::Value) -> TenantId {
        create_tenant_with_at(&self.http, &self.url("/api/v1/tenants"), name, limits).await
    }
}

/// A `switchboard serve` process on a free port, for cross-node tests: each node
/// has its own memory (cache, limiter), sharing only Postgres and Redis. Killed
/// (by pid) when dropped.
pub struct Node {
    pub addr: SocketAddr,
    /// Where the node serves `/metrics`.
    pub metrics_addr: SocketAddr,
    pub http: reqwest::Client,
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `bin serve` (pass `env!("CARGO_BIN_EXE_switchboard")`) against the
    /// test services and waits until it serves.
    pub fn spawn(bin: &str, node_id: &str) -> Self {
        Self::spawn_with(bin, node_id, &[])
    }

    /// [`Self::spawn`] with `env` on top of the test settings (e.g. another
    /// `REDIS_URL`, `TOPIC_HISTORY_SIZE`).
    pub fn spawn_with(bin: &str, node_id: &str, extra: &[(&str, &str)]) -> Self {
        Self::start(bin, node_id, extra, false)
    }

    /// [`Self::spawn_with`], keeping the node's log lines for [`Self::log`].
    pub fn spawn_keeping_log(bin: &str, node_id: &str, extra: &[(&str, &str)]) -> Self {
        Self::start(bin, node_id, extra, true)
    }

    /// The log lines kept so far (with [`Self::spawn_keeping_log`]).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether a kept log line contains `needle` within `within`. Lines reach
    /// the log from a reader of the node's stderr, which may trail the answer
    /// to the request that logged them.
    pub async fn logged(&self, needle: &str, within: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        loop {
            if self.log().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn start(bin: &str, node_id: &str, extra: &[(&str, &str)], keep_log: bool) -> Self {
        use std::io::{BufRead, BufReader};
        let mut command = std::process::Command::new(bin);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", env("DATABASE_URL"))
            .env("REDIS_URL", env("REDIS_URL"))
            .env("JWT_SECRET", JWT_SECRET)
            .env("PLATFORM_KEY", PLATFORM_KEY)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("NODE_ID", node_id)
            .env("EMBEDDING_MODEL_DIR", std::env::var("EMBEDDING_MODEL_DIR").unwrap_or_default())
            .env("RUST_LOG", std::env::var("SB_NODE_LOG").unwrap_or_else(|_| "info".to_owned()))
            .stderr(std::process::Stdio::piped());
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let mut lines = BufReader::new(stderr).lines();
        let (addr, metrics_addr) = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("node {node_id} exited before serving"))
                .unwrap_or_else(|e| panic!("{e}"));
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if v["fields"]["message"] == "serving" {
                let field = |name: &str| -> SocketAddr {
                    v["fields"][name]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| panic!("{line}"))
                };
                break (field("addr"), field("metrics_addr"));
            }
        };
        // Keep draining the log so the node never blocks on a full pipe; with
        // SB_NODE_LOG_DIR set, keep it there as <node_id>.log.
        let keep = std::env::var("SB_NODE_LOG_DIR").ok().and_then(|dir| {
            std::fs::File::create(std::path::Path::new(&dir).join(format!("{node_id}.log"))).ok()
        });
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let kept = log.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut keep = keep;
            for line in lines.map_while(Result::ok) {
                if let Some(f) = keep.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if keep_log {
                    kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
                }
            }
        });
        Self { addr, metrics_addr, http: reqwest::Client::new(), child, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn create_tenant(&self, name: &str) -> TenantId {
        create_tenant_at(&self.http, &self.url("/api/v1/tenants"), name).await
    }

    /// A tenant with these limit overrides.
    pub async fn create_tenant_with(&self, name: &str, limits: serde_json::Value) -> TenantId {
        create_tenant_with_at(&self.http, &self.url("/api/v1/tenants"), name, limits).await
    }

    /// A new API key of `tenant` with `scopes`, made by one of its owners
    /// (only an owner makes a key with the `secrets` scope).
    pub async fn api_key(&self, tenant: TenantId, scopes: &[&str]) -> String {
        let admin = user_token(tenant, UserId::new(), Role::Owner);
        let (status, body) = send_json_at(
            &self.http,
            reqwest::Method::POST,
            &self.url("/api/v1/api-keys"),
            admin,
            &serde_json::json!({ "name": "worker", "scopes": scopes }),
        )
        .await;
        assert_eq!(status, 201, "creating an API key: {body}");
        body["key"].as_str().unwrap_or_else(|| panic!("no key in {body}")).to_owned()
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics_text(&self.http, self.metrics_addr).await
    }

    /// The sum of a metric's samples in `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.metrics().await, name, &[])
    }

    /// Kills the node at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn metrics_text(http: &reqwest::Client, addr: SocketAddr) -> String {
    let res = http.get(format!("http://{addr}/metrics")).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200, "GET /metrics");
    res.text().await.unwrap_or_default()
}

/// The sum of the samples of metric `name` in Prometheus text whose labels
/// include every one of `labels` (0 when there are none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn create_tenant_with_at(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    limits: serde_json::Value,
) -> TenantId {
    let body = serde_json::json!({ "name": name, "limits": limits });
    let (status, body) = send_json_at(http, reqwest::Method::POST, url, platform_token(), &body).await;
    assert_eq!(status, 201, "creating a tenant: {body}");
    body["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no id in {body}"))
}

async fn create_tenant_at(http: &reqwest::Client, url: &str, name: &str) -> TenantId {
    let res = http
        .post(url)
        .bearer_auth(platform_token())
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 201, "creating a tenant");
    let body: serde_json::Value = res.json().await.unwrap_or_else(|e| panic!("{e}"));
    body["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no id in {body}"))
}

/// `GET url` with a bearer token, answered as JSON.
async fn get_json_at(http: &reqwest::Client, url: &str, token: impl std::fmt::Display) -> serde_json::Value {
    let res = http.get(url).bearer_auth(token).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    res.json().await.unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// The status of `method url` with a bearer token and no body.
async fn status_at(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: impl std::fmt::Display,
) -> reqwest::StatusCode {
    let res = http.request(method, url).bearer_auth(token).send().await;
    res.unwrap_or_else(|e| panic!("{url}: {e}")).status()
}

/// `method url` with a bearer token and a JSON body: the status and the JSON
/// answer (`null` when there is none).
async fn send_json_at(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: impl std::fmt::Display,
    body: &serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let res = http.request(method, url).bearer_auth(token).json(body).send().await;
    let res = res.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = res.status();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

macro_rules! request_helpers {
    ($t:ty) => {
        impl $t {
            /// `GET path` with a bearer token, answered as JSON.
            pub async fn get_json(&self, path: &str, token: impl std::fmt::Display) -> serde_json::Value {
                get_json_at(&self.http, &self.url(path), token).await
            }

            /// The status of `method path` with a bearer token and no body.
            pub async fn status_of(
                &self,
                method: reqwest::Method,
                path: &str,
                token: impl std::fmt::Display,
            ) -> reqwest::StatusCode {
                status_at(&self.http, method, &self.url(path), token).await
            }

            /// `method path` with a bearer token and a JSON body: status and JSON answer.
            pub async fn send_json(
                &self,
                method: reqwest::Method,
                path: &str,
                token: impl std::fmt::Display,
                body: &serde_json::Value,
            ) -> (reqwest::StatusCode, serde_json::Value) {
                send_json_at(&self.http, method, &self.url(path), token, body).await
            }
        }
    };
}

request_helpers!(TestApp);
request_helpers!(Node);
