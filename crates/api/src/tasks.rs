//! `GET/POST /projects/{id}/tasks`, `GET/PATCH /tasks/{id}`: the work of a
//! project, for people and agents. Any member reads, creates and moves
//! tasks; each change is audited in its transaction and then sent as
//! `task:updated` on `project:<id>`. A status move the task's status does not
//! allow is 409 and changes nothing.

use crate::AppState;
use crate::auth::Member;
use crate::error::ApiError;
use crate::extract::{
    Page, Paged, ValidJson, ValidQuery, created_response, idempotency_key, invalid_field as invalid, path_id,
};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_db::repo::audit::{self, Entry};
use switchboard_db::repo::tasks::{self, Assignee, LinkedRun, NewTask, Task, TaskChange, TaskStatus};
use switchboard_db::repo::webhooks;
use switchboard_domain::{ProjectId, Topic};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/projects/{id}/tasks", get(list).post(create))
        .route("/tasks/{id}", get(show).patch(update))
}

/// The most runs a task shows.
const RUNS_SHOWN: i64 = 100;

/// Who a task is for: a person or an agent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssigneeView {
    /// A user of the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<Uuid>,
    /// An agent, by name (1 to 200 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
}

impl AssigneeView {
    fn of(task: &Task) -> Option<Self> {
        match (task.assignee_user_id, &task.assignee_agent) {
            (Some(u), _) => Some(Self { user_id: Some(u), agent: None }),
            (None, Some(a)) => Some(Self { user_id: None, agent: Some(a.clone()) }),
            (None, None) => None,
        }
    }

    fn parse(&self) -> Result<Assignee, ApiError> {
        match (self.user_id, &self.agent) {
            (Some(u), None) => Ok(Assignee::User(u)),
            (None, Some(a)) if (1..=200).contains(&a.chars().count()) && a.trim() == a => {
                Ok(Assignee::Agent(a.clone()))
            }
            _ => Err(invalid("assignee", "either user_id or agent (1 to 200 characters), not both")),
        }
    }
}

/// A task as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    id: Uuid,
    project_id: Uuid,
    title: String,
    description: String,
    /// `todo`, `in_progress`, `waiting_approval`, `done` or `cancelled`.
    status: TaskStatus,
    assignee: Option<AssigneeView>,
    created_by: Option<Uuid>,
    idempotency_key: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// In `GET /tasks/{id}`: the runs that worked on it, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    runs: Option<Vec<LinkedRun>>,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        Self {
            assignee: AssigneeView::of(&t),
            status: t.status(),
            id: t.id,
            project_id: t.project_id,
            title: t.title,
            description: t.description,
            created_by: t.created_by,
            idempotency_key: t.idempotency_key,
            created_at: t.created_at,
            updated_at: t.updated_at,
            runs: None,
        }
    }
}

/// Sends `task:updated` with the task on its project's topic. The change is
/// committed: a failure is logged, and watchers refetch over REST.
async fn announce(state: &AppState, member: &Member, task: &Task) {
    let topic = Topic::Project(ProjectId::from(task.project_id));
    let Ok(data) = serde_json::value::to_raw_value(&TaskView::from(task.clone())) else { return };
    let from = member.sender();
    if let Err(kind) =
        state.realtime.publish(member.ctx.tenant_id, &topic, "task:updated", &data, Some(&from), None).await
    {
        tracing::error!(?kind, task_id = %task.id, "task change stored but not announced");
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    #[validate(length(max = 20000))]
    #[schema(max_length = 20000)]
    description: Option<String>,
    assignee: Option<AssigneeView>,
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/tasks", tag = "tasks", params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key, same task: created once", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$")), request_body = CreateTask, responses((status = 201, body = TaskView), (status = 200, body = TaskView, description = "Replayed for a repeated Idempotency-Key"), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<CreateTask>,
) -> Result<Response, ApiError> {
    let project: ProjectId = path_id(&id)?;
    let key = idempotency_key(&headers)?;
    if body.title.trim().is_empty() {
        return Err(invalid("title", "must not be blank"));
    }
    let assignee = body.assignee.as_ref().map(AssigneeView::parse).transpose()?;
    let new = NewTask {
        project,
        title: &body.title,
        description: body.description.as_deref().unwrap_or(""),
        assignee,
        idempotency_key: key.as_ref(),
    };
    let mut tx = state.db.begin(&member.ctx).await?;
    let created = tasks::create(&mut tx, &new).await?;
    if let switchboard_db::repo::Created::New(task) = &created {
        let entry = Entry {
            action: "task.create",
            target_type: "task",
            target_id: task.id.to_string(),
            details: json!({ "project_id": task.project_id, "title": task.title }),
        };
        audit::record(&mut tx, &member.caller.actor(), &entry).await?;
        webhooks::event(&mut tx, "task.created", json!(TaskView::from(task.clone()))).await?;
    }
    tx.commit().await?;
    if let switchboard_db::repo::Created::New(task) = &created {
        announce(&state, &member, task).await;
    }
    Ok(created_response(created.map(TaskView::from)))
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<Uuid>,
    /// Only tasks with this status.
    #[param(value_type = Option<String>, pattern = "^(todo|in_progress|waiting_approval|done|cancelled)$")]
    status: Option<TaskStatus>,
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/tasks", tag = "tasks", params(("id" = Uuid, Path), TaskQuery), responses((status = 200, body = Paged<TaskView>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<TaskQuery>,
) -> Result<Json<Paged<TaskView>>, ApiError> {
    let project: ProjectId = path_id(&id)?;
    let page = Page { limit: q.limit.unwrap_or(50), cursor: q.cursor };
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows = tasks::list(&mut tx, project, q.status, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    let paged = Paged::new(rows, page, |t: &Task| t.id);
    Ok(Json(Paged {
        data: paged.data.into_iter().map(TaskView::from).collect(),
        next_cursor: paged.next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = Uuid, Path)), responses((status = 200, body = TaskView), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let task = tasks::get(&mut tx, id).await?;
    let runs = tasks::runs(&mut tx, id, RUNS_SHOWN).await?;
    tx.commit().await?;
    Ok(Json(TaskView { runs: Some(runs), ..TaskView::from(task) }))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTask {
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    title: Option<String>,
    #[validate(length(max = 20000))]
    #[schema(max_length = 20000)]
    description: Option<String>,
    /// The next status: `todo → in_progress → waiting_approval → done`,
    /// back from `waiting_approval` to `in_progress`, `cancelled` until
    /// done; any other move is 409.
    status: Option<TaskStatus>,
    /// A person or an agent; `null` unassigns.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<AssigneeView>)]
    assignee: Option<Option<AssigneeView>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<AssigneeView>>, D::Error> {
    Option::<AssigneeView>::deserialize(d).map(Some)
}

#[utoipa::path(patch, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = Uuid, Path)), request_body = PatchTask, responses((status = 200, body = TaskView), crate::openapi::CommonErrors))]
pub(crate) async fn update(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<PatchTask>,
) -> Result<Json<TaskView>, ApiError> {
    let id: Uuid = path_id(&id)?;
    if body.title.is_none() && body.description.is_none() && body.status.is_none() && body.assignee.is_none()
    {
        return Err(invalid("status", "give at least one of title, description, status, assignee"));
    }
    if body.title.as_ref().is_some_and(|t| t.trim().is_empty()) {
        return Err(invalid("title", "must not be blank"));
    }
    let assignee = match &body.assignee {
        None => None,
        Some(None) => Some(None),
        Some(Some(a)) => Some(Some(a.parse()?)),
    };
    let change = TaskChange {
        title: body.title.as_deref(),
        description: body.description.as_deref(),
        status: body.status,
        assignee,
    };
    let mut tx = state.db.begin(&member.ctx).await?;
    let (before, after) = tasks::update(&mut tx, id, &change).await?;
    let mut details = serde_json::Map::new();
    if before.status != after.status {
        details.insert("status".into(), json!({ "from": before.status, "to": after.status }));
    }
    if before.title != after.title {
        details.insert("title".into(), Value::String(after.title.clone()));
    }
    if (before.assignee_user_id, &before.assignee_agent) != (after.assignee_user_id, &after.assignee_agent) {
        details.insert("assignee".into(), json!(AssigneeView::of(&after)));
    }
    if before.description != after.description {
        details.insert("description".into(), json!("changed"));
    }
    let entry = Entry {
        action: "task.update",
        target_type: "task",
        target_id: after.id.to_string(),
        details: Value::Object(details),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    webhooks::event(&mut tx, "task.updated", json!(TaskView::from(after.clone()))).await?;
    tx.commit().await?;
    announce(&state, &member, &after).await;
    Ok(Json(TaskView::from(after)))
}
