//! Agent runs over REST, for agent workers (API keys) and the apps that watch
//! them: `POST/GET /runs`, `GET/PATCH /runs/{id}`, `POST /runs/{id}/steps`,
//! `POST /runs/{id}/tool-calls`, `POST /runs/{id}/deltas`.
//!
//! Every write is one tenant transaction; after it commits, watchers get
//! `run:updated` (the run's summary) or `run:step` (a step's or a tool call's
//! preview) on `run:<id>`, and the project's subscribers get `run:updated` with
//! the summary on `project:<id>`: events carry ids and bounded previews, the
//! content is over REST. A write replayed for a repeated `Idempotency-Key`
//! stores and sends nothing; any other request under the key is a conflict.
//!
//! Every response is bounded: a run's detail carries the first page of its
//! steps and tool calls (at most 100 of each and 4 MiB of their content), and
//! `GET /runs/{id}/steps` and `/tool-calls` page through the rest.
//!
//! Streamed deltas never touch Postgres: the run's status comes from the
//! directory's cache, the batch is charged to the tenant's event budget, and
//! its deltas go out as `run:delta` events in order, each with its own offset,
//! so a watcher that reconnects with `since` recovers the rest of the stream.

use crate::AppState;
use crate::auth::Member;
use crate::error::ApiError;
use crate::extract::{
    Page, Paged, ValidJson, ValidQuery, check_json, created_response, idempotency_key,
    invalid_field as invalid, path_id, replayable_response,
};
use crate::run_views::{RunSummary, RunView, StepEvent, StepView, ToolCallView};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_cluster::Dedupe;
use switchboard_db::repo::approvals;
use switchboard_db::repo::audit::{self, Entry};
use switchboard_db::repo::runs::{self, Change, Filter, NewRun, NewStep, NewToolCall, Recorded, Run, Usage};
use switchboard_db::repo::webhooks;
use switchboard_db::repo::{Created, Sender};
use switchboard_domain::json::{JsonCap, Shape};
use switchboard_domain::policy::{DEFAULT_RULE, ToolAction, ToolRule};
use switchboard_domain::{ConversationId, ErrorKind, Fingerprint, ProjectId, Role, RunId, RunStatus, Topic};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/runs", get(list).post(create))
        .route("/runs/{id}", get(show).patch(update))
        .route("/runs/{id}/steps", get(list_steps).post(append_step))
        .route("/runs/{id}/tool-calls", get(list_tool_calls).post(add_tool_call))
        .route("/runs/{id}/deltas", post(stream_deltas))
}

/// Steps or tool calls in one page: at most this many (100 by default) …
const PAGE_LIMIT: i64 = 100;
/// … and, after the first, at most this much of their content.
const PAGE_BYTES: i64 = 4 * 1024 * 1024;

/// The run a request is about, parsed from its path and recorded on the
/// request's span.
fn run_id(raw: &str) -> Result<RunId, ApiError> {
    let id: RunId = path_id(raw)?;
    tracing::Span::current().record("run_id", tracing::field::display(id));
    Ok(id)
}

/// A cost in US dollars, 0 ≤ cost < 10⁸: a JSON number (rounded to 6 decimal
/// places, as it is stored: floating-point noise such as `0.30000000000000004`
/// is fine) or a decimal string with at most 6 places (kept exactly).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Cost {
    Number(f64),
    Text(String),
}

impl Cost {
    fn decimal(&self) -> Result<String, ApiError> {
        let bad = || invalid("cost_usd", "a decimal from 0 to 99999999.999999 (a string: at most 6 places)");
        let text = match self {
            Cost::Number(n) if n.is_finite() && (0.0..1e8).contains(n) => return Ok(format!("{n:.6}")),
            Cost::Number(_) => return Err(bad()),
            Cost::Text(t) => t.trim(),
        };
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 8 || frac.len() > 6 || !digits(whole) || !digits(frac) {
            return Err(bad());
        }
        Ok(text.to_owned())
    }
}

/// The usage a write reports (its `tokens_in`, `tokens_out`, `cost_usd` fields).
fn reported(tokens_in: Option<i64>, tokens_out: Option<i64>, cost: Option<&Cost>) -> Result<Usage, ApiError> {
    Ok(Usage {
        tokens_in: tokens_in.unwrap_or(0),
        tokens_out: tokens_out.unwrap_or(0),
        cost_usd: cost.map(Cost::decimal).transpose()?,
    })
}

/// What a committed write tells watchers: `event` with `data` on the run's
/// topic, and the run's summary on its project's, or, for a run of a
/// conversation, on the conversation's (whose subscribers are exactly those
/// who may see it). The write is committed, so a failure here is logged;
/// watchers that missed it refetch over REST.
async fn announce(state: &AppState, member: &Member, run: &Run, event: &str, data: &impl Serialize) {
    let tenant = member.ctx.tenant_id;
    let from = member.sender();
    let run_topic = Topic::Run(RunId::from(run.id));
    let summary_topic = match run.conversation_id {
        Some(c) => Topic::Conversation(ConversationId::from(c)),
        None => Topic::Project(ProjectId::from(run.project_id)),
    };
    let (Ok(data), Ok(summary)) =
        (serde_json::value::to_raw_value(data), serde_json::value::to_raw_value(&RunSummary::event(run)))
    else {
        tracing::error!(run_id = %run.id, "run event could not be encoded");
        return;
    };
    let (on_run, on_summary) = tokio::join!(
        state.realtime.publish(tenant, &run_topic, event, &data, Some(&from), None),
        state.realtime.publish(tenant, &summary_topic, "run:updated", &summary, Some(&from), None),
    );
    for (topic, result) in [(run_topic, on_run), (summary_topic, on_summary)] {
        if let Err(kind) = result {
            tracing::error!(?kind, run_id = %run.id, %topic, "run change stored but not announced");
        }
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    project_id: Uuid,
    conversation_id: Option<Uuid>,
    /// The agent's name, for people reading the run.
    #[validate(length(max = 200))]
    #[schema(max_length = 200)]
    #[serde(default)]
    agent: String,
    /// What the run was asked to do: an object, at most 256 KiB of JSON.
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    /// A task of the same project that the run works on.
    task_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same run: created once", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$")), request_body = CreateRun, responses((status = 201, body = RunView), (status = 200, body = RunView, description = "Replayed for a repeated Idempotency-Key"), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    member: Member,
    headers: HeaderMap,
    ValidJson(body): ValidJson<CreateRun>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let input = body.input.unwrap_or_else(|| json!({}));
    check_json("input", &input, Shape::Object, JsonCap::Document)?;
    let new = NewRun {
        project: ProjectId::from(body.project_id),
        conversation: body.conversation_id.map(ConversationId::from),
        agent: &body.agent,
        input: &input,
        task: body.task_id,
        idempotency_key: key.as_ref(),
    };
    let mut tx = state.db.begin(&member.ctx).await?;
    let created = runs::create(&mut tx, &new).await?;
    if let Created::New(run) = &created {
        webhooks::event(&mut tx, "run.created", json!(RunSummary::event(run))).await?;
    }
    tx.commit().await?;
    if let Created::New(run) = &created {
        announce(&state, &member, run, "run:updated", &RunSummary::event(run)).await;
    }
    Ok(created_response(created.map(RunView::from)))
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<Uuid>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[param(value_type = Option<String>, pattern = "^(queued|running|succeeded|failed|cancelled)$")]
    status: Option<RunStatus>,
    project_id: Option<Uuid>,
    /// Created at or after.
    since: Option<DateTime<Utc>>,
    /// Created before.
    until: Option<DateTime<Utc>>,
}

/// Summaries, newest first: a run's input and output are in `GET /runs/{id}`.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunQuery), responses((status = 200, body = Paged<RunSummary>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    member: Member,
    ValidQuery(q): ValidQuery<RunQuery>,
) -> Result<Json<Paged<RunSummary>>, ApiError> {
    let page = Page { limit: q.limit.unwrap_or(50), cursor: q.cursor };
    let filter = Filter {
        status: q.status,
        project: q.project_id.map(ProjectId::from),
        since: q.since,
        until: q.until,
    };
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows = runs::list(&mut tx, &filter, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    let paged = Paged::new(rows, page, |r: &runs::RunSummary| r.id);
    Ok(Json(Paged {
        data: paged.data.into_iter().map(RunSummary::from).collect(),
        next_cursor: paged.next_cursor,
    }))
}

/// A run with the first page of its steps and of its tool calls.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    run: RunView,
    /// In order, at most 100 and 4 MiB of content; more with `GET /runs/{id}/steps?after=`.
    steps: Vec<StepView>,
    /// The `after` of the next page of steps; `null` when these are all.
    next_steps_after: Option<i32>,
    /// In order, at most 100 and 4 MiB of arguments and results; more with
    /// `GET /runs/{id}/tool-calls?cursor=`.
    tool_calls: Vec<ToolCallView>,
    /// The `cursor` of the next page of tool calls; `null` when these are all.
    next_tool_calls_cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", params(("id" = Uuid, Path)), responses((status = 200, body = RunDetail), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let id = run_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let run = runs::get(&mut tx, id).await?;
    let steps = runs::steps(&mut tx, id, 0, PAGE_LIMIT, PAGE_BYTES).await?;
    let calls = runs::tool_calls(&mut tx, id, None, PAGE_LIMIT, PAGE_BYTES).await?;
    tx.commit().await?;
    let next_steps_after = if steps.more { steps.items.last().map(|s| s.seq) } else { None };
    let next_tool_calls_cursor = if calls.more { calls.items.last().map(|c| c.id) } else { None };
    Ok(Json(RunDetail {
        run: run.into(),
        steps: steps.items.into_iter().map(StepView::from).collect(),
        next_steps_after,
        tool_calls: calls.items.into_iter().map(ToolCallView::from).collect(),
        next_tool_calls_cursor,
    }))
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StepsQuery {
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// Steps after this sequence number (the previous page's `next_after`).
    #[validate(range(min = 0))]
    #[param(minimum = 0)]
    after: Option<i32>,
}

/// A page of steps: at most `limit` (50 by default) and 4 MiB of content.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepPage {
    data: Vec<StepView>,
    /// The `after` of the next page; `null` on the last.
    next_after: Option<i32>,
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/steps", tag = "runs", params(("id" = Uuid, Path), StepsQuery), responses((status = 200, body = StepPage), crate::openapi::CommonErrors))]
pub(crate) async fn list_steps(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    ValidQuery(q): ValidQuery<StepsQuery>,
) -> Result<Json<StepPage>, ApiError> {
    let id = run_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    runs::get(&mut tx, id).await?;
    let steps = runs::steps(&mut tx, id, q.after.unwrap_or(0), q.limit.unwrap_or(50), PAGE_BYTES).await?;
    tx.commit().await?;
    let next_after = if steps.more { steps.items.last().map(|s| s.seq) } else { None };
    Ok(Json(StepPage { data: steps.items.into_iter().map(StepView::from).collect(), next_after }))
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/tool-calls", tag = "runs", params(("id" = Uuid, Path), crate::extract::PageQuery), responses((status = 200, body = Paged<ToolCallView>), crate::openapi::CommonErrors))]
pub(crate) async fn list_tool_calls(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    page: Page,
) -> Result<Json<Paged<ToolCallView>>, ApiError> {
    let id = run_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    runs::get(&mut tx, id).await?;
    let calls = runs::tool_calls(&mut tx, id, page.cursor, page.limit, PAGE_BYTES).await?;
    tx.commit().await?;
    Ok(Json(Paged::from_slice(calls, |c: &runs::ToolCall| c.id, ToolCallView::from)))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRun {
    /// The next status: queued → running → succeeded | failed | cancelled (a
    /// queued run may also fail or be cancelled); any other move is 409.
    #[schema(value_type = Option<String>, pattern = "^(queued|running|succeeded|failed|cancelled)$")]
    status: Option<RunStatus>,
    /// What the run produced: any JSON, at most 256 KiB.
    #[schema(value_type = Option<Object>)]
    output: Option<Value>,
    /// Why it failed.
    #[validate(length(min = 1, max = 10_000))]
    #[schema(min_length = 1, max_length = 10_000)]
    error: Option<String>,
    /// Tokens read, added to the run's and the tenant's totals.
    #[validate(range(min = 0, max = 1_000_000_000))]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    tokens_in: Option<i64>,
    /// Tokens written, added to the run's and the tenant's totals.
    #[validate(range(min = 0, max = 1_000_000_000))]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    tokens_out: Option<i64>,
    /// US dollars, added to the run's and the tenant's totals: a number
    /// (rounded to 6 decimal places) or a decimal string (at most 6 places).
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,8}(\\.[0-9]{1,6})?$")]
    cost_usd: Option<Cost>,
}

#[utoipa::path(patch, path = "/api/v1/runs/{id}", tag = "runs", params(("id" = Uuid, Path)), request_body = PatchRun, responses((status = 200, body = RunView), crate::openapi::CommonErrors))]
pub(crate) async fn update(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<PatchRun>,
) -> Result<Json<RunView>, ApiError> {
    let id = run_id(&id)?;
    if let Some(output) = &body.output {
        check_json("output", output, Shape::Any, JsonCap::Document)?;
    }
    let usage = reported(body.tokens_in, body.tokens_out, body.cost_usd.as_ref())?;
    let nothing =
        body.status.is_none() && body.output.is_none() && body.error.is_none() && usage == Usage::default();
    if nothing {
        return Err(invalid(
            "status",
            "give at least one of status, output, error, tokens_in, tokens_out, cost_usd",
        ));
    }
    let change =
        Change { status: body.status, output: body.output.as_ref(), error: body.error.as_deref(), usage };
    let mut tx = state.db.begin(&member.ctx).await?;
    let run = runs::update(&mut tx, id, &change).await?;
    // Usage alone is not an event for the outside; a status, output or error is.
    if body.status.is_some() || body.output.is_some() || body.error.is_some() {
        webhooks::event(&mut tx, "run.updated", json!(RunSummary::event(&run))).await?;
    }
    tx.commit().await?;
    if body.status.is_some() {
        state.directory.runs_changed(member.ctx.tenant_id).await;
    }
    announce(&state, &member, &run, "run:updated", &RunSummary::event(&run)).await;
    Ok(Json(run.into()))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendStep {
    /// What the step is (`message`, `thought`, `tool`, …); `message` if absent.
    #[validate(length(min = 1, max = 64))]
    #[schema(min_length = 1, max_length = 64)]
    kind: Option<String>,
    /// The step's final text (what its deltas added up to), at most
    /// 1,000,000 characters (and the 1 MiB body).
    #[validate(length(max = 1_000_000))]
    #[schema(max_length = 1000000)]
    #[serde(default)]
    content: String,
    /// An object, at most 256 KiB of JSON.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// Tokens read, added to the run's and the tenant's totals.
    #[validate(range(min = 0, max = 1_000_000_000))]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    tokens_in: Option<i64>,
    /// Tokens written, added to the run's and the tenant's totals.
    #[validate(range(min = 0, max = 1_000_000_000))]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    tokens_out: Option<i64>,
    /// US dollars, added to the run's and the tenant's totals: a number
    /// (rounded to 6 decimal places) or a decimal string (at most 6 places).
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,8}(\\.[0-9]{1,6})?$")]
    cost_usd: Option<Cost>,
    /// Knowledge chunks (ids from `POST /search`) the step draws on, at most 50;
    /// each must be a chunk of the tenant. Stored as `data.citations`.
    #[validate(length(max = 50))]
    #[schema(max_items = 50)]
    citations: Option<Vec<Uuid>>,
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/steps", tag = "runs", params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key, same step: appended once", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$")), request_body = AppendStep, responses((status = 201, body = StepView), (status = 200, body = StepView, description = "Replayed for a repeated Idempotency-Key"), crate::openapi::CommonErrors))]
pub(crate) async fn append_step(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<AppendStep>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?;
    let key = idempotency_key(&headers)?;
    let mut data = body.data.unwrap_or_else(|| json!({}));
    check_json("data", &data, Shape::Object, JsonCap::Document)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    if let Some(citations) = &body.citations {
        let mut unique = citations.clone();
        unique.sort();
        unique.dedup();
        // Another tenant's chunk is as unknown as one that never existed.
        let known = switchboard_db::repo::knowledge::chunks_known(&mut tx, &unique).await?;
        if known != unique.len() {
            return Err(invalid("citations", "every citation must be a chunk of this tenant"));
        }
        if let Some(object) = data.as_object_mut() {
            object.insert("citations".to_owned(), json!(unique));
        }
    }
    let new = NewStep {
        kind: body.kind.as_deref().unwrap_or("message"),
        content: &body.content,
        data: &data,
        usage: reported(body.tokens_in, body.tokens_out, body.cost_usd.as_ref())?,
        idempotency_key: key.as_ref(),
    };
    let recorded = runs::append_step(&mut tx, id, &new).await?;
    tx.commit().await?;
    if let Recorded::New(step, run) = &recorded {
        let event = StepEvent::step(step, member.tenant.limits.max_payload_bytes);
        announce(&state, &member, run, "run:step", &event).await;
    }
    Ok(created_response(recorded.into_created().map(StepView::from)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl ToolCallStatus {
    fn as_str(self) -> &'static str {
        match self {
            ToolCallStatus::Pending => "pending",
            ToolCallStatus::Running => "running",
            ToolCallStatus::Succeeded => "succeeded",
            ToolCallStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddToolCall {
    /// The tool's name.
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// The arguments it was called with: an object, at most 256 KiB of JSON.
    #[schema(value_type = Option<Object>)]
    arguments: Option<Value>,
    /// What it returned: any JSON, at most 256 KiB.
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    /// `succeeded` if a result is given, else `pending`.
    status: Option<ToolCallStatus>,
    /// Reports how a call an approval cleared went (its `status`, `result`,
    /// `latency_ms`), on that call: the tool policy is not asked again.
    approval_id: Option<Uuid>,
    #[validate(range(min = 0, max = 86_400_000))]
    #[schema(minimum = 0, maximum = 86_400_000)]
    latency_ms: Option<i32>,
    /// The sequence number of the run's step that made the call.
    #[validate(range(min = 1))]
    #[schema(minimum = 1)]
    step: Option<i32>,
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/tool-calls", tag = "runs", params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key, same tool call: recorded once", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$")), request_body = AddToolCall, responses((status = 201, body = ToolCallView), (status = 200, body = ToolCallView, description = "Replayed for a repeated Idempotency-Key"), crate::openapi::CommonErrors))]
pub(crate) async fn add_tool_call(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<AddToolCall>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?;
    let key = idempotency_key(&headers)?;
    if let Some(approval) = body.approval_id {
        // The approved call is the one recorded: its arguments and step stand.
        if body.arguments.is_some() || body.step.is_some() || key.is_some() {
            return Err(invalid(
                "approval_id",
                "a report on an approved call names the call by approval_id alone: no arguments, step or Idempotency-Key",
            ));
        }
        if let Some(result) = &body.result {
            check_json("result", result, Shape::Any, JsonCap::Document)?;
        }
        return report_approved(
            &state,
            &member,
            id,
            approval,
            &body.name,
            body.result.as_ref(),
            body.status,
            body.latency_ms,
        )
        .await;
    }
    let arguments = body.arguments.unwrap_or_else(|| json!({}));
    check_json("arguments", &arguments, Shape::Object, JsonCap::Document)?;
    if let Some(result) = &body.result {
        check_json("result", result, Shape::Any, JsonCap::Document)?;
    }
    let mut tx = state.db.begin(&member.ctx).await?;
    let policy = approvals::policy(&mut tx).await?.policy;
    let verdict = policy.decide(&body.name, member.ctx.role);
    let rule = verdict.rule.map_or(DEFAULT_RULE, |r| r.name.as_str());
    let held = verdict.action == ToolAction::RequireApproval;
    if held && (body.result.is_some() || body.status.is_some()) {
        return Err(invalid(
            "status",
            format!(
                "rule `{rule}` holds `{}` for approval: record the call before it runs, without status or result",
                body.name
            ),
        ));
    }
    let status = match body.status {
        _ if held => "pending_approval",
        Some(s) => s.as_str(),
        None if body.result.is_some() => "succeeded",
        None => "pending",
    };
    let new = NewToolCall {
        step: body.step,
        name: &body.name,
        arguments: &arguments,
        result: body.result.as_ref(),
        status,
        latency_ms: body.latency_ms,
        idempotency_key: key.as_ref(),
    };
    // Recorded first (the run locked and checked, a replay answered as it was
    // stored); a new call the policy denies is then rolled back.
    let recorded = runs::add_tool_call(&mut tx, id, &new).await?;
    if verdict.action == ToolAction::Deny && matches!(recorded, Recorded::New(..)) {
        drop(tx);
        let mut tx = state.db.begin(&member.ctx).await?;
        let entry = Entry {
            action: "tool_call.deny",
            target_type: "run",
            target_id: id.to_string(),
            details: json!({ "tool": body.name, "rule": rule }),
        };
        audit::record(&mut tx, &member.caller.actor(), &entry).await?;
        tx.commit().await?;
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("tool `{}` is denied by rule `{rule}`", body.name),
        )
        .with_details(json!({ "rule": [rule] })));
    }
    let approval = match &recorded {
        Recorded::New(call, run) if held => {
            let approvers =
                verdict.rule.map_or_else(|| vec![Role::Owner, Role::Admin], ToolRule::approver_roles);
            let request = approvals::Request {
                project: run.project_id,
                run: run.id,
                tool_call: call.id,
                tool: &call.name,
                rule,
                approvers: &approvers,
                ttl: state.approval_ttl,
            };
            let approval = approvals::request(&mut tx, &request).await?;
            webhooks::event(&mut tx, "approval.requested", json!(approval)).await?;
            Some(approval)
        }
        Recorded::New(..) => None,
        Recorded::Replayed(call) => approvals::for_call(&mut tx, call.id).await?,
    };
    tx.commit().await?;
    if let Recorded::New(call, run) = &recorded {
        announce(&state, &member, run, "run:step", &StepEvent::tool_call(call)).await;
        if let Some(a) = &approval {
            let from = member.sender();
            switchboard_realtime::approvals::announce(
                &state.realtime,
                member.ctx.tenant_id,
                a,
                "approval:requested",
                Some(&from),
            )
            .await;
        }
    }
    Ok(created_response(recorded.into_created().map(|c| ToolCallView::from(c).held_by(approval))))
}

/// `POST /runs/{id}/tool-calls` with `approval_id`: how a cleared call went.
#[allow(clippy::too_many_arguments)] // the request's fields, read once
async fn report_approved(
    state: &AppState,
    member: &Member,
    run: RunId,
    approval: Uuid,
    name: &str,
    result: Option<&Value>,
    status: Option<ToolCallStatus>,
    latency_ms: Option<i32>,
) -> Result<Response, ApiError> {
    let status = match status {
        Some(ToolCallStatus::Pending) => {
            return Err(invalid("status", "an approved call reports `running`, `succeeded` or `failed`"));
        }
        Some(s) => s.as_str(),
        None if result.is_some() => "succeeded",
        None => "running",
    };
    let outcome = runs::ApprovedOutcome { approval, name, result, status, latency_ms };
    let mut tx = state.db.begin(&member.ctx).await?;
    let (call, run_row) = runs::report_approved_call(&mut tx, run, &outcome).await?;
    let held = approvals::for_call(&mut tx, call.id).await?;
    tx.commit().await?;
    announce(state, member, &run_row, "run:step", &StepEvent::tool_call(&call)).await;
    Ok(replayable_response(StatusCode::OK, ToolCallView::from(call).held_by(held), false))
}

#[derive(Debug, Serialize, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// The streamed text (tokens).
    #[validate(length(max = 65_536))]
    #[schema(max_length = 65536)]
    text: String,
    /// Anything else the watchers need with it: an object, at most 16 KiB of JSON.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamDeltas {
    /// The sequence number of the step these tokens will be stored with.
    #[validate(range(min = 1))]
    #[schema(minimum = 1)]
    step: Option<i32>,
    /// 1 to 500 deltas, sent in this order.
    #[validate(length(min = 1, max = 500), nested)]
    #[schema(min_items = 1, max_items = 500)]
    deltas: Vec<Delta>,
}

/// What one `run:delta` carries.
#[derive(Serialize)]
struct DeltaEvent<'a> {
    run_id: Uuid,
    step: Option<i32>,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Streamed {
    run_id: Uuid,
    /// Deltas sent.
    count: usize,
    /// The offsets of the first and last `run:delta` of the batch.
    first_offset: String,
    last_offset: String,
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/deltas", tag = "runs", params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key, same batch: sent once (keys are remembered for 15 minutes)", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$")), request_body = StreamDeltas, responses((status = 202, body = Streamed), (status = 200, body = Streamed, description = "Replayed for a repeated Idempotency-Key: nothing sent"), crate::openapi::CommonErrors))]
pub(crate) async fn stream_deltas(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<StreamDeltas>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?;
    let key = idempotency_key(&headers)?;
    let limits = member.tenant.limits;
    let count = body.deltas.len();
    if count as u64 > u64::from(limits.events_per_second) {
        return Err(invalid(
            "deltas",
            format!("at most the tenant's events_per_second ({}) in one batch", limits.events_per_second),
        ));
    }
    let mut data = Vec::with_capacity(count);
    let mut bytes = 0;
    for delta in &body.deltas {
        if let Some(d) = &delta.data {
            check_json("deltas.data", d, Shape::Object, JsonCap::Metadata)?;
        }
        let event = DeltaEvent {
            run_id: id.as_uuid(),
            step: body.step,
            text: &delta.text,
            data: delta.data.as_ref(),
        };
        let raw = serde_json::value::to_raw_value(&event)
            .map_err(|_| ApiError::new(ErrorKind::Internal, "a delta could not be encoded"))?;
        if raw.get().len() > limits.max_payload_bytes as usize {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("a delta is over the tenant's {} bytes", limits.max_payload_bytes),
            ));
        }
        bytes += raw.get().len();
        data.push(raw);
    }
    match state.directory.run(&member.ctx, id).await? {
        None => return Err(ApiError::new(ErrorKind::NotFound, "not found")),
        Some(run) if run.status.is_finished() => {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("the run has {}; nothing more is streamed on it", run.status),
            ));
        }
        Some(_) => {}
    }
    let tenant = member.ctx.tenant_id;
    if let Err(wait) = state.realtime.take_events(tenant, limits.events_per_second, count as u32).await {
        return Ok(crate::ratelimit::too_many("tenant_events", wait));
    }
    if let Err(wait) = state.realtime.charge_history(tenant, &limits, bytes).await {
        return Err(crate::ratelimit::quota_exceeded(wait, "history"));
    }
    // The whole request, sender included: the same key with anything else is a conflict.
    let fingerprint = key
        .as_ref()
        .map(|_| Fingerprint::of("deltas", &(Sender::of(&member.ctx), id, body.step, &body.deltas)).to_hex());
    // A new key takes one from the tenant's quota; at its quota, only a replay
    // of a key already seen goes through.
    let over_quota = match key {
        Some(_) => state.realtime.charge_dedupe_key(tenant, &limits).await.err(),
        None => None,
    };
    let dedupe = key.as_ref().zip(fingerprint.as_deref()).map(|(k, fingerprint)| Dedupe {
        key: k.as_str(),
        fingerprint,
        replay_only: over_quota.is_some(),
    });
    let from = member.sender();
    let published = state
        .realtime
        .publish_batch(tenant, &Topic::Run(id), "run:delta", &data, Some(&from), dedupe)
        .await
        .map_err(|kind| match kind {
            ErrorKind::Conflict => {
                ApiError::new(kind, "the Idempotency-Key was already used for a different batch")
            }
            ErrorKind::QuotaExceeded => crate::ratelimit::quota_exceeded(
                over_quota.unwrap_or(std::time::Duration::from_secs(1)),
                "dedupe keys",
            ),
            _ => ApiError::new(kind, "the deltas could not be sent; retry with the same Idempotency-Key"),
        })?;
    let answer = Streamed {
        run_id: id.as_uuid(),
        count: published.count,
        first_offset: published.first.to_string(),
        last_offset: published.last.to_string(),
    };
    Ok(replayable_response(StatusCode::ACCEPTED, answer, published.replayed))
}
