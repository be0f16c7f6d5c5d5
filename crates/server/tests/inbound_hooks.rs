//! Inbound webhooks from GitHub and Slack, on a real `switchboard` process:
//! requests signed with the tenant's secret (kept sealed, see `secrets.rs`)
//! become events on the hook's channel topic; forged, altered, stale or
//! replayed ones are refused and send nothing; Slack's URL check is answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use ring::hmac;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{Node, SioClient, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const KEY: &str = "aG9va3MtdGVzdC1tYXN0ZXIta2V5LTMyLWJ5dGVzISE=";
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sign(secret: &str, message: &[u8]) -> String {
    hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), message).as_ref())
}

async fn github(
    node: &Node,
    hook: &str,
    secret: &str,
    delivery: &str,
    event: &str,
    body: &str,
) -> (StatusCode, Value) {
    let res = node
        .http
        .post(node.url(&format!("/api/v1/hooks/github/{hook}")))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", format!("sha256={}", sign(secret, body.as_bytes())))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

async fn slack(
    node: &Node,
    hook: &str,
    secret: &str,
    at: i64,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let signature = sign(secret, format!("v0:{at}:{body}").as_bytes());
    let res = node
        .http
        .post(node.url(&format!("/api/v1/hooks/slack/{hook}")))
        .header("X-Slack-Request-Timestamp", at.to_string())
        .header("X-Slack-Signature", format!("v0={signature}"))
        .header("Content-Type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn signed_github_and_slack_requests_become_events_and_forged_stale_or_replayed_ones_do_not() {
    let a =
        Node::spawn_with(BIN, "hooks-a", &[("SECRETS_MASTER_KEY", KEY), ("SECRETS_MASTER_KEY_ID", "hooks")]);
    let tenant = a.create_tenant("hooks").await;
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    for (name, value) in [("GITHUB_WEBHOOK", "gh-secret-123"), ("SLACK_SIGNING", "slack-secret-456")] {
        let (status, body) = a
            .send_json(Method::POST, "/api/v1/secrets", &admin, &json!({ "name": name, "value": value }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let hook = |provider: &str, secret: &str, topic: &str| json!({ "provider": provider, "secret_name": secret, "topic": topic });
    // Bad hooks are refused, naming the field.
    for (bad, field) in [
        (hook("gitlab", "GITHUB_WEBHOOK", "channel:ci"), "provider"),
        (hook("github", "NOPE", "channel:ci"), "secret_name"),
        (hook("github", "GITHUB_WEBHOOK", "lobby"), "topic"),
        (hook("github", "GITHUB_WEBHOOK", &format!("project:{}", uuid::Uuid::new_v4())), "topic"),
    ] {
        let (status, err) = a.send_json(Method::POST, "/api/v1/inbound-hooks", &admin, &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        assert!(err["error"]["details"][field].is_array(), "{err}");
    }
    let member = user_token(tenant, UserId::new(), Role::Member);
    let (status, _) = a
        .send_json(
            Method::POST,
            "/api/v1/inbound-hooks",
            &member,
            &hook("github", "GITHUB_WEBHOOK", "channel:ci"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, gh) = a
        .send_json(
            Method::POST,
            "/api/v1/inbound-hooks",
            &admin,
            &hook("github", "GITHUB_WEBHOOK", "channel:ci"),
        )
        .await;
    let (_, sl) = a
        .send_json(
            Method::POST,
            "/api/v1/inbound-hooks",
            &admin,
            &hook("slack", "SLACK_SIGNING", "channel:chatops"),
        )
        .await;
    let (gh, sl) = (gh["id"].as_str().unwrap().to_owned(), sl["id"].as_str().unwrap().to_owned());

    let mut watcher = SioClient::connect(&a.url(""), &member).await.unwrap();
    for topic in ["channel:ci", "channel:chatops"] {
        let ack = watcher.emit_with_ack("subscribe", json!({ "topic": topic })).await;
        assert_eq!(ack["ok"], true, "{ack}");
    }

    // GitHub: a signed delivery becomes `github:pull_request` on channel:ci.
    let body =
        json!({ "action": "opened", "number": 42, "repository": { "full_name": "acme/app" } }).to_string();
    let (status, sent) = github(&a, &gh, "gh-secret-123", "d-1", "pull_request", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let event = watcher.next_event("github:pull_request", WAIT).await.expect("the delivery's event");
    assert_eq!(
        (event["topic"].as_str(), event["offset"].as_str()),
        (Some("channel:ci"), sent["offset"].as_str())
    );
    assert_eq!(event["data"]["delivery"], "d-1");
    assert_eq!(event["data"]["payload"]["number"], 42);
    assert_eq!(event["from"]["kind"], "system");

    // Refused, sending nothing: a replay, another secret, an altered body,
    // no signature, the wrong provider's path, an unknown hook.
    let (status, _) = github(&a, &gh, "gh-secret-123", "d-1", "pull_request", &body).await;
    assert_eq!(status, StatusCode::CONFLICT, "a replayed delivery");
    let (status, _) = github(&a, &gh, "not-the-secret", "d-2", "pull_request", &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "forged");
    let res = a
        .http
        .post(a.url(&format!("/api/v1/hooks/github/{gh}")))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "d-3")
        .header("X-Hub-Signature-256", format!("sha256={}", sign("gh-secret-123", body.as_bytes())))
        .body(body.replace("42", "43"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "altered after signing");
    let res = a
        .http
        .post(a.url(&format!("/api/v1/hooks/github/{gh}")))
        .header("X-GitHub-Delivery", "d-4")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "unsigned");
    assert_eq!(
        slack(&a, &gh, "gh-secret-123", chrono::Utc::now().timestamp(), "application/json", "{}").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        github(&a, &uuid::Uuid::new_v4().to_string(), "x", "d-5", "push", &body).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(github(&a, "not-a-uuid", "x", "d-6", "push", &body).await.0, StatusCode::NOT_FOUND);
    let (status, _) = github(&a, &gh, "gh-secret-123", "d-7", "ping", "{\"zen\":\"hi\"}").await;
    assert_eq!(status, StatusCode::OK, "GitHub's ping is answered, not sent");
    assert!(watcher.next_event("github:pull_request", QUIET).await.is_none());
    assert!(watcher.next_event("github:push", QUIET).await.is_none());

    // Slack: the URL check answered; a signed event and a slash command
    // become events; stale and replayed ones are refused.
    let now = chrono::Utc::now().timestamp();
    let check = json!({ "type": "url_verification", "challenge": "c-123" }).to_string();
    let (status, answer) = slack(&a, &sl, "slack-secret-456", now, "application/json", &check).await;
    assert_eq!((status, answer["challenge"].as_str()), (StatusCode::OK, Some("c-123")));
    let mention = json!({ "type": "event_callback", "event": { "type": "app_mention", "text": "deploy?" } })
        .to_string();
    let (status, sent) = slack(&a, &sl, "slack-secret-456", now, "application/json", &mention).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let event = watcher.next_event("slack:app_mention", WAIT).await.expect("the Slack event");
    assert_eq!(event["data"]["payload"]["event"]["text"], "deploy?");
    assert_eq!(
        slack(&a, &sl, "slack-secret-456", now, "application/json", &mention).await.0,
        StatusCode::CONFLICT
    );
    let (status, _) = slack(&a, &sl, "slack-secret-456", now - 600, "application/json", &mention).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "stale");
    let (status, _) = slack(&a, &sl, "wrong", now, "application/json", &mention).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "forged");
    let command = "command=%2Fdeploy&text=production&user_name=ana";
    let (status, _) =
        slack(&a, &sl, "slack-secret-456", now, "application/x-www-form-urlencoded", command).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let event = watcher.next_event("slack:deploy", WAIT).await.expect("the slash command");
    assert_eq!(event["data"]["payload"]["text"], "production");
    assert!(watcher.next_event("slack:app_mention", QUIET).await.is_none(), "refused ones sent nothing");

    // Another tenant neither sees nor removes the hooks.
    let other = a.create_tenant("hooks-other").await;
    let other_admin = user_token(other, UserId::new(), Role::Admin);
    assert_eq!(a.get_json("/api/v1/inbound-hooks", &other_admin).await["data"], json!([]));
    assert_eq!(
        a.status_of(Method::DELETE, &format!("/api/v1/inbound-hooks/{gh}"), &other_admin).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(a.get_json("/api/v1/inbound-hooks", &admin).await["data"].as_array().unwrap().len(), 2);
    let audit = a.get_json("/api/v1/audit-logs?target_type=inbound_hook", &admin).await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 2, "{audit}");
}
