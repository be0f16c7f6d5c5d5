//! One tenant cannot exhaust what the others need, and one member cannot reach
//! what they may not, against two real `switchboard` processes on the test
//! Postgres and Redis: quotas of Redis memory, failed authentications,
//! unknown API keys, racing subscribes, token lifetimes, idempotency keys,
//! private conversations, and what error texts give away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_auth::{ApiKeyHasher, Claims, mint_token};
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{JWT_SECRET, Node, SioClient, redis, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn project(node: &Node, token: &str) -> String {
    let (status, p) = node.send_json(Method::POST, "/api/v1/projects", token, &json!({ "name": "p" })).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

async fn publish(c: &SioClient) -> Value {
    c.emit_with_ack("publish", json!({ "topic": "channel:q", "event": "e", "data": "x".repeat(1000) })).await
}

async fn track(c: &SioClient, topic: &str) -> Value {
    c.emit_with_ack("presence:track", json!({ "topic": topic, "state": {} })).await
}

fn token_expiring_in(tenant: TenantId, user: UserId, secs: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = Claims {
        sub: Some(user.to_string()),
        tenant_id: Some(tenant.to_string()),
        exp: now + secs,
        ..Claims::default()
    };
    mint_token(&JWT_SECRET.to_owned().into(), &claims).unwrap()
}

#[tokio::test]
async fn a_tenant_at_its_redis_quotas_gets_quota_exceeded_and_another_tenant_is_unaffected() {
    let (a, b) = (Node::spawn(BIN, "tf-quota-a"), Node::spawn(BIN, "tf-quota-b"));
    let limits = json!({
        "max_history_bytes": 20_000, "max_presence_per_topic": 2, "max_presence_entries": 3,
        "max_dedupe_keys": 3, "events_per_second": 10_000, "http_requests_per_second": 10_000,
    });
    let small = a.create_tenant_with("small", limits).await;
    let other = a.create_tenant_with("other", json!({ "events_per_second": 10_000 })).await;

    // History bytes: publishes of 1 KiB until the quota says no.
    let s = SioClient::connect(&a.url(""), &user_token(small, UserId::new(), Role::Member)).await.unwrap();
    let o = SioClient::connect(&b.url(""), &user_token(other, UserId::new(), Role::Member)).await.unwrap();
    for c in [&s, &o] {
        assert_eq!(c.emit_with_ack("subscribe", json!({ "topic": "channel:q" })).await["ok"], true);
    }
    let mut refused = None;
    for i in 0..60 {
        let ack = publish(&s).await;
        if ack["ok"] == false {
            refused = Some((i, ack));
            break;
        }
    }
    let (sent, ack) = refused.expect("the quota was reached");
    assert!((10..=45).contains(&sent), "refused after {sent} KiB");
    assert_eq!(ack["error"]["code"], "quota_exceeded", "{ack}");
    assert!(ack["error"]["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{ack}");
    for _ in 0..60 {
        assert_eq!(publish(&o).await["ok"], true, "the other tenant publishes on");
    }

    // Presence: two entries on a topic, three across topics.
    let mut small_sockets = Vec::new();
    for _ in 0..3 {
        let c =
            SioClient::connect(&b.url(""), &user_token(small, UserId::new(), Role::Member)).await.unwrap();
        for t in ["channel:p1", "channel:p2"] {
            assert_eq!(c.emit_with_ack("subscribe", json!({ "topic": t })).await["ok"], true);
        }
        small_sockets.push(c);
    }
    assert_eq!(track(&small_sockets[0], "channel:p1").await["ok"], true);
    assert_eq!(track(&small_sockets[1], "channel:p1").await["ok"], true);
    let full = track(&small_sockets[2], "channel:p1").await;
    // (Presence announcements count against the history quota too; a third
    // track here would be refused either way.)
    assert_eq!(full["error"]["code"], "quota_exceeded", "the topic's cap: {full}");
    assert_eq!(
        track(&small_sockets[0], "channel:p1").await["ok"],
        true,
        "replacing one's own entry is not new"
    );
    assert_eq!(track(&small_sockets[2], "channel:p2").await["ok"], true);
    let over = track(&small_sockets[1], "channel:p2").await;
    assert_eq!(over["error"]["code"], "quota_exceeded", "the tenant's cap across nodes: {over}");
    let listed = small_sockets[0].emit_with_ack("presence:list", json!({ "topic": "channel:p1" })).await;
    assert_eq!(listed["entries"].as_array().unwrap().len(), 2, "{listed}");
    // Leaving frees a place.
    assert_eq!(
        small_sockets[0].emit_with_ack("unsubscribe", json!({ "topic": "channel:p1" })).await["ok"],
        true
    );
    assert_eq!(track(&small_sockets[1], "channel:p2").await["ok"], true, "a freed entry is taken again");
    let mut others = Vec::new();
    for _ in 0..4 {
        let c =
            SioClient::connect(&a.url(""), &user_token(other, UserId::new(), Role::Member)).await.unwrap();
        assert_eq!(c.emit_with_ack("subscribe", json!({ "topic": "channel:p1" })).await["ok"], true);
        assert_eq!(track(&c, "channel:p1").await["ok"], true, "the other tenant tracks on");
        others.push(c);
    }

    // Dedupe keys of delta batches: three per 15 minutes.
    let key = a.api_key(small, &["admin"]).await;
    let owner = user_token(small, UserId::new(), Role::Owner);
    let p = project(&a, &owner).await;
    let (_, run) = a.send_json(Method::POST, "/api/v1/runs", &key, &json!({ "project_id": p })).await;
    let run = run["id"].as_str().unwrap().to_owned();
    let batch = json!({ "deltas": [{ "text": "t" }] });
    let deltas = |k: &str| {
        a.http
            .post(a.url(&format!("/api/v1/runs/{run}/deltas")))
            .header("x-api-key", &key)
            .header("idempotency-key", k)
            .json(&batch)
            .send()
    };
    for k in ["d1", "d2", "d3"] {
        assert_eq!(deltas(k).await.unwrap().status(), StatusCode::ACCEPTED);
    }
    let res = deltas("d4").await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "quota_exceeded");
    assert_eq!(deltas("d1").await.unwrap().status(), StatusCode::OK, "a replay takes no new key");
}

#[tokio::test]
async fn an_address_that_keeps_failing_to_authenticate_is_refused_before_verification() {
    let node = Node::spawn(BIN, "tf-auth");
    let tenant = node.create_tenant("auth").await;
    let good = user_token(tenant, UserId::new(), Role::Member);
    // An unknown API key: one database lookup for all its tries.
    let misses = node.metric("switchboard_cache_misses_total").await;
    let random = format!("sb_{}", "Z".repeat(40));
    for _ in 0..10 {
        assert_eq!(node.status_of(Method::GET, "/api/v1/me", &random).await, 401);
    }
    assert_eq!(node.metric("switchboard_cache_misses_total").await - misses, 1.0, "looked up once");
    // The shared cache keeps found keys only: a flood of random keys fills no Redis.
    let url = std::env::var("REDIS_URL").unwrap();
    let hasher = ApiKeyHasher::new(JWT_SECRET.as_bytes());
    let cached = |key: &str| {
        let hash: String = hasher.hash(key).iter().map(|b| format!("{b:02x}")).collect();
        let pattern = format!("sb:c:00000000-0000-0000-0000-000000000000:api_key:*:{hash}");
        redis::command(&url, &["KEYS", &pattern]).unwrap().texts().len()
    };
    assert_eq!(cached(&random), 0, "an unknown key is not cached in Redis");
    let real = node.api_key(tenant, &["read"]).await;
    assert_eq!(node.status_of(Method::GET, "/api/v1/me", &real).await, 200);
    assert_eq!(cached(&real), 1, "a found key is");

    // Forged tokens from one address: after a burst, refused without verification.
    let mut codes = Vec::new();
    for i in 0..30 {
        let res = node
            .http
            .get(node.url("/api/v1/me"))
            .bearer_auth(format!("forged.{i}.token"))
            .send()
            .await
            .unwrap();
        codes.push(res.status().as_u16());
    }
    assert!(codes[..10].iter().all(|c| *c == 401), "{codes:?}");
    assert_eq!(*codes.last().unwrap(), 429, "{codes:?}");
    // A forged X-Forwarded-For from an untrusted peer changes nothing.
    let res = node
        .http
        .get(node.url("/api/v1/me"))
        .bearer_auth(&good)
        .header("x-forwarded-for", "198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // The handshake from that address too.
    let refused = SioClient::connect(&node.url(""), &good).await.err().expect("refused");
    assert_eq!(refused.codes(), ("rate_limited".to_owned(), "rate_limited".to_owned()));
    // Once it slows down, a valid token works again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(node.status_of(Method::GET, "/api/v1/me", &good).await, 200);
}

#[tokio::test]
async fn parallel_subscribes_and_unsubscribes_on_one_socket_keep_the_cap_and_leave_nothing_behind() {
    let node = Node::spawn_with(BIN, "tf-race", &[("SOCKET_EVENTS_PER_SECOND", "100000")]);
    let tenant = node
        .create_tenant_with("race", json!({ "max_topics_per_socket": 5, "events_per_second": 100_000 }))
        .await;
    let client =
        SioClient::connect(&node.url(""), &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
    let topics: Vec<String> = (0..10).map(|i| format!("channel:race{i}")).collect();
    let mut pending = Vec::new();
    for i in 0..100 {
        let t = &topics[i % topics.len()];
        let event = if i % 3 == 2 { "unsubscribe" } else { "subscribe" };
        pending.push(client.emit_ack_later(event, json!({ "topic": t })));
    }
    let mut acks = Vec::new();
    for rx in pending {
        acks.push(tokio::time::timeout(Duration::from_secs(10), rx).await.unwrap().unwrap());
    }
    assert!(acks.iter().any(|a| a["error"]["message"].as_str().is_some_and(|m| m.contains("at most 5"))));
    // What the socket holds now: subscribed ones answer "already", at most 5.
    let mut held = 0;
    for t in &topics {
        let ack = client.emit_with_ack("unsubscribe", json!({ "topic": t })).await;
        if ack["ok"] == true {
            held += 1;
        }
    }
    assert!(held <= 5, "{held} topics held");
    assert_eq!(node.metric("switchboard_topics").await, 0.0, "no topic is left with a phantom subscriber");
    // Subscribe again, then disconnect: the node drops every Redis subscription.
    for t in &topics[..5] {
        assert_eq!(client.emit_with_ack("subscribe", json!({ "topic": t })).await["ok"], true);
    }
    assert_eq!(node.metric("switchboard_topics").await, 5.0);
    client.close();
    let url = std::env::var("REDIS_URL").unwrap();
    let channels: Vec<String> = topics.iter().map(|t| format!("sb:{{t:{tenant}:{t}}}:c")).collect();
    let mut args = vec!["PUBSUB", "NUMSUB"];
    args.extend(channels.iter().map(String::as_str));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let counts: Vec<i64> = match redis::command(&url, &args).unwrap() {
            redis::Reply::List(items) => items.chunks(2).map(|p| p[1].int()).collect(),
            _ => Vec::new(),
        };
        if node.metric("switchboard_topics").await == 0.0 && counts.iter().all(|n| *n == 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still subscribed: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_socket_is_closed_when_its_token_expires_unless_it_refreshed_it_in_band() {
    let node = Node::spawn(BIN, "tf-exp");
    let tenant = node.create_tenant("exp").await;
    let user = UserId::new();
    let mut expiring = SioClient::connect(&node.url(""), &token_expiring_in(tenant, user, 3)).await.unwrap();
    let mut refreshed = SioClient::connect(&node.url(""), &token_expiring_in(tenant, user, 3)).await.unwrap();
    // A token of another user, or a forged one, does not refresh.
    let other = refreshed
        .emit_with_ack("auth:refresh", json!({ "token": user_token(tenant, UserId::new(), Role::Member) }))
        .await;
    assert_eq!(other["error"]["code"], "forbidden", "{other}");
    let forged = refreshed.emit_with_ack("auth:refresh", json!({ "token": "forged.token.here" })).await;
    assert_eq!(forged["error"]["code"], "token_invalid", "{forged}");
    let ok = refreshed
        .emit_with_ack("auth:refresh", json!({ "token": token_expiring_in(tenant, user, 600) }))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(ok["expires_at"].as_u64().is_some());

    // A token that expired a moment ago (within verification's leeway) opens nothing.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = Claims {
        sub: Some(user.to_string()),
        tenant_id: Some(tenant.to_string()),
        exp: now - 5,
        ..Claims::default()
    };
    let stale = mint_token(&JWT_SECRET.to_owned().into(), &claims).unwrap();
    let refused = SioClient::connect(&node.url(""), &stale).await.err().expect("refused");
    assert_eq!(refused.codes(), ("unauthorized".to_owned(), "token_expired".to_owned()));

    let err = expiring.next_event("error", Duration::from_secs(6)).await.expect("told at exp");
    assert_eq!(err["code"], "token_expired");
    assert!(expiring.next_event("disconnect", Duration::from_secs(2)).await.is_some(), "then closed");
    assert!(refreshed.next_event("error", Duration::from_secs(2)).await.is_none());
    let still = refreshed.emit_with_ack("subscribe", json!({ "topic": "channel:x" })).await;
    assert_eq!(still["ok"], true, "the refreshed socket stays: {still}");

    // A refresh that lowers the role leaves what the new role cannot see.
    let (creator, admin_user) = (UserId::new(), UserId::new());
    let owner = user_token(tenant, creator, Role::Owner);
    let (_, p) = node.send_json(Method::POST, "/api/v1/projects", &owner, &json!({ "name": "p" })).await;
    let p = p["id"].as_str().unwrap().to_owned();
    let (_, conv) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/projects/{p}/conversations"),
            &owner,
            &json!({ "title": "board", "private": true }),
        )
        .await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    let mut demoted =
        SioClient::connect(&node.url(""), &user_token(tenant, admin_user, Role::Admin)).await.unwrap();
    let topic = format!("conversation:{conv}");
    assert_eq!(
        demoted.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"],
        true,
        "admins see it"
    );
    assert_eq!(demoted.emit_with_ack("subscribe", json!({ "topic": "channel:open" })).await["ok"], true);
    let ack = demoted
        .emit_with_ack("auth:refresh", json!({ "token": user_token(tenant, admin_user, Role::Member) }))
        .await;
    assert_eq!(ack["left"], json!([topic]), "{ack}");
    let (status, _) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/conversations/{conv}/messages"),
            &owner,
            &json!({ "content": "board only" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        demoted.next_event("message:new", Duration::from_millis(500)).await.is_none(),
        "it hears nothing more"
    );
    let publish =
        demoted.emit_with_ack("publish", json!({ "topic": "channel:open", "event": "e", "data": 1 })).await;
    assert_eq!(publish["ok"], true, "what the member may see stays");
}

#[tokio::test]
async fn the_same_idempotency_key_with_any_other_field_is_a_conflict_on_any_node_even_at_once() {
    let (a, b) = (Node::spawn(BIN, "tf-idem-a"), Node::spawn(BIN, "tf-idem-b"));
    let tenant = a
        .create_tenant_with(
            "idem",
            json!({ "http_requests_per_second": 10_000, "events_per_second": 10_000 }),
        )
        .await;
    let key = a.api_key(tenant, &["admin"]).await;
    let owner = user_token(tenant, UserId::new(), Role::Owner);
    let p = project(&a, &owner).await;
    let post = |node: &Node, path: String, body: Value, idem: &str| {
        node.http
            .post(node.url(&path))
            .header("x-api-key", &key)
            .header("idempotency-key", idem)
            .json(&body)
            .send()
    };
    let (_, run) = a.send_json(Method::POST, "/api/v1/runs", &key, &json!({ "project_id": p })).await;
    let run = run["id"].as_str().unwrap().to_owned();
    // Each pair: the first request, then the same key with one field changed.
    let cases = [
        (
            "/api/v1/runs".to_owned(),
            json!({ "project_id": p, "agent": "a" }),
            json!({ "project_id": p, "agent": "b" }),
        ),
        (
            format!("/api/v1/runs/{run}/steps"),
            json!({ "content": "c", "data": { "x": 1 } }),
            json!({ "content": "c", "data": { "x": 2 } }),
        ),
        (
            format!("/api/v1/runs/{run}/steps"),
            json!({ "content": "c", "tokens_in": 1 }),
            json!({ "content": "c", "tokens_in": 2 }),
        ),
        (
            format!("/api/v1/runs/{run}/tool-calls"),
            json!({ "name": "t", "latency_ms": 1 }),
            json!({ "name": "t", "latency_ms": 2 }),
        ),
        (
            format!("/api/v1/runs/{run}/tool-calls"),
            json!({ "name": "t", "status": "running" }),
            json!({ "name": "t", "status": "failed" }),
        ),
        (
            format!("/api/v1/runs/{run}/deltas"),
            json!({ "deltas": [{ "text": "a" }] }),
            json!({ "deltas": [{ "text": "b" }] }),
        ),
        (
            format!("/api/v1/runs/{run}/deltas"),
            json!({ "step": 1, "deltas": [{ "text": "a" }] }),
            json!({ "step": 2, "deltas": [{ "text": "a" }] }),
        ),
    ];
    for (i, (path, first, changed)) in cases.iter().enumerate() {
        let idem = format!("case-{i}");
        // Ten at once, half of each body, across both nodes: one body wins;
        // its copies are replays, the other body's are conflicts.
        let mut pending = Vec::new();
        for j in 0..10 {
            let node = if j % 2 == 0 { &a } else { &b };
            let body = if j < 5 { first.clone() } else { changed.clone() };
            pending.push(post(node, path.clone(), body, &idem));
        }
        let mut statuses = Vec::new();
        for p in pending {
            statuses.push(p.await.unwrap().status().as_u16());
        }
        let created = statuses.iter().filter(|s| **s == 201 || **s == 202).count();
        let replays = statuses.iter().filter(|s| **s == 200).count();
        let conflicts = statuses.iter().filter(|s| **s == 409).count();
        assert_eq!((created, replays, conflicts), (1, 4, 5), "{path}: {statuses:?}");
    }
    let detail = a.get_json(&format!("/api/v1/runs/{run}"), &key).await;
    assert_eq!(detail["steps"].as_array().unwrap().len(), 2, "one step per key");
    assert_eq!(detail["tool_calls"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn private_conversations_stay_private_for_runs_and_project_deletes() {
    let node = Node::spawn(BIN, "tf-private");
    let tenant = node.create_tenant("private").await;
    let (alice, bob) = (UserId::new(), UserId::new());
    let (ta, tb) = (user_token(tenant, alice, Role::Member), user_token(tenant, bob, Role::Member));
    let p = project(&node, &tb).await;
    let (status, conv) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/projects/{p}/conversations"),
            &tb,
            &json!({ "title": "secret", "private": true }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{conv}");
    let conv = conv["id"].as_str().unwrap().to_owned();
    // Alice cannot tie a run to it: the same 404 as an id that does not exist.
    let (status, body) = node
        .send_json(Method::POST, "/api/v1/runs", &ta, &json!({ "project_id": p, "conversation_id": conv }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (missing, _) = node
        .send_json(
            Method::POST,
            "/api/v1/runs",
            &ta,
            &json!({ "project_id": p, "conversation_id": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_eq!(node.get_json("/api/v1/runs", &tb).await["data"], json!([]), "no run was made");
    // Nor in another project.
    let other_project = project(&node, &tb).await;
    let (status, _) = node
        .send_json(
            Method::POST,
            "/api/v1/runs",
            &tb,
            &json!({ "project_id": other_project, "conversation_id": conv }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a conversation of another project");
    // Bob can; his run is as private as the conversation.
    let mut alice_socket = SioClient::connect(&node.url(""), &ta).await.unwrap();
    assert_eq!(
        alice_socket.emit_with_ack("subscribe", json!({ "topic": format!("project:{p}") })).await["ok"],
        true
    );
    let (status, run) = node
        .send_json(Method::POST, "/api/v1/runs", &tb, &json!({ "project_id": p, "conversation_id": conv }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let run = run["id"].as_str().unwrap().to_owned();
    assert_eq!(node.status_of(Method::GET, &format!("/api/v1/runs/{run}"), &tb).await, 200);
    for path in [
        format!("/api/v1/runs/{run}"),
        format!("/api/v1/runs/{run}/steps"),
        format!("/api/v1/runs/{run}/tool-calls"),
    ] {
        assert_eq!(node.status_of(Method::GET, &path, &ta).await, 404, "{path}");
    }
    assert_eq!(node.get_json("/api/v1/runs", &ta).await["data"], json!([]), "not listed for her");
    let (status, _) = node
        .send_json(Method::PATCH, &format!("/api/v1/runs/{run}"), &ta, &json!({ "status": "running" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/runs/{run}/deltas"),
            &ta,
            &json!({ "deltas": [{ "text": "x" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let ack = alice_socket.emit_with_ack("subscribe", json!({ "topic": format!("run:{run}") })).await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    let (status, _) = node
        .send_json(Method::PATCH, &format!("/api/v1/runs/{run}"), &tb, &json!({ "status": "running" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        alice_socket.next_event("run:updated", Duration::from_millis(500)).await.is_none(),
        "the project's subscribers do not hear of a private conversation's run"
    );
    // Alice cannot delete the project that holds it; Bob and admins can.
    let (status, body) =
        node.send_json(Method::DELETE, &format!("/api/v1/projects/{p}"), &ta, &json!(null)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        node.status_of(Method::GET, &format!("/api/v1/conversations/{conv}"), &tb).await,
        200,
        "still there"
    );
    // Deleting the conversation takes its run along (it does not become public).
    assert_eq!(node.status_of(Method::DELETE, &format!("/api/v1/conversations/{conv}"), &tb).await, 204);
    assert_eq!(node.status_of(Method::GET, &format!("/api/v1/runs/{run}"), &tb).await, 404);
    assert_eq!(node.status_of(Method::GET, &format!("/api/v1/runs/{run}"), &ta).await, 404);
    assert_eq!(node.status_of(Method::DELETE, &format!("/api/v1/projects/{p}"), &tb).await, 204);
}

#[tokio::test]
async fn database_errors_never_reach_clients_in_their_own_words() {
    let node = Node::spawn(BIN, "tf-errors");
    let tenant = node.create_tenant("errors").await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let p = project(&node, &token).await;
    let (_, conv) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/projects/{p}/conversations"),
            &token,
            &json!({ "title": "c" }),
        )
        .await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    let postgres_words =
        ["violates", "constraint", "SQLSTATE", "relation", "invalid byte sequence", "0x00", "UTF8", "column"];
    let clean = |text: &str| postgres_words.iter().all(|w| !text.contains(w));
    // A NUL character Postgres refuses to store, over a socket and over REST.
    let client = SioClient::connect(&node.url(""), &token).await.unwrap();
    let ack = client
        .emit_with_ack(
            "message:send",
            json!({ "conversation_id": conv, "content": "a\u{0}b", "idempotency_key": "k1" }),
        )
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert!(clean(&ack.to_string()), "{ack}");
    let (status, body) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/conversations/{conv}/messages"),
            &token,
            &json!({ "content": "a\u{0}b" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(clean(&body.to_string()), "{body}");
    let (status, body) = node
        .send_json(Method::PATCH, &format!("/api/v1/projects/{p}"), &token, &json!({ "name": "a\u{0}b" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(clean(&body.to_string()), "{body}");
}

#[tokio::test]
async fn a_dead_nodes_presence_is_reaped_in_batches_and_a_live_nodes_index_is_trimmed_on_untrack() {
    let url = std::env::var("REDIS_URL").unwrap();
    let (a, mut c) = (
        Node::spawn(BIN, "tf-reap-a"),
        Node::spawn_with(BIN, "tf-reap-c", &[("SOCKET_EVENTS_PER_SECOND", "100000")]),
    );
    let tenant = a.create_tenant_with("reap", json!({ "events_per_second": 100_000 })).await;
    // 270 rooms with an entry of node C: more than one reaping batch.
    let mut sockets = Vec::new();
    for s in 0..3 {
        let client =
            SioClient::connect(&c.url(""), &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
        for t in 0..90 {
            let topic = format!("channel:reap{s}-{t}");
            assert_eq!(client.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"], true);
            assert_eq!(track(&client, &topic).await["ok"], true);
        }
        sockets.push(client);
    }
    let index = |node: &str| {
        let keys = redis::command(&url, &["KEYS", &format!("sb:presence:{node}#*")]).unwrap().texts();
        keys.iter().map(|k| redis::command(&url, &["SCARD", k]).unwrap().int()).sum::<i64>()
    };
    assert_eq!(index("tf-reap-c"), 270);
    // On a live node, leaving a room takes it out of the node's index.
    assert_eq!(
        sockets[0].emit_with_ack("unsubscribe", json!({ "topic": "channel:reap0-0" })).await["ok"],
        true
    );
    assert_eq!(index("tf-reap-c"), 269);

    let watcher =
        SioClient::connect(&a.url(""), &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
    assert_eq!(watcher.emit_with_ack("subscribe", json!({ "topic": "channel:reap2-89" })).await["ok"], true);
    let listed = watcher.emit_with_ack("presence:list", json!({ "topic": "channel:reap2-89" })).await;
    assert_eq!(listed["entries"].as_array().unwrap().len(), 1);
    c.kill();
    // Within the heartbeat expiry and a few reaping rounds, every entry and the
    // dead node's index are gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = index("tf-reap-c");
        let listed = watcher.emit_with_ack("presence:list", json!({ "topic": "channel:reap2-89" })).await;
        if left == 0 && listed["entries"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} rooms of the dead node left");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for s in 0..3 {
        for t in [0, 45, 89] {
            let hash = format!("sb:{{t:{tenant}:channel:reap{s}-{t}}}:p");
            assert_eq!(redis::command(&url, &["HLEN", &hash]).unwrap().int(), 0, "{hash}");
        }
    }
}
