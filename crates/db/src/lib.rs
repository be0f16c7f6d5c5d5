//! The only door to Postgres.
//!
//! [`Database`] keeps its pool private. A tenant-scoped query can only run inside a
//! [`TenantTx`], which begins a transaction and sets `app.tenant_id`, `app.user_id`
//! and `app.role` with `set_config(…, true)` before anything else; row-level
//! security (forced on every tenant table) reads them through `app.current_tenant_id()`.
//! The tenants registry and API-key lookups go through the separate [`PlatformTx`].
//! Repositories in [`repo`] take one of those transactions, never the pool.
//!
//! At start the pool's role is checked: a superuser, a role with BYPASSRLS, or one
//! that owns tables would make the policies moot, so the node refuses to start.

mod breaker;
mod error;
mod guard;
mod migrate;
pub mod repo;

pub use error::DbError;
pub use guard::{PlatformTx, TenantContext, TenantTx};
pub use migrate::{MigrateReport, migrate};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;
use switchboard_domain::ErrorKind;

/// Pool size per node; Postgres sees `nodes × this` connections at most.
const MAX_CONNECTIONS: u32 = 16;

/// The application's handle on Postgres.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
    breaker: std::sync::Arc<breaker::Breaker>,
}

impl Database {
    /// Connects (eagerly: a node does not start without its database) and checks
    /// that the role cannot get around row-level security.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        Self::connect_with(url, MAX_CONNECTIONS).await
    }

    /// [`Self::connect`] with a pool of `max_connections`.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self, DbError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                DbError::Config(format!("DATABASE_URL is not a Postgres URL: {}", redact(&e.to_string())))
            })?
            .application_name("switchboard");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| {
                let text = e.to_string();
                let tls = matches!(e, sqlx::Error::Tls(_))
                    || text.contains("certificate")
                    || text.to_ascii_lowercase().contains("tls");
                if tls {
                    DbError::Config(format!(
                        "TLS to Postgres failed (check sslmode and sslrootcert in DATABASE_URL against the server's certificate): {}",
                        redact(&text)
                    ))
                } else {
                    DbError::Sqlx(e)
                }
            })?;
        let db = Self { pool, breaker: Default::default() };
        db.check_role().await?;
        Ok(db)
    }

    /// Refuses roles that bypass RLS: superusers, BYPASSRLS, and table owners
    /// (forced RLS binds owners too, but an owner can turn it off).
    async fn check_role(&self) -> Result<(), DbError> {
        let row = sqlx::query(
            "SELECT r.rolname, r.rolsuper, r.rolbypassrls,
                    (SELECT count(*) FROM pg_class c
                      WHERE c.relowner = r.oid AND c.relkind IN ('r', 'p')
                        AND c.relnamespace = 'public'::regnamespace) AS owned
               FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await?;
        let name: String = row.try_get("rolname")?;
        let owned: i64 = row.try_get("owned")?;
        if row.try_get::<bool, _>("rolsuper")? || row.try_get::<bool, _>("rolbypassrls")? || owned > 0 {
            return Err(DbError::Config(format!(
                "DATABASE_URL connects as `{name}`, which is a superuser, has BYPASSRLS or owns tables; \
                 use the application role that `switchboard migrate` creates"
            )));
        }
        Ok(())
    }

    /// Begins a transaction bound to one tenant (see [`TenantTx`]).
    pub async fn begin(&self, ctx: &TenantContext) -> Result<TenantTx, DbError> {
        self.guarded(TenantTx::begin(&self.pool, ctx)).await
    }

    /// Begins a transaction on the platform path (see [`PlatformTx`]).
    pub async fn begin_platform(&self) -> Result<PlatformTx, DbError> {
        self.guarded(PlatformTx::begin(&self.pool)).await
    }

    /// Runs `begin` unless the breaker is open ([`breaker`]), and tells the
    /// breaker what it found.
    async fn guarded<T>(&self, begin: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
        if !self.breaker.admit() {
            switchboard_telemetry::metrics().db_refused_fast.inc();
            return Err(DbError::Down);
        }
        let result = begin.await;
        self.breaker.record(matches!(&result, Err(e) if e.kind() == ErrorKind::Unavailable));
        result
    }

    /// One round trip, for readiness (never held back by the breaker, whose
    /// state it updates).
    pub async fn ping(&self) -> Result<(), DbError> {
        let result = sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(DbError::from);
        self.breaker.record(matches!(&result, Err(e) if e.kind() == ErrorKind::Unavailable));
        result
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Removes a password from text that may contain a connection URL.
pub(crate) fn redact(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &text[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!("{}{}:***{}", &text[..scheme + 3], &creds[..colon], &text[at..]),
                None => text.to_owned(),
            }
        }
        _ => text.to_owned(),
    }
}
