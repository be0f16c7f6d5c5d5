//! The tenant guard: transactions that carry their tenant from the first statement.
//!
//! `set_config(name, value, true)` is local to the transaction, so the setting ends
//! with commit or rollback and a connection back in the pool carries no tenant.
//! Dropping a guard without `commit` rolls back.

use crate::DbError;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use switchboard_domain::{Principal, Role, TenantId, UserId};

/// Who a tenant transaction acts for; RLS sees these as `app.tenant_id`,
/// `app.user_id` and `app.role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantContext {
    pub tenant_id: TenantId,
    pub user_id: Option<UserId>,
    pub role: Role,
}

impl TenantContext {
    pub fn new(tenant_id: TenantId, user_id: Option<UserId>, role: Role) -> Self {
        Self { tenant_id, user_id, role }
    }

    /// The context of a tenant principal; `None` for platform operators.
    pub fn for_principal(principal: &Principal) -> Option<Self> {
        Some(Self {
            tenant_id: principal.tenant_id()?,
            user_id: principal.user_id(),
            role: principal.role()?,
        })
    }
}

/// How long a transaction lasted and how it ended, for the metrics; with
/// traces on, the transaction's span (closed with it).
struct TxTimer {
    kind: &'static str,
    started: std::time::Instant,
    outcome: &'static str,
    span: tracing::Span,
}

impl TxTimer {
    fn start(kind: &'static str, tenant: Option<TenantId>) -> Self {
        let span = if switchboard_telemetry::trace::in_trace() {
            let tenant = tenant.map(|t| t.to_string()).unwrap_or_default();
            tracing::info_span!(
                "db.transaction",
                "otel.kind" = "client",
                kind,
                "db.system.name" = "postgresql",
                "db.operation.name" = "transaction",
                tenant_id = %tenant,
                outcome = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        // Dropped without commit: the transaction rolls back.
        Self { kind, started: std::time::Instant::now(), outcome: "rollback", span }
    }

    fn ended(&mut self, committed: bool) {
        self.outcome = if committed { "commit" } else { "error" };
    }
}

impl Drop for TxTimer {
    fn drop(&mut self) {
        self.span.record("outcome", self.outcome);
        switchboard_telemetry::metrics().transaction(self.kind, self.outcome, self.started.elapsed());
    }
}

/// A transaction in which every statement is bound to one tenant by RLS.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    ctx: TenantContext,
    timer: TxTimer,
}

impl std::fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantTx").field("ctx", &self.ctx).finish()
    }
}

impl TenantTx {
    pub(crate) async fn begin(pool: &PgPool, ctx: &TenantContext) -> Result<Self, DbError> {
        // BEGIN and the context in one round trip (a simple query may hold several
        // statements). Inlining is safe: the values are a UUID's and a role's
        // canonical text, which cannot contain a quote.
        let user = ctx.user_id.map(|u| u.to_string()).unwrap_or_default();
        let begin = format!(
            "BEGIN; SELECT set_config('app.tenant_id', '{}', true), set_config('app.user_id', '{user}', true), \
             set_config('app.role', '{}', true)",
            ctx.tenant_id,
            ctx.role.as_str()
        );
        let mut timer = TxTimer::start("tenant", Some(ctx.tenant_id));
        let tx = match pool.begin_with(begin).await {
            Ok(tx) => tx,
            Err(e) => {
                timer.ended(false);
                return Err(e.into());
            }
        };
        Ok(Self { tx, ctx: *ctx, timer })
    }

    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    pub fn tenant_id(&self) -> TenantId {
        self.ctx.tenant_id
    }

    /// The transaction's connection, tenant already set. For repositories (and
    /// tests that probe the policies); whatever runs here is bound by RLS.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), DbError> {
        let Self { tx, mut timer, .. } = self;
        let result = tx.commit().await;
        timer.ended(result.is_ok());
        Ok(result?)
    }

    pub async fn rollback(self) -> Result<(), DbError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// A transaction on the platform path: the tenants registry and API-key lookup by
/// hash. It sets `app.platform = 'on'` and no tenant, so tenant tables show only
/// what their platform policies allow (API keys, for lookup).
pub struct PlatformTx {
    tx: Transaction<'static, Postgres>,
    timer: TxTimer,
}

impl std::fmt::Debug for PlatformTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformTx")
    }
}

impl PlatformTx {
    pub(crate) async fn begin(pool: &PgPool) -> Result<Self, DbError> {
        let mut timer = TxTimer::start("platform", None);
        let tx = match pool.begin_with("BEGIN; SELECT set_config('app.platform', 'on', true)").await {
            Ok(tx) => tx,
            Err(e) => {
                timer.ended(false);
                return Err(e.into());
            }
        };
        Ok(Self { tx, timer })
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Binds the rest of this transaction to `tenant` as well, so a platform action
    /// on a tenant (create, patch) writes that tenant's audit row atomically with it.
    pub async fn act_for(&mut self, tenant: TenantId) -> Result<(), DbError> {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true), set_config('app.role', 'service', true)")
            .bind(tenant.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), DbError> {
        let Self { tx, mut timer } = self;
        let result = tx.commit().await;
        timer.ended(result.is_ok());
        Ok(result?)
    }
}
