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

/// The path of the long-polling session an Engine.IO open packet (`0{"sid":…}`) opened.
fn session_path(open: &str) -> String {
    let sid = serde_json::from_str::<Value>(open.strip_prefix('0').unwrap()).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    format!("/socket.io/?EIO=4&transport=polling&sid={sid}")
}

/// A long-polling client's requests after the handshake (with a `sid`) take a
/// lighter path than the router's; what a browser and an operator see of
/// them is the same: CORS for listed origins, the request id, the request
/// metrics as route `/socket.io/`, and Engine.IO's own errors.
#[tokio::test]
async fn long_polling_requests_get_cors_request_ids_and_metrics() {
    use switchboard_domain::{Role, UserId};
    let app = TestApp::spawn_with(&[("CORS_ALLOWED_ORIGINS", "http://app.example:3000")]).await;
    let tenant = app.create_tenant("polling").await;
    let token = switchboard_testkit::user_token(tenant, UserId::new(), Role::Member);
    let origin = "http://app.example:3000";
    let open = app
        .http
        .get(app.url("/socket.io/?EIO=4&transport=polling"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    assert_eq!(open.headers()["access-control-allow-origin"], origin);
    let session = app.url(&session_path(&open.text().await.unwrap()));

    let sent = app
        .http
        .post(&session)
        .header("origin", origin)
        .header("x-request-id", "poll-post-1")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(format!("40{}", serde_json::json!({ "token": token })))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.headers()["access-control-allow-origin"], origin);
    assert_eq!(sent.headers()["access-control-allow-credentials"], "true");
    assert_eq!(sent.headers()["x-request-id"], "poll-post-1");
    assert_eq!(sent.text().await.unwrap(), "ok");

    // Polls until the namespace answers the connect (pings may come first).
    let mut polls = 0;
    loop {
        let polled = app.http.get(&session).header("origin", origin).send().await.unwrap();
        polls += 1;
        assert_eq!(polled.status(), 200);
        assert_eq!(polled.headers()["access-control-allow-origin"], origin);
        assert!(!polled.headers()["x-request-id"].is_empty());
        let packets = polled.text().await.unwrap();
        if packets.split('\u{1e}').any(|p| p.starts_with("40")) {
            break;
        }
        assert!(polls < 5, "no answer to the connect: {packets}");
    }

    // A forged session id is Engine.IO's 400, and another origin gets no CORS grant.
    let forged = app
        .http
        .get(app.url("/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(forged.headers().contains_key("x-request-id"));
    assert!(forged.headers().get("access-control-allow-origin").is_none());

    let metrics = app.metrics().await;
    let count = |method: &str, class: &str| {
        switchboard_testkit::metric_sum(
            &metrics,
            "switchboard_http_request_duration_seconds_count",
            &[("route", "/socket.io/"), ("method", method), ("class", class)],
        )
    };
    assert_eq!(count("POST", "2xx"), 1.0, "{metrics}");
    assert_eq!(count("GET", "2xx"), f64::from(1 + polls), "the handshake and the polls: {metrics}");
    assert_eq!(count("GET", "4xx"), 1.0, "{metrics}");

    // Bad input on an open session: a body over the payload limit is 413, a
    // body that is no packet is 400, each with the request id, and Engine.IO
    // closes the session either way.
    for (body, status) in [("a".repeat(1_100_000), 413), ("zz{not a packet".to_owned(), 400)] {
        let open = app.http.get(app.url("/socket.io/?EIO=4&transport=polling")).send().await.unwrap();
        let session = app.url(&session_path(&open.text().await.unwrap()));
        let sent = app
            .http
            .post(&session)
            .header("origin", origin)
            .header("x-request-id", "bad-body")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), status);
        assert_eq!(sent.headers()["x-request-id"], "bad-body");
        assert_eq!(sent.headers()["access-control-allow-origin"], origin);
        let after = app.http.get(&session).send().await.unwrap();
        assert_eq!(after.status(), 400, "the session is closed");
    }
    app.stop().await;
}
