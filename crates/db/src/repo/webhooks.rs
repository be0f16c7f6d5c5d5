//! Outbound webhooks: a tenant's endpoints, the outbox of deliveries that
//! changes write in their own transaction ([`emit`]), and what the delivery
//! workers need: finding due endpoints of every tenant and taking their lease
//! (platform path), then reading and settling deliveries inside the
//! endpoint's tenant, in the endpoint's order.

use crate::{DbError, PlatformTx, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::TenantId;
use uuid::Uuid;

/// Every event type an endpoint may subscribe to, by category. An endpoint
/// names types, a whole category (`task.*`) or everything (`*`).
pub const EVENT_TYPES: &[&str] = &[
    "message.created",
    "run.created",
    "run.updated",
    "task.created",
    "task.updated",
    "approval.requested",
    "approval.decided",
    "document.created",
    "document.ready",
    "document.failed",
    "document.deleted",
];

/// Writes event `event_type` with `data` to the outbox of every endpoint of
/// the transaction's tenant that subscribes to it: the body is
/// `{ type, timestamp, data }`, its id (`webhook-id`) fresh. Call it in the
/// transaction that makes the change, last, so the event goes out if and
/// only if the change commits (and the endpoints' rows are locked briefly).
pub async fn event(tx: &mut TenantTx, event_type: &'static str, data: Value) -> Result<(), DbError> {
    debug_assert!(EVENT_TYPES.contains(&event_type), "{event_type} is not a known event type");
    let id = format!("msg_{}", Uuid::new_v4().simple());
    let body = serde_json::json!({
        "type": event_type,
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    });
    emit(tx, &id, event_type, &body).await?;
    Ok(())
}

/// An endpoint as its tenant's admins see it (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    /// Event types, categories (`task.*`) or `*`.
    pub events: Vec<String>,
    /// A disabled endpoint is sent nothing and queues nothing.
    pub enabled: bool,
    /// Bumped each time the signing secret is rotated.
    pub secret_version: i32,
    /// After a rotation, until when the previous secret still signs beside
    /// the new one (deliveries carry both signatures).
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Deliveries waiting to be sent, in order.
    pub pending: i64,
    /// Failed attempts in a row.
    pub failures: i32,
    /// `closed`, or `open` (too many failures in a row: nothing is tried
    /// until `open_until`).
    pub circuit: String,
    pub open_until: Option<DateTime<Utc>>,
    /// When the next attempt is due while deliveries wait.
    pub retry_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, url, description, events, enabled, secret_version,
    CASE WHEN previous_until > now() THEN previous_until END AS previous_secret_until,
    last_seq - settled_seq AS pending, failures,
    CASE WHEN open_until > now() THEN 'open' ELSE 'closed' END AS circuit,
    CASE WHEN open_until > now() THEN open_until END AS open_until,
    retry_at, created_by, created_at, updated_at";

/// One delivery of one event to one endpoint, with how it went.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// Its place in the endpoint's order.
    pub seq: i64,
    /// Sent as `webhook-id`.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (given up after its last attempt).
    pub status: String,
    pub attempts: i32,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub redelivery_of: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// The body sent: `{ type, timestamp, data }`.
    #[schema(value_type = Object)]
    pub payload: Value,
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, seq, event_id, event_type, status, attempts, last_status,
    last_error, last_attempt_at, delivered_at, redelivery_of, created_at, payload";

/// What changes in an endpoint; `None` leaves it as it is.
#[derive(Debug, Default)]
pub struct EndpointChange<'a> {
    pub url: Option<&'a str>,
    pub description: Option<&'a str>,
    pub events: Option<&'a [String]>,
    pub enabled: Option<bool>,
    /// A new sealed secret and its version.
    pub secret: Option<(&'a [u8], i32)>,
}

pub async fn create(
    tx: &mut TenantTx,
    id: Uuid,
    url: &str,
    description: &str,
    events: &[String],
    sealed: &[u8],
    by: &str,
) -> Result<Endpoint, DbError> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, description, events, secret_sealed, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(tx.tenant_id().as_uuid())
    .bind(url)
    .bind(description)
    .bind(events)
    .bind(sealed)
    .bind(by)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn list(tx: &mut TenantTx, before: Option<Uuid>, limit: i64) -> Result<Vec<Endpoint>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
          WHERE tenant_id = $1
            AND ($2::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM webhook_endpoints
                                                          WHERE tenant_id = $1 AND id = $2))
          ORDER BY created_at DESC, id DESC LIMIT $3"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Endpoint, DbError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"))
        .bind(tx.tenant_id().as_uuid())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// What signs an endpoint's deliveries.
#[derive(Debug, sqlx::FromRow)]
pub struct Signing {
    pub url: String,
    pub sealed: Vec<u8>,
    pub version: i32,
    /// The previous secret (version `version - 1`), while it still signs.
    pub previous: Option<Vec<u8>>,
}

/// Endpoint `id`'s URL and sealed secrets, for signing.
pub async fn signing(tx: &mut TenantTx, id: Uuid) -> Result<Signing, DbError> {
    sqlx::query_as(
        "SELECT url, secret_sealed AS sealed, secret_version AS version,
                CASE WHEN previous_until > now() THEN previous_sealed END AS previous
           FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// The current secret version of endpoint `id`, its row locked (so two
/// rotations do not both draw the same next version).
pub async fn lock_secret_version(tx: &mut TenantTx, id: Uuid) -> Result<i32, DbError> {
    let row: Option<(i32,)> = sqlx::query_as(
        "SELECT secret_version FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    row.map(|(v,)| v).ok_or(DbError::NotFound)
}

pub async fn update(tx: &mut TenantTx, id: Uuid, change: &EndpointChange<'_>) -> Result<Endpoint, DbError> {
    sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET
                url = COALESCE($3, url),
                description = COALESCE($4, description),
                events = COALESCE($5, events),
                enabled = COALESCE($6, enabled),
                previous_sealed = CASE WHEN $7 IS NOT NULL THEN secret_sealed ELSE previous_sealed END,
                previous_until = CASE WHEN $7 IS NOT NULL THEN now() + interval '24 hours' ELSE previous_until END,
                secret_sealed = COALESCE($7, secret_sealed),
                secret_version = COALESCE($8, secret_version),
                -- A re-enabled or re-pointed endpoint starts with a closed circuit.
                failures = CASE WHEN $3 IS NOT NULL OR $6 THEN 0 ELSE failures END,
                open_until = CASE WHEN $3 IS NOT NULL OR $6 THEN NULL ELSE open_until END,
                retry_at = CASE WHEN $3 IS NOT NULL OR $6 THEN now() ELSE retry_at END,
                -- A worker holding it must not go on with the old URL or
                -- secret: its lease ends, and the next claim reads them anew.
                locked_by = CASE WHEN $3 IS NOT NULL OR $6 IS NOT NULL OR $7 IS NOT NULL THEN NULL ELSE locked_by END,
                locked_until = CASE WHEN $3 IS NOT NULL OR $6 IS NOT NULL OR $7 IS NOT NULL THEN NULL ELSE locked_until END,
                updated_at = now()
          WHERE tenant_id = $1 AND id = $2
          RETURNING {COLUMNS}"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(id)
    .bind(change.url)
    .bind(change.description)
    .bind(change.events)
    .bind(change.enabled)
    .bind(change.secret.map(|(s, _)| s))
    .bind(change.secret.map(|(_, v)| v))
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn delete(tx: &mut TenantTx, id: Uuid) -> Result<(), DbError> {
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
        .bind(tx.tenant_id().as_uuid())
        .bind(id)
        .execute(tx.conn())
        .await?;
    super::one_row(done)
}

/// Writes event `event_type` (with `payload`, the whole body) to the outbox
/// of every enabled endpoint of the transaction's tenant that subscribes to
/// it, under `event_id`. Each endpoint's row stays locked until the
/// transaction ends, so its deliveries are numbered in commit order. Returns
/// how many deliveries were written.
pub async fn emit(
    tx: &mut TenantTx,
    event_id: &str,
    event_type: &str,
    payload: &Value,
) -> Result<u64, DbError> {
    let category = event_type.split_once('.').map_or(event_type, |(c, _)| c);
    let matches = [event_type.to_owned(), format!("{category}.*"), "*".to_owned()];
    let done = sqlx::query(
        "WITH targets AS (
             SELECT id FROM webhook_endpoints
              WHERE tenant_id = $1 AND enabled AND events && $2::text[]
              ORDER BY id FOR UPDATE),
         numbered AS (
             UPDATE webhook_endpoints e SET last_seq = e.last_seq + 1
               FROM targets t WHERE e.id = t.id AND e.tenant_id = $1
             RETURNING e.id, e.last_seq)
         INSERT INTO webhook_deliveries (tenant_id, endpoint_id, seq, event_id, event_type, payload)
         SELECT $1, n.id, n.last_seq, $3, $4, $5 FROM numbered n",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(&matches[..])
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}

/// Endpoint `endpoint`'s deliveries, newest first, a page before `before`.
pub async fn deliveries(
    tx: &mut TenantTx,
    endpoint: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Delivery>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
          WHERE tenant_id = $1 AND endpoint_id = $2
            AND ($3::uuid IS NULL OR seq < (SELECT seq FROM webhook_deliveries
                                             WHERE tenant_id = $1 AND id = $3 AND endpoint_id = $2))
          ORDER BY seq DESC LIMIT $4"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(endpoint)
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// Queues delivery `delivery` of `endpoint` again, at the end of the
/// endpoint's order, with the same event id and body.
pub async fn redeliver(tx: &mut TenantTx, endpoint: Uuid, delivery: Uuid) -> Result<Delivery, DbError> {
    sqlx::query_as(&format!(
        "WITH source AS (
             SELECT event_id, event_type, payload FROM webhook_deliveries
              WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3),
         numbered AS (
             UPDATE webhook_endpoints SET last_seq = last_seq + 1
              WHERE tenant_id = $1 AND id = $2 AND EXISTS (SELECT 1 FROM source)
             RETURNING last_seq)
         INSERT INTO webhook_deliveries (tenant_id, endpoint_id, seq, event_id, event_type, payload, redelivery_of)
         SELECT $1, $2, n.last_seq, s.event_id, s.event_type, s.payload, $3 FROM numbered n, source s
         RETURNING {DELIVERY_COLUMNS}"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(endpoint)
    .bind(delivery)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// An endpoint a worker holds: until its lease runs out, no other node sends
/// its deliveries.
#[derive(Debug, Clone)]
pub struct Claim {
    pub endpoint: Uuid,
    pub tenant: TenantId,
    pub holder: String,
}

/// Takes the lease on up to `n` endpoints of any tenant that have pending
/// deliveries and are due, for `lease`. Not `SKIP LOCKED`: the changes that
/// write an endpoint's deliveries hold its row until they commit, and a busy
/// endpoint would be skipped for ever; this waits for them (a commit), then
/// takes the lease only if it is still free.
pub async fn claim(
    tx: &mut PlatformTx,
    node: &str,
    n: i64,
    lease: std::time::Duration,
) -> Result<Vec<Claim>, DbError> {
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "UPDATE webhook_endpoints e SET locked_by = $1 || '/' || gen_random_uuid()::text,
                locked_until = now() + make_interval(secs => $3)
          WHERE e.id IN (SELECT id FROM webhook_endpoints
                          WHERE enabled AND settled_seq < last_seq AND retry_at <= now()
                            AND (locked_until IS NULL OR locked_until < now())
                          ORDER BY retry_at LIMIT $2)
            AND e.enabled AND (e.locked_until IS NULL OR e.locked_until < now())
          RETURNING e.id, e.tenant_id, e.locked_by",
    )
    .bind(node)
    .bind(n)
    .bind(lease.as_secs_f64())
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(endpoint, tenant, holder)| Claim { endpoint, tenant: TenantId::from(tenant), holder })
        .collect())
}

/// The lease of `claim` renewed for `lease` from now, its row locked until
/// the transaction ends, and the endpoint's failures in a row; `None` when
/// the lease is no longer this claim's (or the endpoint was disabled).
pub async fn hold(
    tx: &mut TenantTx,
    claim: &Claim,
    lease: std::time::Duration,
) -> Result<Option<i32>, DbError> {
    let row: Option<(i32,)> = sqlx::query_as(
        "UPDATE webhook_endpoints SET locked_until = now() + make_interval(secs => $4)
          WHERE tenant_id = $1 AND id = $2 AND locked_by = $3 AND enabled
          RETURNING failures",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(claim.endpoint)
    .bind(&claim.holder)
    .bind(lease.as_secs_f64())
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.map(|(f,)| f))
}

/// A delivery to send: its number, event id and body.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: Uuid,
    pub seq: i64,
    pub event_id: String,
    pub attempts: i32,
    pub payload: Value,
}

/// The next `limit` pending deliveries of `endpoint`, in order.
pub async fn due(tx: &mut TenantTx, endpoint: Uuid, limit: i64) -> Result<Vec<Due>, DbError> {
    Ok(sqlx::query_as(
        "SELECT d.id, d.seq, d.event_id, d.attempts, d.payload
           FROM webhook_deliveries d JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
          WHERE d.tenant_id = $1 AND d.endpoint_id = $2 AND d.seq > e.settled_seq
          ORDER BY d.seq LIMIT $3",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(endpoint)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// A 2xx answer.
    Delivered { status: i32 },
    /// Anything else. `give_up`: it was the delivery's last attempt, and the
    /// endpoint moves on to the next. Otherwise the endpoint waits until
    /// `retry_at` (and its circuit opens until then when `open`).
    Failed { status: Option<i32>, error: String, give_up: bool, retry_after: std::time::Duration, open: bool },
}

/// Records attempt `attempt` of delivery `due` of `claim`'s endpoint (whose
/// row `hold` locked in this transaction).
pub async fn settle(tx: &mut TenantTx, claim: &Claim, due: &Due, attempt: &Attempt) -> Result<(), DbError> {
    let tenant = tx.tenant_id().as_uuid();
    let (status, code, error, settled) = match attempt {
        Attempt::Delivered { status } => ("delivered", Some(*status), None, true),
        Attempt::Failed { status, error, give_up, .. } => {
            (if *give_up { "failed" } else { "pending" }, *status, Some(error.as_str()), *give_up)
        }
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $4, attempts = attempts + 1, last_status = $5,
                last_error = $6, last_attempt_at = now(),
                delivered_at = CASE WHEN $4 = 'delivered' THEN now() END
          WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3",
    )
    .bind(tenant)
    .bind(claim.endpoint)
    .bind(due.id)
    .bind(status)
    .bind(code)
    .bind(error)
    .execute(tx.conn())
    .await?;
    match attempt {
        Attempt::Delivered { .. } => {
            sqlx::query(
                "UPDATE webhook_endpoints SET settled_seq = GREATEST(settled_seq, $3), failures = 0,
                        open_until = NULL, retry_at = now()
                  WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(claim.endpoint)
            .bind(due.seq)
            .execute(tx.conn())
            .await?;
        }
        Attempt::Failed { retry_after, open, .. } => {
            sqlx::query(
                "UPDATE webhook_endpoints SET
                        settled_seq = CASE WHEN $3 THEN GREATEST(settled_seq, $4) ELSE settled_seq END,
                        failures = failures + 1,
                        retry_at = now() + make_interval(secs => $5),
                        open_until = CASE WHEN $6 THEN now() + make_interval(secs => $5) ELSE open_until END
                  WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(claim.endpoint)
            .bind(settled)
            .bind(due.seq)
            .bind(retry_after.as_secs_f64())
            .bind(open)
            .execute(tx.conn())
            .await?;
        }
    }
    Ok(())
}

/// Puts off `claim`'s endpoint for `delay` (it could not be worked at all:
/// its secret did not open, Postgres failed), without counting an attempt.
pub async fn defer(tx: &mut TenantTx, claim: &Claim, delay: std::time::Duration) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE webhook_endpoints SET retry_at = now() + make_interval(secs => $4)
          WHERE tenant_id = $1 AND id = $2 AND locked_by = $3",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(claim.endpoint)
    .bind(&claim.holder)
    .bind(delay.as_secs_f64())
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Gives back the lease of `claim`, so the endpoint may be claimed again as
/// soon as it is due.
pub async fn release(tx: &mut TenantTx, claim: &Claim) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE webhook_endpoints SET locked_by = NULL, locked_until = NULL
          WHERE tenant_id = $1 AND id = $2 AND locked_by = $3",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(claim.endpoint)
    .bind(&claim.holder)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Gives back the leases node `node` holds (it is stopping); any it cannot
/// take at once run out on their own.
pub async fn release_node(tx: &mut PlatformTx, node: &str) -> Result<u64, DbError> {
    Ok(sqlx::query(
        "UPDATE webhook_endpoints SET locked_by = NULL, locked_until = NULL
          WHERE id IN (SELECT id FROM webhook_endpoints WHERE starts_with(locked_by, $1 || '/')
                        ORDER BY id FOR UPDATE SKIP LOCKED)",
    )
    .bind(node)
    .execute(tx.conn())
    .await?
    .rows_affected())
}

/// Deletes up to `batch` settled deliveries (delivered or given up) of any
/// tenant older than `retention`; how many.
pub async fn prune(tx: &mut PlatformTx, retention: std::time::Duration, batch: i64) -> Result<u64, DbError> {
    Ok(sqlx::query(
        "DELETE FROM webhook_deliveries WHERE id IN (
             SELECT id FROM webhook_deliveries
              WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1)
              LIMIT $2)",
    )
    .bind(retention.as_secs_f64())
    .bind(batch)
    .execute(tx.conn())
    .await?
    .rows_affected())
}

/// How many endpoints the transaction's tenant has.
pub async fn count(tx: &mut TenantTx) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1")
        .bind(tx.tenant_id().as_uuid())
        .fetch_one(tx.conn())
        .await?)
}
