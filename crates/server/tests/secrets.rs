//! Tenant secrets on real `switchboard` processes: sealed before Postgres
//! (the stored bytes never hold the value), read only by API keys with the
//! `secrets` scope (audited), a tampered or moved ciphertext refused, another
//! tenant's data key useless, bad input refused, and a master key rotation
//! (`switchboard rewrap-secrets`) after which every secret still reads. The
//! values never appear in a node's log, its metrics or an audit row.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard_db::{Database, TenantContext};
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{JWT_SECRET, Node, env, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
// Two master keys (32 bytes each, base64), fixed so every run of the suite
// can re-wrap what earlier runs left behind.
const K1: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
const K2: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=";

struct Tenant {
    id: TenantId,
    admin: String,
    reader: String,
    worker: String,
}

async fn tenant(node: &Node, name: &str) -> Tenant {
    let id = node.create_tenant(name).await;
    Tenant {
        id,
        admin: user_token(id, UserId::new(), Role::Admin),
        reader: node.api_key(id, &["secrets"]).await,
        worker: node.api_key(id, &["read", "write"]).await,
    }
}

async fn send(node: &Node, method: Method, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    node.send_json(method, path, token, &body).await
}

async fn value_of(node: &Node, token: &str, name: &str) -> (StatusCode, Value) {
    let res = node
        .http
        .get(node.url(&format!("/api/v1/secrets/{name}/value")))
        .header("X-API-Key", token)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

fn keys_env(current: (&str, &str), previous: Option<String>) -> Vec<(&'static str, String)> {
    let mut v =
        vec![("SECRETS_MASTER_KEY", current.1.to_owned()), ("SECRETS_MASTER_KEY_ID", current.0.to_owned())];
    if let Some(p) = previous {
        v.push(("SECRETS_PREVIOUS_KEYS", p));
    }
    v
}

fn spawn(node_id: &str, keys: &[(&'static str, String)]) -> Node {
    let mut extra: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("RUST_LOG", "debug"));
    Node::spawn_keeping_log(BIN, node_id, &extra)
}

async fn sealed_bytes(db: &Database, tenant: TenantId, name: &str) -> Vec<u8> {
    let mut tx = db.begin(&TenantContext::new(tenant, None, Role::Service)).await.unwrap();
    sqlx::query_scalar("SELECT ciphertext FROM secrets WHERE name = $1")
        .bind(name)
        .fetch_one(tx.conn())
        .await
        .unwrap()
}

async fn set_sealed(db: &Database, tenant: TenantId, name: &str, bytes: &[u8]) {
    let mut tx = db.begin(&TenantContext::new(tenant, None, Role::Service)).await.unwrap();
    let done = sqlx::query("UPDATE secrets SET ciphertext = $2 WHERE name = $1")
        .bind(name)
        .bind(bytes)
        .execute(tx.conn())
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn secrets_are_sealed_read_only_by_secrets_keys_and_survive_a_master_key_rotation() {
    let a = spawn("secrets-a", &keys_env(("k1", K1), None));
    let t = tenant(&a, "secrets").await;
    let value = format!("ghp_{}", uuid::Uuid::new_v4().simple());
    let (status, meta) = send(
        &a,
        Method::POST,
        "/api/v1/secrets",
        &t.admin,
        json!({ "name": "GITHUB_TOKEN", "value": value, "description": "merges PRs" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    assert_eq!((meta["name"].as_str(), meta["version"].as_i64()), (Some("GITHUB_TOKEN"), Some(1)));
    assert!(!meta.to_string().contains(&value));

    // Listed by name and metadata only.
    let listed = a.get_json("/api/v1/secrets", &t.admin).await;
    assert_eq!(listed["data"][0]["name"], "GITHUB_TOKEN");
    assert!(listed["data"][0].get("value").is_none() && !listed.to_string().contains(&value), "{listed}");

    // Only an API key with the `secrets` scope reads the value.
    let (status, read) = value_of(&a, &t.reader, "GITHUB_TOKEN").await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!((read["value"].as_str(), read["version"].as_i64()), (Some(value.as_str()), Some(1)));
    let admin_key = a.api_key(t.id, &["admin"]).await;
    for (who, token) in [("worker", &t.worker), ("admin key", &admin_key)] {
        let (status, err) = value_of(&a, token, "GITHUB_TOKEN").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {err}");
    }
    assert_eq!(
        a.status_of(Method::GET, "/api/v1/secrets/GITHUB_TOKEN/value", &t.admin).await,
        StatusCode::FORBIDDEN,
        "not even an owner or admin person"
    );
    // Only an owner (a person) makes a key that reads values.
    for (who, token) in [("admin person", t.admin.as_str()), ("admin key", admin_key.as_str())] {
        let (status, err) =
            send(&a, Method::POST, "/api/v1/api-keys", token, json!({ "name": "x", "scopes": ["secrets"] }))
                .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {err}");
    }
    let owner = user_token(t.id, UserId::new(), Role::Owner);
    let (status, _) =
        send(&a, Method::POST, "/api/v1/api-keys", &owner, json!({ "name": "x", "scopes": ["secrets"] }))
            .await;
    assert_eq!(status, StatusCode::CREATED);
    // Managing them is for owners and admins.
    let member = user_token(t.id, UserId::new(), Role::Member);
    assert_eq!(a.status_of(Method::GET, "/api/v1/secrets", &member).await, StatusCode::FORBIDDEN);
    let (status, _) =
        send(&a, Method::POST, "/api/v1/secrets", &member, json!({ "name": "X", "value": "y" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // In Postgres: sealed bytes that hold no trace of the value, and a data
    // key wrapped under k1.
    let db = Database::connect(&env("DATABASE_URL")).await.unwrap();
    let sealed = sealed_bytes(&db, t.id, "GITHUB_TOKEN").await;
    assert!(
        !sealed.windows(8).any(|w| value.as_bytes().windows(8).any(|v| v == w)),
        "the value is in the row"
    );
    assert_eq!(sealed.len(), value.len() + 28);
    let mut tx = db.begin(&TenantContext::new(t.id, None, Role::Service)).await.unwrap();
    let (master, wrapped): (String, Vec<u8>) =
        sqlx::query_as("SELECT master_key_id, wrapped_key FROM tenant_data_keys")
            .fetch_one(tx.conn())
            .await
            .unwrap();
    assert_eq!((master.as_str(), wrapped.len()), ("k1", 60));
    let overwritten = sqlx::query("UPDATE tenant_data_keys SET wrapped_key = $1")
        .bind(vec![0u8; 60])
        .execute(tx.conn())
        .await
        .unwrap();
    assert_eq!(overwritten.rows_affected(), 0, "a tenant never changes its data key");
    let removed = sqlx::query("DELETE FROM tenant_data_keys").execute(tx.conn()).await;
    assert!(removed.is_err(), "nor deletes it (no grant)");
    drop(tx);

    // A tampered ciphertext is refused (and nothing of it comes back).
    let mut tampered = sealed.clone();
    tampered[20] ^= 0x40;
    set_sealed(&db, t.id, "GITHUB_TOKEN", &tampered).await;
    let (status, err) = value_of(&a, &t.reader, "GITHUB_TOKEN").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("internal")),
        "{err}"
    );
    assert!(!err.to_string().contains(&value));
    assert!(
        a.logged("does not open", std::time::Duration::from_secs(5)).await,
        "the refusal is logged for operators"
    );
    set_sealed(&db, t.id, "GITHUB_TOKEN", &sealed).await;

    // Another tenant: sees nothing of this one's, and this tenant's
    // ciphertext, moved into its row, does not open with its data key.
    let u = tenant(&a, "secrets-other").await;
    assert_eq!(a.get_json("/api/v1/secrets", &u.admin).await["data"], json!([]));
    assert_eq!(value_of(&a, &u.reader, "GITHUB_TOKEN").await.0, StatusCode::NOT_FOUND);
    let (status, _) = send(
        &a,
        Method::POST,
        "/api/v1/secrets",
        &u.admin,
        json!({ "name": "GITHUB_TOKEN", "value": "theirs" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    set_sealed(&db, u.id, "GITHUB_TOKEN", &sealed).await;
    assert_eq!(value_of(&a, &u.reader, "GITHUB_TOKEN").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    let mut tx = db.begin(&TenantContext::new(u.id, None, Role::Service)).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM secrets WHERE tenant_id = $1")
        .bind(t.id.as_uuid())
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(seen, 0, "row-level security");
    let forged = sqlx::query(
        "INSERT INTO tenant_data_keys (tenant_id, master_key_id, wrapped_key) VALUES ($1, 'k1', $2)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(vec![0u8; 60])
    .execute(tx.conn())
    .await;
    assert!(forged.is_err(), "a data key for another tenant is refused");
    drop(tx);

    // Bad input: refused, nothing stored.
    for (bad, status) in [
        (json!({ "name": "1BAD", "value": "x" }), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({ "name": "has space", "value": "x" }), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({ "name": "EMPTY", "value": "" }), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({ "name": "HUGE", "value": "x".repeat(70_000) }), StatusCode::PAYLOAD_TOO_LARGE),
        (json!({ "name": "GITHUB_TOKEN", "value": "again" }), StatusCode::CONFLICT),
    ] {
        let (got, err) = send(&a, Method::POST, "/api/v1/secrets", &t.admin, bad.clone()).await;
        assert_eq!(got, status, "{bad}: {err}");
    }
    assert_eq!(a.get_json("/api/v1/secrets", &t.admin).await["data"].as_array().unwrap().len(), 1);
    let (status, _) = send(&a, Method::PUT, "/api/v1/secrets/NOPE", &t.admin, json!({ "value": "x" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Rotating the value: version 2, the new value reads.
    let rotated = format!("ghp_{}", uuid::Uuid::new_v4().simple());
    let (status, meta) =
        send(&a, Method::PUT, "/api/v1/secrets/GITHUB_TOKEN", &t.admin, json!({ "value": rotated })).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(meta["version"], 2);
    assert_eq!(value_of(&a, &t.reader, "GITHUB_TOKEN").await.1["value"], json!(rotated));

    // A second secret, then rotate the master key: B has k2 and still reads
    // k1's wraps; the re-wrap moves every data key to k2 without touching a
    // value; C, with k2 alone, reads them all; A, with k1 alone, no longer can.
    let (status, _) = send(
        &a,
        Method::POST,
        "/api/v1/secrets",
        &t.admin,
        json!({ "name": "SLACK_SIGNING", "value": "s3cr3t-slack" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let ciphertext_before = sealed_bytes(&db, t.id, "SLACK_SIGNING").await;
    let b = spawn("secrets-b", &keys_env(("k2", K2), Some(format!("k1:{K1}"))));
    assert_eq!(value_of(&b, &t.reader, "GITHUB_TOKEN").await.1["value"], json!(rotated));
    let out = std::process::Command::new(BIN)
        // This tenant only: the shared test database holds other suites'
        // tenants, sealed under master keys this command is not given.
        .args(["rewrap-secrets", "--tenant", &t.id.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", env("DATABASE_URL"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("SECRETS_MASTER_KEY", K2)
        .env("SECRETS_MASTER_KEY_ID", "k2")
        .env("SECRETS_PREVIOUS_KEYS", format!("k1:{K1}"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("data keys re-wrapped"), "{log}");
    let mut tx = db.begin(&TenantContext::new(t.id, None, Role::Service)).await.unwrap();
    let master: String =
        sqlx::query_scalar("SELECT master_key_id FROM tenant_data_keys").fetch_one(tx.conn()).await.unwrap();
    assert_eq!(master, "k2");
    drop(tx);
    assert_eq!(sealed_bytes(&db, t.id, "SLACK_SIGNING").await, ciphertext_before, "values untouched");
    let c = spawn("secrets-c", &keys_env(("k2", K2), None));
    assert_eq!(value_of(&c, &t.reader, "GITHUB_TOKEN").await.1["value"], json!(rotated));
    assert_eq!(value_of(&c, &t.reader, "SLACK_SIGNING").await.1["value"], "s3cr3t-slack");
    let (status, err) = value_of(&a, &t.reader, "GITHUB_TOKEN").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "k1 alone no longer opens: {err}");
    assert!(!err.to_string().contains("k2"), "the key setup is not shown to tenants: {err}");
    assert!(
        a.logged("master key this node lacks", std::time::Duration::from_secs(5)).await,
        "operators are told"
    );

    // Deleting: gone.
    assert_eq!(
        a.status_of(Method::DELETE, "/api/v1/secrets/SLACK_SIGNING", &t.admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(value_of(&c, &t.reader, "SLACK_SIGNING").await.0, StatusCode::NOT_FOUND);

    // Audited by name and version; no value anywhere: audit rows, logs, metrics.
    let logs = a.get_json("/api/v1/audit-logs?target_type=secret&limit=100", &t.admin).await;
    let actions: Vec<&str> =
        logs["data"].as_array().unwrap().iter().map(|l| l["action"].as_str().unwrap()).collect();
    for action in ["secret.create", "secret.read", "secret.rotate", "secret.delete"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    let reads = logs["data"].as_array().unwrap().iter().filter(|l| l["action"] == "secret.read").count();
    assert!(reads >= 3, "each read is audited: {reads}");
    for node in [&a, &b, &c] {
        let text = format!("{}\n{}", node.log().join("\n"), node.metrics().await);
        for secret in [value.as_str(), rotated.as_str(), "s3cr3t-slack"] {
            assert!(!text.contains(secret), "a value in the log or metrics");
        }
    }
    assert!(!logs.to_string().contains(&rotated));
}

#[tokio::test]
async fn without_a_master_key_the_secrets_routes_say_so() {
    let a = Node::spawn(BIN, "secrets-none");
    let t = tenant(&a, "secrets-none").await;
    let (status, err) =
        send(&a, Method::POST, "/api/v1/secrets", &t.admin, json!({ "name": "X", "value": "y" })).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("SECRETS_MASTER_KEY"), "{err}");
}
