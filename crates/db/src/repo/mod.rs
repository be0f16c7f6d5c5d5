//! Repositories, one module per aggregate. Each function takes the transaction
//! that scopes it ([`TenantTx`](crate::TenantTx) or, for the registry,
//! [`PlatformTx`](crate::PlatformTx)); none can reach the pool.

pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod conversations;
pub mod hooks;
pub mod invalidations;
pub mod knowledge;
pub mod messages;
pub mod projects;
pub mod runs;
pub mod secrets;
pub mod seed;
pub mod tasks;
pub mod tenants;
pub mod usage;
pub mod webhooks;

/// The outcome of a write that honours an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Created<T> {
    /// Stored now.
    New(T),
    /// The key was used before for this same request: what it stored then.
    Replayed(T),
}

impl<T> Created<T> {
    /// The same outcome for the item turned into something else (a view).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Created<U> {
        match self {
            Created::New(item) => Created::New(f(item)),
            Created::Replayed(item) => Created::Replayed(f(item)),
        }
    }
}

/// The outcome of a change aimed at one row: done, or not found (absent, or not
/// visible to this tenant, which RLS makes the same thing).
pub(crate) fn one_row(done: sqlx::postgres::PgQueryResult) -> Result<(), crate::DbError> {
    if done.rows_affected() == 0 { Err(crate::DbError::NotFound) } else { Ok(()) }
}

/// A row found under an idempotency key, with the fingerprint stored beside it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Keyed<T> {
    #[sqlx(flatten)]
    pub row: T,
    pub idempotency_fingerprint: Option<Vec<u8>>,
}

impl<T> Keyed<T> {
    /// The stored row if `fingerprint` is the request's that stored it: the same
    /// request again. Anything else under the key (any field different, another
    /// sender, or a key stored before fingerprints) is a conflict.
    pub(crate) fn replay(self, fingerprint: &switchboard_domain::Fingerprint) -> Result<T, crate::DbError> {
        let stored =
            self.idempotency_fingerprint.as_deref().and_then(switchboard_domain::Fingerprint::from_bytes);
        if stored.as_ref() == Some(fingerprint) {
            Ok(self.row)
        } else {
            Err(crate::DbError::IdempotencyMismatch)
        }
    }
}

/// The row of `table` stored under the idempotency `key` in the transaction's
/// tenant, with its fingerprint.
pub(crate) async fn by_key<T>(
    tx: &mut crate::TenantTx,
    table: &str,
    columns: &str,
    key: &switchboard_domain::IdempotencyKey,
) -> Result<Option<Keyed<T>>, crate::DbError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {columns}, idempotency_fingerprint FROM {table} WHERE tenant_id = $1 AND idempotency_key = $2"
    ))
    .bind(tenant)
    .bind(key.as_str())
    .fetch_optional(tx.conn())
    .await?)
}

/// Who sends a request, as its fingerprint sees them: the same body from
/// another user (or from an API key instead of a user) is another request.
#[derive(serde::Serialize)]
pub struct Sender {
    user: Option<uuid::Uuid>,
    service: bool,
}

impl Sender {
    pub fn of(ctx: &crate::TenantContext) -> Self {
        Self {
            user: ctx.user_id.map(|u| u.as_uuid()),
            service: ctx.role == switchboard_domain::Role::Service,
        }
    }
}

/// One page of a list bounded in count and in bytes: `more` says another page
/// follows (the count or the byte budget ran out first).
#[derive(Debug, Clone, PartialEq)]
pub struct Slice<T> {
    pub items: Vec<T>,
    pub more: bool,
}

/// A row of a byte-bounded page query: `page_bytes` is the running total of
/// the page's sizes up to and including this row. Such queries select at most
/// `limit + 1` rows and keep the first two and every row whose preceding total
/// is within the budget, so at most one row beyond the page comes back (the
/// first row is the page's even past the budget: the second says more follow).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Sized<T> {
    #[sqlx(flatten)]
    pub row: T,
    pub page_bytes: i64,
}

/// The SQL of a byte-bounded page, read as [`Sized`] rows and cut by
/// [`bounded`]: the rows of `from_where` in `order`, each `size` bytes (an
/// expression over the row), at most `$4 + 1` of them, and past the second
/// none whose preceding total is past `$5`. `$1` to `$3` are the caller's.
pub(crate) fn bounded_page_sql(columns: &str, size: &str, from_where: &str, order: &str) -> String {
    format!(
        "SELECT {columns}, page_bytes FROM (
           SELECT *, (sum(size) OVER w)::bigint AS page_bytes, (sum(size) OVER w - size)::bigint AS before_bytes,
                  row_number() OVER w AS n
             FROM (SELECT *, ({size})::bigint AS size FROM {from_where} ORDER BY {order} LIMIT $4 + 1) candidates
           WINDOW w AS (ORDER BY {order})) page
          WHERE before_bytes <= $5 OR n <= 2
          ORDER BY {order}"
    )
}

/// The page: at most `limit` rows and, after the first, none past `max_bytes`.
pub(crate) fn bounded<T>(rows: Vec<Sized<T>>, limit: i64, max_bytes: i64) -> Slice<T> {
    let mut items = Vec::with_capacity(rows.len().min(limit.max(1) as usize));
    let mut more = false;
    for (i, r) in rows.into_iter().enumerate() {
        if i as i64 >= limit || (i > 0 && r.page_bytes > max_bytes) {
            more = true;
            break;
        }
        items.push(r.row);
    }
    Slice { items, more }
}
