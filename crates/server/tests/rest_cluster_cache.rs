//! Changes that must reach every node: two `switchboard` processes on one Redis,
//! each with a warm cache; a tenant's limits, suspension and an API-key revocation made through one
//! node take effect on the other within a second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{Node, TestApp, platform_token, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Polls `probe` until it returns true, for at most a second.
async fn within_a_second<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !probe().await {
        assert!(start.elapsed() < Duration::from_secs(1), "{what}: not seen on the other node within 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_limit_change_and_a_suspension_reach_the_other_node_within_a_second() {
    let (a, b) = (Node::spawn(BIN, "cache-a"), Node::spawn(BIN, "cache-b"));
    let tenant = a.create_tenant("two-nodes").await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let me = |app: &Node| {
        let req = app.http.get(app.url("/api/v1/me")).bearer_auth(&token);
        async move { req.send().await.unwrap() }
    };
    // Warm node A's cache.
    let before: Value = me(&a).await.json().await.unwrap();
    assert_eq!(before["tenant"]["limits"]["max_connections"], 10_000);

    let patch = |body: Value| {
        b.http
            .patch(b.url(&format!("/api/v1/tenants/{tenant}")))
            .bearer_auth(platform_token())
            .json(&body)
            .send()
    };
    assert_eq!(patch(json!({ "limits": { "max_connections": 3 } })).await.unwrap().status(), 200);
    within_a_second("limit change", || async {
        me(&a).await.json::<Value>().await.unwrap()["tenant"]["limits"]["max_connections"] == 3
    })
    .await;

    assert_eq!(patch(json!({ "status": "suspended" })).await.unwrap().status(), 200);
    within_a_second("suspension", || async { me(&a).await.status() == 403 }).await;
    let body: Value = me(&a).await.json().await.unwrap();
    assert_eq!(body["error"]["code"], "tenant_suspended");
    let res = a
        .http
        .post(a.url("/api/v1/projects"))
        .bearer_auth(&token)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "a suspended tenant writes nothing");

    assert_eq!(patch(json!({ "status": "active" })).await.unwrap().status(), 200);
    within_a_second("reactivation", || async { me(&a).await.status() == 200 }).await;
}

#[tokio::test]
async fn a_key_revoked_on_one_node_stops_working_on_the_other_within_a_second() {
    let (a, b) = (Node::spawn(BIN, "cache-a"), Node::spawn(BIN, "cache-b"));
    let tenant = a.create_tenant("revocation").await;
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    let created: Value = b
        .http
        .post(b.url("/api/v1/api-keys"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "w", "scopes": ["read"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let use_key = || {
        let req = a.http.get(a.url("/api/v1/projects")).header("x-api-key", &key);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(use_key().await, 200);
    assert_eq!(use_key().await, 200);
    let revoke = b.url(&format!("/api/v1/api-keys/{}", created["id"].as_str().unwrap()));
    assert_eq!(b.http.delete(revoke).bearer_auth(&admin).send().await.unwrap().status(), 204);
    within_a_second("revocation", || async { use_key().await == 401 }).await;
}

#[tokio::test]
async fn a_deleted_tenants_tokens_stop_working() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("doomed").await;
    let token = user_token(tenant, UserId::new(), Role::Owner);
    assert_eq!(app.status_of(reqwest::Method::GET, "/api/v1/me", &token).await, 200);
    let url = app.url(&format!("/api/v1/tenants/{tenant}"));
    assert_eq!(app.http.delete(url).bearer_auth(platform_token()).send().await.unwrap().status(), 204);
    let res = app.http.get(app.url("/api/v1/projects")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 403);
    app.stop().await;
}
