//! Per-tenant HTTP rate limits: headers on every limited response, 429 with
//! Retry-After in the documented error shape, and one budget shared across two nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{Node, TestApp, platform_token, user_token};

async fn tenant_with_rate(http: &reqwest::Client, tenants_url: &str, rate: u32) -> TenantId {
    let res = http
        .post(tenants_url)
        .bearer_auth(platform_token())
        .json(&json!({ "name": "limited", "limits": { "http_requests_per_second": rate } }))
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn over_the_tenant_rate_requests_get_429_with_retry_after_and_headers() {
    let app = TestApp::spawn().await;
    let tenant = tenant_with_rate(&app.http, &app.url("/api/v1/tenants"), 5).await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..12 {
        let res = app.http.get(app.url("/api/v1/projects")).bearer_auth(&token).send().await.unwrap();
        for h in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            assert!(res.headers().contains_key(h), "{h} missing on {}", res.status());
        }
        assert_eq!(res.headers()["ratelimit-limit"], "5");
        statuses.push(res.status().as_u16());
        if res.status() == 429 && refused.is_none() {
            refused = Some(res);
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    let refused = refused.expect("no request was refused");
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["request_id"].is_string());

    // Another tenant is not affected.
    let other = user_token(app.create_tenant("free").await, UserId::new(), Role::Member);
    assert_eq!(app.status_of(reqwest::Method::GET, "/api/v1/projects", &other).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn two_nodes_share_one_tenant_budget() {
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let (a, b) = (Node::spawn(bin, "budget-a"), Node::spawn(bin, "budget-b"));
    let (rate, window) = (10u32, Duration::from_millis(1500));
    let tenant = tenant_with_rate(&a.http, &a.url("/api/v1/tenants"), rate).await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for app in [&a, &b] {
        for _ in 0..3 {
            let (http, url, token) = (app.http.clone(), app.url("/api/v1/projects"), token.clone());
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0u32;
                while start.elapsed() < window {
                    if http.get(&url).bearer_auth(&token).send().await.unwrap().status() == 200 {
                        accepted += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                accepted
            }));
        }
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ceiling = f64::from(rate) + f64::from(rate) * elapsed;
    assert!(
        f64::from(accepted) <= ceiling,
        "accepted {accepted} across both nodes in {elapsed:.2}s; limit+burst {ceiling:.1}"
    );
    assert!(accepted >= rate, "the budget was usable: {accepted}");
}
