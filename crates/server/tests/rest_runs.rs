//! Agent runs over REST, as a worker with an API key drives them: the status
//! state machine, steps and tool calls, usage on the run and per day, idempotent
//! retries (also concurrent), filters and pages, streamed deltas, bad input, and
//! another tenant's ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{SioClient, TestApp, user_token};

const WAIT: Duration = Duration::from_secs(5);

/// A tenant with a project and a worker key (`read` + `write`): (tenant, admin
/// token, key, project id).
async fn tenant_with_worker(app: &TestApp, name: &str) -> (TenantId, String, String, String) {
    let tenant = app.create_tenant(name).await;
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    let (status, key) = app
        .send_json(
            Method::POST,
            "/api/v1/api-keys",
            &admin,
            &json!({ "name": "worker", "scopes": ["read", "write"] }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, project) =
        app.send_json(Method::POST, "/api/v1/projects", &admin, &json!({ "name": "p" })).await;
    assert_eq!(status, 201, "{project}");
    (tenant, admin, key["key"].as_str().unwrap().to_owned(), project["id"].as_str().unwrap().to_owned())
}

/// `POST path` with an API key, a body and an optional idempotency key.
async fn post(app: &TestApp, key: &str, path: &str, body: &Value, idem: Option<&str>) -> (u16, Value, bool) {
    let mut req = app.http.post(app.url(path)).header("X-API-Key", key).json(body);
    if let Some(idem) = idem {
        req = req.header("Idempotency-Key", idem);
    }
    let res = req.send().await.unwrap();
    let (status, replayed) = (res.status().as_u16(), res.headers().contains_key("idempotent-replayed"));
    (status, res.json().await.unwrap_or(Value::Null), replayed)
}

async fn patch(app: &TestApp, key: &str, run: &str, body: &Value) -> (u16, Value) {
    let (status, body) = app.send_json(Method::PATCH, &format!("/api/v1/runs/{run}"), key, body).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn a_run_moves_only_along_its_state_machine_and_adds_up_its_usage() {
    let app = TestApp::spawn().await;
    let (_, admin, key, project) = tenant_with_worker(&app, "runs-life").await;
    let (status, run, _) = post(
        &app,
        &key,
        "/api/v1/runs",
        &json!({ "project_id": project, "agent": "planner", "input": { "q": "hi" } }),
        None,
    )
    .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!((run["status"].as_str(), run["agent"].as_str()), (Some("queued"), Some("planner")));
    let id = run["id"].as_str().unwrap().to_owned();

    // Not a move the machine has: 409 with both ends named, and nothing changed.
    let (status, err) = patch(&app, &key, &id, &json!({ "status": "succeeded" })).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("queued to succeeded"), "{err}");
    let (status, running) = patch(&app, &key, &id, &json!({ "status": "running" })).await;
    assert_eq!(status, 200);
    assert!(running["started_at"].is_string() && running["finished_at"].is_null());
    assert_eq!(patch(&app, &key, &id, &json!({ "status": "queued" })).await.0, 409);
    assert_eq!(
        patch(&app, &key, &id, &json!({ "status": "running" })).await.0,
        409,
        "staying put is not a move"
    );

    // Three steps with usage, two tool calls (one on step 2).
    let usages = [(10, 5, "0.0015"), (20, 7, "0.002"), (3, 40, "0.0101")];
    for (i, (tin, tout, cost)) in usages.iter().enumerate() {
        let body = json!({ "kind": "message", "content": format!("step {}", i + 1), "tokens_in": tin, "tokens_out": tout, "cost_usd": cost });
        let (status, step, _) = post(&app, &key, &format!("/api/v1/runs/{id}/steps"), &body, None).await;
        assert_eq!(status, 201, "{step}");
        assert_eq!(step["seq"], i + 1);
    }
    // A step Postgres refuses (a NUL in its text) adds none of its usage.
    let refused = json!({ "content": "bad\u{0}text", "tokens_in": 1000, "cost_usd": "5" });
    let (status, err, _) = post(&app, &key, &format!("/api/v1/runs/{id}/steps"), &refused, None).await;
    assert_eq!(status, 422, "{err}");
    let call = json!({ "name": "search", "arguments": { "q": "x" }, "result": { "hits": 3 }, "latency_ms": 42, "step": 2 });
    let (status, first_call, _) =
        post(&app, &key, &format!("/api/v1/runs/{id}/tool-calls"), &call, None).await;
    assert_eq!(status, 201, "{first_call}");
    assert_eq!(
        (first_call["status"].as_str(), first_call["latency_ms"].as_i64()),
        (Some("succeeded"), Some(42))
    );
    assert!(first_call["finished_at"].is_string());
    let pending = json!({ "name": "fetch", "arguments": { "url": "u" } });
    let (status, second_call, _) =
        post(&app, &key, &format!("/api/v1/runs/{id}/tool-calls"), &pending, None).await;
    assert_eq!((status, second_call["status"].as_str()), (201, Some("pending")));
    let no_step = json!({ "name": "x", "step": 9 });
    let (status, err, _) = post(&app, &key, &format!("/api/v1/runs/{id}/tool-calls"), &no_step, None).await;
    assert_eq!(status, 422, "{err}");

    // A float with noise (0.1 + 0.2 + 0.7 is 1.0000000000000002) is rounded to 6 places.
    let finish = json!({ "status": "succeeded", "output": { "answer": 42 }, "cost_usd": 0.1 + 0.2 + 0.7 });
    let (status, done) = patch(&app, &key, &id, &finish).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!((done["tokens_in"].as_i64(), done["tokens_out"].as_i64()), (Some(33), Some(52)));
    assert_eq!(done["cost_usd"], "1.013600");
    assert!(done["finished_at"].is_string());

    // Finished: no move, no step, no tool call, no delta, no usage.
    for body in [json!({ "status": "running" }), json!({ "status": "cancelled" }), json!({ "tokens_in": 1 })]
    {
        assert_eq!(patch(&app, &key, &id, &body).await.0, 409, "{body}");
    }
    let (status, _, _) =
        post(&app, &key, &format!("/api/v1/runs/{id}/steps"), &json!({ "content": "late" }), None).await;
    assert_eq!(status, 409);
    assert_eq!(post(&app, &key, &format!("/api/v1/runs/{id}/tool-calls"), &pending, None).await.0, 409);
    let delta = json!({ "deltas": [{ "text": "late" }] });
    assert_eq!(post(&app, &key, &format!("/api/v1/runs/{id}/deltas"), &delta, None).await.0, 409);

    // The detail: steps in order, tool calls with their step, totals unchanged.
    let detail = app.get_json(&format!("/api/v1/runs/{id}"), &key).await;
    let seqs: Vec<i64> =
        detail["steps"].as_array().unwrap().iter().map(|s| s["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(detail["steps"][2]["content"], "step 3");
    assert_eq!(detail["tool_calls"][0]["step_id"], detail["steps"][1]["id"]);
    assert_eq!(detail["tool_calls"][1]["name"], "fetch");
    assert_eq!((detail["status"].as_str(), detail["tokens_in"].as_i64()), (Some("succeeded"), Some(33)));
    assert_eq!(detail["output"], json!({ "answer": 42 }));

    // The tenant's usage for today is exactly what was reported.
    let usage = app.get_json("/api/v1/usage", &admin).await;
    let metric = |name: &str| -> f64 {
        usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["metric"] == name)
            .map(|r| r["value"].as_str().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!((metric("tokens_in"), metric("tokens_out"), metric("runs")), (33.0, 52.0, 1.0));
    assert!((metric("cost_usd") - 1.0136).abs() < 1e-9, "{usage}");
    app.stop().await;
}

#[tokio::test]
async fn retried_writes_with_the_same_key_record_nothing_new_even_when_concurrent() {
    let app = TestApp::spawn().await;
    let (_, admin, key, project) = tenant_with_worker(&app, "runs-idem").await;
    let body = json!({ "project_id": project, "input": { "n": 1 } });
    let (status, run, _) = post(&app, &key, "/api/v1/runs", &body, Some("run-1")).await;
    assert_eq!(status, 201);
    let (status, again, replayed) = post(&app, &key, "/api/v1/runs", &body, Some("run-1")).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, run);
    let other = json!({ "project_id": project, "input": { "n": 2 } });
    assert_eq!(post(&app, &key, "/api/v1/runs", &other, Some("run-1")).await.0, 409);
    let id = run["id"].as_str().unwrap().to_owned();
    assert_eq!(patch(&app, &key, &id, &json!({ "status": "running" })).await.0, 200);

    // Ten concurrent sends of one step key and ten distinct steps: eleven steps, seq 1..=11.
    let steps = format!("/api/v1/runs/{id}/steps");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (app_http, url, key) = (app.http.clone(), app.url(&steps), key.clone());
            tokio::spawn(async move {
                let (idem, content) = if i % 2 == 0 {
                    ("same-step".to_owned(), "same".to_owned())
                } else {
                    (format!("s-{i}"), format!("c{i}"))
                };
                let body = json!({ "content": content, "tokens_in": 1 });
                let res = app_http
                    .post(url)
                    .header("X-API-Key", key)
                    .header("Idempotency-Key", idem)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                res.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 11, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 9, "{statuses:?}");
    let detail = app.get_json(&format!("/api/v1/runs/{id}"), &key).await;
    let seqs: Vec<i64> =
        detail["steps"].as_array().unwrap().iter().map(|s| s["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<i64>>());
    assert_eq!(detail["tokens_in"], 11, "replays add no usage");

    let call = json!({ "name": "t", "arguments": {} });
    let calls = format!("/api/v1/runs/{id}/tool-calls");
    assert_eq!(post(&app, &key, &calls, &call, Some("tc-1")).await.0, 201);
    assert_eq!(post(&app, &key, &calls, &call, Some("tc-1")).await.0, 200);
    assert_eq!(post(&app, &key, &calls, &json!({ "name": "u" }), Some("tc-1")).await.0, 409);
    let detail = app.get_json(&format!("/api/v1/runs/{id}"), &key).await;
    assert_eq!(detail["tool_calls"].as_array().unwrap().len(), 1);
    let usage = app.get_json("/api/v1/usage?metric=runs", &admin).await;
    assert_eq!(usage["data"][0]["value"].as_str().map(|v| v.parse::<f64>().unwrap()), Some(1.0));
    app.stop().await;
}

#[tokio::test]
async fn runs_are_listed_newest_first_by_status_project_and_time_in_pages() {
    let app = TestApp::spawn().await;
    let (_, admin, key, project) = tenant_with_worker(&app, "runs-list").await;
    let (_, other_project) =
        app.send_json(Method::POST, "/api/v1/projects", &admin, &json!({ "name": "q" })).await;
    let other_project = other_project["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..7 {
        let p = if i < 5 { &project } else { &other_project };
        let (status, run, _) = post(&app, &key, "/api/v1/runs", &json!({ "project_id": p }), None).await;
        assert_eq!(status, 201);
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..2] {
        assert_eq!(patch(&app, &key, id, &json!({ "status": "running" })).await.0, 200);
    }
    let listed = |q: String| {
        let (app, key) = (&app, &key);
        async move {
            let page = app.get_json(&format!("/api/v1/runs?{q}"), key).await;
            page["data"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"))
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed(String::new()).await, newest_first);
    assert_eq!(listed("status=running".into()).await, vec![ids[1].clone(), ids[0].clone()]);
    assert_eq!(listed(format!("project_id={other_project}")).await, vec![ids[6].clone(), ids[5].clone()]);
    assert_eq!(
        listed(format!("project_id={project}&status=queued")).await,
        vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]
    );
    assert!(listed("since=2099-01-01T00:00:00Z".into()).await.is_empty());
    assert_eq!(listed("until=2099-01-01T00:00:00Z".into()).await.len(), 7);

    // Pages of 3 walk every run once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map_or("limit=3".to_owned(), |c| format!("limit=3&cursor={c}"));
        let page = app.get_json(&format!("/api/v1/runs?{q}"), &key).await;
        seen.extend(page["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    for bad in ["status=done", "limit=0", "since=yesterday", "project_id=nope", "colour=red"] {
        assert_eq!(app.status_of(Method::GET, &format!("/api/v1/runs?{bad}"), &key).await, 422, "{bad}");
    }
    app.stop().await;
}

#[tokio::test]
async fn deltas_stream_in_order_once_per_key_and_bad_input_changes_nothing() {
    let app = TestApp::spawn().await;
    let (tenant, _, key, project) = tenant_with_worker(&app, "runs-deltas").await;
    let (_, run, _) = post(&app, &key, "/api/v1/runs", &json!({ "project_id": project }), None).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let topic = format!("run:{id}");
    let mut watcher =
        SioClient::connect(&app.url(""), &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
    assert_eq!(watcher.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"], true);

    let deltas = format!("/api/v1/runs/{id}/deltas");
    let batch = |from: usize| json!({ "step": 1, "deltas": (from..from + 5).map(|i| json!({ "text": format!("t{i} ") })).collect::<Vec<_>>() });
    let (status, sent, _) = post(&app, &key, &deltas, &batch(0), Some("b-0")).await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["count"], 5);
    let (status, again, replayed) = post(&app, &key, &deltas, &batch(0), Some("b-0")).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again["last_offset"], sent["last_offset"]);
    assert_eq!(post(&app, &key, &deltas, &batch(5), None).await.0, 202);
    let mut texts = Vec::new();
    for _ in 0..10 {
        let ev = watcher.next_event("run:delta", WAIT).await.expect("a delta");
        assert_eq!((ev["topic"].as_str(), ev["data"]["step"].as_i64()), (Some(topic.as_str()), Some(1)));
        assert_eq!(ev["from"]["kind"], "agent");
        texts.push(ev["data"]["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(texts.concat(), (0..10).map(|i| format!("t{i} ")).collect::<String>());
    let metrics = app.metrics().await;
    let published = metrics.lines().find(|l| l.starts_with("switchboard_events_published_total{"));
    let published: u64 = published.and_then(|l| l.rsplit(' ').next()).unwrap().parse().unwrap();
    assert_eq!(published, 2 + 5 + 5, "the run's creation (run and project), two batches, not the replay");
    assert!(metrics.lines().any(|l| l.starts_with("switchboard_sockets{") && l.ends_with(" 1")), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("switchboard_topics{") && l.ends_with(" 1")), "{metrics}");
    assert!(
        watcher.next_event("run:delta", Duration::from_millis(300)).await.is_none(),
        "the replayed batch sent nothing"
    );

    // Bad input: each refused with the documented error, and nothing sent.
    let raw = app
        .http
        .post(app.url(&deltas))
        .header("X-API-Key", &key)
        .header("content-type", "application/json")
        .body("{\"deltas\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let too_many = json!({ "deltas": (0..501).map(|_| json!({ "text": "x" })).collect::<Vec<_>>() });
    let huge = json!({ "deltas": [{ "text": "x".repeat(65_536) }] });
    let cases = [
        (json!({ "deltas": [] }), 422),
        (too_many, 422),
        (json!({ "deltas": [{ "txt": "x" }] }), 422),
        (json!({ "deltas": [{ "text": "x" }], "step": 0 }), 422),
        (huge, 413),
    ];
    for (body, want) in cases {
        let (status, err, _) = post(&app, &key, &deltas, &body, None).await;
        assert_eq!(status, want, "{err}");
        assert!(err["error"]["code"].is_string() && err["error"]["request_id"].is_string(), "{err}");
    }
    let unknown = format!("/api/v1/runs/{}/deltas", uuid::Uuid::new_v4());
    assert_eq!(post(&app, &key, &unknown, &batch(0), None).await.0, 404);
    assert!(watcher.next_event("run:delta", Duration::from_millis(300)).await.is_none());

    let runs = "/api/v1/runs";
    let bad_runs = [
        (json!({ "project_id": uuid::Uuid::new_v4() }), 404),
        (json!({ "project_id": project, "input": [1] }), 422),
        (json!({ "project_id": project, "extra": 1 }), 422),
        (json!({ "project_id": "nope" }), 422),
        (json!({ "project_id": project, "agent": "a".repeat(201) }), 422),
    ];
    for (body, want) in bad_runs {
        let (status, err, _) = post(&app, &key, runs, &body, None).await;
        assert_eq!(status, want, "{body}: {err}");
    }
    let long_key = "k".repeat(201);
    let (status, _, _) = post(&app, &key, runs, &json!({ "project_id": project }), Some(&long_key)).await;
    assert_eq!(status, 422, "an Idempotency-Key over 200 characters");

    // Steps and tool calls with bad fields record nothing.
    let steps = format!("/api/v1/runs/{id}/steps");
    for body in [
        json!({ "data": [1] }),
        json!({ "kind": "" }),
        json!({ "kind": "k".repeat(65) }),
        json!({ "content": "x", "tokens_out": -1 }),
        json!({ "content": 5 }),
    ] {
        assert_eq!(post(&app, &key, &steps, &body, None).await.0, 422, "{body}");
    }
    let calls = format!("/api/v1/runs/{id}/tool-calls");
    for body in [
        json!({ "name": "" }),
        json!({}),
        json!({ "name": "t", "arguments": "x" }),
        json!({ "name": "t", "status": "done" }),
        json!({ "name": "t", "latency_ms": -1 }),
        json!({ "name": "t", "step": 0 }),
    ] {
        assert_eq!(post(&app, &key, &calls, &body, None).await.0, 422, "{body}");
    }
    let detail = app.get_json(&format!("/api/v1/runs/{id}"), &key).await;
    assert!(
        detail["steps"].as_array().unwrap().is_empty() && detail["tool_calls"].as_array().unwrap().is_empty()
    );
    for body in [
        json!({}),
        json!({ "cost_usd": "1.1234567" }),
        json!({ "cost_usd": -1 }),
        json!({ "status": "done" }),
        json!({ "tokens_in": -5 }),
    ] {
        assert_eq!(patch(&app, &key, &id, &body).await.0, 422, "{body}");
    }
    let page = app.get_json("/api/v1/runs", &key).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "no bad request created a run");
    app.stop().await;
}

#[tokio::test]
async fn another_tenant_gets_404_for_every_run_route_and_sees_none_of_its_events() {
    let app = TestApp::spawn().await;
    let (_, _, key_a, project_a) = tenant_with_worker(&app, "runs-a").await;
    let (tenant_b, _, key_b, _) = tenant_with_worker(&app, "runs-b").await;
    let (_, run, _) = post(&app, &key_a, "/api/v1/runs", &json!({ "project_id": project_a }), None).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let mut spy =
        SioClient::connect(&app.url(""), &user_token(tenant_b, UserId::new(), Role::Owner)).await.unwrap();
    let refused = spy.emit_with_ack("subscribe", json!({ "topic": format!("run:{id}") })).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    assert_eq!(
        spy.emit_with_ack("subscribe", json!({ "topic": format!("project:{project_a}") })).await["ok"],
        false
    );

    assert_eq!(app.status_of(Method::GET, &format!("/api/v1/runs/{id}"), &key_b).await, 404);
    assert_eq!(patch(&app, &key_b, &id, &json!({ "status": "running" })).await.0, 404);
    for (path, body) in [
        ("steps", json!({ "content": "x" })),
        ("tool-calls", json!({ "name": "x" })),
        ("deltas", json!({ "deltas": [{ "text": "x" }] })),
    ] {
        let (status, _, _) = post(&app, &key_b, &format!("/api/v1/runs/{id}/{path}"), &body, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, _) = post(&app, &key_b, "/api/v1/runs", &json!({ "project_id": project_a }), None).await;
    assert_eq!(status, 404, "a run in another tenant's project");
    let listed = app.get_json("/api/v1/runs", &key_b).await;
    assert!(listed["data"].as_array().unwrap().is_empty());

    // A's run goes on; B's socket hears nothing of it.
    assert_eq!(patch(&app, &key_a, &id, &json!({ "status": "running" })).await.0, 200);
    let delta = json!({ "deltas": [{ "text": "secret" }] });
    assert_eq!(post(&app, &key_a, &format!("/api/v1/runs/{id}/deltas"), &delta, None).await.0, 202);
    assert!(spy.next_event("run:updated", Duration::from_millis(500)).await.is_none());
    assert!(spy.next_event("run:delta", Duration::from_millis(100)).await.is_none());
    let detail = app.get_json(&format!("/api/v1/runs/{id}"), &key_a).await;
    assert_eq!(detail["status"], "running", "B's attempts changed nothing");
    app.stop().await;
}
