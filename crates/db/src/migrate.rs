//! `switchboard migrate`: applies `migrations/` as the owner (under sqlx's advisory
//! lock, so one of many nodes migrates) and ensures the application role exists:
//! LOGIN, no superuser, no BYPASSRLS, owning nothing, a member of
//! `switchboard_runtime`, which holds exactly the grants the migrations give it.

use crate::{DbError, redact};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Row};
use std::str::FromStr;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<i64>,
    pub app_role: String,
    pub app_role_created: bool,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Migrates the database at `admin_url` and provisions the login role named in
/// `app_url` (its user and password).
pub async fn migrate(admin_url: &str, app_url: &str) -> Result<MigrateReport, DbError> {
    let bad = |var: &str, e: sqlx::Error| {
        DbError::Config(format!("{var} is not a Postgres URL: {}", redact(&e.to_string())))
    };
    let admin = PgConnectOptions::from_str(admin_url).map_err(|e| bad("DATABASE_ADMIN_URL", e))?;
    let app = PgConnectOptions::from_str(app_url).map_err(|e| bad("DATABASE_URL", e))?;
    let app_user = app.get_username().to_owned();
    let app_password = app_url_password(app_url);

    let admin = admin.application_name("switchboard-migrate").disable_statement_logging();
    let pool = PgPoolOptions::new().max_connections(2).connect_with(admin).await?;
    let owner: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&pool).await?;
    if owner == app_user {
        return Err(DbError::Config(format!(
            "DATABASE_URL and DATABASE_ADMIN_URL both connect as `{owner}`; the application needs its own role \
             that owns no table (set DATABASE_URL to another user)"
        )));
    }

    let before: Vec<i64> = applied_versions(&pool).await.unwrap_or_default();
    MIGRATOR.run(&pool).await?;
    let after = applied_versions(&pool).await?;
    let applied = after.into_iter().filter(|v| !before.contains(v)).collect();

    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(&app_user)
        .fetch_one(&pool)
        .await?;
    let ident = quote_ident(&app_user);
    let password =
        app_password.as_deref().map(|p| format!(" PASSWORD {}", quote_literal(p))).unwrap_or_default();
    if !exists {
        sqlx::query(&format!(
            "CREATE ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT{password}"
        ))
        .execute(&pool)
        .await?;
    } else if !password.is_empty() {
        sqlx::query(&format!("ALTER ROLE {ident} LOGIN{password}")).execute(&pool).await?;
    }
    sqlx::query(&format!("GRANT switchboard_runtime TO {ident}")).execute(&pool).await?;
    let db: String = sqlx::query_scalar("SELECT current_database()::text").fetch_one(&pool).await?;
    sqlx::query(&format!("GRANT CONNECT ON DATABASE {} TO {ident}", quote_ident(&db))).execute(&pool).await?;

    let row = sqlx::query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
        .bind(&app_user)
        .fetch_one(&pool)
        .await?;
    if row.try_get::<bool, _>("rolsuper")? || row.try_get::<bool, _>("rolbypassrls")? {
        return Err(DbError::Config(format!(
            "the application role `{app_user}` is a superuser or has BYPASSRLS; make it an ordinary role"
        )));
    }
    pool.close().await;
    Ok(MigrateReport { applied, app_role: app_user, app_role_created: !exists })
}

async fn applied_versions(pool: &sqlx::PgPool) -> Result<Vec<i64>, DbError> {
    Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await?)
}

/// The password in a URL, percent-decoded (PgConnectOptions does not expose it).
fn app_url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let raw = userinfo.split_once(':')?.1;
    Some(percent_decode(raw))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_read_and_percent_decoded_from_the_url() {
        assert_eq!(app_url_password("postgres://app:p%40ss@h:1/db").as_deref(), Some("p@ss"));
        assert_eq!(app_url_password("postgres://app@h/db"), None);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
