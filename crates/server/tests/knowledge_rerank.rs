//! An outside reranker (a Cohere/Jina-compatible server on loopback) ordering
//! hybrid results, and the fused order standing when it fails. In a process of
//! its own, like the embedding provider's test: nodes configured differently
//! must not share one queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use switchboard_testkit::TestApp;

mod knowledge_common;
use knowledge_common::*;

/// A Cohere/Jina-compatible reranker on loopback that scores a document by how
/// many times it says `favourite`, or fails (500) when `failing` is set.
async fn fake_reranker(failing: Arc<AtomicU8>) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/rerank",
        post(move |axum::Json(body): axum::Json<Value>| {
            let failing = failing.clone();
            async move {
                if failing.load(Ordering::SeqCst) == 1 {
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": "down" })));
                }
                let results: Vec<Value> = body["documents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, d)| json!({ "index": i, "relevance_score": d.as_str().unwrap().matches("favourite").count() as f64 }))
                    .collect();
                (axum::http::StatusCode::OK, axum::Json(json!({ "results": results })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_reranker_orders_hybrid_results_and_its_failure_leaves_the_fused_order() {
    let failing = Arc::new(AtomicU8::new(0));
    let url = fake_reranker(failing.clone()).await;
    let app = TestApp::spawn_with(&[
        ("RERANK_URL", &url),
        ("RERANK_MODEL", "fake-rerank"),
        ("OUTSIDE_TIMEOUT_MS", "500"),
        ("OUTSIDE_BREAKER_COOL_DOWN_MS", "60000"),
    ])
    .await;
    let t = tenant(&app, "kb-rerank").await;
    let doc = "# Notes\n\n## Tea\n\nGreen tea is my favourite favourite drink in the morning.\n\n## Drinks\n\nWhat do I like to drink? Coffee, tea and water are all drinks.\n";
    let (status, created, _) = post_doc(
        &app,
        &t.key,
        &t.project,
        &json!({ "title": "n", "content": doc, "content_type": "text/markdown" }),
        None,
    )
    .await;
    assert_eq!(status, 201);
    wait_ready(&app, &t.member, created["id"].as_str().unwrap()).await;

    let (_, found) = search(&app, &t.member, json!({ "query": "what do I like to drink" })).await;
    assert_eq!(found["reranked"], true, "{found}");
    assert!(contents(&found)[0].contains("favourite"), "the reranker's order: {found}");
    assert_eq!(found["data"][0]["score"], 2.0);

    // Failing: the fused order stands, and the search still answers.
    failing.store(1, Ordering::SeqCst);
    let (status, found) = search(&app, &t.member, json!({ "query": "what do I like to drink" })).await;
    assert_eq!((status, found["reranked"].as_bool()), (200, Some(false)), "{found}");
    assert!(contents(&found)[0].contains("What do I like to drink"), "fused order: {found}");
    // Hands back any job its worker holds, for the other tests.
    app.stop().await;
}
