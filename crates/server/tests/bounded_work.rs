//! Work per request is bounded, against real `switchboard` processes on the
//! test Postgres and Redis:
//! - a recovery replay longer than the socket's queue is paced, not cut, and
//!   arrives whole and in order; one over its bounds (bytes, events) stops and
//!   says `recovered: false`;
//! - server events (`run:step`, `run:updated`, `message:new`) fit the tenant's
//!   payload cap, with previews; the full content is over REST;
//! - stored JSON fields have caps (413 naming the field);
//! - a run's detail and its step and tool-call lists come in bounded pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::sio::PollingClient;
use switchboard_testkit::{Node, SioClient, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Publishes `n` events of `size` bytes on `channel:<name>` through `client`
/// (subscribed), returning their offsets.
async fn publish_many(client: &SioClient, name: &str, n: usize, size: usize) -> Vec<String> {
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        let ack = client
            .emit_with_ack(
                "publish",
                json!({ "topic": format!("channel:{name}"), "event": "e", "data": { "i": i, "pad": "x".repeat(size) } }),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        offsets.push(ack["offset"].as_str().unwrap().to_owned());
    }
    offsets
}

#[tokio::test]
async fn a_replay_longer_than_the_socket_queue_arrives_whole_and_in_order_or_says_it_did_not() {
    let node = Node::spawn_with(
        BIN,
        "bw-replay",
        &[("TOPIC_HISTORY_SIZE", "3000"), ("SOCKET_EVENTS_PER_SECOND", "100000")],
    );
    let tenant = node
        .create_tenant_with(
            "replays",
            json!({ "events_per_second": 100000, "max_history_bytes": 1_000_000_000, "max_payload_bytes": 65536 }),
        )
        .await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let publisher = SioClient::connect(&node.url(""), &token).await.unwrap();
    let ack = publisher.emit_with_ack("subscribe", json!({ "topic": "channel:long" })).await;
    assert_eq!(ack["ok"], true);
    let start = ack["offset"].as_str().unwrap().to_owned();
    // 800 events of 3 KiB: 2.4 MB, three times the socket's 256-packet queue,
    // and more than the kernel buffers of a client that does not read.
    let offsets = publish_many(&publisher, "long", 800, 3000).await;

    // A long-polling client that stops polling: its queue (256 packets) fills
    // long before the replay ends.
    let slow = PollingClient::connect(&node.url(""), &token).await.unwrap();
    slow.send(&format!("421{}", json!(["subscribe", { "topic": "channel:long", "since": start }])))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (mut got, mut ack) = (Vec::new(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ack.is_none() && tokio::time::Instant::now() < deadline {
        for packet in slow.poll().await.unwrap() {
            if let Some(event) = packet.strip_prefix("42") {
                let v: Value = serde_json::from_str(event).unwrap();
                got.push(v[1]["offset"].as_str().unwrap().to_owned());
            } else if let Some(a) = packet.strip_prefix("431") {
                ack = Some(serde_json::from_str::<Value>(a).unwrap()[0].clone());
            }
        }
    }
    let ack = ack.expect("the subscribe was answered");
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["recovered"], true, "paced by the queue, nothing dropped: {ack}");
    assert_eq!(got, offsets, "every event once, in order");

    // Over the byte bound (4 MiB a replay): 1,500 events of 3 KiB after `start`.
    let all: Vec<String> =
        offsets.iter().cloned().chain(publish_many(&publisher, "long", 700, 3000).await).collect();
    let mut late = SioClient::connect(&node.url(""), &token).await.unwrap();
    let ack = tokio::time::timeout(
        Duration::from_secs(10),
        late.emit_ack_later("subscribe", json!({ "topic": "channel:long", "since": start })),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((ack["ok"].clone(), ack["recovered"].clone()), (json!(true), json!(false)), "{ack}");
    let got: Vec<(String, Value)> = late.drain_events(Duration::from_millis(300)).await;
    assert!(got.len() < 1500, "stopped at its bound, not after {} events", got.len());
    // What came is the oldest stretch, whole and in order: the client knows where to fetch on.
    let got: Vec<&str> = got.iter().map(|(_, v)| v["offset"].as_str().unwrap()).collect();
    assert!(!got.is_empty(), "the bound cut the replay, not the whole of it");
    assert_eq!(got, all[..got.len()], "a prefix of the history after `since`");

    // Over the event bound (1,000 a replay) with small events.
    let small = publish_many(&publisher, "long", 1, 10).await;
    publish_many(&publisher, "long", 1100, 10).await;
    let ack = late.emit_with_ack("unsubscribe", json!({ "topic": "channel:long" })).await;
    assert_eq!(ack["ok"], true);
    let ack = late.emit_with_ack("subscribe", json!({ "topic": "channel:long", "since": small[0] })).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    // Within the bounds it recovers.
    let recent = publish_many(&publisher, "long", 5, 10).await;
    late.emit_with_ack("unsubscribe", json!({ "topic": "channel:long" })).await;
    let _ = late.drain_events(Duration::from_millis(200)).await;
    let ack = late.emit_with_ack("subscribe", json!({ "topic": "channel:long", "since": recent[0] })).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    let got: Vec<String> = late
        .drain_events(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|(n, _)| n == "e")
        .map(|(_, d)| d["offset"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, recent[1..].to_vec());
}

#[tokio::test]
async fn server_events_fit_the_tenant_payload_cap_and_rest_has_the_whole_content() {
    let node = Node::spawn(BIN, "bw-events");
    let tenant = node.create_tenant_with("small-cap", json!({ "max_payload_bytes": 2048 })).await;
    let key = node.api_key(tenant, &["admin"]).await;
    let owner = user_token(tenant, UserId::new(), Role::Owner);
    let (_, project) =
        node.send_json(Method::POST, "/api/v1/projects", &owner, &json!({ "name": "p" })).await;
    let project = project["id"].as_str().unwrap().to_owned();
    let (status, run) = node
        .send_json(
            Method::POST,
            "/api/v1/runs",
            &key,
            &json!({ "project_id": project, "input": { "q": "x".repeat(5000) } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();

    let mut watcher = SioClient::connect(&node.url(""), &owner).await.unwrap();
    for topic in [format!("run:{run_id}"), format!("project:{project}")] {
        assert_eq!(watcher.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"], true);
    }
    let content = "é".repeat(20_000);
    let (status, _) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/runs/{run_id}/steps"),
            &key,
            &json!({ "content": content }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = node
        .send_json(
            Method::PATCH,
            &format!("/api/v1/runs/{run_id}"),
            &key,
            &json!({ "status": "running", "output": { "o": "y".repeat(9000) } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = watcher.drain_events(Duration::from_millis(500)).await;
    assert!(!events.is_empty());
    for (name, data) in &events {
        assert!(data.to_string().len() <= 2048, "{name} is {} bytes", data.to_string().len());
    }
    let step = events.iter().find(|(n, _)| n == "run:step").map(|(_, d)| d["data"]["step"].clone()).unwrap();
    assert_eq!(step["content_length"], 20_000);
    assert_eq!(step["truncated"], true);
    assert!(content.starts_with(step["content_preview"].as_str().unwrap()));
    let updated: Vec<&Value> =
        events.iter().filter(|(n, _)| n == "run:updated").map(|(_, d)| &d["data"]).collect();
    assert!(updated.iter().all(|u| u.get("output").is_none() && u.get("input").is_none()));
    let detail = node.get_json(&format!("/api/v1/runs/{run_id}"), &key).await;
    assert_eq!(detail["steps"][0]["content"], content.as_str(), "REST has it whole");
    assert_eq!(detail["output"]["o"].as_str().map(str::len), Some(9000));

    // A message over the cap reaches subscribers as a preview.
    let (_, conv) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/projects/{project}/conversations"),
            &owner,
            &json!({ "title": "c" }),
        )
        .await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    assert_eq!(
        watcher.emit_with_ack("subscribe", json!({ "topic": format!("conversation:{conv}") })).await["ok"],
        true
    );
    let long = "m".repeat(10_000);
    let (status, _) = node
        .send_json(
            Method::POST,
            &format!("/api/v1/conversations/{conv}/messages"),
            &owner,
            &json!({ "content": long, "metadata": { "k": "v" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let new = watcher.next_event("message:new", Duration::from_secs(2)).await.unwrap();
    assert!(new["data"].to_string().len() <= 2048);
    assert_eq!(new["data"]["truncated"], true);
    assert!(new["data"].get("metadata").is_none());
    let page = node.get_json(&format!("/api/v1/conversations/{conv}/messages"), &owner).await;
    assert_eq!(page["data"][0]["content"], long.as_str());
}

#[tokio::test]
async fn stored_json_fields_have_caps_that_name_the_field() {
    let node = Node::spawn(BIN, "bw-caps");
    let tenant = node.create_tenant("caps").await;
    let key = node.api_key(tenant, &["admin"]).await;
    let owner = user_token(tenant, UserId::new(), Role::Owner);
    let (_, project) =
        node.send_json(Method::POST, "/api/v1/projects", &owner, &json!({ "name": "p" })).await;
    let project = project["id"].as_str().unwrap().to_owned();
    let big = |n: usize| json!({ "s": "x".repeat(n) });
    let (status, body) = node
        .send_json(
            Method::POST,
            "/api/v1/runs",
            &key,
            &json!({ "project_id": project, "input": big(300_000) }),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"]["details"]["input"].is_array(), "{body}");
    let (_, run) =
        node.send_json(Method::POST, "/api/v1/runs", &key, &json!({ "project_id": project })).await;
    let run = run["id"].as_str().unwrap().to_owned();
    for (path, body, field) in [
        (format!("/api/v1/runs/{run}/steps"), json!({ "data": big(300_000) }), "data"),
        (
            format!("/api/v1/runs/{run}/tool-calls"),
            json!({ "name": "t", "arguments": big(300_000) }),
            "arguments",
        ),
        (format!("/api/v1/runs/{run}/tool-calls"), json!({ "name": "t", "result": big(300_000) }), "result"),
        (
            format!("/api/v1/runs/{run}/deltas"),
            json!({ "deltas": [{ "text": "a", "data": big(20_000) }] }),
            "deltas.data",
        ),
        (format!("/api/v1/projects/{project}"), json!({ "metadata": big(20_000) }), "metadata"),
    ] {
        let method = if path.contains("/projects/") { Method::PATCH } else { Method::POST };
        let (status, answer) = node.send_json(method, &path, &key, &body).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {answer}");
        assert!(answer["error"]["details"][field].is_array(), "{path}: {answer}");
    }
    let detail = node.get_json(&format!("/api/v1/runs/{run}"), &key).await;
    assert_eq!(detail["steps"], json!([]), "nothing was stored");
    assert_eq!(detail["tool_calls"], json!([]));
}

#[tokio::test]
async fn a_run_detail_and_its_steps_and_tool_calls_come_in_bounded_pages() {
    let node = Node::spawn(BIN, "bw-pages");
    let tenant = node.create_tenant_with("pages", json!({ "http_requests_per_second": 10000 })).await;
    let key = node.api_key(tenant, &["admin"]).await;
    let owner = user_token(tenant, UserId::new(), Role::Owner);
    let (_, project) =
        node.send_json(Method::POST, "/api/v1/projects", &owner, &json!({ "name": "p" })).await;
    let project = project["id"].as_str().unwrap().to_owned();
    let (_, run) =
        node.send_json(Method::POST, "/api/v1/runs", &key, &json!({ "project_id": project })).await;
    let run = run["id"].as_str().unwrap().to_owned();
    // 8 steps of ~900 KB (7 MB in all) and 130 small tool calls.
    for i in 0..8 {
        let (status, _) = node
            .send_json(
                Method::POST,
                &format!("/api/v1/runs/{run}/steps"),
                &key,
                &json!({ "content": format!("{i}").repeat(900_000) }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    for i in 0..130 {
        let (status, _) = node
            .send_json(
                Method::POST,
                &format!("/api/v1/runs/{run}/tool-calls"),
                &key,
                &json!({ "name": format!("t{i}") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let res = node.http.get(node.url(&format!("/api/v1/runs/{run}"))).bearer_auth(&key).send().await.unwrap();
    let bytes = res.bytes().await.unwrap();
    assert!(bytes.len() < 6 * 1024 * 1024, "the detail is {} bytes", bytes.len());
    let detail: Value = serde_json::from_slice(&bytes).unwrap();
    let first_steps = detail["steps"].as_array().unwrap().len();
    assert!((1..8).contains(&first_steps), "{first_steps} steps in the first page");
    assert_eq!(detail["next_steps_after"], first_steps);
    assert_eq!(detail["tool_calls"].as_array().unwrap().len(), 100);

    // The rest of the steps, page by page, each bounded.
    let mut seqs: Vec<i64> =
        detail["steps"].as_array().unwrap().iter().map(|s| s["seq"].as_i64().unwrap()).collect();
    let mut after = detail["next_steps_after"].as_i64();
    while let Some(a) = after {
        let res = node
            .http
            .get(node.url(&format!("/api/v1/runs/{run}/steps?after={a}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let bytes = res.bytes().await.unwrap();
        assert!(bytes.len() < 6 * 1024 * 1024);
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        seqs.extend(page["data"].as_array().unwrap().iter().map(|s| s["seq"].as_i64().unwrap()));
        after = page["next_after"].as_i64();
    }
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    // Tool calls by cursor.
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/runs/{run}/tool-calls?limit=50&cursor={c}"),
            None => format!("/api/v1/runs/{run}/tool-calls?limit=50"),
        };
        let page = node.get_json(&path, &key).await;
        names.extend(page["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, (0..130).map(|i| format!("t{i}")).collect::<Vec<_>>());
    // Runs are listed as summaries, without input or output.
    let list = node.get_json("/api/v1/runs", &key).await;
    assert!(list["data"][0].get("input").is_none() && list["data"][0].get("output").is_none(), "{list}");
    // Another tenant's run pages are not found.
    let other = node.create_tenant("other").await;
    let stranger = user_token(other, UserId::new(), Role::Owner);
    assert_eq!(node.status_of(Method::GET, &format!("/api/v1/runs/{run}/steps"), &stranger).await, 404);
    assert_eq!(node.status_of(Method::GET, &format!("/api/v1/runs/{run}/tool-calls"), &stranger).await, 404);
}
