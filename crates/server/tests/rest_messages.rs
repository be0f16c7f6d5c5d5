//! Conversations and messages over REST: idempotent sends (also under
//! concurrency), pagination, private visibility, deletion, another tenant's ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{TestApp, user_token};

async fn project(app: &TestApp, token: &str) -> String {
    let res = app
        .http
        .post(app.url("/api/v1/projects"))
        .bearer_auth(token)
        .json(&json!({ "name": "p" }))
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn conversation(app: &TestApp, token: &str, project: &str, body: Value) -> String {
    let res = app
        .http
        .post(app.url(&format!("/api/v1/projects/{project}/conversations")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn send(
    app: &TestApp,
    token: &str,
    conversation: &str,
    content: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(&format!("/api/v1/conversations/{conversation}/messages")))
        .bearer_auth(token)
        .json(&json!({ "content": content }));
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.unwrap()
}

async fn all_messages(app: &TestApp, token: &str, conversation: &str) -> Vec<Value> {
    let url = app.url(&format!("/api/v1/conversations/{conversation}/messages?limit=100"));
    let page: Value = app.http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    page["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn the_same_idempotency_key_stores_once_and_answers_the_same_message() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("idem").await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let conv = conversation(&app, &token, &project(&app, &token).await, json!({ "title": "t" })).await;

    let first = send(&app, &token, &conv, "hello", Some("k-1")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(&app, &token, &conv, "hello", Some("k-1")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let conflict = send(&app, &token, &conv, "something else", Some("k-1")).await;
    assert_eq!(conflict.status(), 409);
    assert_eq!(all_messages(&app, &token, &conv).await.len(), 1);

    // Ten concurrent retries of one new key: one 201, nine replays, one row.
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let (http, token) = (app.http.clone(), token.clone());
            let url = app.url(&format!("/api/v1/conversations/{conv}/messages"));
            tokio::spawn(async move {
                let req = http.post(url).bearer_auth(token).header("Idempotency-Key", "k-2");
                req.json(&json!({ "content": "race" })).send().await.unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    let statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 9, "{statuses:?}");
    assert_eq!(all_messages(&app, &token, &conv).await.len(), 2);

    // Without a key, every send stores a message.
    send(&app, &token, &conv, "a", None).await;
    send(&app, &token, &conv, "a", None).await;
    assert_eq!(all_messages(&app, &token, &conv).await.len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn messages_are_paged_newest_first_with_before() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("paging").await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let conv = conversation(&app, &token, &project(&app, &token).await, json!({})).await;
    for i in 0..5 {
        assert_eq!(send(&app, &token, &conv, &format!("m{i}"), None).await.status(), 201);
    }
    let mut seen = Vec::new();
    let mut url = app.url(&format!("/api/v1/conversations/{conv}/messages?limit=2"));
    loop {
        let page: Value = app.http.get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        seen.extend(
            page["data"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => url = app.url(&format!("/api/v1/conversations/{conv}/messages?limit=2&before={c}")),
            None => break,
        }
    }
    assert_eq!(seen, ["m4", "m3", "m2", "m1", "m0"]);
    let res = app
        .http
        .get(app.url(&format!("/api/v1/conversations/{conv}/messages?limit=500")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_conversation_is_not_found_and_untouched() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.create_tenant("a").await, app.create_tenant("b").await);
    let (ta, tb) = (user_token(a, UserId::new(), Role::Owner), user_token(b, UserId::new(), Role::Owner));
    let b_project = project(&app, &tb).await;
    let b_conv = conversation(&app, &tb, &b_project, json!({ "title": "b" })).await;
    send(&app, &tb, &b_conv, "secret", Some("b-key")).await;

    for (method, path) in [
        ("GET", format!("/api/v1/conversations/{b_conv}")),
        ("GET", format!("/api/v1/conversations/{b_conv}/messages")),
        ("DELETE", format!("/api/v1/conversations/{b_conv}")),
        ("GET", format!("/api/v1/projects/{b_project}/conversations")),
    ] {
        let req = app.http.request(method.parse().unwrap(), app.url(&path)).bearer_auth(&ta);
        assert_eq!(req.send().await.unwrap().status(), 404, "{method} {path}");
    }
    assert_eq!(send(&app, &ta, &b_conv, "intrusion", None).await.status(), 404);
    // B's idempotency key is B's alone: A may use the same key for its own message.
    let a_conv = conversation(&app, &ta, &project(&app, &ta).await, json!({})).await;
    assert_eq!(send(&app, &ta, &a_conv, "mine", Some("b-key")).await.status(), 201);
    let res = app
        .http
        .post(app.url(&format!("/api/v1/projects/{b_project}/conversations")))
        .bearer_auth(&ta)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let msgs = all_messages(&app, &tb, &b_conv).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["content"], "secret");
    app.stop().await;
}

#[tokio::test]
async fn private_conversations_show_only_to_participants_and_deleting_removes_messages() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("private").await;
    let (creator, friend, outsider) = (UserId::new(), UserId::new(), UserId::new());
    let t = |u: UserId| user_token(tenant, u, Role::Member);
    let p = project(&app, &t(creator)).await;
    let conv =
        conversation(&app, &t(creator), &p, json!({ "private": true, "participants": [friend.to_string()] }))
            .await;
    assert_eq!(send(&app, &t(friend), &conv, "hi", None).await.status(), 201);
    assert_eq!(send(&app, &t(outsider), &conv, "hi", None).await.status(), 404);
    let url = app.url(&format!("/api/v1/conversations/{conv}"));
    assert_eq!(app.http.get(&url).bearer_auth(t(outsider)).send().await.unwrap().status(), 404);
    assert_eq!(app.http.delete(&url).bearer_auth(t(friend)).send().await.unwrap().status(), 403);
    let listed: Value = app
        .http
        .get(app.url(&format!("/api/v1/projects/{p}/conversations")))
        .bearer_auth(t(outsider))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"], json!([]));

    assert_eq!(app.http.delete(&url).bearer_auth(t(creator)).send().await.unwrap().status(), 204);
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    assert_eq!(app.http.get(&url).bearer_auth(&admin).send().await.unwrap().status(), 404);
    let db = switchboard_db::Database::connect(&switchboard_testkit::env("DATABASE_URL")).await.unwrap();
    let mut tx = db.begin(&switchboard_db::TenantContext::new(tenant, None, Role::Admin)).await.unwrap();
    let left = switchboard_db::repo::messages::list(
        &mut tx,
        conv.parse::<TenantId>().unwrap().0.into(),
        None,
        10,
        1 << 20,
    )
    .await
    .unwrap();
    assert!(left.items.is_empty(), "deleting a conversation removes its messages");
    app.stop().await;
}

#[tokio::test]
async fn message_input_is_validated_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("msg-validation").await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let conv = conversation(&app, &token, &project(&app, &token).await, json!({})).await;
    let url = app.url(&format!("/api/v1/conversations/{conv}/messages"));
    for body in [
        json!({}),
        json!({ "content": "" }),
        json!({ "content": 1 }),
        json!({ "content": "x", "metadata": [1] }),
        json!({ "content": "nul\u{0}" }),
        json!({ "content": "x", "metadata": { "k": "nul\u{0}" } }),
    ] {
        let res = app.http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 422, "{body}");
    }
    let res = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({ "content": "x".repeat(70_000) }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("Idempotency-Key", "k".repeat(300))
        .json(&json!({ "content": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"content\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(all_messages(&app, &token, &conv).await.is_empty());
    app.stop().await;
}
