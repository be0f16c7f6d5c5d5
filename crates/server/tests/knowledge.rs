//! Knowledge over REST against the real Postgres (pgvector) and Redis, with the
//! built-in model: documents ingested in the background and announced on their
//! project, the three search modes, memories, idempotency, bad input, another
//! tenant's ids and rows (RLS), and a node dying mid-job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchboard_db::repo::knowledge as repo;
use switchboard_db::{Database, TenantContext};
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{SioClient, TestApp, env, user_token};

mod knowledge_common;
use knowledge_common::*;

#[tokio::test]
async fn a_document_is_chunked_embedded_announced_and_found_by_each_mode() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "kb-docs").await;
    let mut watcher = SioClient::connect(&app.url(""), &t.member).await.unwrap();
    let ack = watcher.emit_with_ack("subscribe", json!({ "topic": format!("project:{}", t.project) })).await;
    assert_eq!(ack["ok"], true, "{ack}");

    let body = json!({ "title": "Guide", "content": GUIDE, "content_type": "text/markdown", "metadata": { "lang": "en" } });
    let (status, doc, _) = post_doc(&app, &t.key, &t.project, &body, Some("guide-1")).await;
    assert_eq!(status, 201, "{doc}");
    assert_eq!(doc["status"], "pending");
    assert!(doc.get("content").is_none(), "the text is not echoed back");
    let id = doc["id"].as_str().unwrap().to_owned();

    // pending → processing → ready on the project's topic, in the order of
    // their updated_at (the node that stored it and the one working it each
    // announce, so arrival order may differ).
    let mut seen: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = Vec::new();
    let started = Instant::now();
    while !seen.iter().any(|(_, s)| s == "ready") && started.elapsed() < WAIT {
        if let Some(e) = watcher.next_event("document:updated", Duration::from_secs(1)).await {
            assert_eq!(e["data"]["document_id"], id.as_str(), "{e}");
            let at = chrono::DateTime::parse_from_rfc3339(e["data"]["updated_at"].as_str().unwrap()).unwrap();
            seen.push((at, e["data"]["status"].as_str().unwrap().to_owned()));
        }
    }
    seen.sort();
    let statuses: Vec<&str> = seen.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses.first(), Some(&"pending"), "{seen:?}");
    assert!(statuses.contains(&"processing") && statuses.last() == Some(&"ready"), "{seen:?}");
    let ready = wait_ready(&app, &t.member, &id).await;
    assert_eq!(ready["model"], "all-MiniLM-L6-v2");
    assert!(ready["chunk_count"].as_i64().unwrap() >= 3, "one chunk per section at least: {ready}");

    // The same key and body again: the stored document; another body: 409.
    let (status, again, replayed) = post_doc(&app, &t.key, &t.project, &body, Some("guide-1")).await;
    assert_eq!((status, replayed, again["id"].as_str()), (200, true, Some(id.as_str())));
    let other = json!({ "title": "Guide", "content": "different", "content_type": "text/markdown" });
    assert_eq!(post_doc(&app, &t.key, &t.project, &other, Some("guide-1")).await.0, 409);

    // A paraphrase that shares almost no words with its answer: vector search finds it.
    let (status, found) = search(
        &app,
        &t.member,
        json!({ "query": "my connection was lost, how do I get back the events?", "mode": "vector" }),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["degraded"], false);
    let top = &found["data"][0];
    assert!(top["chunk"]["heading"].as_str().unwrap().ends_with("Reconnecting"), "{found}");
    assert_eq!(top["matched_by"], json!(["vector"]));
    assert_eq!(top["document_id"], id.as_str());

    // Keyword: only chunks with the words.
    let (_, found) = search(&app, &t.member, json!({ "query": "invoices card", "mode": "keyword" })).await;
    let texts = contents(&found);
    assert_eq!(texts.len(), 1, "{found}");
    assert!(texts[0].contains("Invoices"));

    // Hybrid (the default): both retrievers, the chunk both found first.
    let (_, found) = search(&app, &t.member, json!({ "query": "rate_limited retry_after_ms budget" })).await;
    assert!(found["data"][0]["chunk"]["content"].as_str().unwrap().contains("rate_limited"), "{found}");
    assert_eq!(found["data"][0]["matched_by"], json!(["vector", "keyword"]));

    // Filters: another project, a metadata mismatch, another document: nothing.
    for filters in
        [json!({ "metadata": { "lang": "fr" } }), json!({ "document_ids": [uuid::Uuid::new_v4()] })]
    {
        let (status, found) =
            search(&app, &t.member, json!({ "query": "reconnect", "filters": filters })).await;
        assert_eq!((status, found["data"].as_array().unwrap().len()), (200, 0), "{found}");
    }
    let (_, found) = search(
        &app,
        &t.member,
        json!({ "query": "reconnect", "project_id": uuid::Uuid::new_v4(), "mode": "keyword" }),
    )
    .await;
    assert!(found["data"].as_array().unwrap().is_empty());

    // Listed, then deleted with its chunks.
    let list = app.get_json(&format!("/api/v1/projects/{}/documents", t.project), &t.member).await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(app.status_of(Method::DELETE, &format!("/api/v1/documents/{id}"), &t.key).await, 204);
    let (_, found) = search(&app, &t.member, json!({ "query": "invoices card", "mode": "keyword" })).await;
    assert!(found["data"].as_array().unwrap().is_empty(), "{found}");
    assert_eq!(app.status_of(Method::GET, &format!("/api/v1/documents/{id}"), &t.member).await, 404);
    // Hands back any job its worker holds, for the other tests.
    app.stop().await;
}

#[tokio::test]
async fn a_multipart_upload_takes_its_type_from_the_file_and_bad_input_changes_nothing() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "kb-upload").await;
    let url = app.url(&format!("/api/v1/projects/{}/documents", t.project));
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::text(GUIDE).file_name("guide.md"))
        .text("metadata", r#"{"team":"docs"}"#);
    let res = app.http.post(&url).bearer_auth(&t.key).multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(
        (doc["title"].as_str(), doc["content_type"].as_str()),
        (Some("guide.md"), Some("text/markdown"))
    );
    assert_eq!(doc["metadata"], json!({ "team": "docs" }));
    wait_ready(&app, &t.member, doc["id"].as_str().unwrap()).await;

    let count = || async {
        app.get_json(&format!("/api/v1/projects/{}/documents", t.project), &t.member).await["data"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    // Malformed JSON, a missing field, an unknown type, JSON that is not, too large, unknown fields.
    let raw = app
        .http
        .post(&url)
        .bearer_auth(&t.key)
        .header("content-type", "application/json")
        .body("{\"title\":")
        .send();
    assert_eq!(raw.await.unwrap().status(), 400);
    let cases: [(Value, u16); 5] = [
        (json!({ "content": "x" }), 422),
        (json!({ "title": "t", "content": "x", "content_type": "application/pdf" }), 422),
        (json!({ "title": "t", "content": "{not json", "content_type": "application/json" }), 422),
        (json!({ "title": "t", "content": "x".repeat(1_000 * 1024 + 1) }), 413),
        (json!({ "title": "t", "content": "x", "owner": "me" }), 422),
    ];
    for (body, want) in cases {
        let (status, err, _) = post_doc(&app, &t.key, &t.project, &body, None).await;
        assert_eq!(status, want, "{err}");
        assert!(err["error"]["code"].is_string(), "{err}");
    }
    // A multipart body without a file part; not UTF-8.
    let form = reqwest::multipart::Form::new().text("title", "nothing");
    assert_eq!(app.http.post(&url).bearer_auth(&t.key).multipart(form).send().await.unwrap().status(), 422);
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(vec![0xff, 0xfe, 0x00]).file_name("x.txt"));
    assert_eq!(app.http.post(&url).bearer_auth(&t.key).multipart(form).send().await.unwrap().status(), 422);
    // An unknown project; a read-only key; a search with a bad mode or no query.
    let (status, _, _) = post_doc(
        &app,
        &t.key,
        &uuid::Uuid::new_v4().to_string(),
        &json!({ "title": "t", "content": "x" }),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(search(&app, &t.member, json!({ "query": "x", "mode": "fuzzy" })).await.0, 422);
    assert_eq!(search(&app, &t.member, json!({ "query": "" })).await.0, 422);
    assert_eq!(search(&app, &t.member, json!({ "query": "x", "limit": 500 })).await.0, 422);
    assert_eq!(count().await, before, "nothing was stored");
    // Hands back any job its worker holds, for the other tests.
    app.stop().await;
}

#[tokio::test]
async fn another_tenant_never_reads_or_writes_documents_chunks_memories_or_jobs() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "kb-a").await;
    let b = tenant(&app, "kb-b").await;
    let (status, doc, _) = post_doc(
        &app,
        &a.key,
        &a.project,
        &json!({ "title": "secret plan", "content": GUIDE, "content_type": "text/markdown" }),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let doc_id = doc["id"].as_str().unwrap().to_owned();
    wait_ready(&app, &a.member, &doc_id).await;
    let (status, memory) = app
        .send_json(
            Method::POST,
            "/api/v1/memories",
            &a.member,
            &json!({ "content": "prefers dark roast coffee" }),
        )
        .await;
    assert_eq!(status, 201, "{memory}");

    // Over REST: B sees and changes nothing of A's, whatever it asks.
    for token in [&b.admin, &b.key] {
        assert_eq!(app.status_of(Method::GET, &format!("/api/v1/documents/{doc_id}"), token).await, 404);
        assert_eq!(app.status_of(Method::DELETE, &format!("/api/v1/documents/{doc_id}"), token).await, 404);
        assert_eq!(
            app.status_of(Method::GET, &format!("/api/v1/projects/{}/documents", a.project), token).await,
            404
        );
        let (status, _, _) =
            post_doc(&app, token, &a.project, &json!({ "title": "t", "content": "x" }), None).await;
        assert_eq!(status, 404);
        for mode in ["hybrid", "vector", "keyword"] {
            let (_, found) = search(
                &app,
                token,
                json!({ "query": "reconnect since offset replay invoices", "mode": mode }),
            )
            .await;
            assert!(found["data"].as_array().unwrap().is_empty(), "{mode}: {found}");
            let (_, found) =
                search(&app, token, json!({ "query": "reconnect", "mode": mode, "project_id": a.project }))
                    .await;
            assert!(found["data"].as_array().unwrap().is_empty(), "{mode}: {found}");
        }
        let (_, found) = app
            .send_json(Method::POST, "/api/v1/memories/search", token, &json!({ "query": "coffee" }))
            .await;
        assert!(found["data"].as_array().unwrap().is_empty(), "{found}");
        let memory_path = format!("/api/v1/memories/{}", memory["id"].as_str().unwrap());
        assert_eq!(app.status_of(Method::DELETE, &memory_path, token).await, 404);
    }
    assert_eq!(app.get_json(&format!("/api/v1/documents/{doc_id}"), &a.member).await["status"], "ready");

    // Straight at Postgres, as B's context: no row of A's in any of the four
    // tables, and a row claiming A's tenant is refused.
    let db = Database::connect(&env("DATABASE_URL")).await.unwrap();
    let mut tx = db.begin(&TenantContext::new(b.id, None, Role::Service)).await.unwrap();
    for table in ["documents", "chunks", "memories", "embedding_jobs"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"))
            .bind(a.id.as_uuid())
            .fetch_one(tx.conn())
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let forged = sqlx::query(
        "INSERT INTO chunks (tenant_id, project_id, document_id, position, content, token_count) VALUES ($1, $2, $3, 99, 'x', 1)",
    )
    .bind(a.id.as_uuid())
    .bind(uuid::Uuid::parse_str(&a.project).unwrap())
    .bind(uuid::Uuid::parse_str(&doc_id).unwrap())
    .execute(tx.conn())
    .await;
    let code =
        forged.err().and_then(|e| e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())));
    assert_eq!(code.as_deref(), Some("42501"), "RLS refuses a row of another tenant");
    drop(tx);
    let mut tx = db.begin(&TenantContext::new(b.id, None, Role::Service)).await.unwrap();
    let updated = sqlx::query("UPDATE documents SET title = 'mine' WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&doc_id).unwrap())
        .execute(tx.conn())
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    tx.commit().await.unwrap();
    assert_eq!(app.get_json(&format!("/api/v1/documents/{doc_id}"), &a.member).await["title"], "secret plan");
    // Hands back any job its worker holds, for the other tests.
    app.stop().await;
}

#[tokio::test]
async fn memories_belong_to_their_user_and_are_found_by_meaning() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "kb-memories").await;
    let other = UserId::new();
    let other_token = user_token(t.id, other, Role::Member);
    let remember = |token: String, body: Value| {
        let app = &app;
        async move { app.send_json(Method::POST, "/api/v1/memories", &token, &body).await }
    };
    let (status, mine) =
        remember(t.member.clone(), json!({ "content": "Allergic to peanuts", "tags": ["health"] })).await;
    assert_eq!(status, 201, "{mine}");
    assert_eq!(mine["user_id"], t.member_id.to_string());
    // An agent adds one for a user; it must say whose.
    let (status, by_agent) = remember(
        t.key.clone(),
        json!({ "content": "Works in the Lisbon office", "user_id": t.member_id.to_string() }),
    )
    .await;
    assert_eq!(status, 201, "{by_agent}");
    assert_eq!(remember(t.key.clone(), json!({ "content": "nobody's" })).await.0, 422);
    // A member cannot write into someone else's memories.
    assert_eq!(
        remember(t.member.clone(), json!({ "content": "x", "user_id": other.to_string() })).await.0,
        403
    );
    let (status, theirs) = remember(other_token.clone(), json!({ "content": "Allergic to shellfish" })).await;
    assert_eq!(status, 201);
    for bad in [
        json!({ "content": "" }),
        json!({ "content": "x", "importance": 2 }),
        json!({ "content": "x", "tags": [""] }),
    ] {
        assert_eq!(remember(t.member.clone(), bad).await.0, 422);
    }

    // Found by meaning once embedded (the worker runs in the background).
    let started = Instant::now();
    loop {
        let listed = app.get_json("/api/v1/memories", &t.member).await;
        if listed["data"].as_array().unwrap().iter().all(|m| m["model"] == "all-MiniLM-L6-v2") {
            break;
        }
        assert!(started.elapsed() < WAIT, "never embedded: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, found) = app
        .send_json(
            Method::POST,
            "/api/v1/memories/search",
            &t.member,
            &json!({ "query": "what food should they avoid?" }),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["degraded"], false);
    assert_eq!(found["data"][0]["matched_by"], json!(["vector"]), "{found}");
    let ids: Vec<&str> =
        found["data"].as_array().unwrap().iter().map(|h| h["memory"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.first(), mine["id"].as_str().as_ref(), "{found}");
    assert!(!ids.contains(&theirs["id"].as_str().unwrap()), "another member's memory: {found}");
    // Listing: a member sees their own; the admin sees the user's they name.
    let own = app.get_json("/api/v1/memories", &t.member).await;
    assert_eq!(own["data"].as_array().unwrap().len(), 2, "{own}");
    let named = app.get_json(&format!("/api/v1/memories?user_id={other}"), &t.admin).await;
    assert_eq!(named["data"][0]["id"], theirs["id"]);
    // The other member cannot delete mine; I can.
    let path = format!("/api/v1/memories/{}", mine["id"].as_str().unwrap());
    assert_eq!(app.status_of(Method::DELETE, &path, &other_token).await, 404);
    assert_eq!(app.status_of(Method::DELETE, &path, &t.member).await, 204);
    assert_eq!(app.get_json("/api/v1/memories", &t.member).await["data"].as_array().unwrap().len(), 1);
    // Hands back any job its worker holds, for the other tests.
    app.stop().await;
}

#[tokio::test]
async fn a_job_whose_node_died_is_taken_again_once_its_lease_runs_out() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "kb-lease").await;
    // A node that claims a job and dies at once (never settles it): the test
    // itself, on the platform path, with a one-second lease. The document is
    // written straight to Postgres and claimed at once, before any node's
    // worker looks (one that got there first makes the test try again).
    let db = Database::connect(&env("DATABASE_URL")).await.unwrap();
    let ctx = TenantContext::new(t.id, None, Role::Service);
    let project = switchboard_domain::ProjectId::from(uuid::Uuid::parse_str(&t.project).unwrap());
    let mut doomed = None;
    for attempt in 0..5 {
        let mut tx = db.begin(&ctx).await.unwrap();
        let new = repo::NewDocument {
            project,
            title: "orphan",
            source: None,
            content_type: "text/markdown",
            metadata: &json!({}),
            content: GUIDE,
            checksum: &"0".repeat(64),
            idempotency_key: None,
        };
        let switchboard_db::repo::Created::New(doc) = repo::create_document(&mut tx, &new).await.unwrap()
        else {
            panic!("not new")
        };
        tx.commit().await.unwrap();
        let mut tx = db.begin_platform().await.unwrap();
        let jobs = repo::claim_jobs(&mut tx, &format!("doomed-node-{attempt}"), 50, Duration::from_secs(1))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        if jobs.iter().any(|j| j.target == repo::Target::Document(doc.id)) {
            doomed = Some((doc.id, Instant::now()));
            break;
        }
    }
    let (id, claimed) = doomed.expect("the dying node claimed one of five documents");
    // Held: nobody touches it while the lease lasts (checked only when this
    // machine was quick enough to look well within the second).
    let status = app.get_json(&format!("/api/v1/documents/{id}"), &t.member).await["status"].clone();
    if claimed.elapsed() < Duration::from_millis(700) {
        assert_eq!(status, "pending");
    }
    // Then a live node takes it and finishes it, once; the node that died
    // holding it counts as one attempt (a job that keeps killing nodes dies).
    let ready = wait_ready(&app, &t.member, &id.to_string()).await;
    assert!(ready["chunk_count"].as_i64().unwrap() > 0);
    let mut tx = db.begin(&ctx).await.unwrap();
    let jobs = repo::jobs_of_document(&mut tx, id).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| (j.status.as_str(), j.attempts)).collect::<Vec<_>>(),
        [("done", 1)],
        "{jobs:?}"
    );
    // Hands back any job its worker holds, for the other tests.
    app.stop().await;
}

#[tokio::test]
async fn an_agent_searches_remembers_and_cites_only_its_tenants_chunks() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "kb-agent").await;
    let other = tenant(&app, "kb-agent-other").await;
    let body = json!({ "title": "Guide", "content": GUIDE, "content_type": "text/markdown" });
    let (_, mine, _) = post_doc(&app, &t.key, &t.project, &body, None).await;
    let (_, theirs, _) = post_doc(&app, &other.key, &other.project, &body, None).await;
    wait_ready(&app, &t.member, mine["id"].as_str().unwrap()).await;
    wait_ready(&app, &other.member, theirs["id"].as_str().unwrap()).await;

    // The worker's key searches (read scope) and remembers for the user it serves.
    let (_, found) =
        search(&app, &t.key, json!({ "query": "how do I get missed events back after a disconnect" })).await;
    let chunk = found["data"][0]["chunk"]["id"].as_str().unwrap().to_owned();
    assert_eq!(found["data"][0]["document_id"], mine["id"]);
    let (status, _) = app
        .send_json(
            Method::POST,
            "/api/v1/memories",
            &t.key,
            &json!({ "content": "asked about reconnecting", "user_id": t.member_id.to_string(), "tags": ["support"] }),
        )
        .await;
    assert_eq!(status, 201);

    // Its run cites the chunk; a chunk of another tenant (the same text!) or
    // one that does not exist is refused and nothing is stored.
    let (_, run) =
        app.send_json(Method::POST, "/api/v1/runs", &t.key, &json!({ "project_id": t.project })).await;
    let steps = format!("/api/v1/runs/{}/steps", run["id"].as_str().unwrap());
    let (_, other_found) = search(&app, &other.key, json!({ "query": "reconnect since offset" })).await;
    let foreign = other_found["data"][0]["chunk"]["id"].as_str().unwrap().to_owned();
    for bad in [foreign, uuid::Uuid::new_v4().to_string()] {
        let (status, err) = app
            .send_json(Method::POST, &steps, &t.key, &json!({ "content": "x", "citations": [chunk, bad] }))
            .await;
        assert_eq!(status, 422, "{err}");
    }
    let (status, step) = app
        .send_json(
            Method::POST,
            &steps,
            &t.key,
            &json!({ "content": "Resubscribe with since.", "citations": [chunk, chunk] }),
        )
        .await;
    assert_eq!(status, 201, "{step}");
    assert_eq!(step["seq"], 1, "the refused ones stored nothing");
    assert_eq!(step["data"]["citations"], json!([chunk]));
    let detail = app.get_json(&format!("/api/v1/runs/{}", run["id"].as_str().unwrap()), &t.member).await;
    assert_eq!(detail["steps"][0]["data"]["citations"], json!([chunk]));
    // Hands back any job its worker holds, for the other tests.
    app.stop().await;
}
