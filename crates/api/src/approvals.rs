//! `GET/PUT /tool-policies`: the tenant's tool policy (owners and admins
//! change it, whole, audited; any member reads it). `GET /approvals?status=`
//! and `POST /approvals/{id}/decision`: the tool calls a policy held for a
//! person, and their decision (the same code path as the `approval:decide`
//! socket event).

use crate::AppState;
use crate::auth::{Admin, Member};
use crate::error::ApiError;
use crate::extract::{Page, Paged, ValidJson, ValidQuery, invalid_field, path_id};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_db::repo::approvals::{self, StoredPolicy};
use switchboard_db::repo::audit::{self, Entry};
use switchboard_domain::policy::{ToolAction, ToolPolicy, ToolRule};
use switchboard_domain::{ErrorKind, Role};
use switchboard_realtime::approvals::{ApprovalView, MAX_REASON_CHARS, parse_decision};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tool-policies", get(show_policy).put(put_policy))
        .route("/approvals", get(list))
        .route("/approvals/{id}", get(show))
        .route("/approvals/{id}/decision", post(decide))
}

/// One rule as clients write and read it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// Unique in the policy (1 to 100 characters); refusals and approvals name it.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// The tool names it matches: exact, or a glob (`*` any run of
    /// characters, `?` one), e.g. `github.*`.
    #[schema(min_length = 1, max_length = 200)]
    tool: String,
    /// `allow`, `require_approval` or `deny`.
    #[schema(value_type = String, pattern = "^(allow|require_approval|deny)$")]
    action: ToolAction,
    /// The callers it applies to (`owner`, `admin`, `member`, `service` for
    /// API keys); everyone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    roles: Option<Vec<Role>>,
    /// For `require_approval`: whose people may decide (`owner`, `admin`,
    /// `member`); owners and admins when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    approvers: Option<Vec<Role>>,
}

impl From<RuleBody> for ToolRule {
    fn from(r: RuleBody) -> Self {
        ToolRule { name: r.name, tool: r.tool, action: r.action, roles: r.roles, approvers: r.approvers }
    }
}

impl From<ToolRule> for RuleBody {
    fn from(r: ToolRule) -> Self {
        RuleBody { name: r.name, tool: r.tool, action: r.action, roles: r.roles, approvers: r.approvers }
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicy {
    /// In order: the first that matches a call decides. At most 200.
    rules: Vec<RuleBody>,
    /// When no rule matches: `allow` (the default), `require_approval` or
    /// `deny`. A `require_approval` default lets owners and admins decide.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(allow|require_approval|deny)$")]
    default_action: Option<ToolAction>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    rules: Vec<RuleBody>,
    #[schema(value_type = String)]
    default_action: ToolAction,
    /// 0 until the tenant writes a policy; each change adds one.
    version: i32,
    updated_by: Option<String>,
    updated_at: Option<DateTime<Utc>>,
}

impl From<StoredPolicy> for PolicyView {
    fn from(s: StoredPolicy) -> Self {
        Self {
            rules: s.policy.rules.into_iter().map(RuleBody::from).collect(),
            default_action: s.policy.default_action,
            version: s.version,
            updated_by: s.updated_by,
            updated_at: s.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/tool-policies", tag = "agents", responses((status = 200, body = PolicyView), crate::openapi::CommonErrors))]
pub(crate) async fn show_policy(
    State(state): State<AppState>,
    member: Member,
) -> Result<Json<PolicyView>, ApiError> {
    let mut tx = state.db.begin(&member.ctx).await?;
    let stored = approvals::policy(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(PolicyView::from(stored)))
}

#[utoipa::path(put, path = "/api/v1/tool-policies", tag = "agents", request_body = PutPolicy, responses((status = 200, body = PolicyView), crate::openapi::CommonErrors))]
pub(crate) async fn put_policy(
    State(state): State<AppState>,
    Admin(member): Admin,
    ValidJson(body): ValidJson<PutPolicy>,
) -> Result<Json<PolicyView>, ApiError> {
    let policy = ToolPolicy {
        rules: body.rules.into_iter().map(ToolRule::from).collect(),
        default_action: body.default_action.unwrap_or(ToolAction::Allow),
    };
    // An API key acts for agents, whose calls the policy governs: only a
    // person changes it.
    if member.ctx.user_id.is_none() {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "the tool policy is changed by an owner or admin, not an API key",
        ));
    }
    let problems = policy.problems();
    if !problems.is_empty() {
        let mut details: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (field, message) in problems {
            details.entry(field).or_default().push(message);
        }
        return Err(ApiError::new(ErrorKind::Validation, "invalid fields").with_details(json!(details)));
    }
    let actor = member.caller.actor();
    let mut tx = state.db.begin(&member.ctx).await?;
    let stored = approvals::put_policy(&mut tx, &policy, &format!("{}:{}", actor.kind, actor.id)).await?;
    let entry = Entry {
        action: "tool_policy.update",
        target_type: "tool_policy",
        target_id: stored.version.to_string(),
        details: json!({ "rules": stored.policy.rules, "default_action": stored.policy.default_action }),
    };
    audit::record(&mut tx, &actor, &entry).await?;
    tx.commit().await?;
    Ok(Json(PolicyView::from(stored)))
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalQuery {
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<Uuid>,
    /// `pending`, `approved`, `rejected` or `expired`.
    #[param(pattern = "^(pending|approved|rejected|expired)$")]
    status: Option<ApprovalStatus>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl ApprovalStatus {
    fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
        }
    }
}

#[utoipa::path(get, path = "/api/v1/approvals", tag = "agents", params(ApprovalQuery), responses((status = 200, body = Paged<ApprovalView>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    member: Member,
    ValidQuery(q): ValidQuery<ApprovalQuery>,
) -> Result<Json<Paged<ApprovalView>>, ApiError> {
    let page = Page { limit: q.limit.unwrap_or(50), cursor: q.cursor };
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows =
        approvals::list(&mut tx, q.status.map(ApprovalStatus::as_str), page.cursor, page.fetch_limit())
            .await?;
    tx.commit().await?;
    Ok(Json(Paged::new(rows, page, |a: &ApprovalView| a.id)))
}

#[utoipa::path(get, path = "/api/v1/approvals/{id}", tag = "agents", params(("id" = Uuid, Path)), responses((status = 200, body = ApprovalView), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let approval = approvals::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(approval))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `approve` or `reject`.
    #[schema(pattern = "^(approve|reject)$")]
    decision: String,
    /// Why, for the audit log and the worker (at most 2,000 characters).
    #[validate(length(max = 2000))]
    #[schema(max_length = 2000)]
    reason: Option<String>,
}

/// Decides once: a second decision (also from another node at the same
/// moment) is 409, as is one after the approval expired; a caller whose role
/// the rule does not name is 403.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/decision", tag = "agents", params(("id" = Uuid, Path)), request_body = DecisionBody, responses((status = 200, body = ApprovalView), crate::openapi::CommonErrors))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<DecisionBody>,
) -> Result<Json<ApprovalView>, ApiError> {
    let id: Uuid = path_id(&id)?;
    let decision = parse_decision(&body.decision)
        .ok_or_else(|| invalid_field("decision", "must be `approve` or `reject`"))?;
    debug_assert!(body.reason.as_ref().is_none_or(|r| r.chars().count() <= MAX_REASON_CHARS));
    if member.ctx.user_id.is_none() {
        return Err(ApiError::new(ErrorKind::Forbidden, "approvals are decided by people, not API keys"));
    }
    let actor = member.caller.actor();
    let decided = switchboard_realtime::approvals::decide(
        &state.realtime,
        &member.ctx,
        &actor,
        id,
        decision,
        body.reason.as_deref(),
    )
    .await?;
    Ok(Json(decided))
}
