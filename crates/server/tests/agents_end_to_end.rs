//! An agent acting for a tenant, end to end, on two `switchboard` processes:
//! a worker's run asks for a tool the tenant's policy holds for approval; a
//! person connected to node B approves over a socket; the worker, on node A,
//! hears it, reads the tenant's secret with its `secrets` key, calls the
//! tool's API with it, reports the call and finishes the run; and the
//! tenant's webhook receiver gets each of those events, signed, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod webhooks_common;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{Node, SioClient, user_token};
use webhooks_common::{MASTER_KEY, Receiver, verify};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WAIT: Duration = Duration::from_secs(5);

fn spawn(node_id: &str) -> Node {
    Node::spawn_with(
        BIN,
        node_id,
        &[
            ("SECRETS_MASTER_KEY", MASTER_KEY),
            ("SECRETS_MASTER_KEY_ID", "k1"),
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_TIMEOUT_MS", "1000"),
            ("WEBHOOK_RETRY_BASE_MS", "100"),
        ],
    )
}

#[tokio::test]
async fn an_approved_tool_call_proceeds_with_a_secret_and_the_tenant_hears_it_all_in_order() {
    let (a, b) = (spawn("e2e-a"), spawn("e2e-b"));
    let tenant = a.create_tenant("agents-e2e").await;
    let admin_user = UserId::new();
    let admin = user_token(tenant, admin_user, Role::Admin);
    let (status, project) =
        a.send_json(Method::POST, "/api/v1/projects", &admin, &json!({ "name": "repo" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let project = project["id"].as_str().unwrap().to_owned();

    // The tenant's setup: merges need an admin's approval; the tool's token
    // is a secret; a receiver hears runs and approvals.
    let policy =
        json!({ "rules": [{ "name": "merges", "tool": "github.merge", "action": "require_approval" }] });
    assert_eq!(a.send_json(Method::PUT, "/api/v1/tool-policies", &admin, &policy).await.0, StatusCode::OK);
    let token = "ghp_e2e_0123456789abcdefghijklmnopqrstuv";
    let (status, _) = b
        .send_json(
            Method::POST,
            "/api/v1/secrets",
            &admin,
            &json!({ "name": "GITHUB_TOKEN", "value": token }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let receiver = Receiver::start(&[]).await;
    *receiver.tool_token.lock().unwrap() = Some(token.to_owned());
    let (status, hook) = a
        .send_json(
            Method::POST,
            "/api/v1/webhooks",
            &admin,
            &json!({ "url": receiver.url, "events": ["run.*", "approval.*"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();

    // The worker: an API key for runs, one for secrets, and a socket on A.
    let worker = a.api_key(tenant, &["read", "write"]).await;
    let secrets_key = a.api_key(tenant, &["secrets"]).await;
    let (status, run) = a
        .send_json(
            Method::POST,
            "/api/v1/runs",
            &worker,
            &json!({ "project_id": project, "agent": "merger" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let (status, started) = a
        .send_json(Method::PATCH, &format!("/api/v1/runs/{run_id}"), &worker, &json!({ "status": "running" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let mut worker_socket =
        SioClient::connect(&a.url(""), &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
    let ack = worker_socket.emit_with_ack("subscribe", json!({ "topic": format!("run:{run_id}") })).await;
    assert_eq!(ack["ok"], true, "{ack}");
    // The person, on B, watching the project.
    let mut reviewer = SioClient::connect(&b.url(""), &admin).await.unwrap();
    let ack = reviewer.emit_with_ack("subscribe", json!({ "topic": format!("project:{project}") })).await;
    assert_eq!(ack["ok"], true, "{ack}");

    // The run asks for the tool: held.
    let calls = format!("/api/v1/runs/{run_id}/tool-calls");
    let (status, held) = a
        .send_json(
            Method::POST,
            &calls,
            &worker,
            &json!({ "name": "github.merge", "arguments": { "pr": 7 } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(held["status"], "pending_approval");
    let approval = held["approval"]["id"].as_str().unwrap().to_owned();

    // The person hears of it on B and approves over the socket.
    let requested = reviewer.next_event("approval:requested", WAIT).await.expect("approval:requested on B");
    assert_eq!(requested["data"]["id"], json!(approval));
    let ack = reviewer
        .emit_with_ack(
            "approval:decide",
            json!({ "approval_id": approval, "decision": "approve", "reason": "ok to merge" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    // The worker on A hears the decision, reads the token, and uses it.
    let decided = worker_socket.next_event("approval:decided", WAIT).await.expect("approval:decided on A");
    assert_eq!(decided["data"]["status"], "approved");
    let res = a
        .http
        .get(a.url("/api/v1/secrets/GITHUB_TOKEN/value"))
        .header("X-API-Key", &secrets_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let read: serde_json::Value = res.json().await.unwrap();
    let tool_url = receiver.url.replace("/hook", "/merge");
    let merged = a.http.post(&tool_url).bearer_auth(read["value"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(merged.status(), StatusCode::OK, "the secret opens the tool's API");
    let result: serde_json::Value = merged.json().await.unwrap();
    let (status, done) = a
        .send_json(
            Method::POST,
            &calls,
            &worker,
            &json!({ "name": "github.merge", "approval_id": approval, "result": result, "latency_ms": 40 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "succeeded");
    let (status, finished) = a
        .send_json(
            Method::PATCH,
            &format!("/api/v1/runs/{run_id}"),
            &worker,
            &json!({ "status": "succeeded", "output": { "merged": 7 } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{finished}");

    // The receiver heard all of it, signed, in the order it happened.
    let heard = receiver.wait_for(5, Duration::from_secs(20)).await;
    let story: Vec<(String, String)> = heard
        .iter()
        .map(|h| {
            let data = &h.json["data"];
            let what = data["status"].as_str().unwrap_or_default().to_owned();
            (h.json["type"].as_str().unwrap().to_owned(), what)
        })
        .collect();
    assert_eq!(
        story,
        [
            ("run.created".to_owned(), "queued".to_owned()),
            ("run.updated".to_owned(), "running".to_owned()),
            ("approval.requested".to_owned(), "pending".to_owned()),
            ("approval.decided".to_owned(), "approved".to_owned()),
            ("run.updated".to_owned(), "succeeded".to_owned()),
        ],
        "{heard:?}"
    );
    assert_eq!(heard[3].json["data"]["decided_by"], json!(admin_user.to_string()));
    assert_eq!(heard[4].json["data"]["id"], json!(run_id));
    for h in &heard {
        verify(&secret, h).unwrap_or_else(|e| panic!("{e}: {h:?}"));
    }
    // The token itself went to no receiver.
    assert!(receiver.arrivals().iter().all(|h| !String::from_utf8_lossy(&h.body).contains(token)));
}
