//! `GET /audit-logs`, `GET /usage` and the cache's metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{TestApp, env, user_token};

#[tokio::test]
async fn admins_read_their_audit_log_filtered_and_paged_and_no_one_elses() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.create_tenant("audited").await, app.create_tenant("other").await);
    let admin_id = UserId::new();
    let admin = user_token(tenant, admin_id, Role::Admin);
    for name in ["a", "b", "c"] {
        app.http
            .post(app.url("/api/v1/projects"))
            .bearer_auth(&admin)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
    }
    let get = |q: &str| app.http.get(app.url(&format!("/api/v1/audit-logs{q}"))).bearer_auth(&admin).send();
    let page: Value = get("?action=project.create&limit=2").await.unwrap().json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["data"].as_array().unwrap().iter().all(|l| l["action"] == "project.create"));
    assert_eq!(page["data"][0]["actor_id"], admin_id.to_string());
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value =
        get(&format!("?action=project.create&limit=2&cursor={cursor}")).await.unwrap().json().await.unwrap();
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    let all: Value = get("").await.unwrap().json().await.unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 4, "three projects and the tenant's creation");
    let future: Value = get("?since=2999-01-01T00:00:00Z").await.unwrap().json().await.unwrap();
    assert_eq!(future["data"], json!([]));

    for bad in ["?limit=0", "?since=yesterday", "?cursor=x", "?colour=red"] {
        assert_eq!(get(bad).await.unwrap().status(), 422, "{bad}");
    }
    let member = user_token(tenant, UserId::new(), Role::Member);
    let res = app.http.get(app.url("/api/v1/audit-logs")).bearer_auth(&member).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let other_admin = user_token(other, UserId::new(), Role::Admin);
    let theirs: Value = app.get_json("/api/v1/audit-logs", &other_admin).await;
    assert!(theirs["data"].as_array().unwrap().iter().all(|l| l["action"] == "tenant.create"));
    app.stop().await;
}

#[tokio::test]
async fn usage_is_reported_per_day_and_metric_for_the_callers_tenant_only() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.create_tenant("usage").await, app.create_tenant("usage-other").await);
    let db = switchboard_db::Database::connect(&env("DATABASE_URL")).await.unwrap();
    let mut tx = db.begin(&switchboard_db::TenantContext::new(tenant, None, Role::Service)).await.unwrap();
    for (metric, amount) in [("tokens_in", "100"), ("tokens_in", "50"), ("cost_usd", "0.012345")] {
        switchboard_db::repo::usage::add(&mut tx, metric, &amount.parse().unwrap()).await.unwrap();
    }
    tx.commit().await.unwrap();

    let token = user_token(tenant, UserId::new(), Role::Member);
    let usage: Value = app.get_json("/api/v1/usage", &token).await;
    let rows = usage["data"].as_array().unwrap();
    let value = |m: &str| {
        rows.iter().find(|r| r["metric"] == m).map(|r| r["value"].as_str().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(value("tokens_in"), Some(150.0));
    assert_eq!(value("cost_usd"), Some(0.012345));
    let only: Value = app.get_json("/api/v1/usage?metric=cost_usd", &token).await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);

    let theirs: Value = app.get_json("/api/v1/usage", user_token(other, UserId::new(), Role::Owner)).await;
    assert_eq!(theirs["data"], json!([]));
    for bad in ["?from=2026-02-01&to=2026-01-01", "?from=2020-01-01&to=2026-01-01", "?from=tomorrow"] {
        let res =
            app.http.get(app.url(&format!("/api/v1/usage{bad}"))).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), 422, "{bad}");
    }
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_cache_hits_and_misses() {
    let app = TestApp::spawn().await;
    let token = user_token(app.create_tenant("metrics").await, UserId::new(), Role::Member);
    for _ in 0..5 {
        app.http.get(app.url("/api/v1/projects")).bearer_auth(&token).send().await.unwrap();
    }
    let text = app.metrics().await;
    let value = |prefix: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(value("switchboard_cache_hits_total{") + value("switchboard_cache_misses_total{") >= 5, "{text}");
    assert!(text.contains("layer=\"l1\"") && text.contains("layer=\"l2\""));
    assert!(value("switchboard_cache_hits_total{") >= 4, "repeated lookups hit the cache: {text}");
    app.stop().await;
}
