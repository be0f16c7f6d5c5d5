//! Outbound webhook endpoints as their admins manage them, on a node with
//! the address guard on: loopback, private and metadata addresses refused,
//! bad URLs and event types refused, members and plain keys refused, the
//! secret shown once and stored sealed, changes audited, and another
//! tenant's ids and rows out of reach. (Its own test binary: a node that
//! refuses loopback would fail the loopback receivers of `webhooks.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod webhooks_common;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard_db::{Database, TenantContext};
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{Node, env, user_token};
use webhooks_common::{MASTER_KEY, tenant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

#[tokio::test]
async fn endpoints_are_guarded_validated_audited_and_isolated() {
    // No WEBHOOK_ALLOW_PRIVATE here: the guard is on.
    let a = Node::spawn_with(
        BIN,
        "hooks-guard",
        &[("SECRETS_MASTER_KEY", MASTER_KEY), ("SECRETS_MASTER_KEY_ID", "k1")],
    );
    let t = tenant(&a, "webhooks-guard").await;
    let hooks = "/api/v1/webhooks";
    let create = |url: &str, events: Value| json!({ "url": url, "events": events });

    for internal in [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/",
        "http://[::1]/x",
        "http://10.0.0.7/",
        "http://192.168.1.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
    ] {
        let (status, err) = a.send_json(Method::POST, hooks, &t.admin, &create(internal, json!(["*"]))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{internal}: {err}");
        assert!(err["error"]["details"]["url"][0].as_str().unwrap().contains("private"), "{err}");
    }
    for (body, field) in [
        (create("ftp://1.1.1.1/", json!(["*"])), "url"),
        (create("https://user:pw@1.1.1.1/", json!(["*"])), "url"),
        (create("https://1.1.1.1/", json!(["task.deleted"])), "events"),
        (create("https://1.1.1.1/", json!(["tasks.*"])), "events"),
        (create("https://1.1.1.1/", json!([])), "events"),
    ] {
        let (status, err) = a.send_json(Method::POST, hooks, &t.admin, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert!(err["error"]["details"][field].is_array(), "{body}: {err}");
    }
    let res = a
        .http
        .post(a.url(hooks))
        .bearer_auth(&t.admin)
        .header("content-type", "application/json")
        .body("{\"url\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let (status, _) = a
        .send_json(
            Method::POST,
            hooks,
            &t.admin,
            &json!({ "url": "https://1.1.1.1/", "events": ["*"], "x": 1 }),
        )
        .await;
    assert!(status.is_client_error());
    // Members and plain API keys manage nothing.
    let member = user_token(t.id, UserId::new(), Role::Member);
    let key = a.api_key(t.id, &["read", "write"]).await;
    for who in [&member, &key] {
        let (status, _) =
            a.send_json(Method::POST, hooks, who, &create("https://1.1.1.1/", json!(["*"]))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(a.status_of(Method::GET, hooks, who).await, StatusCode::FORBIDDEN);
    }
    assert_eq!(a.get_json(hooks, &t.admin).await["data"].as_array().unwrap().len(), 0, "nothing stored");

    // A public address is accepted (disabled: nothing is sent from here).
    let (status, made) = a
        .send_json(
            Method::POST,
            hooks,
            &t.admin,
            &json!({ "url": "https://1.1.1.1/hooks", "events": ["task.*", "approval.decided", "task.*"], "enabled": false, "description": "ops" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["events"], json!(["task.*", "approval.decided"]));
    assert_eq!(made["enabled"], false);
    let id = made["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    let shown = a.get_json(&format!("{hooks}/{id}"), &t.admin).await;
    assert!(shown.get("secret").is_none(), "shown once only: {shown}");
    assert!(!a.get_json(hooks, &t.admin).await.to_string().contains(&secret));
    let (status, patched) = a
        .send_json(Method::PATCH, &format!("{hooks}/{id}"), &t.admin, &json!({ "url": "http://127.0.0.1/" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patched}");
    // Disabled: a change makes no delivery for it.
    let (status, _) = a
        .send_json(
            Method::POST,
            &format!("/api/v1/projects/{}/tasks", t.project),
            &t.admin,
            &json!({ "title": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let log = a.get_json(&format!("{hooks}/{id}/deliveries"), &t.admin).await;
    assert_eq!(log["data"].as_array().unwrap().len(), 0, "{log}");
    let retry = format!("{hooks}/{id}/deliveries/{}/retry", uuid::Uuid::new_v4());
    let (status, err) = a.send_json(Method::POST, &retry, &t.admin, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing is queued for a disabled endpoint: {err}");

    // At most 50 endpoints a tenant.
    for i in 1..50 {
        let body = json!({ "url": format!("https://1.1.1.1/{i}"), "events": ["*"], "enabled": false });
        assert_eq!(a.send_json(Method::POST, hooks, &t.admin, &body).await.0, StatusCode::CREATED);
    }
    let (status, err) =
        a.send_json(Method::POST, hooks, &t.admin, &create("https://1.1.1.1/51", json!(["*"]))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    // The secret is stored sealed: its text is nowhere in the row.
    let db = Database::connect(&env("DATABASE_URL")).await.unwrap();
    let mut tx = db.begin(&TenantContext::new(t.id, None, Role::Service)).await.unwrap();
    let row: String =
        sqlx::query_scalar("SELECT row_to_json(w)::text FROM webhook_endpoints w WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(tx.conn())
            .await
            .unwrap();
    let raw = secret.trim_start_matches("whsec_");
    assert!(!row.contains(raw), "the secret in the clear");
    drop(tx);

    // Another tenant: 404 on every route, and nothing at the rows.
    let other = tenant(&a, "webhooks-guard-other").await;
    assert_eq!(a.get_json(hooks, &other.admin).await["data"].as_array().unwrap().len(), 0);
    for (method, path) in [
        (Method::GET, format!("{hooks}/{id}")),
        (Method::PATCH, format!("{hooks}/{id}")),
        (Method::DELETE, format!("{hooks}/{id}")),
        (Method::GET, format!("{hooks}/{id}/deliveries")),
        (Method::POST, format!("{hooks}/{id}/deliveries/{}/retry", uuid::Uuid::new_v4())),
    ] {
        let (status, _) = a.send_json(method.clone(), &path, &other.admin, &json!({ "enabled": true })).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let mut tx = db.begin(&TenantContext::new(other.id, None, Role::Service)).await.unwrap();
    for table in ["webhook_endpoints", "webhook_deliveries"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"))
            .bind(t.id.as_uuid())
            .fetch_one(tx.conn())
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let changed =
        sqlx::query("UPDATE webhook_endpoints SET url = 'http://evil.example/' WHERE id = $1::uuid")
            .bind(&id)
            .execute(tx.conn())
            .await
            .unwrap();
    assert_eq!(changed.rows_affected(), 0);
    let forged = sqlx::query(
        "INSERT INTO webhook_endpoints (tenant_id, url, events, secret_sealed) VALUES ($1, 'http://evil.example/', '{*}', '\\x00')",
    )
    .bind(t.id.as_uuid())
    .execute(tx.conn())
    .await;
    let code =
        forged.err().and_then(|e| e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())));
    assert_eq!(code.as_deref(), Some("42501"));
    drop(tx);
    let still = a.get_json(&format!("{hooks}/{id}"), &t.admin).await;
    assert_eq!(still["url"], "https://1.1.1.1/hooks");

    // Audited, then gone.
    assert_eq!(a.status_of(Method::DELETE, &format!("{hooks}/{id}"), &t.admin).await, StatusCode::NO_CONTENT);
    assert_eq!(a.status_of(Method::GET, &format!("{hooks}/{id}"), &t.admin).await, StatusCode::NOT_FOUND);
    let logs = a.get_json("/api/v1/audit-logs?limit=100", &t.admin).await;
    let actions: Vec<&str> =
        logs["data"].as_array().unwrap().iter().map(|l| l["action"].as_str().unwrap()).collect();
    for action in ["webhook.create", "webhook.delete"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    assert!(!logs.to_string().contains(&secret));
}
