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

use super::{Created, Sender, Sized, Slice, bounded, bounded_page_sql, by_key, usage};
use crate::{DbError, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::{ConversationId, Fingerprint, IdempotencyKey, ProjectId, RunId, RunStatus};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Run {
    pub id: Uuid,
    pub project_id: Uuid,
    pub conversation_id: Option<Uuid>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub agent: String,
    pub input: Value,
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
    /// The task it works on, if any.
    pub task_id: Option<Uuid>,
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

/// A run tied to a conversation is visible only to those who can see the
/// conversation (the subquery runs under the conversations policy, which knows
/// private ones); a run of no conversation, to the whole tenant.
pub(crate) const VISIBLE: &str = "(conversation_id IS NULL OR EXISTS (SELECT 1 FROM conversations c \
     WHERE c.tenant_id = agent_runs.tenant_id AND c.id = agent_runs.conversation_id))";

const RUN_COLUMNS: &str = "id, project_id, conversation_id, status, agent, input, output, error, tokens_in, \
     tokens_out, cost_usd::text AS cost_usd, idempotency_key, created_by, created_at, updated_at, started_at, finished_at, task_id";

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Step {
    pub id: Uuid,
    pub run_id: Uuid,
    /// 1, 2, 3, … in the order the steps were appended.
    pub seq: i32,
    pub kind: String,
    pub content: String,
    pub data: Value,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

const STEP_COLUMNS: &str = "id, run_id, seq, kind, content, data, tokens_in, tokens_out, \
     cost_usd::text AS cost_usd, idempotency_key, created_at";

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct ToolCall {
    pub id: Uuid,
    pub run_id: Uuid,
    pub step_id: Option<Uuid>,
    pub name: String,
    pub arguments: Value,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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

/// A run to create. Every field but the key is part of the request's fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct NewRun<'a> {
    pub project: ProjectId,
    pub conversation: Option<ConversationId>,
    pub agent: &'a str,
    pub input: &'a Value,
    /// Left out of the request's fingerprint when absent, so keys stored
    /// before runs had tasks still replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Uuid>,
    #[serde(skip)]
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

/// Creates a run in `queued` (once per idempotency key) and counts it in usage.
/// A conversation it names must be one the caller can see, in the run's
/// project: otherwise it is not found, exactly as if it did not exist. So
/// must a task it works on.
pub async fn create(tx: &mut TenantTx, new: &NewRun<'_>) -> Result<Created<Run>, DbError> {
    if let Some(conversation) = new.conversation {
        let visible = super::conversations::get(tx, conversation).await?;
        if visible.project_id != new.project.as_uuid() {
            return Err(DbError::NotFound);
        }
    }
    if let Some(task) = new.task {
        let task = super::tasks::get(tx, task).await?;
        if task.project_id != new.project.as_uuid() {
            return Err(DbError::NotFound);
        }
    }
    let (tenant, user) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    let fingerprint = new.idempotency_key.map(|_| Fingerprint::of("run", &(Sender::of(tx.context()), new)));
    let inserted: Option<Run> = sqlx::query_as(&format!(
        "INSERT INTO agent_runs (tenant_id, project_id, conversation_id, agent, input, idempotency_key,
                                 idempotency_fingerprint, created_by, task_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING {RUN_COLUMNS}"
    ))
    .bind(tenant)
    .bind(new.project.as_uuid())
    .bind(new.conversation.map(|c| c.as_uuid()))
    .bind(new.agent)
    .bind(new.input)
    .bind(new.idempotency_key.map(IdempotencyKey::as_str))
    .bind(fingerprint.as_ref().map(Fingerprint::as_bytes))
    .bind(user)
    .bind(new.task)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(run) = inserted {
        usage::add_many(tx, &[("runs", "1".to_owned())]).await?;
        return Ok(Created::New(run));
    }
    let (Some(key), Some(fingerprint)) = (new.idempotency_key, fingerprint) else {
        return Err(DbError::Conflict("the run conflicts with a stored one".to_owned()));
    };
    let stored = by_key::<Run>(tx, "agent_runs", RUN_COLUMNS, key).await?;
    let stored = stored.ok_or_else(|| DbError::Conflict("nothing was stored; retry".to_owned()))?;
    Ok(Created::Replayed(stored.replay(&fingerprint)?))
}

/// A run by id; another tenant's id is simply not found.
pub async fn get(tx: &mut TenantTx, id: RunId) -> Result<Run, DbError> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM agent_runs WHERE id = $1 AND {VISIBLE}"))
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

/// A run without its input and output: what lists and project watchers see.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct RunSummary {
    pub id: Uuid,
    pub project_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub status: String,
    pub agent: String,
    pub error: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&Run> for RunSummary {
    fn from(r: &Run) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            conversation_id: r.conversation_id,
            status: r.status.clone(),
            agent: r.agent.clone(),
            error: r.error.clone(),
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_usd: r.cost_usd.clone(),
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

const SUMMARY_COLUMNS: &str = "id, project_id, conversation_id, status, agent, error, tokens_in, tokens_out, \
     cost_usd::text AS cost_usd, created_by, created_at, updated_at, started_at, finished_at";

/// Newest first, matching `filter`, older than the run `before`, at most
/// `limit`, as summaries (a run's input and output are read one run at a time).
pub async fn list(
    tx: &mut TenantTx,
    filter: &Filter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<RunSummary>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM agent_runs
          WHERE tenant_id = $1 AND {VISIBLE}
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

/// The run's steps after sequence number `after` in order: at most `limit`
/// and, after the first, at most `max_bytes` of content and data.
pub async fn steps(
    tx: &mut TenantTx,
    run: RunId,
    after: i32,
    limit: i64,
    max_bytes: i64,
) -> Result<Slice<Step>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    let rows: Vec<Sized<Step>> = sqlx::query_as(&bounded_page_sql(
        STEP_COLUMNS,
        "octet_length(content) + octet_length(data::text)",
        "agent_steps WHERE tenant_id = $1 AND run_id = $2 AND seq > $3",
        "seq",
    ))
    .bind(tenant)
    .bind(run.as_uuid())
    .bind(after)
    .bind(limit)
    .bind(max_bytes)
    .fetch_all(tx.conn())
    .await?;
    Ok(bounded(rows, limit, max_bytes))
}

/// The run's tool calls in the order they were recorded, after the call
/// `after`: at most `limit` and, after the first, at most `max_bytes` of
/// arguments and results.
pub async fn tool_calls(
    tx: &mut TenantTx,
    run: RunId,
    after: Option<Uuid>,
    limit: i64,
    max_bytes: i64,
) -> Result<Slice<ToolCall>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    let rows: Vec<Sized<ToolCall>> = sqlx::query_as(&bounded_page_sql(
        TOOL_CALL_COLUMNS,
        "octet_length(arguments::text) + coalesce(octet_length(result::text), 0)",
        "tool_calls WHERE tenant_id = $1 AND run_id = $2
           AND ($3::uuid IS NULL OR (created_at, id) >
                (SELECT created_at, id FROM tool_calls WHERE id = $3 AND tenant_id = $1 AND run_id = $2))",
        "created_at, id",
    ))
    .bind(tenant)
    .bind(run.as_uuid())
    .bind(after)
    .bind(limit)
    .bind(max_bytes)
    .fetch_all(tx.conn())
    .await?;
    Ok(bounded(rows, limit, max_bytes))
}

/// Locks the run's row for this transaction and returns its status.
async fn lock(tx: &mut TenantTx, run: RunId) -> Result<RunStatus, DbError> {
    let status: Option<String> =
        sqlx::query_scalar(&format!("SELECT status FROM agent_runs WHERE id = $1 AND {VISIBLE} FOR UPDATE"))
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

/// A step to append. Every field but the key (and the run it goes to) is part
/// of the request's fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct NewStep<'a> {
    pub kind: &'a str,
    pub content: &'a str,
    pub data: &'a Value,
    pub usage: Usage,
    #[serde(skip)]
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

/// What a write under an idempotency key found when its insert did not happen:
/// the stored row replayed if it was the same request, else why not.
async fn replayed<T>(
    tx: &mut TenantTx,
    (table, columns): (&str, &str),
    key: Option<(&IdempotencyKey, Fingerprint)>,
    status: RunStatus,
) -> Result<Recorded<T>, DbError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let stored = match key {
        Some((key, _)) => by_key::<T>(tx, table, columns, key).await?,
        None => None,
    };
    match (stored, key) {
        (Some(stored), Some((_, fingerprint))) => Ok(Recorded::Replayed(stored.replay(&fingerprint)?)),
        _ if status.is_finished() => Err(finished(status)),
        // The row under the key went with its run meanwhile.
        _ => Err(DbError::Conflict("nothing was recorded; retry".to_owned())),
    }
}

/// Appends a step with the run's next sequence number and adds its usage to
/// the run and the tenant. A repeated key answers the stored step, also once
/// the run has finished.
pub async fn append_step(
    tx: &mut TenantTx,
    run: RunId,
    new: &NewStep<'_>,
) -> Result<Recorded<Step>, DbError> {
    let key =
        new.idempotency_key.map(|k| (k, Fingerprint::of("step", &(Sender::of(tx.context()), run, new))));
    let status = lock(tx, run).await?;
    if !status.is_finished() {
        let tenant = tx.tenant_id().as_uuid();
        let inserted: Option<Step> = sqlx::query_as(&format!(
            "INSERT INTO agent_steps (tenant_id, run_id, seq, kind, content, data, tokens_in, tokens_out, cost_usd,
                                      idempotency_key, idempotency_fingerprint)
             VALUES ($1, $2, (SELECT COALESCE(max(seq), 0) + 1 FROM agent_steps WHERE tenant_id = $1 AND run_id = $2),
                     $3, $4, $5, $6, $7, $8::numeric, $9, $10)
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
        .bind(key.map(|(k, _)| k.as_str()))
        .bind(key.as_ref().map(|(_, f)| f.as_bytes()))
        .fetch_optional(tx.conn())
        .await?;
        if let Some(step) = inserted {
            return Ok(Recorded::New(step, Box::new(add_usage(tx, run, &new.usage).await?)));
        }
    }
    replayed(tx, ("agent_steps", STEP_COLUMNS), key, status).await
}

/// Why nothing was recorded on a run that was locked and had no row under the
/// request's key: it has finished.
fn finished(status: RunStatus) -> DbError {
    DbError::Conflict(format!("the run has {status}; nothing more is recorded on it"))
}

/// A tool call to record. Every field but the key (and the run it goes to) is
/// part of the request's fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct NewToolCall<'a> {
    /// The sequence number of the step it belongs to, if any.
    pub step: Option<i32>,
    pub name: &'a str,
    pub arguments: &'a Value,
    pub result: Option<&'a Value>,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub status: &'a str,
    pub latency_ms: Option<i32>,
    #[serde(skip)]
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

/// Records a tool call on an open run. A repeated key answers the stored
/// call, also once the run has finished.
pub async fn add_tool_call(
    tx: &mut TenantTx,
    run: RunId,
    new: &NewToolCall<'_>,
) -> Result<Recorded<ToolCall>, DbError> {
    let key =
        new.idempotency_key.map(|k| (k, Fingerprint::of("tool_call", &(Sender::of(tx.context()), run, new))));
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
            "INSERT INTO tool_calls (tenant_id, run_id, step_id, name, arguments, result, status, latency_ms,
                                     idempotency_key, idempotency_fingerprint, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $7 IN ('succeeded', 'failed') THEN now() END)
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
        .bind(key.map(|(k, _)| k.as_str()))
        .bind(key.as_ref().map(|(_, f)| f.as_bytes()))
        .fetch_optional(tx.conn())
        .await?;
        if let Some(call) = inserted {
            return Ok(Recorded::New(call, Box::new(add_usage(tx, run, &Usage::default()).await?)));
        }
    }
    replayed(tx, ("tool_calls", TOOL_CALL_COLUMNS), key, status).await
}

/// What a worker reports of a call an approval cleared.
#[derive(Debug, Clone)]
pub struct ApprovedOutcome<'a> {
    pub approval: Uuid,
    pub name: &'a str,
    pub result: Option<&'a Value>,
    /// `running`, `succeeded` or `failed`.
    pub status: &'a str,
    pub latency_ms: Option<i32>,
}

/// Records how a call an approval cleared went, on the call itself (the
/// policy is not asked again: a person allowed this call). The approval must
/// be this run's, for this tool, and approved; the call not yet finished.
pub async fn report_approved_call(
    tx: &mut TenantTx,
    run: RunId,
    outcome: &ApprovedOutcome<'_>,
) -> Result<(ToolCall, Run), DbError> {
    let status = lock(tx, run).await?;
    if status.is_finished() {
        return Err(DbError::Conflict(format!("the run has {status}; nothing more is recorded on it")));
    }
    let approval = super::approvals::get(tx, outcome.approval).await?;
    if approval.run_id != run.as_uuid() {
        return Err(DbError::Invalid("approval_id: the approval is another run's".to_owned()));
    }
    if approval.tool != outcome.name {
        return Err(DbError::Invalid(format!("name: the approval is for `{}`", approval.tool)));
    }
    if approval.status != "approved" {
        return Err(DbError::Conflict(format!(
            "the approval is {}; only an approved call runs",
            approval.status
        )));
    }
    let call: Option<ToolCall> = sqlx::query_as(&format!(
        "UPDATE tool_calls SET status = $3, result = COALESCE($4, result), latency_ms = COALESCE($5, latency_ms),
                finished_at = CASE WHEN $3 IN ('succeeded', 'failed') THEN now() END
          WHERE tenant_id = $1 AND id = $2 AND status IN ('pending', 'running')
          RETURNING {TOOL_CALL_COLUMNS}"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(approval.tool_call_id)
    .bind(outcome.status)
    .bind(outcome.result)
    .bind(outcome.latency_ms)
    .fetch_optional(tx.conn())
    .await?;
    let call =
        call.ok_or_else(|| DbError::Conflict("the approved call was already reported finished".to_owned()))?;
    Ok((call, add_usage(tx, run, &Usage::default()).await?))
}
