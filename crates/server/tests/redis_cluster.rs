//! Redis Cluster, against a private cluster of three masters and two
//! `switchboard` processes: topic channels are sharded (`SSUBSCRIBE`) and
//! spread over the masters by their slot, never on the cluster-wide bus;
//! each topic's keys live together in its slot; events, recovery from an
//! offset, presence, the cache's invalidation and the connection limit work
//! across the nodes. (The Socket.IO suite and the fault tests run against a
//! cluster too: `scripts/test`, `crates/server/tests/faults.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::redis::command;
use switchboard_testkit::{Node, RedisCluster, SioClient, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WAIT: Duration = Duration::from_secs(5);
const TOPICS: usize = 24;

#[tokio::test]
async fn topics_are_sharded_channels_spread_over_the_masters_and_work_across_nodes() {
    let cluster = RedisCluster::start(false);
    let url = cluster.url();
    let a = Node::spawn_with(BIN, "cl-a", &[("REDIS_URL", &url)]);
    let b = Node::spawn_with(BIN, "cl-b", &[("REDIS_URL", &url)]);
    for node in [&a, &b] {
        assert_eq!(node.status_of(Method::GET, "/health/ready", "").await, StatusCode::OK);
    }
    let tenant = a.create_tenant_with("cluster", json!({ "max_connections": 3 })).await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("channel:spread-{i}")).collect();

    let mut watcher = SioClient::connect(&b.url(""), &token).await.unwrap();
    let talker = SioClient::connect(&a.url(""), &token).await.unwrap();
    for topic in &topics {
        for s in [&watcher, &talker] {
            let ack = s.emit_with_ack("subscribe", json!({ "topic": topic })).await;
            assert_eq!(ack["ok"], true, "{ack}");
        }
    }

    // Each topic is a shard channel on the master of its slot; none is on the
    // cluster-wide bus, which every master would carry.
    let rooms: Vec<String> = topics.iter().map(|t| format!("t:{tenant}:{t}")).collect();
    let mut masters_used = BTreeSet::new();
    for room in &rooms {
        let channel = format!("sb:{{{room}}}:c");
        let owner = cluster.master_of(&channel);
        let port = cluster.masters[owner].port;
        let shard = command(&format!("redis://127.0.0.1:{port}"), &["PUBSUB", "SHARDCHANNELS", &channel])
            .unwrap()
            .texts();
        assert_eq!(shard, vec![channel.clone()], "{room} is not a shard channel on its master");
        masters_used.insert(owner);
    }
    assert_eq!(masters_used.len(), 3, "{TOPICS} topics spread over all three masters");
    for m in &cluster.masters {
        let classic = command(&format!("redis://127.0.0.1:{}", m.port), &["PUBSUB", "CHANNELS", "sb:{*"])
            .unwrap()
            .texts();
        assert!(classic.is_empty(), "topic channels on the cluster-wide bus: {classic:?}");
    }

    // Events cross the nodes on every topic, whatever its slot.
    let mut last = String::new();
    for (i, topic) in topics.iter().enumerate() {
        let ack = talker
            .emit_with_ack("publish", json!({ "topic": topic, "event": "tick", "data": { "i": i } }))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        let got = watcher.next_event("tick", WAIT).await.expect("delivered on the other node");
        assert_eq!(got["topic"], *topic);
        assert_eq!(got["offset"], ack["offset"]);
        if i == 0 {
            last = got["offset"].as_str().unwrap().to_owned();
        }
    }

    // Recovery from an offset, from the topic's history in its slot.
    watcher.close();
    for i in 0..3 {
        let ack = talker
            .emit_with_ack("publish", json!({ "topic": topics[0], "event": "tick", "data": { "again": i } }))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let mut back = SioClient::connect(&b.url(""), &token).await.unwrap();
    let ack = back.emit_with_ack("subscribe", json!({ "topic": topics[0], "since": last })).await;
    assert_eq!((ack["ok"].clone(), ack["recovered"].clone()), (json!(true), json!(true)), "{ack}");
    for i in 0..3 {
        let got = back.next_event("tick", WAIT).await.expect("replayed");
        assert_eq!(got["data"], json!({ "again": i }));
    }

    // Presence across the nodes.
    let ack = back.emit_with_ack("presence:track", json!({ "topic": topics[0], "state": { "on": 1 } })).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let list = talker.emit_with_ack("presence:list", json!({ "topic": topics[0] })).await;
    assert_eq!(list["entries"].as_array().map(Vec::len), Some(1), "{list}");

    // The connection limit (3) counts sockets on both nodes: talker, back, and one more.
    let third = SioClient::connect(&a.url(""), &token).await.unwrap();
    let refused = SioClient::connect(&b.url(""), &token).await.err().expect("a fourth socket is refused");
    assert_eq!(refused.codes().1, "tenant_connection_limit", "{refused:?}");
    third.close();

    // A tenant change through one node reaches the other's cache: suspended
    // through A, refused on B at once.
    let (status, body) = a
        .send_json(
            Method::PATCH,
            &format!("/api/v1/tenants/{tenant}"),
            switchboard_testkit::platform_token(),
            &json!({ "status": "suspended" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut refused = false;
    for _ in 0..50 {
        if b.status_of(Method::GET, "/api/v1/projects", &token).await == StatusCode::FORBIDDEN {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the suspension did not reach the other node");
}
