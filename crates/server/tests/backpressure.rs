//! A node that has as many publishes under way as it takes
//! (`NODE_PUBLISHES_IN_FLIGHT`) pushes back: the others are refused at once
//! with `rate_limited` and a `retry_after_ms`, over a socket and over `POST
//! /broadcast`, and every publish it accepted reaches the subscribers, none
//! it refused. A burst within the default room (128) is accepted whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{Node, SioClient, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const BURST: u64 = 200;

/// Sends `n` publishes at once on one socket; returns the `i`s accepted,
/// the refusals' bodies, and the `i`s a subscriber received.
async fn burst(node: &Node, n: u64) -> (BTreeSet<u64>, Vec<serde_json::Value>, BTreeSet<u64>) {
    let limits = json!({ "events_per_second": 1_000_000 });
    let tenant = node.create_tenant_with("backpressure", limits).await;
    let token = || user_token(tenant, UserId::new(), Role::Member);
    let url = node.url("");
    let topic = "channel:burst";
    let publisher = SioClient::connect(&url, &token()).await.unwrap();
    let mut watcher = SioClient::connect(&url, &token()).await.unwrap();
    for s in [&publisher, &watcher] {
        assert_eq!(s.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"], true);
    }
    let acks: Vec<_> = (0..n)
        .map(|i| {
            publisher.emit_ack_later("publish", json!({ "topic": topic, "event": "n", "data": { "i": i } }))
        })
        .collect();
    let (mut accepted, mut refused) = (BTreeSet::new(), Vec::new());
    for (i, ack) in acks.into_iter().enumerate() {
        let ack = tokio::time::timeout(Duration::from_secs(10), ack).await.unwrap().unwrap();
        if ack["ok"] == true {
            accepted.insert(i as u64);
        } else {
            refused.push(ack);
        }
    }
    let mut received = BTreeSet::new();
    while let Some(e) = watcher.next_event("n", Duration::from_millis(1500)).await {
        received.insert(e["data"]["i"].as_u64().unwrap());
    }
    (accepted, refused, received)
}

#[tokio::test]
async fn a_saturated_node_refuses_publishes_and_delivers_every_one_it_accepted() {
    let node = Node::spawn_with(
        BIN,
        "backpressure",
        &[("NODE_PUBLISHES_IN_FLIGHT", "1"), ("SOCKET_EVENTS_PER_SECOND", "100000")],
    );
    let (accepted, refused, received) = burst(&node, BURST).await;
    assert!(!refused.is_empty(), "with room for one publish, a burst of {BURST} is pushed back");
    assert!(!accepted.is_empty());
    assert_eq!(accepted.len() + refused.len(), BURST as usize);
    for r in &refused {
        assert_eq!(r["error"]["code"], "rate_limited", "{r}");
        assert_eq!(r["error"]["retry_after_ms"], 50, "{r}");
    }
    assert_eq!(received, accepted, "every accepted publish delivered, no refused one");
    let metrics = node.metrics().await;
    let refusals = switchboard_testkit::metric_sum(
        &metrics,
        "switchboard_rate_limit_hits_total",
        &[("limit", "node_publishes")],
    );
    assert!(refusals >= refused.len() as f64, "{refusals}");

    // POST /broadcast shares the room: with a publish held open it is 429.
    let tenant =
        node.create_tenant_with("backpressure-rest", json!({ "http_requests_per_second": 10000 })).await;
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    let body = json!({ "topic": "channel:rest", "event": "n", "data": {} });
    let statuses = futures_util::future::join_all(
        (0..40).map(|_| node.send_json(Method::POST, "/api/v1/broadcast", &admin, &body)),
    )
    .await;
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| s.as_u16() == 429).collect();
    assert!(statuses.iter().all(|(s, _)| matches!(s.as_u16(), 202 | 429)), "{statuses:?}");
    assert!(!limited.is_empty(), "40 broadcasts at once with room for one");
    assert_eq!(limited[0].1["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn a_burst_within_the_default_room_is_accepted_whole() {
    let node = Node::spawn_with(BIN, "backpressure-default", &[("SOCKET_EVENTS_PER_SECOND", "100000")]);
    let (accepted, refused, received) = burst(&node, 120).await;
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(accepted.len(), 120);
    assert_eq!(received, accepted);
}
