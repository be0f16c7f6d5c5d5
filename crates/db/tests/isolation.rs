//! Tenant isolation against the real Postgres, for every tenant table.
//!
//! Two tenants get one row in every table. Inside tenant A's transaction, B's rows
//! can be neither read, updated, deleted, nor inserted with B's tenant_id (even with
//! B's ids in the WHERE and B's real parents referenced); with no context nothing
//! is visible; a connection back in the pool carries no tenant; the application
//! role cannot switch RLS off or become the owner.
//!
//! Needs DATABASE_URL (application role) and DATABASE_ADMIN_URL (owner) of a
//! migrated database: `scripts/test` provides both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection};
use switchboard_db::{Database, TenantContext, TenantTx};
use switchboard_domain::{Role, TenantId, UserId};
use uuid::Uuid;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set: run the tests through scripts/test"))
}

/// One row in every tenant table, with the ids needed to aim at each.
#[derive(Clone, Debug)]
struct Fixture {
    tenant: Uuid,
    api_key: Uuid,
    project: Uuid,
    conversation: Uuid,
    participant: Uuid,
    message: Uuid,
    run: Uuid,
    step: Uuid,
    tool_call: Uuid,
    audit: Uuid,
}

/// Every tenant-owned table: (name, the column that names one row).
const TABLES: [(&str, &str); 10] = [
    ("api_keys", "id"),
    ("projects", "id"),
    ("conversations", "id"),
    ("conversation_participants", "user_id"),
    ("messages", "id"),
    ("agent_runs", "id"),
    ("agent_steps", "id"),
    ("tool_calls", "id"),
    ("audit_logs", "id"),
    ("usage_metrics", "tenant_id"),
];

impl Fixture {
    fn new(tenant: Uuid) -> Self {
        Self {
            tenant,
            api_key: Uuid::new_v4(),
            project: Uuid::new_v4(),
            conversation: Uuid::new_v4(),
            participant: Uuid::new_v4(),
            message: Uuid::new_v4(),
            run: Uuid::new_v4(),
            step: Uuid::new_v4(),
            tool_call: Uuid::new_v4(),
            audit: Uuid::new_v4(),
        }
    }

    /// The id that names this fixture's row in `table`.
    fn row_id(&self, table: &str) -> Uuid {
        match table {
            "api_keys" => self.api_key,
            "projects" => self.project,
            "conversations" => self.conversation,
            "conversation_participants" => self.participant,
            "messages" => self.message,
            "agent_runs" => self.run,
            "agent_steps" => self.step,
            "tool_calls" => self.tool_call,
            "audit_logs" => self.audit,
            "usage_metrics" => self.tenant,
            other => panic!("unknown table {other}"),
        }
    }

    /// An INSERT of a row into `table` for this fixture's tenant, referencing this
    /// fixture's parents, with `own` as the new row's id.
    fn insert(&self, table: &str, own: Uuid) -> String {
        let Fixture { tenant: t, project: p, conversation: c, run: r, step: s, .. } = self;
        match table {
            "api_keys" => format!(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash) \
                 VALUES ('{own}', '{t}', 'k', 'sb_x', decode(md5('{own}'), 'hex'))"
            ),
            "projects" => {
                format!("INSERT INTO projects (id, tenant_id, name) VALUES ('{own}', '{t}', 'p')")
            }
            "conversations" => format!(
                "INSERT INTO conversations (id, tenant_id, project_id, title, visibility) \
                 VALUES ('{own}', '{t}', '{p}', 'c', 'public')"
            ),
            "conversation_participants" => format!(
                "INSERT INTO conversation_participants (tenant_id, conversation_id, user_id) \
                 VALUES ('{t}', '{c}', '{own}')"
            ),
            "messages" => format!(
                "INSERT INTO messages (id, tenant_id, conversation_id, content, idempotency_key) \
                 VALUES ('{own}', '{t}', '{c}', 'hello', '{own}')"
            ),
            "agent_runs" => format!(
                "INSERT INTO agent_runs (id, tenant_id, project_id, conversation_id) VALUES ('{own}', '{t}', '{p}', '{c}')"
            ),
            "agent_steps" => format!(
                "INSERT INTO agent_steps (id, tenant_id, run_id, seq) \
                 VALUES ('{own}', '{t}', '{r}', (SELECT coalesce(max(seq), 0) + 1 FROM agent_steps WHERE run_id = '{r}'))"
            ),
            "tool_calls" => format!(
                "INSERT INTO tool_calls (id, tenant_id, run_id, step_id, name) VALUES ('{own}', '{t}', '{r}', '{s}', 'search')"
            ),
            "audit_logs" => format!(
                "INSERT INTO audit_logs (id, tenant_id, actor_kind, actor_id, action) \
                 VALUES ('{own}', '{t}', 'user', 'u', 'project.create')"
            ),
            "usage_metrics" => format!(
                "INSERT INTO usage_metrics (tenant_id, day, metric, value) \
                 VALUES ('{t}', current_date - (random() * 1000)::int, 'm{}', 1)",
                own.simple()
            ),
            other => panic!("unknown table {other}"),
        }
    }

    /// An UPDATE that would change this fixture's row in `table`.
    fn update(&self, table: &str) -> String {
        let set = match table {
            "api_keys" => "name = 'stolen'",
            "projects" => "name = 'stolen'",
            "conversations" => "title = 'stolen'",
            "conversation_participants" => "added_at = now() - interval '1 day'",
            "messages" => "content = 'stolen'",
            "agent_runs" => "status = 'cancelled'",
            "agent_steps" => "content = 'stolen'",
            "tool_calls" => "status = 'failed'",
            "audit_logs" => "action = 'stolen'",
            "usage_metrics" => "value = 999",
            other => panic!("unknown table {other}"),
        };
        let key = TABLES.iter().find(|(n, _)| *n == table).map(|(_, k)| *k).unwrap();
        format!("UPDATE {table} SET {set} WHERE {key} = '{}'", self.row_id(table))
    }
}

struct World {
    db: Database,
    a: Fixture,
    b: Fixture,
}

async fn tenant_tx(db: &Database, tenant: Uuid) -> TenantTx {
    db.begin(&TenantContext::new(TenantId(tenant), Some(UserId::new()), Role::Owner)).await.unwrap()
}

async fn world() -> World {
    let db = Database::connect(&env("DATABASE_URL")).await.unwrap();
    let (a, b) = (Fixture::new(Uuid::new_v4()), Fixture::new(Uuid::new_v4()));
    for f in [&a, &b] {
        let mut platform = db.begin_platform().await.unwrap();
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'isolation')")
            .bind(f.tenant)
            .execute(platform.conn())
            .await
            .unwrap();
        platform.commit().await.unwrap();
        let mut tx = tenant_tx(&db, f.tenant).await;
        for (table, _) in TABLES {
            let sql = f.insert(table, f.row_id(table));
            sqlx::query(&sql).execute(tx.conn()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        tx.commit().await.unwrap();
    }
    World { db, a, b }
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await.unwrap()
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What tenant `f` sees of its own rows: one per table, as `(table, row as json)`.
async fn snapshot(db: &Database, f: &Fixture) -> Vec<(String, serde_json::Value)> {
    let mut tx = tenant_tx(db, f.tenant).await;
    let mut out = Vec::new();
    for (table, _) in TABLES {
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar(&format!("SELECT to_jsonb(t) FROM {table} t WHERE tenant_id = $1"))
                .bind(f.tenant)
                .fetch_all(tx.conn())
                .await
                .unwrap();
        assert_eq!(rows.len(), 1, "{table}: tenant sees its own row");
        out.push((table.to_owned(), rows[0].clone()));
    }
    tx.rollback().await.unwrap();
    out
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
}

#[tokio::test]
async fn a_tenant_cannot_read_another_tenants_rows_even_by_id() {
    let w = world().await;
    let mut tx = tenant_tx(&w.db, w.a.tenant).await;
    for (table, key) in TABLES {
        let b_tenant = w.b.tenant;
        let b_row = w.b.row_id(table);
        assert_eq!(
            count(tx.conn(), &format!("SELECT count(*) FROM {table} WHERE tenant_id = '{b_tenant}'")).await,
            0,
            "{table}"
        );
        assert_eq!(
            count(tx.conn(), &format!("SELECT count(*) FROM {table} WHERE {key} = '{b_row}'")).await,
            0,
            "{table}"
        );
        assert_eq!(
            count(tx.conn(), &format!("SELECT count(*) FROM {table} WHERE tenant_id <> '{}'", w.a.tenant))
                .await,
            0,
            "{table}: only A's rows are visible"
        );
        assert_eq!(
            count(tx.conn(), &format!("SELECT count(*) FROM {table} WHERE tenant_id = '{}'", w.a.tenant))
                .await,
            1,
            "{table}"
        );
    }
    // The registry: A sees its own tenant row only.
    assert_eq!(
        count(tx.conn(), &format!("SELECT count(*) FROM tenants WHERE id = '{}'", w.b.tenant)).await,
        0
    );
    assert_eq!(count(tx.conn(), "SELECT count(*) FROM tenants").await, 1);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_tenant_cannot_update_or_delete_another_tenants_rows() {
    let w = world().await;
    let before = snapshot(&w.db, &w.b).await;
    for (table, key) in TABLES {
        for sql in [
            w.b.update(table),
            format!("DELETE FROM {table} WHERE {key} = '{}'", w.b.row_id(table)),
            format!("DELETE FROM {table} WHERE tenant_id = '{}'", w.b.tenant),
        ] {
            let mut tx = tenant_tx(&w.db, w.a.tenant).await;
            match sqlx::query(&sql).execute(tx.conn()).await {
                Ok(done) => assert_eq!(done.rows_affected(), 0, "{sql}"),
                // audit_logs is append-only: no UPDATE/DELETE privilege at all.
                Err(e) => assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e}"),
            }
            tx.commit().await.ok();
        }
    }
    let mut tx = tenant_tx(&w.db, w.a.tenant).await;
    for sql in [
        format!("UPDATE tenants SET status = 'suspended' WHERE id = '{}'", w.b.tenant),
        format!("UPDATE tenants SET status = 'suspended' WHERE id = '{}'", w.a.tenant),
        format!("DELETE FROM tenants WHERE id = '{}'", w.b.tenant),
    ] {
        let done = sqlx::query(&sql).execute(tx.conn()).await.unwrap();
        assert_eq!(done.rows_affected(), 0, "{sql}: only the platform path changes tenants");
    }
    tx.commit().await.unwrap();
    assert_eq!(snapshot(&w.db, &w.b).await, before, "B's rows are unchanged");
}

#[tokio::test]
async fn a_tenant_cannot_insert_rows_carrying_another_tenants_id() {
    let w = world().await;
    for (table, _) in TABLES {
        // B's tenant id and B's real parents: only row-level security stands in the way.
        let sql = w.b.insert(table, Uuid::new_v4());
        let mut tx = tenant_tx(&w.db, w.a.tenant).await;
        let err = sqlx::query(&sql).execute(tx.conn()).await.expect_err(&sql);
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
        tx.rollback().await.unwrap();
    }
    let mut tx = tenant_tx(&w.db, w.a.tenant).await;
    let err =
        sqlx::query("INSERT INTO tenants (name) VALUES ('rogue')").execute(tx.conn()).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    tx.rollback().await.unwrap();
    for (table, _) in TABLES {
        let mut tx = tenant_tx(&w.db, w.b.tenant).await;
        let n = count(tx.conn(), &format!("SELECT count(*) FROM {table} WHERE tenant_id = '{}'", w.b.tenant))
            .await;
        assert_eq!(n, 1, "{table}: nothing was added to B");
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn a_child_row_cannot_point_at_another_tenants_parent() {
    let w = world().await;
    // A's own tenant id, but B's project and conversation as parents.
    let mut forged = w.a.clone();
    forged.project = w.b.project;
    forged.conversation = w.b.conversation;
    forged.run = w.b.run;
    for table in ["conversations", "messages", "agent_runs", "agent_steps", "conversation_participants"] {
        let sql = forged.insert(table, Uuid::new_v4());
        let mut tx = tenant_tx(&w.db, w.a.tenant).await;
        let err = sqlx::query(&sql).execute(tx.conn()).await.expect_err(&sql);
        assert_eq!(sqlstate(&err).as_deref(), Some("23503"), "{sql}: {err}");
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn with_no_tenant_context_nothing_is_visible() {
    let w = world().await;
    let mut conn = PgConnection::connect(&env("DATABASE_URL")).await.unwrap();
    for (table, _) in TABLES {
        assert_eq!(count(&mut conn, &format!("SELECT count(*) FROM {table}")).await, 0, "{table}");
    }
    assert_eq!(count(&mut conn, "SELECT count(*) FROM tenants").await, 0);
    let err = sqlx::query(&w.a.insert("projects", Uuid::new_v4())).execute(&mut conn).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));

    // The platform path sees the registry and API keys (for lookup by hash), but no
    // other tenant table.
    let mut platform = w.db.begin_platform().await.unwrap();
    let n = count(
        platform.conn(),
        &format!("SELECT count(*) FROM tenants WHERE id IN ('{}', '{}')", w.a.tenant, w.b.tenant),
    )
    .await;
    assert_eq!(n, 2);
    for (table, _) in TABLES.iter().filter(|(t, _)| *t != "api_keys") {
        assert_eq!(count(platform.conn(), &format!("SELECT count(*) FROM {table}")).await, 0, "{table}");
    }
}

#[tokio::test]
async fn a_connection_back_in_the_pool_carries_no_tenant() {
    let w = world().await;
    // One connection, so the next transaction gets the very same one.
    let db = Database::connect_with(&env("DATABASE_URL"), 1).await.unwrap();

    let mut tx = tenant_tx(&db, w.a.tenant).await;
    let pid = backend_pid(tx.conn()).await;
    assert_eq!(count(tx.conn(), "SELECT count(*) FROM projects").await, 1);
    tx.commit().await.unwrap();

    // Committed, rolled back, or dropped mid-way: the next user sees no tenant.
    let dropped = tenant_tx(&db, w.a.tenant).await;
    drop(dropped);
    let mut platform = db.begin_platform().await.unwrap();
    let (setting, pid2): (Option<String>, i32) =
        sqlx::query_as("SELECT nullif(current_setting('app.tenant_id', true), ''), pg_backend_pid()")
            .fetch_one(platform.conn())
            .await
            .unwrap();
    assert_eq!(pid2, pid, "the same pooled connection");
    assert_eq!(setting, None);
    assert_eq!(count(platform.conn(), "SELECT count(*) FROM projects").await, 0);
    platform.commit().await.unwrap();

    let mut tx = tenant_tx(&db, w.b.tenant).await;
    assert_eq!(backend_pid(tx.conn()).await, pid);
    let visible: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM projects").fetch_all(tx.conn()).await.unwrap();
    assert_eq!(visible, vec![w.b.project], "B's transaction on A's old connection sees only B");
}

#[tokio::test]
async fn the_application_role_cannot_disable_rls_or_become_the_owner() {
    let _w = world().await;
    let mut conn = PgConnection::connect(&env("DATABASE_URL")).await.unwrap();
    let owner: String = {
        let mut admin = PgConnection::connect(&env("DATABASE_ADMIN_URL")).await.unwrap();
        sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut admin).await.unwrap()
    };
    let mut attempts: Vec<String> = TABLES
        .iter()
        .flat_map(|(t, _)| {
            [
                format!("ALTER TABLE {t} DISABLE ROW LEVEL SECURITY"),
                format!("ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY"),
                format!("DROP POLICY {t}_tenant ON {t}"),
            ]
        })
        .collect();
    attempts.extend([
        format!("SET ROLE {owner}"),
        "SET ROLE postgres".to_owned(),
        "ALTER ROLE CURRENT_USER BYPASSRLS".to_owned(),
        "SET SESSION AUTHORIZATION postgres".to_owned(),
        "CREATE OR REPLACE FUNCTION app.current_tenant_id() RETURNS uuid LANGUAGE sql AS 'SELECT NULL::uuid'"
            .to_owned(),
        "CREATE TABLE public.sneaky (id int)".to_owned(),
    ]);
    for sql in attempts {
        let err = sqlx::query(&sql).execute(&mut conn).await.expect_err(&sql);
        let code = sqlstate(&err);
        assert!(
            matches!(code.as_deref(), Some("42501") | Some("42704") | Some("22023")),
            "{sql}: unexpected {code:?}: {err}"
        );
    }
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!superuser && !bypass);
}

#[tokio::test]
async fn supabase_claims_select_the_tenant_the_same_way() {
    let w = world().await;
    let mut conn = PgConnection::connect(&env("DATABASE_URL")).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let claims = serde_json::json!({ "sub": Uuid::new_v4(), "app_metadata": { "tenant_id": w.a.tenant } });
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let visible: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM projects").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(visible, vec![w.a.project]);
    // A forged, non-UUID tenant claim matches nothing rather than erroring.
    sqlx::query("SELECT set_config('request.jwt.claims', '{\"tenant_id\": \"x'' OR 1=1\"}', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count(&mut tx, "SELECT count(*) FROM projects").await, 0);
}

#[tokio::test]
async fn private_conversations_are_visible_to_participants_and_admins_only() {
    let w = world().await;
    let (creator, participant, outsider) = (UserId::new(), UserId::new(), UserId::new());
    let tenant = TenantId(w.a.tenant);
    let ctx = |user, role| TenantContext::new(tenant, Some(user), role);
    let mut tx = w.db.begin(&ctx(creator, Role::Member)).await.unwrap();
    let private =
        switchboard_db::repo::conversations::create(&mut tx, None, w.a.project.into(), "secret", true)
            .await
            .unwrap();
    switchboard_db::repo::conversations::add_participant(&mut tx, private.id.into(), participant.as_uuid())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for (user, role, visible) in [
        (creator, Role::Member, true),
        (participant, Role::Member, true),
        (outsider, Role::Member, false),
        (outsider, Role::Admin, true),
    ] {
        let mut tx = w.db.begin(&ctx(user, role)).await.unwrap();
        let got = switchboard_db::repo::conversations::get(&mut tx, private.id.into()).await;
        assert_eq!(got.is_ok(), visible, "{role:?} participant={}", user == participant);
    }
}
