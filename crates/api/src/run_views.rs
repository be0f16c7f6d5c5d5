//! How runs, steps and tool calls are shown: whole over REST ([`RunView`],
//! [`StepView`], [`ToolCallView`]), and as ids with bounded previews in the
//! events watchers receive ([`RunSummary`] in `run:updated`, [`StepEvent`] in
//! `run:step`), so no server event outgrows the tenant's payload cap: the full
//! content is one `GET` away.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use switchboard_db::repo::runs::{self, Run, Step, ToolCall};
use switchboard_domain::json;
use uuid::Uuid;

/// A run with its input and output.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunView {
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
    /// The task it works on, if any.
    pub task_id: Option<Uuid>,
}

impl From<Run> for RunView {
    fn from(r: Run) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            conversation_id: r.conversation_id,
            status: r.status,
            agent: r.agent,
            input: r.input,
            output: r.output,
            error: r.error,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_usd: r.cost_usd,
            idempotency_key: r.idempotency_key,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            task_id: r.task_id,
        }
    }
}

/// A run without its input and output: list pages and `run:updated` events.
/// The error is cut to a preview in events.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

impl From<runs::RunSummary> for RunSummary {
    fn from(r: runs::RunSummary) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            conversation_id: r.conversation_id,
            status: r.status,
            agent: r.agent,
            error: r.error,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_usd: r.cost_usd,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

impl RunSummary {
    /// The `run:updated` payload for `run`.
    pub fn event(run: &Run) -> Self {
        let mut summary = Self::from(runs::RunSummary::from(run));
        if let Some(error) = &mut summary.error {
            let (clipped, cut) = json::clip(error, json::PREVIEW_BYTES);
            if cut {
                *error = format!("{clipped}…");
            }
        }
        summary
    }
}

/// A step with its content and data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepView {
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

impl From<Step> for StepView {
    fn from(s: Step) -> Self {
        Self {
            id: s.id,
            run_id: s.run_id,
            seq: s.seq,
            kind: s.kind,
            content: s.content,
            data: s.data,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            cost_usd: s.cost_usd,
            idempotency_key: s.idempotency_key,
            created_at: s.created_at,
        }
    }
}

/// A tool call with its arguments and result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ToolCallView {
    pub id: Uuid,
    pub run_id: Uuid,
    pub step_id: Option<Uuid>,
    pub name: String,
    #[schema(value_type = Object)]
    pub arguments: Value,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// `pending`, `running`, `succeeded` or `failed`; for a call the tool
    /// policy holds, `pending_approval` until a person decides, then
    /// `pending` (cleared to run), `rejected` or `expired`.
    pub status: String,
    pub latency_ms: Option<i32>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// In answers to `POST /runs/{id}/tool-calls`: the approval holding the
    /// call, when the tool policy asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<switchboard_realtime::approvals::ApprovalView>,
}

impl ToolCallView {
    /// The view with the approval that holds the call, if any.
    pub fn held_by(mut self, approval: Option<switchboard_db::repo::approvals::Approval>) -> Self {
        self.approval = approval;
        self
    }
}

impl From<ToolCall> for ToolCallView {
    fn from(c: ToolCall) -> Self {
        Self {
            id: c.id,
            run_id: c.run_id,
            step_id: c.step_id,
            name: c.name,
            arguments: c.arguments,
            result: c.result,
            status: c.status,
            latency_ms: c.latency_ms,
            idempotency_key: c.idempotency_key,
            created_at: c.created_at,
            finished_at: c.finished_at,
            approval: None,
        }
    }
}

/// A step in a `run:step` event: its numbers and a preview of its content.
#[derive(Debug, Clone, Serialize)]
pub struct StepPreview<'a> {
    pub id: Uuid,
    pub run_id: Uuid,
    pub seq: i32,
    pub kind: &'a str,
    /// The content's first characters (at most 1 KiB, less under a small cap).
    pub content_preview: &'a str,
    /// The whole content's length in characters.
    pub content_length: usize,
    /// Whether the preview is shorter than the content.
    pub truncated: bool,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: &'a str,
    pub created_at: DateTime<Utc>,
}

/// A tool call in a `run:step` event: no arguments or result.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallPreview<'a> {
    pub id: Uuid,
    pub run_id: Uuid,
    pub step_id: Option<Uuid>,
    pub name: &'a str,
    pub status: &'a str,
    pub latency_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What `run:step` carries: the run's id and a step or a tool call preview.
#[derive(Debug, Serialize)]
pub struct StepEvent<'a> {
    pub run_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<StepPreview<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCallPreview<'a>>,
}

/// Room in an event for everything but a preview, generously.
const ENVELOPE_ROOM: usize = 1024;

impl<'a> StepEvent<'a> {
    /// The event for `step`, within `max_bytes`.
    pub fn step(step: &'a Step, max_bytes: u32) -> Self {
        let room = (max_bytes as usize).saturating_sub(ENVELOPE_ROOM).min(json::PREVIEW_BYTES);
        let (preview, truncated) = json::clip(&step.content, room);
        Self {
            run_id: step.run_id,
            step: Some(StepPreview {
                id: step.id,
                run_id: step.run_id,
                seq: step.seq,
                kind: &step.kind,
                content_preview: preview,
                content_length: step.content.chars().count(),
                truncated,
                tokens_in: step.tokens_in,
                tokens_out: step.tokens_out,
                cost_usd: &step.cost_usd,
                created_at: step.created_at,
            }),
            tool_call: None,
        }
    }

    /// The event for `call`.
    pub fn tool_call(call: &'a ToolCall) -> Self {
        Self {
            run_id: call.run_id,
            step: None,
            tool_call: Some(ToolCallPreview {
                id: call.id,
                run_id: call.run_id,
                step_id: call.step_id,
                name: &call.name,
                status: &call.status,
                latency_ms: call.latency_ms,
                created_at: call.created_at,
                finished_at: call.finished_at,
            }),
        }
    }
}
