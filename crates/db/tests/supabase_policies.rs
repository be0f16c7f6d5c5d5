//! `supabase/migrations` applied to a fresh database with Supabase's roles
//! (`anon`, `authenticated`, `service_role`, made here, with Supabase's default
//! privileges, which grant everything on new tables to all three), then probed
//! the way PostgREST runs a request: `SET ROLE authenticated` and the verified
//! JWT in `request.jwt.claims`. A member reads and writes what the REST API
//! allows them, or less: never another tenant's rows, never a private
//! conversation they cannot see (nor its messages, runs or steps), never API
//! key hashes or scopes, never the audit log's rows to change; `anon` reads
//! nothing at all.
//!
//! Needs DATABASE_ADMIN_URL (the owner, who may create databases and roles) and
//! the `switchboard_supabase_template` database that `scripts/services` makes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

fn admin_url() -> String {
    std::env::var("DATABASE_ADMIN_URL").expect("DATABASE_ADMIN_URL: run the tests through scripts/test")
}

fn url_for(db: &str) -> String {
    let url = admin_url();
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{db}")
}

/// A fresh database with the Supabase roles and migrations; dropped on `drop_db`.
async fn supabase_database() -> (String, PgConnection) {
    let name = format!("sb_supabase_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    // Databases an earlier run could not drop (it failed half-way).
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'sb\\_supabase\\_%' AND datname <> $1",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    for db in stale {
        let _ = admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await;
    }
    // Supabase's roles, made once per cluster; the owner may act as them.
    for role in ["anon", "authenticated", "service_role"] {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if !exists {
            admin.execute(format!("CREATE ROLE {role} NOLOGIN").as_str()).await.unwrap();
        }
        admin
            .execute(format!("GRANT {role} TO CURRENT_USER WITH SET TRUE, INHERIT FALSE").as_str())
            .await
            .unwrap();
    }
    admin
        .execute(format!("CREATE DATABASE {name} TEMPLATE switchboard_supabase_template").as_str())
        .await
        .unwrap();
    admin.close().await.unwrap();

    let mut conn = PgConnection::connect(&url_for(&name)).await.unwrap();
    // What a Supabase project does for every table made in `public`.
    conn.execute(
        "GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;",
    )
    .await
    .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../supabase/migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|p| p.extension().is_some_and(|x| x == "sql")) {
        let sql = std::fs::read_to_string(file).unwrap();
        sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    (name, conn)
}

async fn drop_db(name: &str) {
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.unwrap();
}

struct Ids {
    tenant: Uuid,
    other_tenant: Uuid,
    alice: Uuid,
    bob: Uuid,
    project: Uuid,
    public: Uuid,
    private: Uuid,
    private_run: Uuid,
    open_run: Uuid,
    key: Uuid,
}

/// Rows as the server would write them (as the owner, through the same
/// policies, with the tenant set the server's way).
async fn seed(conn: &mut PgConnection) -> Ids {
    let ids = Ids {
        tenant: Uuid::new_v4(),
        other_tenant: Uuid::new_v4(),
        alice: Uuid::new_v4(),
        bob: Uuid::new_v4(),
        project: Uuid::new_v4(),
        public: Uuid::new_v4(),
        private: Uuid::new_v4(),
        private_run: Uuid::new_v4(),
        open_run: Uuid::new_v4(),
        key: Uuid::new_v4(),
    };
    let mut tx = conn.begin().await.unwrap();
    tx.execute("SELECT set_config('app.platform', 'on', true)").await.unwrap();
    for (id, name) in [(ids.tenant, "a"), (ids.other_tenant, "b")] {
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    for (tenant, project, public, private, user) in [
        (ids.tenant, ids.project, ids.public, ids.private, ids.bob),
        (ids.other_tenant, Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()),
    ] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true), set_config('app.role', 'service', true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let statements = [
            "INSERT INTO projects (id, tenant_id, name) VALUES ($3, $1, 'p')",
            "INSERT INTO conversations (id, tenant_id, project_id, visibility, created_by) VALUES ($4, $1, $3, 'public', $2)",
            "INSERT INTO conversations (id, tenant_id, project_id, visibility, created_by) VALUES ($5, $1, $3, 'private', $2)",
            "INSERT INTO conversation_participants (tenant_id, conversation_id, user_id) VALUES ($1, $5, $2)",
            "INSERT INTO messages (tenant_id, conversation_id, sender_id, content) VALUES ($1, $4, $2, 'in public')",
            "INSERT INTO messages (tenant_id, conversation_id, sender_id, content) VALUES ($1, $5, $2, 'a secret')",
        ];
        for sql in statements {
            sqlx::query(sql)
                .bind(tenant)
                .bind(user)
                .bind(project)
                .bind(public)
                .bind(private)
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        if tenant == ids.tenant {
            for (run, conversation) in [(ids.private_run, Some(ids.private)), (ids.open_run, None)] {
                sqlx::query("INSERT INTO agent_runs (id, tenant_id, project_id, conversation_id) VALUES ($1, $2, $3, $4)")
                    .bind(run)
                    .bind(tenant)
                    .bind(project)
                    .bind(conversation)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO agent_steps (tenant_id, run_id, seq, content) VALUES ($1, $2, 1, 'step')",
                )
                .bind(tenant)
                .bind(run)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            sqlx::query("INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes) VALUES ($1, $2, 'k', 'sb_x', '\\x01', '{read}')")
                .bind(ids.key)
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO audit_logs (tenant_id, actor_kind, actor_id, action) VALUES ($1, 'user', 'x', 'project.create')")
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO usage_metrics (tenant_id, day, metric, value) VALUES ($1, current_date, 'runs', 2)")
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    ids
}

/// Runs `sql` as PostgREST would for a request with these claims (`None`: as
/// `anon`), in a transaction rolled back afterwards. The rows it returns as
/// JSON, or the SQLSTATE it failed with.
async fn as_client(
    conn: &mut PgConnection,
    claims: Option<serde_json::Value>,
    sql: &str,
    bind: &[Uuid],
) -> Result<Vec<serde_json::Value>, String> {
    let mut tx = conn.begin().await.unwrap();
    let role = if claims.is_some() { "authenticated" } else { "anon" };
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
        .bind(claims.map(|c| c.to_string()).unwrap_or_default())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.execute(format!("SET LOCAL ROLE {role}").as_str()).await.unwrap();
    let mut query = sqlx::query_scalar::<_, serde_json::Value>(sql);
    for b in bind {
        query = query.bind(*b);
    }
    let result = query.fetch_all(&mut *tx).await.map_err(|e| match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => other.to_string(),
    });
    tx.rollback().await.unwrap();
    result
}

fn member(ids: &Ids, user: Uuid, role: &str) -> Option<serde_json::Value> {
    Some(
        json!({ "role": "authenticated", "sub": user, "app_metadata": { "tenant_id": ids.tenant, "tenant_role": role } }),
    )
}

#[tokio::test]
async fn authenticated_members_read_and_write_what_rest_allows_and_anon_nothing() {
    let (name, mut conn) = supabase_database().await;
    let ids = seed(&mut conn).await;
    let alice = member(&ids, ids.alice, "member");
    let bob = member(&ids, ids.bob, "member");
    let admin = member(&ids, Uuid::new_v4(), "admin");
    let count = |rows: Result<Vec<serde_json::Value>, String>| rows.map(|r| r.len());

    // Reads: her tenant only; the private conversation, its messages, its run
    // and that run's steps are invisible to a member who is not in it.
    let q = |table: &str| format!("SELECT to_jsonb(t) FROM {table} t");
    assert_eq!(count(as_client(&mut conn, alice.clone(), &q("tenants"), &[]).await), Ok(1));
    assert_eq!(count(as_client(&mut conn, alice.clone(), &q("projects"), &[]).await), Ok(1));
    let convs =
        as_client(&mut conn, alice.clone(), "SELECT to_jsonb(id) FROM conversations", &[]).await.unwrap();
    assert_eq!(convs, vec![json!(ids.public)]);
    let msgs =
        as_client(&mut conn, alice.clone(), "SELECT to_jsonb(content) FROM messages", &[]).await.unwrap();
    assert_eq!(msgs, vec![json!("in public")]);
    let runs = as_client(&mut conn, alice.clone(), "SELECT to_jsonb(id) FROM agent_runs", &[]).await.unwrap();
    assert_eq!(runs, vec![json!(ids.open_run)]);
    assert_eq!(count(as_client(&mut conn, alice.clone(), &q("agent_steps"), &[]).await), Ok(1));
    assert_eq!(count(as_client(&mut conn, alice.clone(), &q("conversation_participants"), &[]).await), Ok(0));
    assert_eq!(count(as_client(&mut conn, alice.clone(), &q("usage_metrics"), &[]).await), Ok(1));
    // Bob is in the private conversation: he sees it, its messages and its run.
    assert_eq!(count(as_client(&mut conn, bob.clone(), &q("conversations"), &[]).await), Ok(2));
    assert_eq!(count(as_client(&mut conn, bob.clone(), &q("messages"), &[]).await), Ok(2));
    assert_eq!(count(as_client(&mut conn, bob.clone(), &q("agent_steps"), &[]).await), Ok(2));

    // API keys and the audit log: owners and admins read them, members do not;
    // nobody reads a key's hash.
    assert_eq!(
        count(as_client(&mut conn, alice.clone(), "SELECT to_jsonb(name) FROM api_keys", &[]).await),
        Ok(0)
    );
    assert_eq!(
        count(as_client(&mut conn, admin.clone(), "SELECT to_jsonb(name) FROM api_keys", &[]).await),
        Ok(1)
    );
    assert_eq!(
        as_client(&mut conn, admin.clone(), "SELECT to_jsonb(key_hash) FROM api_keys", &[]).await,
        Err("42501".into())
    );
    assert_eq!(count(as_client(&mut conn, alice.clone(), &q("audit_logs"), &[]).await), Ok(0));
    assert_eq!(count(as_client(&mut conn, admin.clone(), &q("audit_logs"), &[]).await), Ok(1));

    // Writes REST does not allow.
    let denied = |r: Result<Vec<serde_json::Value>, String>| r.as_ref().err().is_some_and(|c| c == "42501");
    let attempts = [
        // A member adds herself to the private conversation.
        (
            "INSERT INTO conversation_participants (tenant_id, conversation_id, user_id) VALUES ($1, $2, $3) RETURNING to_jsonb(user_id)",
            vec![ids.tenant, ids.private, ids.alice],
            alice.clone(),
        ),
        // Writes into a conversation she cannot see.
        (
            "INSERT INTO messages (tenant_id, conversation_id, sender_id, content) VALUES ($1, $2, $3, 'x') RETURNING to_jsonb(id)",
            vec![ids.tenant, ids.private, ids.alice],
            alice.clone(),
        ),
        // Writes as someone else.
        (
            "INSERT INTO messages (tenant_id, conversation_id, sender_id, content) VALUES ($1, $2, $3, 'x') RETURNING to_jsonb(id)",
            vec![ids.tenant, ids.public, ids.bob],
            alice.clone(),
        ),
        // Widens a key's scopes, even as an admin.
        (
            "UPDATE api_keys SET scopes = '{admin}' WHERE id = $1 RETURNING to_jsonb(id)",
            vec![ids.key],
            admin.clone(),
        ),
        // Rewrites or erases the audit log, even as an admin.
        ("UPDATE audit_logs SET action = 'nothing' RETURNING to_jsonb(id)", vec![], admin.clone()),
        ("DELETE FROM audit_logs RETURNING to_jsonb(id)", vec![], admin.clone()),
        // Edits or deletes a message, moves a run.
        ("UPDATE messages SET content = 'edited' RETURNING to_jsonb(id)", vec![], bob.clone()),
        ("DELETE FROM messages RETURNING to_jsonb(id)", vec![], bob.clone()),
        ("UPDATE agent_runs SET status = 'succeeded' RETURNING to_jsonb(id)", vec![], bob.clone()),
        // Makes a tenant, or a key.
        ("INSERT INTO tenants (name) VALUES ('mine') RETURNING to_jsonb(id)", vec![], admin.clone()),
        (
            "INSERT INTO api_keys (tenant_id, name, prefix, key_hash) VALUES ($1, 'k', 'p', '\\x02') RETURNING to_jsonb(id)",
            vec![ids.tenant],
            admin.clone(),
        ),
        // Another tenant's rows.
        (
            "INSERT INTO projects (tenant_id, name) VALUES ($1, 'theirs') RETURNING to_jsonb(id)",
            vec![ids.other_tenant],
            alice.clone(),
        ),
        // Deletes the project that holds a private conversation she cannot see.
        ("DELETE FROM projects WHERE id = $1 RETURNING to_jsonb(id)", vec![ids.project], alice.clone()),
        // Revokes, or brings back, a key: only through the server.
        (
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 RETURNING to_jsonb(id)",
            vec![ids.key],
            admin.clone(),
        ),
        // Deletes a conversation someone else made.
        ("DELETE FROM conversations WHERE id = $1 RETURNING to_jsonb(id)", vec![ids.public], alice.clone()),
        // A conversation created in someone else's name.
        (
            "INSERT INTO conversations (tenant_id, project_id, created_by) VALUES ($1, $2, $3) RETURNING to_jsonb(id)",
            vec![ids.tenant, ids.project, ids.bob],
            alice.clone(),
        ),
    ];
    for (sql, bind, who) in attempts {
        let r = as_client(&mut conn, who, sql, &bind).await;
        assert!(denied(r.clone()) || r == Ok(vec![]), "{sql}: {r:?}");
    }
    // Nothing changed.
    assert_eq!(count(as_client(&mut conn, bob.clone(), &q("messages"), &[]).await), Ok(2));
    assert_eq!(count(as_client(&mut conn, admin.clone(), &q("audit_logs"), &[]).await), Ok(1));

    // Writes REST allows: a message as herself where she can see; a project; a
    // conversation of her own; and a creator deletes their own conversation.
    let sent = as_client(&mut conn, alice.clone(), "INSERT INTO messages (tenant_id, conversation_id, sender_id, content) VALUES ($1, $2, $3, 'hi') RETURNING to_jsonb(content)", &[ids.tenant, ids.public, ids.alice]).await;
    assert_eq!(sent, Ok(vec![json!("hi")]));
    let made = as_client(
        &mut conn,
        alice.clone(),
        "INSERT INTO projects (tenant_id, name) VALUES ($1, 'mine') RETURNING to_jsonb(name)",
        &[ids.tenant],
    )
    .await;
    assert_eq!(made, Ok(vec![json!("mine")]));
    let conv = as_client(&mut conn, alice.clone(), "INSERT INTO conversations (tenant_id, project_id, created_by) VALUES ($1, $2, $3) RETURNING to_jsonb(created_by)", &[ids.tenant, ids.project, ids.alice]).await;
    assert_eq!(conv, Ok(vec![json!(ids.alice)]));
    let own = as_client(
        &mut conn,
        bob.clone(),
        "DELETE FROM conversations WHERE id = $1 RETURNING to_jsonb(id)",
        &[ids.public],
    )
    .await;
    assert_eq!(own, Ok(vec![json!(ids.public)]), "its creator deletes a conversation");
    let deleted = as_client(
        &mut conn,
        bob.clone(),
        "DELETE FROM projects WHERE id = $1 RETURNING to_jsonb(id)",
        &[ids.project],
    )
    .await;
    assert_eq!(deleted, Ok(vec![json!(ids.project)]), "bob sees every private conversation of the project");

    // anon: nothing, anywhere.
    for table in [
        "tenants",
        "projects",
        "conversations",
        "messages",
        "agent_runs",
        "api_keys",
        "audit_logs",
        "usage_metrics",
        "cache_invalidations",
    ] {
        assert_eq!(
            as_client(&mut conn, None, &q(table), &[]).await,
            Err("42501".into()),
            "anon reads {table}"
        );
    }
    assert_eq!(
        as_client(&mut conn, None, "SELECT to_jsonb(app.current_tenant_id())", &[]).await,
        Err("42501".into()),
        "anon calls no function of the schema"
    );
    // The platform's table is closed to members too.
    assert_eq!(
        as_client(&mut conn, admin.clone(), &q("cache_invalidations"), &[]).await,
        Err("42501".into())
    );

    conn.close().await.unwrap();
    drop_db(&name).await;
}
