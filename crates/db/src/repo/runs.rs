//! Agent runs, their steps and tool calls, and the usage they report.
//!
//! Every write that reports usage (a step's tokens and cost, a status change
//! carrying the run's totals) adds it to the run and to the tenant's daily
//! `usage_metrics` in the same transaction. Steps, tool calls and status changes
//! lock the run's row first, so step numbers are gap-free and a finished run
//! takes nothing more. Writes that carry an idempotency key store once per key
//! (`ON CONFLICT DO NOTHING`, then the stored row); the same key again answers
//! with what was stored, and the same key for a different request is a
//! conflict.

use super::Created;
use super::usage;
use crate::{DbError, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::{ConversationId, ProjectId, RunId, RunStatus};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub project_id: Uuid,
    pub conversation_id: Option<Uuid>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub agent: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// Decimal as text, so costs keep their precision in JSON.
    pub cost_usd: String,
    pub idempotency_key: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Run {
    pub fn status(&self) -> RunStatus {
        status_of(&self.status)
    }
}

/// A status column's value; the CHECK constraint keeps any other text out.
fn status_of(column: &str) -> RunStatus {
    column.parse().unwrap_or(RunStatus::Failed)
}

/// What a write on a run recorded: something new, with the run as it now
/// stands (for its watchers), or what an earlier request with the same
/// idempotency key recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded<T> {
    New(T, Box<Run>),
    Replayed(T),
}

impl<T> Recorded<T> {
    /// The item, as new or replayed.
    pub fn into_created(self) -> Created<T> {
        match self {
            Recorded::New(item, _) => Created::New(item),
            Recorded::Replayed(item) => Created::Replayed(item),
        }
    }
}

const RUN_COLUMNS: &str = "id, project_id, conversation_id, status, agent, input, output, error, tokens_in, \
     tokens_out, cost_usd::text AS cost_usd, idempotency_key, created_by, created_at, updated_at, started_at, finished_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct Step {
    pub id: Uuid,
    pub run_id: Uuid,
    /// 1, 2, 3, … in the order the steps were appended.
    pub seq: i32,
    pub kind: String,
    pub content: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

const STEP_COLUMNS: &str = "id, run_id, seq, kind, content, data, tokens_in, tokens_out, \
     cost_usd::text AS cost_usd, idempotency_key, created_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct ToolCall {
    pub id: Uuid,
    pub run_id: Uuid,
    pub step_id: Option<Uuid>,
    pub name: String,
    #[schema(value_type = Object)]
    pub arguments: Value,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub status: String,
    pub latency_ms: Option<i32>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const TOOL_CALL_COLUMNS: &str = "id, run_id, step_id, name, arguments, result, status, latency_ms, \
     idempotency_key, created_at, finished_at";

/// Usage a write reports; `cost_usd` is a decimal in text (at most 6 places).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: Option<String>,
}

impl Usage {
    fn cost(&self) -> &str {
        self.cost_usd.as_deref().unwrap_or("0")
    }

    /// The non-zero metrics, for `usage_metrics`.
    fn metrics(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.tokens_in != 0 {
            out.push(("tokens_in", self.tokens_in.to_string()));
        }
        if self.tokens_out != 0 {
            out.push(("tokens_out", self.tokens_out.to_string()));
        }
        if let Some(cost) = &self.cost_usd {
            out.push(("cost_usd", cost.clone()));
        }
        out
    }
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub project: ProjectId,
    pub conversation: Option<ConversationId>,
    pub agent: &'a str,
    pub input: &'a Value,
    pub idempotency_key: Option<&'a str>,
}

/// Creates a run in `queued` (once per idempotency key) and counts it in usage.
pub async fn create(tx: &mut TenantTx, new: &NewRun<'_>) -> Result<Created<Run>, DbError> {
    let (tenant, user) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    let inserted: Option<Run> = sqlx::query_as(&format!(
        "INSERT INTO agent_runs (tenant_id, project_id, conversation_id, agent, input, idempotency_key, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING {RUN_COLUMNS}"
    ))
    .bind(tenant)
    .bind(new.project.as_uuid())
    .bind(new.conversation.map(|c| c.as_uuid()))
    .bind(new.agent)
    .bind(new.input)
    .bind(new.idempotency_key)
    .bind(user)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(run) = inserted {
        usage::add_many(tx, &[("runs", "1".to_owned())]).await?;
        return Ok(Created::New(run));
    }
    let existing: Run = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM agent_runs WHERE tenant_id = $1 AND idempotency_key = $2"
    ))
    .bind(tenant)
    .bind(new.idempotency_key)
    .fetch_one(tx.conn())
    .await?;
    let same = existing.project_id == new.project.as_uuid()
        && existing.conversation_id == new.conversation.map(|c| c.as_uuid())
        && existing.agent == new.agent
        && existing.input == *new.input;
    if !same {
        return Err(DbError::IdempotencyMismatch);
    }
    Ok(Created::Replayed(existing))
}

/// A run by id; another tenant's id is simply not found.
pub async fn get(tx: &mut TenantTx, id: RunId) -> Result<Run, DbError> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM agent_runs WHERE id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// Filters for [`list`]; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<RunStatus>,
    pub project: Option<ProjectId>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// Newest first, matching `filter`, older than the run `before`, at most `limit`.
pub async fn list(
    tx: &mut TenantTx,
    filter: &Filter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Run>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM agent_runs
          WHERE tenant_id = $1
            AND ($2::text IS NULL OR status = $2)
            AND ($3::uuid IS NULL OR project_id = $3)
            AND ($4::timestamptz IS NULL OR created_at >= $4)
            AND ($5::timestamptz IS NULL OR created_at < $5)
            AND ($6::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM agent_runs WHERE id = $6 AND tenant_id = $1))
          ORDER BY created_at DESC, id DESC LIMIT $7"
    ))
    .bind(tenant)
    .bind(filter.status.map(RunStatus::as_str))
    .bind(filter.project.map(|p| p.as_uuid()))
    .bind(filter.since)
    .bind(filter.until)
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// The run's steps in order, at most `limit`.
pub async fn steps(tx: &mut TenantTx, run: RunId, limit: i64) -> Result<Vec<Step>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {STEP_COLUMNS} FROM agent_steps WHERE tenant_id = $1 AND run_id = $2 ORDER BY seq LIMIT $3"
    ))
    .bind(tenant)
    .bind(run.as_uuid())
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// The run's tool calls in the order they were recorded, at most `limit`.
pub async fn tool_calls(tx: &mut TenantTx, run: RunId, limit: i64) -> Result<Vec<ToolCall>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {TOOL_CALL_COLUMNS} FROM tool_calls WHERE tenant_id = $1 AND run_id = $2
          ORDER BY created_at, id LIMIT $3"
    ))
    .bind(tenant)
    .bind(run.as_uuid())
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// Locks the run's row for this transaction and returns its status.
async fn lock(tx: &mut TenantTx, run: RunId) -> Result<RunStatus, DbError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM agent_runs WHERE id = $1 FOR UPDATE")
        .bind(run.as_uuid())
        .fetch_optional(tx.conn())
        .await?;
    status.as_deref().map(status_of).ok_or(DbError::NotFound)
}

/// Adds `usage` to the run (and touches it), and to the tenant's daily metrics.
async fn add_usage(tx: &mut TenantTx, run: RunId, usage: &Usage) -> Result<Run, DbError> {
    let updated: Run = sqlx::query_as(&format!(
        "UPDATE agent_runs SET tokens_in = tokens_in + $2, tokens_out = tokens_out + $3,
                cost_usd = cost_usd + $4::numeric, updated_at = now()
          WHERE id = $1 RETURNING {RUN_COLUMNS}"
    ))
    .bind(run.as_uuid())
    .bind(usage.tokens_in)
    .bind(usage.tokens_out)
    .bind(usage.cost())
    .fetch_one(tx.conn())
    .await?;
    add_metrics(tx, usage).await?;
    Ok(updated)
}

/// Adds `usage` to the tenant's daily metrics.
async fn add_metrics(tx: &mut TenantTx, usage: &Usage) -> Result<(), DbError> {
    let metrics = usage.metrics();
    if metrics.is_empty() { Ok(()) } else { usage::add_many(tx, &metrics).await }
}

/// A change to a run: a status move, its output or error, and usage to add.
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    pub status: Option<RunStatus>,
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
    pub usage: Usage,
}

/// Applies `change` if the run's state allows it: a status move must be one the
/// state machine allows (else a conflict naming both ends), and a finished run
/// takes no other change.
pub async fn update(tx: &mut TenantTx, run: RunId, change: &Change<'_>) -> Result<Run, DbError> {
    let current = lock(tx, run).await?;
    match change.status {
        Some(next) if !current.can_become(next) => {
            return Err(DbError::Conflict(format!("a run cannot move from {current} to {next}")));
        }
        None if current.is_finished() => {
            return Err(DbError::Conflict(format!("the run has {current}; it does not change any more")));
        }
        _ => {}
    }
    let next = change.status.unwrap_or(current);
    let updated: Run = sqlx::query_as(&format!(
        "UPDATE agent_runs SET status = $2, output = COALESCE($3, output), error = COALESCE($4, error),
                tokens_in = tokens_in + $5, tokens_out = tokens_out + $6, cost_usd = cost_usd + $7::numeric,
                started_at = CASE WHEN $2 = 'running' THEN now() ELSE started_at END,
                finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled') THEN now() ELSE finished_at END,
                updated_at = now()
          WHERE id = $1 RETURNING {RUN_COLUMNS}"
    ))
    .bind(run.as_uuid())
    .bind(next.as_str())
    .bind(change.output)
    .bind(change.error)
    .bind(change.usage.tokens_in)
    .bind(change.usage.tokens_out)
    .bind(change.usage.cost())
    .fetch_one(tx.conn())
    .await?;
    add_metrics(tx, &change.usage).await?;
    Ok(updated)
}

/// A step to append.
#[derive(Debug, Clone)]
pub struct NewStep<'a> {
    pub kind: &'a str,
    pub content: &'a str,
    pub data: &'a Value,
    pub usage: Usage,
    pub idempotency_key: Option<&'a str>,
}

/// The row of `table` stored under the idempotency `key`, if any.
async fn by_key<T>(
    tx: &mut TenantTx,
    table: &str,
    columns: &str,
    key: Option<&str>,
) -> Result<Option<T>, DbError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let Some(key) = key else { return Ok(None) };
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {columns} FROM {table} WHERE tenant_id = $1 AND idempotency_key = $2"
    ))
    .bind(tenant)
    .bind(key)
    .fetch_optional(tx.conn())
    .await?)
}

fn replayed_step(run: RunId, new: &NewStep<'_>, existing: Step) -> Result<Recorded<Step>, DbError> {
    let same = existing.run_id == run.as_uuid()
        && existing.kind == new.kind
        && existing.content == new.content
        && existing.data == *new.data;
    if same { Ok(Recorded::Replayed(existing)) } else { Err(DbError::IdempotencyMismatch) }
}

/// Appends a step with the run's next sequence number and adds its usage to
/// the run and the tenant. A repeated key answers the stored step, also once
/// the run has finished.
pub async fn append_step(
    tx: &mut TenantTx,
    run: RunId,
    new: &NewStep<'_>,
) -> Result<Recorded<Step>, DbError> {
    let status = lock(tx, run).await?;
    if !status.is_finished() {
        let tenant = tx.tenant_id().as_uuid();
        let inserted: Option<Step> = sqlx::query_as(&format!(
            "INSERT INTO agent_steps (tenant_id, run_id, seq, kind, content, data, tokens_in, tokens_out, cost_usd, idempotency_key)
             VALUES ($1, $2, (SELECT COALESCE(max(seq), 0) + 1 FROM agent_steps WHERE tenant_id = $1 AND run_id = $2),
                     $3, $4, $5, $6, $7, $8::numeric, $9)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
             RETURNING {STEP_COLUMNS}"
        ))
        .bind(tenant)
        .bind(run.as_uuid())
        .bind(new.kind)
        .bind(new.content)
        .bind(new.data)
        .bind(new.usage.tokens_in)
        .bind(new.usage.tokens_out)
        .bind(new.usage.cost())
        .bind(new.idempotency_key)
        .fetch_optional(tx.conn())
        .await?;
        if let Some(step) = inserted {
            return Ok(Recorded::New(step, Box::new(add_usage(tx, run, &new.usage).await?)));
        }
    }
    match by_key(tx, "agent_steps", STEP_COLUMNS, new.idempotency_key).await? {
        Some(existing) => replayed_step(run, new, existing),
        None if status.is_finished() => Err(finished(status)),
        // The row under the key went with its run meanwhile.
        None => Err(DbError::Conflict("nothing was recorded; retry".to_owned())),
    }
}

/// Why nothing was recorded on a run that was locked and had no row under the
/// request's key: it has finished.
fn finished(status: RunStatus) -> DbError {
    DbError::Conflict(format!("the run has {status}; nothing more is recorded on it"))
}

/// A tool call to record.
#[derive(Debug, Clone)]
pub struct NewToolCall<'a> {
    /// The sequence number of the step it belongs to, if any.
    pub step: Option<i32>,
    pub name: &'a str,
    pub arguments: &'a Value,
    pub result: Option<&'a Value>,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub status: &'a str,
    pub latency_ms: Option<i32>,
    pub idempotency_key: Option<&'a str>,
}

fn replayed_tool_call(
    run: RunId,
    new: &NewToolCall<'_>,
    existing: ToolCall,
) -> Result<Recorded<ToolCall>, DbError> {
    let same = existing.run_id == run.as_uuid()
        && existing.name == new.name
        && existing.arguments == *new.arguments
        && existing.status == new.status
        && existing.result.as_ref() == new.result;
    if same { Ok(Recorded::Replayed(existing)) } else { Err(DbError::IdempotencyMismatch) }
}

/// Records a tool call on an open run. A repeated key answers the stored
/// call, also once the run has finished.
pub async fn add_tool_call(
    tx: &mut TenantTx,
    run: RunId,
    new: &NewToolCall<'_>,
) -> Result<Recorded<ToolCall>, DbError> {
    let status = lock(tx, run).await?;
    if !status.is_finished() {
        let tenant = tx.tenant_id().as_uuid();
        let step_id = match new.step {
            None => None,
            Some(seq) => {
                let id: Option<Uuid> = sqlx::query_scalar(
                    "SELECT id FROM agent_steps WHERE tenant_id = $1 AND run_id = $2 AND seq = $3",
                )
                .bind(tenant)
                .bind(run.as_uuid())
                .bind(seq)
                .fetch_optional(tx.conn())
                .await?;
                Some(id.ok_or_else(|| DbError::Invalid(format!("the run has no step {seq}")))?)
            }
        };
        let inserted: Option<ToolCall> = sqlx::query_as(&format!(
            "INSERT INTO tool_calls (tenant_id, run_id, step_id, name, arguments, result, status, latency_ms, idempotency_key, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $7 IN ('succeeded', 'failed') THEN now() END)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
             RETURNING {TOOL_CALL_COLUMNS}"
        ))
        .bind(tenant)
        .bind(run.as_uuid())
        .bind(step_id)
        .bind(new.name)
        .bind(new.arguments)
        .bind(new.result)
        .bind(new.status)
        .bind(new.latency_ms)
        .bind(new.idempotency_key)
        .fetch_optional(tx.conn())
        .await?;
        if let Some(call) = inserted {
            return Ok(Recorded::New(call, Box::new(add_usage(tx, run, &Usage::default()).await?)));
        }
    }
    match by_key(tx, "tool_calls", TOOL_CALL_COLUMNS, new.idempotency_key).await? {
        Some(existing) => replayed_tool_call(run, new, existing),
        None if status.is_finished() => Err(finished(status)),
        // The row under the key went with its run meanwhile.
        None => Err(DbError::Conflict("nothing was recorded; retry".to_owned())),
    }
}
