//! Approvals of held tool calls: one code path for the `approval:decide`
//! event and `POST /approvals/{id}/decision`. A decision, its audit row and
//! the tool call it clears (or ends) commit together; then `approval:decided`
//! goes to the run's topic (where its worker waits) and the project's. The
//! same [`ApprovalView`] is shown over REST, in acks and in events.

use crate::codes::EventError;
use crate::event::{Ack, Ev, admit, payload, reply, traced};
use crate::{From, Realtime};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::TryData;
use std::borrow::Cow;
use switchboard_db::repo::approvals::{self, Approval, Decision};
use switchboard_db::repo::audit::{self, Actor, Entry};
use switchboard_db::repo::webhooks;
use switchboard_db::{DbError, TenantContext};
use switchboard_domain::{ConversationId, ErrorKind, ProjectId, RunId, TenantId, Topic};
use uuid::Uuid;

/// The longest reason a decision may give, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// An approval as clients see it: the stored row.
pub use switchboard_db::repo::approvals::Approval as ApprovalView;

/// Sends `event` (`approval:requested` or `approval:decided`) with the
/// approval to its run's topic and its project's (a conversation's run: the
/// conversation's). The change is committed, so a failure is logged;
/// watchers that missed it find it over REST.
pub async fn announce(
    rt: &Realtime,
    tenant: TenantId,
    approval: &Approval,
    event: &str,
    from: Option<&From>,
) {
    let Ok(data) = serde_json::value::to_raw_value(approval) else { return };
    let run = Topic::Run(RunId::from(approval.run_id));
    // A run of a conversation is announced where the run is: to the
    // conversation's subscribers, exactly those who may see it.
    let around = match approval.conversation_id {
        Some(c) => Topic::Conversation(ConversationId::from(c)),
        None => Topic::Project(ProjectId::from(approval.project_id)),
    };
    let (on_run, on_around) = tokio::join!(
        rt.publish(tenant, &run, event, &data, from, None),
        rt.publish(tenant, &around, event, &data, from, None),
    );
    for (topic, result) in [(run, on_run), (around, on_around)] {
        if let Err(kind) = result {
            tracing::error!(?kind, approval_id = %approval.id, %topic, event, "approval stored but not announced");
        }
    }
}

/// Decides approval `id` for the caller in `ctx` (once; by a role the rule
/// names), audits it as `actor`, and announces it.
pub async fn decide(
    rt: &Realtime,
    ctx: &TenantContext,
    actor: &Actor,
    id: Uuid,
    decision: Decision,
    reason: Option<&str>,
) -> Result<Approval, DbError> {
    let mut tx = rt.inner.db.begin(ctx).await?;
    let decided = approvals::decide(&mut tx, id, decision, reason).await?;
    let entry = Entry {
        action: match decision {
            Decision::Approve => "approval.approve",
            Decision::Reject => "approval.reject",
        },
        target_type: "approval",
        target_id: decided.id.to_string(),
        details: json!({
            "rule": decided.rule,
            "tool": decided.tool,
            "run_id": decided.run_id,
            "tool_call_id": decided.tool_call_id,
            "reason": decided.reason,
        }),
    };
    audit::record(&mut tx, actor, &entry).await?;
    webhooks::event(&mut tx, "approval.decided", json!(decided)).await?;
    tx.commit().await?;
    let from = From { user_id: ctx.user_id.map(|u| u.as_uuid()), kind: Cow::Borrowed("user") };
    announce(rt, ctx.tenant_id, &decided, "approval:decided", Some(&from)).await;
    Ok(decided)
}

/// `approve` or `reject`, as clients write it.
pub fn parse_decision(text: &str) -> Option<Decision> {
    match text {
        "approve" => Some(Decision::Approve),
        "reject" => Some(Decision::Reject),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideReq {
    approval_id: Uuid,
    decision: String,
    reason: Option<String>,
}

pub(crate) async fn decide_event(Ev { s, rt, session }: Ev, TryData(data): TryData<Value>, ack: Ack) {
    let result = traced("approval:decide", &session, async {
        admit(&rt, &s, &session).await?;
        let req: DecideReq = payload(data)?;
        let decision = parse_decision(&req.decision)
            .ok_or_else(|| EventError::invalid("decision must be `approve` or `reject`"))?;
        if req.reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(EventError::invalid(format!("reason must be at most {MAX_REASON_CHARS} characters")));
        }
        let ctx = TenantContext::new(session.tenant, Some(session.user), session.role());
        let actor = Actor { kind: "user", id: session.user.to_string(), request_id: None, ip: None };
        match decide(&rt, &ctx, &actor, req.approval_id, decision, req.reason.as_deref()).await {
            Ok(a) => Ok(json!({ "ok": true, "approval": a })),
            Err(e) => {
                let kind = e.kind();
                if kind == ErrorKind::Internal || kind == ErrorKind::Unavailable {
                    tracing::error!(error = %e, "approval:decide failed");
                    return Err(EventError::new(kind, "the decision could not be stored; send it again"));
                }
                Err(EventError::new(kind, e.public_message()))
            }
        }
    })
    .await;
    reply(ack, "approval:decide", result).await;
}

/// Expires pending approvals past their time, in every tenant that has
/// some: each tenant's in its own transaction, audited as the system, then
/// `approval:decided` (status `expired`) so waiting workers stop waiting.
/// How many it expired.
pub async fn expire_due(rt: &Realtime) -> Result<usize, DbError> {
    let db = &rt.inner.db;
    let mut ptx = db.begin_platform().await?;
    let tenants = approvals::tenants_with_due(&mut ptx, 100).await?;
    ptx.commit().await?;
    let actor = Actor { kind: "system", id: "approval-expiry".to_owned(), request_id: None, ip: None };
    let mut total = 0;
    for tenant in tenants {
        // One tenant's failure is logged; the others are still swept.
        match expire_tenant(rt, tenant, &actor).await {
            Ok(n) => total += n,
            Err(e) => tracing::warn!(error = %e, tenant_id = %tenant, "approval expiry failed for a tenant"),
        }
    }
    Ok(total)
}

async fn expire_tenant(rt: &Realtime, tenant: TenantId, actor: &Actor) -> Result<usize, DbError> {
    let ctx = TenantContext::new(tenant, None, switchboard_domain::Role::Service);
    let mut tx = rt.inner.db.begin(&ctx).await?;
    let expired = approvals::expire_due(&mut tx).await?;
    for a in &expired {
        let entry = Entry {
            action: "approval.expire",
            target_type: "approval",
            target_id: a.id.to_string(),
            details: json!({ "rule": a.rule, "tool": a.tool, "run_id": a.run_id, "tool_call_id": a.tool_call_id }),
        };
        audit::record(&mut tx, actor, &entry).await?;
        webhooks::event(&mut tx, "approval.decided", json!(a)).await?;
    }
    tx.commit().await?;
    let from = From { user_id: None, kind: Cow::Borrowed("system") };
    for a in &expired {
        announce(rt, tenant, a, "approval:decided", Some(&from)).await;
    }
    Ok(expired.len())
}

/// Runs [`expire_due`] every `every` until the task is dropped. Every node
/// runs it; two nodes expiring one tenant at once are serialised by its
/// rows, and an approval is expired (and announced) once.
pub async fn run_expiry(rt: Realtime, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match expire_due(&rt).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "approvals expired"),
            Err(e) => tracing::warn!(error = %e, "approval expiry sweep failed; next tick retries"),
        }
    }
}
