//! API keys over REST: shown once, hashed at rest, scoped, revocable, and
//! managed by owners and admins only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{TestApp, env, user_token};

async fn create_key(app: &TestApp, admin: &str, scopes: Value) -> Value {
    let res = app
        .http
        .post(app.url("/api/v1/api-keys"))
        .bearer_auth(admin)
        .json(&json!({ "name": "worker", "scopes": scopes }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_key_is_shown_once_stored_as_a_keyed_hash_and_works_as_bearer_or_header() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("keys").await;
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    let created = create_key(&app, &admin, json!(["read", "write"])).await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sb_") && key.starts_with(created["prefix"].as_str().unwrap()));

    let listed: Value = app.get_json("/api/v1/api-keys", &admin).await;
    assert_eq!(listed["data"][0]["id"], created["id"]);
    assert!(
        listed["data"][0].get("key").is_none() && !listed.to_string().contains(&key),
        "listing never shows the key"
    );

    // Nothing stored equals the key or its plain SHA-256.
    let mut admin_db = sqlx_admin().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1::uuid")
        .bind(created["id"].as_str().unwrap())
        .fetch_one(&mut admin_db)
        .await
        .unwrap_or_default();
    assert!(!stored.is_empty() && stored != key.as_bytes());

    let me: Value = app.get_json("/api/v1/me", &key).await;
    assert_eq!(me["kind"], "api_key");
    assert_eq!(me["role"], "service");
    assert_eq!(me["tenant"]["id"], tenant.to_string());
    let res = app
        .http
        .post(app.url("/api/v1/projects"))
        .header("x-api-key", &key)
        .json(&json!({ "name": "by key" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    app.stop().await;
}

async fn sqlx_admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    // The owner is bound by forced RLS too: read the hash as the platform path would.
    let mut conn = sqlx::PgConnection::connect(&env("DATABASE_ADMIN_URL")).await.unwrap();
    sqlx::query("SELECT set_config('app.platform', 'on', false)").execute(&mut conn).await.unwrap();
    conn
}

#[tokio::test]
async fn scopes_bound_what_a_key_may_do() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("scopes").await;
    let admin = user_token(tenant, UserId::new(), Role::Owner);
    let read_only = create_key(&app, &admin, json!(["read"])).await["key"].as_str().unwrap().to_owned();
    assert_eq!(app.status_of(reqwest::Method::GET, "/api/v1/projects", &read_only).await, 200);
    let res = app
        .http
        .post(app.url("/api/v1/projects"))
        .bearer_auth(&read_only)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(app.status_of(reqwest::Method::GET, "/api/v1/api-keys", &read_only).await, 403);

    let admin_key = create_key(&app, &admin, json!(["admin"])).await["key"].as_str().unwrap().to_owned();
    assert_eq!(app.status_of(reqwest::Method::GET, "/api/v1/api-keys", &admin_key).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_and_revocation_is_audited() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("revoke").await;
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    let created = create_key(&app, &admin, json!(["read"])).await;
    let key = created["key"].as_str().unwrap();
    let url = app.url(&format!("/api/v1/api-keys/{}", created["id"].as_str().unwrap()));
    assert_eq!(app.http.delete(&url).bearer_auth(&admin).send().await.unwrap().status(), 204);
    assert_eq!(app.http.delete(&url).bearer_auth(&admin).send().await.unwrap().status(), 404);
    let res = app.http.get(app.url("/api/v1/me")).bearer_auth(key).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "token_invalid");

    let db = switchboard_db::Database::connect(&env("DATABASE_URL")).await.unwrap();
    let mut tx = db.begin(&switchboard_db::TenantContext::new(tenant, None, Role::Admin)).await.unwrap();
    let logs = switchboard_db::repo::audit::list(&mut tx, &Default::default(), None, 10).await.unwrap();
    let actions: Vec<&str> = logs.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(&actions[..2], ["api_key.revoke", "api_key.create"]);
    app.stop().await;
}

#[tokio::test]
async fn members_cannot_manage_keys_and_tenants_cannot_touch_each_others() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.create_tenant("a").await, app.create_tenant("b").await);
    let member = user_token(a, UserId::new(), Role::Member);
    assert_eq!(app.status_of(reqwest::Method::GET, "/api/v1/api-keys", &member).await, 403);
    let res = app
        .http
        .post(app.url("/api/v1/api-keys"))
        .bearer_auth(&member)
        .json(&json!({ "name": "x", "scopes": ["read"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    let b_admin = user_token(b, UserId::new(), Role::Admin);
    let b_key = create_key(&app, &b_admin, json!(["read"])).await;
    let a_admin = user_token(a, UserId::new(), Role::Admin);
    let url = app.url(&format!("/api/v1/api-keys/{}", b_key["id"].as_str().unwrap()));
    assert_eq!(app.http.delete(&url).bearer_auth(&a_admin).send().await.unwrap().status(), 404);
    let me =
        app.http.get(app.url("/api/v1/me")).bearer_auth(b_key["key"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(me.status(), 200, "B's key still works");

    for body in [
        json!({ "name": "x", "scopes": [] }),
        json!({ "name": "x", "scopes": ["root"] }),
        json!({ "name": "", "scopes": ["read"] }),
    ] {
        let res = app
            .http
            .post(app.url("/api/v1/api-keys"))
            .bearer_auth(&a_admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{body}");
    }
    for forged in ["sb_", "sb_0000000000000000000000000000000000000000", "sb_!!"] {
        let res = app.http.get(app.url("/api/v1/me")).header("x-api-key", forged).send().await.unwrap();
        assert_eq!(res.status(), 401, "{forged}");
    }
    app.stop().await;
}
