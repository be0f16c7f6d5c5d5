//! An outside embedding provider (an OpenAI-compatible server on loopback,
//! made slow, then failing, then healthy) behind its circuit breaker: searches
//! answer from full text and say `degraded` while it is down, ingestion waits
//! without failing, and everything catches up when it is back. In a process of
//! its own: nodes with another model must not share its queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;
use switchboard_testkit::{TestApp, metric_sum};

mod knowledge_common;
use knowledge_common::*;

#[tokio::test]
async fn an_outside_provider_that_fails_opens_the_breaker_search_degrades_and_ingestion_waits() {
    let mode = Arc::new(AtomicU8::new(1));
    let url = fake_embeddings(mode.clone()).await;
    let app = TestApp::spawn_with(&[
        ("EMBEDDING_URL", &url),
        ("EMBEDDING_MODEL", "fake-64"),
        ("EMBEDDING_API_KEY", "sk-test-key-never-logged"),
        ("OUTSIDE_TIMEOUT_MS", "300"),
        ("OUTSIDE_BREAKER_COOL_DOWN_MS", "1500"),
    ])
    .await;
    let t = tenant(&app, "kb-breaker").await;
    let started = Instant::now();
    let mut timeline = Vec::new();
    let mut note = |what: String| timeline.push(format!("{:>6} ms  {what}", started.elapsed().as_millis()));

    // Slow: each call times out; a search still answers, from full text, degraded.
    let (status, doc, _) = post_doc(
        &app,
        &t.key,
        &t.project,
        &json!({ "title": "g", "content": GUIDE, "content_type": "text/markdown" }),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let id = doc["id"].as_str().unwrap().to_owned();
    let (status, found) = search(&app, &t.member, json!({ "query": "reconnect" })).await;
    assert_eq!((status, found["degraded"].as_bool()), (200, Some(true)), "{found}");
    note(format!(
        "provider slow: search degraded={}, {} results",
        found["degraded"],
        found["data"].as_array().unwrap().len()
    ));

    // Failing: the breaker opens; searches degrade without waiting on the provider.
    mode.store(2, Ordering::SeqCst);
    let opened = loop {
        let metrics = app.metrics().await;
        if metric_sum(&metrics, "switchboard_breaker_state", &[("breaker", "embedding")]) == 1.0 {
            break metrics;
        }
        assert!(started.elapsed() < WAIT, "the breaker never opened");
        let _ = search(&app, &t.member, json!({ "query": "reconnect" })).await;
    };
    note("breaker open".to_owned());
    let t0 = Instant::now();
    let (_, found) = search(&app, &t.member, json!({ "query": "reconnect", "mode": "vector" })).await;
    assert_eq!(found["degraded"], true, "{found}");
    assert!(!found["data"].as_array().unwrap().is_empty(), "full-text answers while vectors cannot: {found}");
    note(format!("search while open: degraded, answered in {} ms", t0.elapsed().as_millis()));
    let d = app.get_json(&format!("/api/v1/documents/{id}"), &t.member).await;
    assert_ne!(d["status"], "ready");
    assert_ne!(d["status"], "failed", "a provider that is down makes ingestion wait, not fail: {d}");
    note(format!("document {}: {}", d["status"], d["error"]));
    // The key is in neither what the node exposes nor what the tenant reads.
    assert!(!opened.contains("sk-test-key-never-logged"), "the API key is in the metrics");
    assert!(
        !d.to_string().contains("sk-test-key-never-logged"),
        "the API key is in the document's error: {d}"
    );

    // Healthy again: the breaker half-opens, closes on the probe, the job finishes.
    mode.store(0, Ordering::SeqCst);
    note("provider healthy".to_owned());
    let ready = wait_ready(&app, &t.member, &id).await;
    note(format!("document ready with {} chunks of {}", ready["chunk_count"], ready["model"]));
    assert_eq!(ready["model"], "fake-64");
    let (_, found) =
        search(&app, &t.member, json!({ "query": "tenant budget refused rate_limited", "mode": "vector" }))
            .await;
    assert_eq!(found["degraded"], false, "{found}");
    assert!(contents(&found)[0].contains("rate_limited"), "{found}");
    assert_eq!(
        metric_sum(&app.metrics().await, "switchboard_breaker_state", &[("breaker", "embedding")]),
        0.0
    );
    note("breaker closed; search by vectors again".to_owned());
    let waited =
        metric_sum(&app.metrics().await, "switchboard_embedding_jobs_total", &[("outcome", "waiting")]);
    assert!(waited >= 1.0, "the job waited at least once");
    eprintln!("breaker timeline:\n{}", timeline.join("\n"));
    // Hands back any job its worker holds, for the other tests.
    app.stop().await;
}
