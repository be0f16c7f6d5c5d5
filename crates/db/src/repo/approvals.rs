//! The tenant's tool policy, and the approvals that hold tool calls it says
//! a person must allow. An approval is decided once: its row is locked, so
//! of two decisions at once (on two nodes) the second finds it decided and is
//! a conflict. A pending approval past its time is expired by the sweep
//! ([`tenants_with_due`] on the platform path, then [`expire_due`] inside
//! each tenant) and can no longer be decided.

use crate::{DbError, PlatformTx, TenantTx};
use chrono::{DateTime, Utc};
use serde_json::Value;
use switchboard_domain::policy::{ToolAction, ToolPolicy, ToolRule};
use switchboard_domain::{Role, TenantId};
use uuid::Uuid;

/// A policy as stored: its rules, default, version (each change adds one)
/// and who changed it last.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub policy: ToolPolicy,
    pub version: i32,
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    rules: Value,
    default_action: String,
    version: i32,
    updated_by: Option<String>,
    updated_at: DateTime<Utc>,
}

impl PolicyRow {
    fn stored(self) -> Result<StoredPolicy, DbError> {
        let rules: Vec<ToolRule> = serde_json::from_value(self.rules)
            .map_err(|e| DbError::Invalid(format!("the stored tool policy cannot be read: {e}")))?;
        let default_action = ToolAction::parse(&self.default_action).unwrap_or(ToolAction::Deny);
        Ok(StoredPolicy {
            policy: ToolPolicy { rules, default_action },
            version: self.version,
            updated_by: self.updated_by,
            updated_at: Some(self.updated_at),
        })
    }
}

/// The tenant's policy; every call allowed (version 0) until one is written.
pub async fn policy(tx: &mut TenantTx) -> Result<StoredPolicy, DbError> {
    let row: Option<PolicyRow> = sqlx::query_as(
        "SELECT rules, default_action, version, updated_by, updated_at FROM tool_policies WHERE tenant_id = $1",
    )
    .bind(tx.tenant_id().as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    match row {
        Some(row) => row.stored(),
        None => {
            Ok(StoredPolicy { policy: ToolPolicy::default(), version: 0, updated_by: None, updated_at: None })
        }
    }
}

/// Replaces the tenant's policy whole.
pub async fn put_policy(
    tx: &mut TenantTx,
    policy: &ToolPolicy,
    updated_by: &str,
) -> Result<StoredPolicy, DbError> {
    let rules = serde_json::to_value(&policy.rules)
        .map_err(|e| DbError::Invalid(format!("the rules cannot be stored: {e}")))?;
    let row: PolicyRow = sqlx::query_as(
        "INSERT INTO tool_policies (tenant_id, rules, default_action, updated_by)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE
            SET rules = EXCLUDED.rules, default_action = EXCLUDED.default_action,
                updated_by = EXCLUDED.updated_by, version = tool_policies.version + 1, updated_at = now()
         RETURNING rules, default_action, version, updated_by, updated_at",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(rules)
    .bind(policy.default_action.as_str())
    .bind(updated_by)
    .fetch_one(tx.conn())
    .await?;
    row.stored()
}

/// An approval, as stored and as clients see it (over REST, in acks and in
/// events).
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Approval {
    pub id: Uuid,
    pub project_id: Uuid,
    pub run_id: Uuid,
    /// The run's conversation, when it has one: its approvals are seen and
    /// announced only where the run is.
    pub conversation_id: Option<Uuid>,
    pub tool_call_id: Uuid,
    /// The tool the held call asks for.
    pub tool: String,
    /// The rule that held it.
    pub rule: String,
    /// Who may decide: roles of the tenant's people.
    pub approver_roles: Vec<String>,
    /// The person who recorded the held call, if a person did: they may not
    /// decide it.
    pub requested_by: Option<Uuid>,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    pub reason: Option<String>,
    pub decided_by: Option<Uuid>,
    pub decided_by_role: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// An approval's columns (`a`) with its run's conversation, from
/// [`from_visible`]. A pending approval past its time reads as `expired` (by
/// the database's clock) even before the sweep reaches it.
const COLUMNS: &str = "a.id, a.project_id, a.run_id, agent_runs.conversation_id, a.tool_call_id, a.tool, a.rule, \
     a.approver_roles, a.requested_by, CASE WHEN a.status = 'pending' AND a.expires_at <= now() THEN 'expired' ELSE a.status END \
     AS status, a.reason, a.decided_by, a.decided_by_role, a.decided_at, a.expires_at, a.created_at";

/// Approvals of runs the caller can see: a run in a private conversation is
/// visible only to those who see the conversation, and so are its approvals.
fn from_visible() -> String {
    format!(
        "approvals a JOIN agent_runs ON agent_runs.tenant_id = a.tenant_id AND agent_runs.id = a.run_id AND {}",
        super::runs::VISIBLE
    )
}

/// What holds a tool call: the call, its run's project, the rule that asked.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub project: Uuid,
    pub run: Uuid,
    pub tool_call: Uuid,
    pub tool: &'a str,
    pub rule: &'a str,
    pub approvers: &'a [Role],
    /// How long a person has to decide.
    pub ttl: std::time::Duration,
}

/// Creates the pending approval for a held call, or answers the one it
/// already has (the call was recorded before, under the same key).
pub async fn request(tx: &mut TenantTx, r: &Request<'_>) -> Result<Approval, DbError> {
    let roles: Vec<&str> = r.approvers.iter().map(|role| role.as_str()).collect();
    sqlx::query(
        "INSERT INTO approvals (tenant_id, project_id, run_id, tool_call_id, tool, rule, approver_roles, expires_at,
                                requested_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), $9)
         ON CONFLICT (tenant_id, tool_call_id) DO NOTHING",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(r.project)
    .bind(r.run)
    .bind(r.tool_call)
    .bind(r.tool)
    .bind(r.rule)
    .bind(&roles)
    .bind(r.ttl.as_secs_f64())
    .bind(tx.context().user_id.map(|u| u.as_uuid()))
    .execute(tx.conn())
    .await?;
    for_call(tx, r.tool_call).await?.ok_or(DbError::NotFound)
}

/// The approval holding a tool call, if any.
pub async fn for_call(tx: &mut TenantTx, tool_call: Uuid) -> Result<Option<Approval>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {} WHERE a.tenant_id = $1 AND a.tool_call_id = $2",
        from_visible()
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(tool_call)
    .fetch_optional(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Approval, DbError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM {} WHERE a.id = $1", from_visible()))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// Newest first, optionally of one status, before the cursor `before`, at
/// most `limit`. Pending ones past their time count as expired here even
/// before the sweep reaches them.
pub async fn list(
    tx: &mut TenantTx,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Approval>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT * FROM (
            SELECT {COLUMNS} FROM {from}
             WHERE a.tenant_id = $1
               AND ($3::uuid IS NULL OR (a.created_at, a.id) < (SELECT created_at, id FROM approvals WHERE id = $3))) shown
          WHERE ($2::text IS NULL OR status = $2)
          ORDER BY created_at DESC, id DESC LIMIT $4",
        from = from_visible()
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(status)
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    fn status(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
        }
    }
}

/// Decides a pending approval, once: by a person whose role the rule names.
/// Its tool call is cleared to run (`pending`) or ends `rejected`. Already
/// decided or past its time: a conflict, nothing changed.
pub async fn decide(
    tx: &mut TenantTx,
    id: Uuid,
    decision: Decision,
    reason: Option<&str>,
) -> Result<Approval, DbError> {
    let ctx = *tx.context();
    // Locked: of two decisions at once, the second waits, then finds it decided.
    let current: Approval =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM {} WHERE a.id = $1 FOR UPDATE OF a", from_visible()))
            .bind(id)
            .fetch_optional(tx.conn())
            .await?
            .ok_or(DbError::NotFound)?;
    if current.status != "pending" {
        return Err(DbError::Conflict(format!("the approval was already {}", current.status)));
    }
    if ctx.user_id.is_some() && ctx.user_id.map(|u| u.as_uuid()) == current.requested_by {
        return Err(DbError::Forbidden(
            "you recorded this call: someone else whose role the rule names decides it".to_owned(),
        ));
    }
    let role = ctx.role.as_str();
    if ctx.user_id.is_none() || !current.approver_roles.iter().any(|r| r == role) {
        return Err(DbError::Forbidden(format!(
            "rule `{}` lets only {} decide this approval",
            current.rule,
            current.approver_roles.join(" or ")
        )));
    }
    let done = sqlx::query(
        "UPDATE approvals SET status = $2, reason = $3, decided_by = $4, decided_by_role = $5, decided_at = now()
          WHERE id = $1 AND status = 'pending' AND expires_at > now()",
    )
    .bind(id)
    .bind(decision.status())
    .bind(reason)
    .bind(ctx.user_id.map(|u| u.as_uuid()))
    .bind(role)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(DbError::Conflict("the approval expired before it was decided".to_owned()));
    }
    let decided = get(tx, id).await?;
    let call_status = if decision == Decision::Approve { "pending" } else { "rejected" };
    sqlx::query(
        "UPDATE tool_calls SET status = $2, finished_at = CASE WHEN $2 = 'rejected' THEN now() END
          WHERE tenant_id = $3 AND id = $1 AND status = 'pending_approval'",
    )
    .bind(decided.tool_call_id)
    .bind(call_status)
    .bind(tx.tenant_id().as_uuid())
    .execute(tx.conn())
    .await?;
    Ok(decided)
}

/// The most approvals one tenant's sweep expires at once.
const EXPIRE_BATCH: i64 = 500;

/// Expires the tenant's pending approvals past their time, oldest first, at
/// most [`EXPIRE_BATCH`] (their tool calls end `expired`); the ones it
/// expired.
pub async fn expire_due(tx: &mut TenantTx) -> Result<Vec<Approval>, DbError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE approvals SET status = 'expired', decided_at = now()
          WHERE id IN (SELECT id FROM approvals
                        WHERE tenant_id = $1 AND status = 'pending' AND expires_at <= now()
                        ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
          RETURNING id",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(EXPIRE_BATCH)
    .fetch_all(tx.conn())
    .await?;
    let expired: Vec<Approval> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {} WHERE a.id = ANY($1) ORDER BY a.expires_at",
        from_visible()
    ))
    .bind(&ids)
    .fetch_all(tx.conn())
    .await?;
    let calls: Vec<Uuid> = expired.iter().map(|a| a.tool_call_id).collect();
    sqlx::query(
        "UPDATE tool_calls SET status = 'expired', finished_at = now()
          WHERE tenant_id = $1 AND id = ANY($2) AND status = 'pending_approval'",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(&calls)
    .execute(tx.conn())
    .await?;
    Ok(expired)
}

/// Tenants with pending approvals past their time, at most `limit`.
pub async fn tenants_with_due(tx: &mut PlatformTx, limit: i64) -> Result<Vec<TenantId>, DbError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM approvals WHERE status = 'pending' AND expires_at <= now()
          GROUP BY tenant_id ORDER BY min(expires_at) LIMIT $1",
    )
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    Ok(ids.into_iter().map(TenantId::from).collect())
}
