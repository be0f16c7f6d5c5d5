//! Health and readiness, and the documented error shape (docs/rest.md), with the app on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use switchboard_testkit::TestApp;

#[tokio::test]
async fn health_is_ok_and_ready_reports_postgres_and_redis() {
    let app = TestApp::spawn().await;
    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"], serde_json::json!({"postgres": "ok", "redis": "ok"}));
    app.stop().await;
}

#[tokio::test]
async fn ready_is_503_while_redis_is_unreachable() {
    // Nothing listens on port 1: the node starts anyway and says it is not ready.
    let app = TestApp::spawn_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let ready = app.http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], "unreachable");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(app.http.get(app.url("/health")).send().await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn without_redis_url_a_node_is_ready_alone() {
    let app = TestApp::spawn_with(&[("REDIS_URL", "")]).await;
    let ready = app.http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], "not_configured");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_the_documented_error_shape_with_the_request_id() {
    let app = TestApp::spawn().await;
    let res = app.http.get(app.url("/api/v1/nope")).header("x-request-id", "rid-1").send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["x-request-id"], "rid-1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": {"code": "not_found", "message": "no such route", "request_id": "rid-1"}})
    );

    // Without a client id the server makes one, and the body and header agree.
    let res = app.http.get(app.url("/nope")).send().await.unwrap();
    let header = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], header.as_str());
    assert!(!header.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn browsers_from_listed_origins_may_call_with_credentials_and_others_may_not() {
    let app =
        TestApp::spawn_with(&[("CORS_ALLOWED_ORIGINS", "http://app.example:3000,https://admin.example")])
            .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/projects"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type,idempotency-key")
            .send()
    };
    let ok = preflight("http://app.example:3000").await.unwrap();
    assert!(ok.status().is_success());
    assert_eq!(ok.headers()["access-control-allow-origin"], "http://app.example:3000");
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let allowed = ok.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("idempotency-key"), "{allowed}");

    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let res =
        app.http.get(app.url("/health")).header("origin", "https://admin.example").send().await.unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "https://admin.example");
    let exposed = res.headers()["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    assert!(exposed.contains("x-request-id") && exposed.contains("ratelimit-remaining"), "{exposed}");
    app.stop().await;

    // With no origins configured, no browser origin is allowed.
    let closed = TestApp::spawn().await;
    let res = closed
        .http
        .get(closed.url("/health"))
        .header("origin", "http://app.example:3000")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    closed.stop().await;
}
