//! What the webhook tests share: a tenant with an admin and a project, and a
//! receiver on loopback, as a tenant would run one: it answers each request as
//! its script says (fail, hang past the sender's timeout, or accept), records
//! what arrived, and checks signatures the way the Standard Webhooks
//! libraries do, with its own HMAC, not the server's code.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{Node, user_token};

/// A master key for the nodes (webhook secrets are sealed like tenant secrets).
pub const MASTER_KEY: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";

pub struct Tenant {
    pub id: TenantId,
    pub admin: String,
    pub project: String,
}

/// A tenant, one of its admins, and a project.
pub async fn tenant(node: &Node, name: &str) -> Tenant {
    let id = node.create_tenant(name).await;
    let admin = user_token(id, UserId::new(), Role::Admin);
    let (status, project) = node
        .send_json(reqwest::Method::POST, "/api/v1/projects", &admin, &serde_json::json!({ "name": "hooks" }))
        .await;
    assert_eq!(status, 201, "{project}");
    Tenant { id, admin, project: project["id"].as_str().unwrap().to_owned() }
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Holds the request this long, then answers 200.
    Hang(Duration),
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub json: Value,
    pub answered: Answer,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    arrivals: Vec<Arrival>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
    /// The same server also answers `POST /merge` when its `Authorization`
    /// is `Bearer <this>`: a stand-in for a tool's API that a worker calls
    /// with a secret.
    pub tool_token: Arc<Mutex<Option<String>>>,
}

impl Receiver {
    /// Starts a receiver that answers with `script` in turn, then 200.
    pub async fn start(script: &[Answer]) -> Self {
        let inner =
            Arc::new(Mutex::new(Inner { script: script.iter().copied().collect(), arrivals: vec![] }));
        let tool_token = Arc::new(Mutex::new(None));
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .route("/merge", post(merge))
            .with_state((inner.clone(), tool_token.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { inner, url: format!("http://{addr}/hook"), tool_token }
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.inner.lock().unwrap().arrivals.clone()
    }

    /// The ids of the events received, each once, in the order each first arrived.
    pub fn distinct(&self) -> Vec<Arrival> {
        let mut seen = std::collections::HashSet::new();
        self.arrivals().into_iter().filter(|a| seen.insert(a.id.clone())).collect()
    }

    /// Waits until `n` distinct events arrived (and their answers were
    /// accepted), or panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Arrival> {
        let started = std::time::Instant::now();
        loop {
            let accepted: std::collections::HashSet<String> = self
                .arrivals()
                .into_iter()
                .filter(|a| matches!(a.answered, Answer::Status(200..=299)))
                .map(|a| a.id)
                .collect();
            if accepted.len() >= n {
                return self.distinct();
            }
            assert!(
                started.elapsed() < within,
                "{} of {n} events accepted after {within:?}; arrivals: {:?}",
                accepted.len(),
                self.arrivals().iter().map(|a| (&a.id, a.answered)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type Shared = (Arc<Mutex<Inner>>, Arc<Mutex<Option<String>>>);

async fn hook(State((inner, _)): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let answer = {
        let mut inner = inner.lock().unwrap();
        let answer = inner.script.pop_front().unwrap_or(Answer::Status(200));
        inner.arrivals.push(Arrival {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            body: body.to_vec(),
            answered: answer,
            at: std::time::Instant::now(),
        });
        answer
    };
    match answer {
        Answer::Status(s) => StatusCode::from_u16(s).unwrap(),
        Answer::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
    }
}

async fn merge(State((_, token)): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let expected = token.lock().unwrap().clone();
    let got = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    match (expected, got) {
        (Some(t), Some(g)) if g == format!("Bearer {t}") => (StatusCode::OK, r#"{"merged":true}"#.into()),
        _ => (StatusCode::UNAUTHORIZED, r#"{"message":"Bad credentials"}"#.into()),
    }
}

/// Verifies `arrival` with `secret` (`whsec_…`) as a receiver must: the
/// signature over `{id}.{timestamp}.{body}`, and a timestamp within five
/// minutes of now.
pub fn verify(secret: &str, arrival: &Arrival) -> Result<(), String> {
    let key =
        B64.decode(secret.strip_prefix("whsec_").ok_or("no whsec_ prefix")?).map_err(|e| e.to_string())?;
    let ts: i64 = arrival.timestamp.parse().map_err(|_| "webhook-timestamp is not a number")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - ts).abs() > 300 {
        return Err(format!("timestamp {ts} is {}s from now", now - ts));
    }
    let mut signed = format!("{}.{}.", arrival.id, arrival.timestamp).into_bytes();
    signed.extend_from_slice(&arrival.body);
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), &signed);
    let expected = format!("v1,{}", B64.encode(tag.as_ref()));
    // The header may carry several signatures, space separated.
    if arrival.signature.split(' ').any(|s| s == expected) {
        Ok(())
    } else {
        Err(format!("signature {} does not verify", arrival.signature))
    }
}

/// A node that delivers to loopback, quickly: 400 ms per attempt, retries
/// from 100 ms, a circuit that stays open 3 s.
pub fn spawn(node_id: &str) -> Node {
    Node::spawn_with(
        env!("CARGO_BIN_EXE_switchboard"),
        node_id,
        &[
            ("SECRETS_MASTER_KEY", MASTER_KEY),
            ("SECRETS_MASTER_KEY_ID", "k1"),
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_TIMEOUT_MS", "400"),
            ("WEBHOOK_RETRY_BASE_MS", "100"),
            ("WEBHOOK_CIRCUIT_COOL_DOWN_MS", "3000"),
        ],
    )
}

/// Registers `url` for `events`; returns the endpoint's id and secret.
pub async fn endpoint(node: &Node, admin: &str, url: &str, events: Value) -> (String, String) {
    let (status, created) = node
        .send_json(Method::POST, "/api/v1/webhooks", admin, &json!({ "url": url, "events": events }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

/// `(type, task id, status)` of a task event body.
pub fn task_event(body: &Value) -> (String, String, String) {
    (
        body["type"].as_str().unwrap_or_default().to_owned(),
        body["data"]["id"].as_str().unwrap_or_default().to_owned(),
        body["data"]["status"].as_str().unwrap_or_default().to_owned(),
    )
}
