//! What the knowledge tests share: a tenant with a project and an agent's key,
//! a guide to ingest, REST helpers, and an embedding provider on loopback.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{TestApp, user_token};

/// Long enough for a job that a finished test's node was holding: its lease
/// (30 s) runs out and another node takes it.
pub const WAIT: Duration = Duration::from_secs(60);

pub const GUIDE: &str = "# Switchboard guide

## Reconnecting

When the network drops, socket.io-client reconnects by itself. Subscribe again with `since` set to the last offset you saw, and the server replays what you missed, in order.

## Rate limits

Each tenant has an events-per-second budget. Past it, events are refused with rate_limited and a retry_after_ms hint; the client waits that long.

## Billing

Invoices are issued on the first day of each month and paid by card.
";

pub struct Tenant {
    pub id: TenantId,
    pub admin: String,
    pub member: String,
    pub member_id: UserId,
    pub key: String,
    pub project: String,
}

pub async fn tenant(app: &TestApp, name: &str) -> Tenant {
    let id = app.create_tenant(name).await;
    let admin = user_token(id, UserId::new(), Role::Admin);
    let member_id = UserId::new();
    let member = user_token(id, member_id, Role::Member);
    let (status, key) = app
        .send_json(
            Method::POST,
            "/api/v1/api-keys",
            &admin,
            &json!({ "name": "agent", "scopes": ["read", "write"] }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, project) =
        app.send_json(Method::POST, "/api/v1/projects", &admin, &json!({ "name": "kb" })).await;
    assert_eq!(status, 201, "{project}");
    Tenant {
        id,
        admin,
        member,
        member_id,
        key: key["key"].as_str().unwrap().to_owned(),
        project: project["id"].as_str().unwrap().to_owned(),
    }
}

pub async fn post_doc(
    app: &TestApp,
    token: &str,
    project: &str,
    body: &Value,
    idem: Option<&str>,
) -> (u16, Value, bool) {
    let mut req = app
        .http
        .post(app.url(&format!("/api/v1/projects/{project}/documents")))
        .bearer_auth(token)
        .json(body);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.unwrap();
    let (status, replayed) = (res.status().as_u16(), res.headers().contains_key("idempotent-replayed"));
    (status, res.json().await.unwrap_or(Value::Null), replayed)
}

pub async fn wait_ready(app: &TestApp, token: &str, doc: &str) -> Value {
    let started = Instant::now();
    loop {
        let d = app.get_json(&format!("/api/v1/documents/{doc}"), token).await;
        match d["status"].as_str() {
            Some("ready") => return d,
            Some("failed") => panic!("ingestion failed: {d}"),
            _ if started.elapsed() > WAIT => panic!("not ready within {WAIT:?}: {d}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub async fn search(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let (status, v) = app.send_json(Method::POST, "/api/v1/search", token, &body).await;
    (status.as_u16(), v)
}

pub fn contents(found: &Value) -> Vec<String> {
    found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["chunk"]["content"].as_str().unwrap().to_owned())
        .collect()
}

/// An OpenAI-compatible embeddings server on loopback whose behaviour the test
/// switches: 0 healthy (vectors from word hashes), 1 slow (past the timeout),
/// 2 failing (500).
pub async fn fake_embeddings(mode: Arc<AtomicU8>) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/embeddings",
        post(move |axum::Json(body): axum::Json<Value>| {
            let mode = mode.clone();
            async move {
                match mode.load(Ordering::SeqCst) {
                    1 => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        (axum::http::StatusCode::OK, axum::Json(json!({ "data": [] })))
                    }
                    2 => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({ "error": "down" })),
                    ),
                    _ => {
                        let inputs: Vec<String> = match &body["input"] {
                            Value::String(s) => vec![s.clone()],
                            Value::Array(a) => {
                                a.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect()
                            }
                            _ => Vec::new(),
                        };
                        let data: Vec<Value> = inputs
                            .iter()
                            .enumerate()
                            .map(|(i, text)| {
                                let mut v = vec![0.0f32; 64];
                                for word in text
                                    .to_lowercase()
                                    .split(|c: char| !c.is_alphanumeric())
                                    .filter(|w| !w.is_empty())
                                {
                                    let h = word
                                        .bytes()
                                        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                                    v[(h % 64) as usize] += 1.0;
                                }
                                json!({ "index": i, "embedding": v })
                            })
                            .collect();
                        (axum::http::StatusCode::OK, axum::Json(json!({ "data": data, "model": "fake-64" })))
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}
