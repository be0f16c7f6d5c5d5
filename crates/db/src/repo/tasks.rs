//! Tasks of the current tenant's projects: what people and agents work on,
//! moved along `todo → in_progress → waiting_approval → done | cancelled`
//! (see [`TaskStatus::can_move_to`]), with the runs that worked on them.

use super::{Created, Sender, by_key};
use crate::{DbError, TenantTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use switchboard_domain::{Fingerprint, IdempotencyKey, ProjectId};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Todo,
    InProgress,
    WaitingApproval,
    Done,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Todo => "todo",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::WaitingApproval => "waiting_approval",
            TaskStatus::Done => "done",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    fn parse(column: &str) -> Self {
        match column {
            "in_progress" => TaskStatus::InProgress,
            "waiting_approval" => TaskStatus::WaitingApproval,
            "done" => TaskStatus::Done,
            "cancelled" => TaskStatus::Cancelled,
            _ => TaskStatus::Todo,
        }
    }

    /// The moves a task may make: work starts, waits for a person and
    /// resumes, ends done; it may be cancelled until it ends. Done and
    /// cancelled are final.
    pub fn can_move_to(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (Todo, InProgress | Cancelled)
                | (InProgress, WaitingApproval | Done | Cancelled)
                | (WaitingApproval, InProgress | Done | Cancelled)
        )
    }

    /// The statuses a task may move to `next` from.
    fn sources_of(next: TaskStatus) -> Vec<&'static str> {
        use TaskStatus::*;
        [Todo, InProgress, WaitingApproval, Done, Cancelled]
            .into_iter()
            .filter(|from| from.can_move_to(next))
            .map(TaskStatus::as_str)
            .collect()
    }
}

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Task {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: String,
    pub assignee_user_id: Option<Uuid>,
    pub assignee_agent: Option<String>,
    pub created_by: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Task {
    pub fn status(&self) -> TaskStatus {
        TaskStatus::parse(&self.status)
    }
}

const COLUMNS: &str = "id, project_id, title, description, status, assignee_user_id, assignee_agent, created_by, \
     idempotency_key, created_at, updated_at";

/// Who a task is for: a person, an agent (by name), or no one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Assignee {
    User(Uuid),
    Agent(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct NewTask<'a> {
    pub project: ProjectId,
    pub title: &'a str,
    pub description: &'a str,
    pub assignee: Option<Assignee>,
    #[serde(skip)]
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

/// Creates a task in `todo` (once per idempotency key).
pub async fn create(tx: &mut TenantTx, new: &NewTask<'_>) -> Result<Created<Task>, DbError> {
    super::projects::get(tx, new.project).await?;
    let (tenant, user) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    let fingerprint = new.idempotency_key.map(|_| Fingerprint::of("task", &(Sender::of(tx.context()), new)));
    let (assignee_user, assignee_agent) = split(new.assignee.as_ref());
    let inserted: Option<Task> = sqlx::query_as(&format!(
        "INSERT INTO tasks (tenant_id, project_id, title, description, assignee_user_id, assignee_agent,
                            created_by, idempotency_key, idempotency_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(new.project.as_uuid())
    .bind(new.title)
    .bind(new.description)
    .bind(assignee_user)
    .bind(assignee_agent)
    .bind(user)
    .bind(new.idempotency_key.map(IdempotencyKey::as_str))
    .bind(fingerprint.as_ref().map(Fingerprint::as_bytes))
    .fetch_optional(tx.conn())
    .await?;
    if let Some(task) = inserted {
        return Ok(Created::New(task));
    }
    let (Some(key), Some(fingerprint)) = (new.idempotency_key, fingerprint) else {
        return Err(DbError::Conflict("the task conflicts with a stored one".to_owned()));
    };
    let stored = by_key::<Task>(tx, "tasks", COLUMNS, key).await?;
    let stored = stored.ok_or_else(|| DbError::Conflict("nothing was stored; retry".to_owned()))?;
    Ok(Created::Replayed(stored.replay(&fingerprint)?))
}

fn split(assignee: Option<&Assignee>) -> (Option<Uuid>, Option<&str>) {
    match assignee {
        None => (None, None),
        Some(Assignee::User(id)) => (Some(*id), None),
        Some(Assignee::Agent(name)) => (None, Some(name.as_str())),
    }
}

/// A task by id; another tenant's is not found.
pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Task, DbError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// A project's tasks, newest first, optionally of one status, before the
/// cursor `before` (an id), at most `limit`.
pub async fn list(
    tx: &mut TenantTx,
    project: ProjectId,
    status: Option<TaskStatus>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Task>, DbError> {
    super::projects::get(tx, project).await?;
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks
          WHERE tenant_id = $1 AND project_id = $2 AND ($3::text IS NULL OR status = $3)
            AND ($4::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM tasks WHERE id = $4))
          ORDER BY created_at DESC, id DESC LIMIT $5"
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(project.as_uuid())
    .bind(status.map(TaskStatus::as_str))
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// What a change to a task sets; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct TaskChange<'a> {
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub status: Option<TaskStatus>,
    /// `Some(None)` takes the task from whoever has it.
    pub assignee: Option<Option<Assignee>>,
}

/// Changes a task. A status move the task's current status does not allow
/// is a conflict that changes nothing (moving to the status it has is no
/// move, and allowed). The row is locked first, so two moves at once are
/// judged one after the other.
pub async fn update(tx: &mut TenantTx, id: Uuid, change: &TaskChange<'_>) -> Result<(Task, Task), DbError> {
    let before: Task = sqlx::query_as(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)?;
    if let Some(next) = change.status {
        let now = before.status();
        if now != next && !now.can_move_to(next) {
            let allowed = TaskStatus::sources_of(next);
            return Err(DbError::Conflict(format!(
                "a {} task cannot become {} (only from {})",
                now.as_str(),
                next.as_str(),
                if allowed.is_empty() { "nothing".to_owned() } else { allowed.join(", ") }
            )));
        }
    }
    let (assignee_user, assignee_agent) = match &change.assignee {
        None => (before.assignee_user_id, before.assignee_agent.as_deref()),
        Some(a) => split(a.as_ref()),
    };
    let after: Task = sqlx::query_as(&format!(
        "UPDATE tasks SET title = COALESCE($2, title), description = COALESCE($3, description),
                status = COALESCE($4, status), assignee_user_id = $5, assignee_agent = $6, updated_at = now()
          WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(change.title)
    .bind(change.description)
    .bind(change.status.map(TaskStatus::as_str))
    .bind(assignee_user)
    .bind(assignee_agent)
    .fetch_one(tx.conn())
    .await?;
    Ok((before, after))
}

/// A run that worked on a task, as the task shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LinkedRun {
    pub id: Uuid,
    pub status: String,
    pub agent: String,
    pub created_at: DateTime<Utc>,
}

/// The runs that worked on `task` (that the caller can see), oldest first,
/// at most `limit`.
pub async fn runs(tx: &mut TenantTx, task: Uuid, limit: i64) -> Result<Vec<LinkedRun>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT id, status, agent, created_at FROM agent_runs
          WHERE tenant_id = $1 AND task_id = $2 AND {}
          ORDER BY created_at, id LIMIT $3",
        super::runs::VISIBLE
    ))
    .bind(tx.tenant_id().as_uuid())
    .bind(task)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}
