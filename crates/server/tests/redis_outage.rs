//! What Redis's absence must not undo, against two real `switchboard`
//! processes on a Redis of the test's own (killed with SIGKILL and started
//! again from its append-only file, so its old cache entries come back): an
//! API key revoked and a tenant suspended while Redis is down are refused on
//! every node at once, and still after Redis returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{Node, RedisServer, platform_token, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Polls `check` every 100 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revocation_and_a_suspension_made_while_redis_is_down_hold_on_every_node_and_after_it_returns() {
    let mut redis = RedisServer::start(true);
    let url = redis.url();
    let (a, b) = (
        Node::spawn_with(BIN, "outage-a", &[("REDIS_URL", &url)]),
        Node::spawn_with(BIN, "outage-b", &[("REDIS_URL", &url)]),
    );
    let tenant = a.create_tenant("outage").await;
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    let (status, created) = a
        .send_json(Method::POST, "/api/v1/api-keys", &admin, &json!({ "name": "w", "scopes": ["read"] }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (key, key_id) =
        (created["key"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned());
    let member = user_token(tenant, UserId::new(), Role::Member);
    // Both nodes have the key and the tenant cached, in L1 and in Redis.
    for node in [&a, &b] {
        assert_eq!(node.status_of(Method::GET, "/api/v1/projects", &key).await, 200);
        assert_eq!(node.status_of(Method::GET, "/api/v1/projects", &member).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.kill();
    // Revoked through A and suspended through A while Redis is down ...
    assert_eq!(a.status_of(Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), &admin).await, 204);
    let (status, _) = a
        .send_json(
            Method::PATCH,
            &format!("/api/v1/tenants/{tenant}"),
            platform_token(),
            &json!({ "status": "suspended" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // ... and refused on B within a couple of seconds, though B could not be told through Redis.
    eventually(Duration::from_secs(4), "B refuses the revoked key", || async {
        b.status_of(Method::GET, "/api/v1/projects", &key).await == 401
    })
    .await;
    eventually(Duration::from_secs(4), "B refuses the suspended tenant", || async {
        b.status_of(Method::GET, "/api/v1/projects", &member).await == 403
    })
    .await;

    // Redis comes back with what it held before the outage, old entries included.
    redis.restart();
    eventually(Duration::from_secs(15), "both nodes ready again", || async {
        a.status_of(Method::GET, "/health/ready", "").await == 200
            && b.status_of(Method::GET, "/health/ready", "").await == 200
    })
    .await;
    // For longer than a node's local cache lives, neither node lets them back.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        for node in [&a, &b] {
            assert_eq!(
                node.status_of(Method::GET, "/api/v1/projects", &key).await,
                401,
                "the revoked key came back"
            );
            assert_eq!(
                node.status_of(Method::GET, "/api/v1/projects", &member).await,
                403,
                "the suspension was lost"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The change reached Redis: a node started now, with an empty cache, agrees.
    let c = Node::spawn_with(BIN, "outage-c", &[("REDIS_URL", &url)]);
    assert_eq!(c.status_of(Method::GET, "/api/v1/projects", &key).await, 401);
    assert_eq!(c.status_of(Method::GET, "/api/v1/projects", &member).await, 403);
}
