//! Agents acting for a tenant, on two `switchboard` processes: tasks and
//! their moves, the tenant's tool policy (allow, require_approval, deny),
//! approvals decided once over a socket on one node while the worker waits
//! on the other, expiry, audit rows, bad input, and another tenant's ids and
//! rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_db::{Database, TenantContext};
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{Node, SioClient, env, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WAIT: Duration = Duration::from_secs(5);

struct Tenant {
    id: TenantId,
    admin: String,
    member: String,
    worker: String,
    project: String,
}

async fn tenant(node: &Node, name: &str) -> Tenant {
    let id = node.create_tenant(name).await;
    let admin = user_token(id, UserId::new(), Role::Admin);
    let member = user_token(id, UserId::new(), Role::Member);
    let worker = node.api_key(id, &["read", "write"]).await;
    let (status, project) =
        node.send_json(Method::POST, "/api/v1/projects", &admin, &json!({ "name": "agents" })).await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    Tenant { id, admin, member, worker, project: project["id"].as_str().unwrap().to_owned() }
}

async fn send(node: &Node, method: Method, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    node.send_json(method, path, token, &body).await
}

/// `POST /approvals/{id}/decision` on `node` as `token`.
async fn decide(node: &Node, approval: &str, token: &str, body: Value) -> (StatusCode, Value) {
    send(node, Method::POST, &format!("/api/v1/approvals/{approval}/decision"), token, body).await
}

async fn audit_actions(node: &Node, admin: &str) -> Vec<(String, Value)> {
    let logs = node.get_json("/api/v1/audit-logs?limit=100", admin).await;
    logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["action"].as_str().unwrap().to_owned(), l["details"].clone()))
        .collect()
}

#[tokio::test]
async fn tasks_move_only_along_their_path_and_announce_each_change() {
    let a = Node::spawn(BIN, "tasks-a");
    let t = tenant(&a, "tasks").await;
    let mut watcher = SioClient::connect(&a.url(""), &t.member).await.unwrap();
    let ack = watcher.emit_with_ack("subscribe", json!({ "topic": format!("project:{}", t.project) })).await;
    assert_eq!(ack["ok"], true, "{ack}");

    let path = format!("/api/v1/projects/{}/tasks", t.project);
    let body = json!({ "title": "Triage the inbox", "description": "oldest first", "assignee": { "agent": "triager" } });
    let (status, task) = send(&a, Method::POST, &path, &t.member, body).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(
        (task["status"].as_str(), task["assignee"]["agent"].as_str()),
        (Some("todo"), Some("triager"))
    );
    let id = task["id"].as_str().unwrap().to_owned();
    let event = watcher.next_event("task:updated", WAIT).await.expect("task:updated on create");
    assert_eq!(event["data"]["id"], task["id"]);

    // The path: todo → in_progress → waiting_approval → in_progress → done.
    let at = format!("/api/v1/tasks/{id}");
    for (next, ok) in [
        ("done", false),
        ("in_progress", true),
        ("todo", false),
        ("waiting_approval", true),
        ("in_progress", true),
        ("done", true),
        ("cancelled", false),
        ("in_progress", false),
    ] {
        let (status, answer) = send(&a, Method::PATCH, &at, &t.worker, json!({ "status": next })).await;
        if ok {
            assert_eq!(status, StatusCode::OK, "to {next}: {answer}");
            let event = watcher.next_event("task:updated", WAIT).await.expect("task:updated on a move");
            assert_eq!(event["data"]["status"], next);
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "to {next}: {answer}");
            assert!(answer["error"]["message"].as_str().unwrap().contains(next), "{answer}");
        }
    }
    let shown = a.get_json(&at, &t.member).await;
    assert_eq!(shown["status"], "done", "refused moves changed nothing");

    // Reassigned to a person, then unassigned.
    let person = UserId::new();
    let (status, changed) =
        send(&a, Method::PATCH, &at, &t.admin, json!({ "assignee": { "user_id": person.to_string() } }))
            .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["assignee"]["user_id"], person.to_string());
    let (_, changed) = send(&a, Method::PATCH, &at, &t.admin, json!({ "assignee": null })).await;
    assert!(changed["assignee"].is_null(), "{changed}");

    // A run works on the task and the task lists it; a run may not name a
    // task of another project.
    let (status, run) = send(
        &a,
        Method::POST,
        "/api/v1/runs",
        &t.worker,
        json!({ "project_id": t.project, "agent": "triager", "task_id": id }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["task_id"], json!(id));
    let shown = a.get_json(&at, &t.member).await;
    assert_eq!(shown["runs"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["runs"][0]["id"], run["id"]);
    let (_, other) = send(&a, Method::POST, "/api/v1/projects", &t.admin, json!({ "name": "other" })).await;
    let (status, _) = send(
        &a,
        Method::POST,
        "/api/v1/runs",
        &t.worker,
        json!({ "project_id": other["id"], "task_id": id }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Listing, with a status filter.
    let (_, second) = send(&a, Method::POST, &path, &t.member, json!({ "title": "Second" })).await;
    let all = a.get_json(&path, &t.member).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let todo = a.get_json(&format!("{path}?status=todo"), &t.member).await;
    assert_eq!(todo["data"].as_array().unwrap().len(), 1);
    assert_eq!(todo["data"][0]["id"], second["id"]);

    // Bad input: each refused, naming the field, creating nothing.
    for (bad, field) in [
        (json!({ "title": "" }), "title"),
        (json!({ "title": "   " }), "title"),
        (json!({ "title": "x".repeat(201) }), "title"),
        (json!({ "title": "x", "assignee": { "user_id": person.to_string(), "agent": "both" } }), "assignee"),
        (json!({ "title": "x", "assignee": {} }), "assignee"),
    ] {
        let (status, err) = send(&a, Method::POST, &path, &t.member, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        assert!(err["error"]["details"][field].is_array(), "{bad}: {err}");
    }
    let (status, _) =
        send(&a, Method::POST, &path, &t.member, json!({ "title": "x", "colour": "red" })).await;
    assert!(status.is_client_error());
    let (status, _) = send(&a, Method::PATCH, &at, &t.member, json!({ "status": "archived" })).await;
    assert!(status.is_client_error());
    let (status, err) = send(&a, Method::PATCH, &at, &t.member, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(a.get_json(&path, &t.member).await["data"].as_array().unwrap().len(), 2);

    // Idempotent creation: the same key twice creates one task.
    let mut replays = Vec::new();
    for _ in 0..2 {
        let res = a
            .http
            .post(a.url(&path))
            .bearer_auth(&t.member)
            .header("Idempotency-Key", "task-once")
            .json(&json!({ "title": "Once" }))
            .send()
            .await
            .unwrap();
        replays.push((res.status(), res.json::<Value>().await.unwrap()["id"].clone()));
    }
    assert_eq!(replays[0].1, replays[1].1);
    assert_eq!(a.get_json(&path, &t.member).await["data"].as_array().unwrap().len(), 3);

    // Audited: creation and each change, with the move.
    let actions = audit_actions(&a, &t.admin).await;
    assert!(actions.iter().any(|(a, d)| a == "task.update" && d["status"]["to"] == "done"), "{actions:?}");
    assert!(actions.iter().filter(|(a, _)| a == "task.create").count() >= 3, "{actions:?}");

    // Another tenant: 404 for the task and the project, and nothing listed.
    let other = tenant(&a, "tasks-other").await;
    assert_eq!(a.status_of(Method::GET, &at, &other.admin).await, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&a, Method::PATCH, &at, &other.admin, json!({ "status": "cancelled" })).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(a.status_of(Method::GET, &path, &other.admin).await, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&a, Method::POST, &path, &other.admin, json!({ "title": "x" })).await.0,
        StatusCode::NOT_FOUND
    );
}

/// A policy: shell denied, github writes held for admins, deploys held for
/// members too, everything else allowed.
fn policy() -> Value {
    json!({
        "rules": [
            { "name": "no-shell", "tool": "shell", "action": "deny" },
            { "name": "github-writes", "tool": "github.*", "action": "require_approval" },
            { "name": "deploys", "tool": "deploy", "action": "require_approval", "approvers": ["admin", "member"] },
        ],
        "default_action": "allow"
    })
}

#[tokio::test]
async fn a_tool_policy_allows_holds_or_denies_calls_and_approvals_are_decided_once_across_nodes() {
    let (a, b) = (Node::spawn(BIN, "appr-a"), Node::spawn(BIN, "appr-b"));
    let t = tenant(&a, "approvals").await;

    // No policy yet: everything allowed, version 0.
    let shown = a.get_json("/api/v1/tool-policies", &t.member).await;
    assert_eq!((shown["version"].as_i64(), shown["default_action"].as_str()), (Some(0), Some("allow")));

    // Only owners and admins write it; an unsound one is refused, naming each problem.
    assert_eq!(
        send(&a, Method::PUT, "/api/v1/tool-policies", &t.member, policy()).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&a, Method::PUT, "/api/v1/tool-policies", &t.worker, policy()).await.0,
        StatusCode::FORBIDDEN
    );
    let unsound = json!({ "rules": [
        { "name": "a", "tool": "x", "action": "deny" },
        { "name": "a", "tool": "", "action": "allow", "approvers": ["admin"] },
        { "name": "b", "tool": "y", "action": "require_approval", "approvers": ["service"] },
    ]});
    let (status, err) = send(&a, Method::PUT, "/api/v1/tool-policies", &t.admin, unsound).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    for field in ["rules[1].name", "rules[1].tool", "rules[1].approvers", "rules[2].approvers"] {
        assert!(err["error"]["details"][field].is_array(), "{field}: {err}");
    }
    let (status, bad) = send(
        &a,
        Method::PUT,
        "/api/v1/tool-policies",
        &t.admin,
        json!({ "rules": [{ "name": "a", "tool": "x", "action": "maybe" }] }),
    )
    .await;
    assert!(status.is_client_error(), "{bad}");
    assert_eq!(a.get_json("/api/v1/tool-policies", &t.member).await["version"], 0, "nothing stored");
    let (status, stored) = send(&a, Method::PUT, "/api/v1/tool-policies", &t.admin, policy()).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["rules"].as_array().unwrap().len(), 3);

    let (_, run) = send(
        &a,
        Method::POST,
        "/api/v1/runs",
        &t.worker,
        json!({ "project_id": t.project, "agent": "coder" }),
    )
    .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let calls = format!("/api/v1/runs/{run_id}/tool-calls");

    // The worker (on A) and a person watching the project (on B) listen.
    let worker_user = user_token(t.id, UserId::new(), Role::Member);
    let mut worker_socket = SioClient::connect(&a.url(""), &worker_user).await.unwrap();
    let ack = worker_socket.emit_with_ack("subscribe", json!({ "topic": format!("run:{run_id}") })).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let admin_user = UserId::new();
    let admin_token = user_token(t.id, admin_user, Role::Admin);
    let mut reviewer = SioClient::connect(&b.url(""), &admin_token).await.unwrap();
    let ack = reviewer.emit_with_ack("subscribe", json!({ "topic": format!("project:{}", t.project) })).await;
    assert_eq!(ack["ok"], true, "{ack}");

    // Denied: 403 naming the rule, nothing recorded, the refusal audited.
    let (status, err) = send(
        &a,
        Method::POST,
        &calls,
        &t.worker,
        json!({ "name": "shell", "arguments": { "cmd": "rm -rf /" } }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("no-shell"), "{err}");
    assert_eq!(err["error"]["details"]["rule"], json!(["no-shell"]));
    assert_eq!(a.get_json(&calls, &t.worker).await["data"].as_array().unwrap().len(), 0);

    // Allowed by default: recorded as it comes.
    let (status, call) =
        send(&a, Method::POST, &calls, &t.worker, json!({ "name": "search", "result": { "hits": 3 } })).await;
    assert_eq!(status, StatusCode::CREATED, "{call}");
    assert_eq!(call["status"], "succeeded");
    assert!(call.get("approval").is_none(), "{call}");

    // Held: recorded pending_approval, with its approval; approval:requested
    // on the run (the worker) and the project (the reviewer, on the other node).
    let (status, err) =
        send(&a, Method::POST, &calls, &t.worker, json!({ "name": "github.merge", "result": {} })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a held call is recorded before it runs: {err}");
    let (status, held) = send(
        &a,
        Method::POST,
        &calls,
        &t.worker,
        json!({ "name": "github.merge", "arguments": { "pr": 42 } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(held["status"], "pending_approval");
    assert_eq!(held["approval"]["rule"], "github-writes");
    assert_eq!(held["approval"]["approver_roles"], json!(["owner", "admin"]));
    let approval = held["approval"]["id"].as_str().unwrap().to_owned();
    let requested = worker_socket.next_event("approval:requested", WAIT).await.expect("on the run topic");
    assert_eq!(requested["data"]["id"], json!(approval));
    let requested =
        reviewer.next_event("approval:requested", WAIT).await.expect("on the project topic, node B");
    assert_eq!(requested["data"]["tool"], "github.merge");
    let pending = b.get_json("/api/v1/approvals?status=pending", &t.member).await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 1, "{pending}");

    // Reporting on it before a decision is refused.
    let (status, _) = send(
        &a,
        Method::POST,
        &calls,
        &t.worker,
        json!({ "name": "github.merge", "approval_id": approval, "result": { "merged": true } }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A member may not decide (the rule names owners and admins), nor an API
    // key; bad decisions are refused; nothing changes.
    let (status, err) = decide(&b, &approval, &t.member, json!({ "decision": "approve" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("github-writes"), "{err}");
    let (status, _) = decide(&b, &approval, &t.worker, json!({ "decision": "approve" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bad = reviewer
        .emit_with_ack("approval:decide", json!({ "approval_id": approval, "decision": "maybe" }))
        .await;
    assert_eq!(bad["error"]["code"], "invalid_payload", "{bad}");
    let bad = reviewer
        .emit_with_ack(
            "approval:decide",
            json!({ "approval_id": approval, "decision": "approve", "reason": "x".repeat(2001) }),
        )
        .await;
    assert_eq!(bad["error"]["code"], "invalid_payload", "{bad}");
    assert_eq!(b.get_json(&format!("/api/v1/approvals/{approval}"), &t.member).await["status"], "pending");

    // The admin on B approves over the socket; the worker on A hears it.
    let ack = reviewer
        .emit_with_ack(
            "approval:decide",
            json!({ "approval_id": approval, "decision": "approve", "reason": "reviewed the diff" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["approval"]["status"], "approved");
    assert_eq!(ack["approval"]["decided_by"], admin_user.to_string());
    let decided =
        worker_socket.next_event("approval:decided", WAIT).await.expect("the worker hears the decision");
    assert_eq!(
        (decided["data"]["status"].as_str(), decided["data"]["reason"].as_str()),
        (Some("approved"), Some("reviewed the diff"))
    );

    // Decided once: again over REST (either answer) is 409.
    for decision in ["approve", "reject"] {
        let (status, err) = decide(&a, &approval, &admin_token, json!({ "decision": decision })).await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
    }

    // The worker reports the cleared call, once.
    let report = json!({ "name": "github.merge", "approval_id": approval, "result": { "merged": true }, "latency_ms": 120 });
    let (status, done) = send(&a, Method::POST, &calls, &t.worker, report.clone()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!((done["id"].as_str(), done["status"].as_str()), (held["id"].as_str(), Some("succeeded")));
    assert_eq!(send(&a, Method::POST, &calls, &t.worker, report).await.0, StatusCode::CONFLICT);
    let (status, err) =
        send(&a, Method::POST, &calls, &t.worker, json!({ "name": "github.close", "approval_id": approval }))
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "another tool under the approval: {err}");

    // Two decisions at once, on two nodes: exactly one wins.
    let (_, second) = send(
        &a,
        Method::POST,
        &calls,
        &t.worker,
        json!({ "name": "deploy", "arguments": { "env": "prod" } }),
    )
    .await;
    let second = second["approval"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/approvals/{second}/decision");
    let other_admin = user_token(t.id, UserId::new(), Role::Admin);
    let (ra, rb) = tokio::join!(
        send(&a, Method::POST, &path, &admin_token, json!({ "decision": "approve" })),
        send(&b, Method::POST, &path, &other_admin, json!({ "decision": "reject", "reason": "not today" })),
    );
    let mut statuses = [ra.0.as_u16(), rb.0.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{ra:?} {rb:?}");
    let winner = if ra.0 == StatusCode::OK { ra.1 } else { rb.1 };
    let stored = a.get_json(&format!("/api/v1/approvals/{second}"), &t.member).await;
    assert_eq!(stored["status"], winner["status"]);
    let call = a.get_json(&calls, &t.worker).await;
    let deploy = call["data"].as_array().unwrap().iter().find(|c| c["name"] == "deploy").unwrap().clone();
    let expected = if winner["status"] == "approved" { "pending" } else { "rejected" };
    assert_eq!(deploy["status"], expected, "{deploy}");

    // Each decision audited with who and why.
    let actions = audit_actions(&a, &t.admin).await;
    let approve = actions.iter().find(|(a, d)| a == "approval.approve" && d["reason"] == "reviewed the diff");
    assert!(approve.is_some(), "{actions:?}");
    assert!(actions.iter().any(|(a, d)| a == "tool_call.deny" && d["rule"] == "no-shell"), "{actions:?}");
    assert!(actions.iter().any(|(a, _)| a == "tool_policy.update"), "{actions:?}");

    // Another tenant sees none of it and decides nothing.
    let other = tenant(&b, "approvals-other").await;
    assert_eq!(b.get_json("/api/v1/approvals", &other.admin).await["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        b.status_of(Method::GET, &format!("/api/v1/approvals/{approval}"), &other.admin).await,
        StatusCode::NOT_FOUND
    );
    let (status, _) = decide(&b, &second, &other.admin, json!({ "decision": "approve" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b.get_json("/api/v1/tool-policies", &other.admin).await["version"], 0);
    let mut intruder = SioClient::connect(&b.url(""), &other.admin).await.unwrap();
    let ack = intruder
        .emit_with_ack("approval:decide", json!({ "approval_id": second, "decision": "approve" }))
        .await;
    assert_eq!(ack["error"]["code"], "not_found", "{ack}");
    let _ = intruder.drain_events(Duration::from_millis(10)).await;

    // Straight at Postgres as the other tenant: no rows of this one's, and a
    // row claiming this tenant is refused.
    let db = Database::connect(&env("DATABASE_URL")).await.unwrap();
    let mut tx = db.begin(&TenantContext::new(other.id, None, Role::Service)).await.unwrap();
    for table in ["tasks", "tool_policies", "approvals"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"))
            .bind(t.id.as_uuid())
            .fetch_one(tx.conn())
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let forged = sqlx::query("INSERT INTO tool_policies (tenant_id, rules) VALUES ($1, '[]')")
        .bind(t.id.as_uuid())
        .execute(tx.conn())
        .await;
    let code =
        forged.err().and_then(|e| e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())));
    assert_eq!(code.as_deref(), Some("42501"));
    drop(tx);
    let mut tx = db.begin(&TenantContext::new(other.id, None, Role::Service)).await.unwrap();
    let changed = sqlx::query("UPDATE approvals SET status = 'approved', decided_at = now() WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&second).unwrap())
        .execute(tx.conn())
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 0);
    let forged = sqlx::query("INSERT INTO tasks (tenant_id, project_id, title) VALUES ($1, $2, 'x')")
        .bind(t.id.as_uuid())
        .bind(uuid::Uuid::parse_str(&t.project).unwrap())
        .execute(tx.conn())
        .await;
    let code =
        forged.err().and_then(|e| e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())));
    assert_eq!(code.as_deref(), Some("42501"));
}

#[tokio::test]
async fn an_undecided_approval_expires_its_call_tells_the_worker_and_cannot_be_decided() {
    let a = Node::spawn_with(BIN, "expiry-a", &[("APPROVAL_TTL_SECONDS", "1")]);
    let t = tenant(&a, "expiry").await;
    let (status, _) = send(&a, Method::PUT, "/api/v1/tool-policies", &t.admin, policy()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, run) =
        send(&a, Method::POST, "/api/v1/runs", &t.worker, json!({ "project_id": t.project })).await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let mut watcher = SioClient::connect(&a.url(""), &t.member).await.unwrap();
    let ack = watcher.emit_with_ack("subscribe", json!({ "topic": format!("run:{run_id}") })).await;
    assert_eq!(ack["ok"], true);
    let calls = format!("/api/v1/runs/{run_id}/tool-calls");
    let (_, held) = send(&a, Method::POST, &calls, &t.worker, json!({ "name": "github.push" })).await;
    let approval = held["approval"]["id"].as_str().unwrap().to_owned();

    let decided = watcher
        .next_event("approval:decided", Duration::from_secs(10))
        .await
        .expect("expired within the sweep");
    assert_eq!(decided["data"]["status"], "expired");
    assert_eq!(decided["from"]["kind"], "system");
    let (status, err) = decide(&a, &approval, &t.admin, json!({ "decision": "approve" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let listed = a.get_json("/api/v1/approvals?status=expired", &t.member).await;
    assert_eq!(listed["data"][0]["id"], json!(approval));
    let calls = a.get_json(&calls, &t.worker).await;
    assert_eq!(calls["data"][0]["status"], "expired");
    let actions = audit_actions(&a, &t.admin).await;
    assert!(actions.iter().any(|(a, _)| a == "approval.expire"), "{actions:?}");
    // Announced once, though the sweep keeps running.
    assert!(watcher.next_event("approval:decided", Duration::from_secs(3)).await.is_none());
}

#[tokio::test]
async fn policies_see_through_disguised_names_keys_cannot_rewrite_them_and_private_runs_keep_their_approvals()
{
    let a = Node::spawn(BIN, "appr-edge");
    let t = tenant(&a, "approvals-edge").await;
    // An admin-scoped API key may not change the policy that governs agents.
    let admin_key = a.api_key(t.id, &["admin"]).await;
    let (status, err) = send(&a, Method::PUT, "/api/v1/tool-policies", &admin_key, policy()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, _) = send(&a, Method::PUT, "/api/v1/tool-policies", &t.admin, policy()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = send(
        &a,
        Method::PUT,
        "/api/v1/tool-policies",
        &t.admin,
        json!({ "rules": [{ "name": "default", "tool": "x", "action": "deny" }] }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the default's name is reserved: {err}");

    let (_, run) =
        send(&a, Method::POST, "/api/v1/runs", &t.worker, json!({ "project_id": t.project })).await;
    let calls = format!("/api/v1/runs/{}/tool-calls", run["id"].as_str().unwrap());
    // Case and spaces do not get a denied tool through.
    for disguised in ["Shell", " shell ", "SHELL"] {
        let (status, err) = send(&a, Method::POST, &calls, &t.worker, json!({ "name": disguised })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{disguised:?}: {err}");
    }
    // A replayed key does not turn a denied call into a stored one.
    for _ in 0..2 {
        let res = a
            .http
            .post(a.url(&calls))
            .header("X-API-Key", &t.worker)
            .header("Idempotency-Key", "shell-once")
            .json(&json!({ "name": "shell", "result": {} }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
    // A denied call on a run that is not there is 404, not an audit row.
    let missing = format!("/api/v1/runs/{}/tool-calls", uuid::Uuid::new_v4());
    assert_eq!(
        send(&a, Method::POST, &missing, &t.worker, json!({ "name": "shell" })).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(a.get_json(&calls, &t.worker).await["data"].as_array().unwrap().len(), 0);

    // A report on an approved call names it by approval_id alone.
    let (_, held) = send(
        &a,
        Method::POST,
        &calls,
        &t.worker,
        json!({ "name": "GitHub.Merge", "arguments": { "pr": 1 } }),
    )
    .await;
    assert_eq!(held["status"], "pending_approval", "{held}");
    let approval = held["approval"]["id"].as_str().unwrap().to_owned();
    let (status, _) = decide(&a, &approval, &t.admin, json!({ "decision": "approve" })).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = send(
        &a,
        Method::POST,
        &calls,
        &t.worker,
        json!({ "name": "GitHub.Merge", "approval_id": approval, "arguments": { "pr": 2 }, "result": {} }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "other arguments under an approval: {err}");

    // A run of a private conversation: its approvals are seen, decided and
    // announced only where the run is.
    let insider = UserId::new();
    let insider_token = user_token(t.id, insider, Role::Member);
    let peer = UserId::new();
    let peer_token = user_token(t.id, peer, Role::Member);
    let (status, conversation) = send(
        &a,
        Method::POST,
        &format!("/api/v1/projects/{}/conversations", t.project),
        &insider_token,
        json!({ "title": "private", "private": true, "participants": [peer.to_string()] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{conversation}");
    let mut outsider = SioClient::connect(&a.url(""), &t.member).await.unwrap();
    let ack = outsider.emit_with_ack("subscribe", json!({ "topic": format!("project:{}", t.project) })).await;
    assert_eq!(ack["ok"], true);
    let (_, private_run) = send(
        &a,
        Method::POST,
        "/api/v1/runs",
        &insider_token,
        json!({ "project_id": t.project, "conversation_id": conversation["id"] }),
    )
    .await;
    let private_calls = format!("/api/v1/runs/{}/tool-calls", private_run["id"].as_str().unwrap());
    let (status, held) =
        send(&a, Method::POST, &private_calls, &insider_token, json!({ "name": "deploy" })).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let secret_approval = held["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(held["approval"]["conversation_id"], conversation["id"]);
    // Another member of the project sees none of it, nor can decide it (the
    // deploy rule lets members decide, but not a run they cannot see).
    let listed = a.get_json("/api/v1/approvals", &t.member).await;
    assert!(listed["data"].as_array().unwrap().iter().all(|x| x["id"] != json!(secret_approval)), "{listed}");
    assert_eq!(
        a.status_of(Method::GET, &format!("/api/v1/approvals/{secret_approval}"), &t.member).await,
        StatusCode::NOT_FOUND
    );
    let (status, _) = decide(&a, &secret_approval, &t.member, json!({ "decision": "approve" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        outsider.next_event("approval:requested", Duration::from_millis(500)).await.is_none(),
        "not on the project topic"
    );
    // The insider sees it, but recorded the call, so may not decide it; a
    // peer in the conversation (the rule lets members decide) may.
    assert_eq!(
        a.get_json(&format!("/api/v1/approvals/{secret_approval}"), &insider_token).await["status"],
        "pending"
    );
    let (status, err) = decide(&a, &secret_approval, &insider_token, json!({ "decision": "approve" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no approving one's own call: {err}");
    let (status, decided) = decide(&a, &secret_approval, &peer_token, json!({ "decision": "approve" })).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["requested_by"], insider.to_string());
}
