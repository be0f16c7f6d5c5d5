//! Changing the embedding model: a tenant's documents and memories embedded
//! by the built-in model are queued again by `switchboard reembed --tenant`
//! and a node configured with another model (an OpenAI-compatible provider on
//! loopback, 64 dimensions) embeds them anew: every chunk then carries the
//! new model and its dimensions, vector search answers with it, and the text
//! and chunk count are unchanged. In a process of its own: nodes with another
//! model must not share its queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::{Duration, Instant};
use switchboard_db::{Database, TenantContext};
use switchboard_domain::Role;
use switchboard_testkit::{JWT_SECRET, TestApp, env};

mod knowledge_common;
use knowledge_common::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

#[tokio::test]
async fn reembed_moves_a_tenants_chunks_and_memories_to_the_new_model() {
    // Ingested with the built-in model.
    let local = TestApp::spawn().await;
    let t = tenant(&local, "kb-reembed").await;
    let (status, doc, _) = post_doc(
        &local,
        &t.key,
        &t.project,
        &json!({ "title": "guide", "content": GUIDE, "content_type": "text/markdown" }),
        None,
    )
    .await;
    assert_eq!(status, 201, "{doc}");
    let doc_id = doc["id"].as_str().unwrap().to_owned();
    let before = wait_ready(&local, &t.key, &doc_id).await;
    let (status, memory) = local
        .send_json(
            reqwest::Method::POST,
            "/api/v1/memories",
            &t.key,
            &json!({ "content": "prefers answers in French", "user_id": t.member_id.to_string() }),
        )
        .await;
    assert_eq!(status, 201, "{memory}");
    let (_, found) =
        search(&local, &t.key, json!({ "query": "reconnect after the network drops", "mode": "vector" }))
            .await;
    assert_eq!(found["model"], "all-MiniLM-L6-v2", "{found}");

    let db = Database::connect(&env("DATABASE_URL")).await.unwrap();
    let models = || async {
        let mut tx = db.begin(&TenantContext::new(t.id, None, Role::Service)).await.unwrap();
        let chunks: Vec<(Option<String>, Option<i32>)> =
            sqlx::query_as("SELECT model, dims FROM chunks ORDER BY position")
                .fetch_all(tx.conn())
                .await
                .unwrap();
        let memories: Vec<(Option<String>, Option<i32>)> =
            sqlx::query_as("SELECT model, dims FROM memories").fetch_all(tx.conn()).await.unwrap();
        (chunks, memories)
    };
    // Memories are embedded in the background too: wait for this one.
    let started = Instant::now();
    while models().await.1.iter().any(|(m, _)| m.is_none()) {
        assert!(started.elapsed() < WAIT, "the memory was not embedded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only now: this node's worker is the one that embeds it.
    local.stop().await;
    let (chunks, memories) = models().await;
    assert!(chunks.iter().all(|c| *c == (Some("all-MiniLM-L6-v2".to_owned()), Some(384))), "{chunks:?}");
    assert_eq!(memories.len(), 1);

    // The provider, and the command that queues the tenant's content again.
    let url = fake_embeddings(Arc::new(AtomicU8::new(0))).await;
    let out = std::process::Command::new(BIN)
        .args(["reembed", "--tenant", &t.id.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", env("DATABASE_URL"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("EMBEDDING_URL", &url)
        .env("EMBEDDING_MODEL", "fake-64")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("\"queued\":2"), "one document and one memory: {log}");

    // A node with the new model embeds them anew.
    let remote = TestApp::spawn_with(&[("EMBEDDING_URL", &url), ("EMBEDDING_MODEL", "fake-64")]).await;
    let started = Instant::now();
    loop {
        let (chunks, memories) = models().await;
        let moved = |rows: &[(Option<String>, Option<i32>)]| {
            rows.iter().all(|r| *r == (Some("fake-64".to_owned()), Some(64)))
        };
        if moved(&chunks) && moved(&memories) {
            assert_eq!(chunks.len() as i64, before["chunk_count"].as_i64().unwrap(), "the same chunks");
            break;
        }
        assert!(started.elapsed() < WAIT, "not re-embedded: {chunks:?} {memories:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = wait_ready(&remote, &t.key, &doc_id).await;
    assert_eq!(after["chunk_count"], before["chunk_count"]);
    let (status, found) =
        search(&remote, &t.key, json!({ "query": "reconnect after the network drops", "mode": "vector" }))
            .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (found["model"].as_str(), found["degraded"].as_bool()),
        (Some("fake-64"), Some(false)),
        "{found}"
    );
    assert!(!found["data"].as_array().unwrap().is_empty(), "{found}");
    let (_, memories) = remote
        .send_json(
            reqwest::Method::POST,
            "/api/v1/memories/search",
            &t.key,
            &json!({ "query": "which language", "user_id": t.member_id.to_string() }),
        )
        .await;
    assert_eq!(memories["degraded"], false, "{memories}");
    assert_eq!(memories["data"][0]["memory"]["content"], "prefers answers in French", "{memories}");
    remote.stop().await;
}
