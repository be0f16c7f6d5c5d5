//! Without `REDIS_URL` a node runs alone on the in-process twins: topics,
//! history and recovery, presence and connection counts behave as with Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{SioClient, TestApp, platform_token, user_token};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_node_without_redis_delivers_recovers_and_tracks_presence_on_its_own() {
    let app = TestApp::spawn_with(&[("REDIS_URL", ""), ("TOPIC_HISTORY_SIZE", "3")]).await;
    let tenant = app.create_tenant("alone").await;
    let url = app.url("");
    let token = || user_token(tenant, UserId::new(), Role::Member);
    let publisher = SioClient::connect(&url, &token()).await.unwrap();
    let mut watcher = SioClient::connect(&url, &token()).await.unwrap();
    for s in [&publisher, &watcher] {
        assert_eq!(s.emit_with_ack("subscribe", json!({ "topic": "channel:solo" })).await["ok"], true);
    }

    let sent =
        publisher.emit_with_ack("publish", json!({ "topic": "channel:solo", "event": "e", "data": 1 })).await;
    let got = watcher.next_event("e", WAIT).await.expect("live delivery");
    assert_eq!(got["offset"], sent["offset"]);

    // Recovery from an offset, then honesty once the history (3 events) was trimmed.
    let since = sent["offset"].as_str().unwrap().to_owned();
    for i in 2..=3 {
        publisher.emit_with_ack("publish", json!({ "topic": "channel:solo", "event": "e", "data": i })).await;
    }
    let mut late = SioClient::connect(&url, &token()).await.unwrap();
    let ack = late.emit_with_ack("subscribe", json!({ "topic": "channel:solo", "since": since })).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(late.next_event("e", WAIT).await.unwrap()["data"], 2);
    assert_eq!(late.next_event("e", WAIT).await.unwrap()["data"], 3);
    for i in 4..=7 {
        publisher.emit_with_ack("publish", json!({ "topic": "channel:solo", "event": "e", "data": i })).await;
    }
    let lost = SioClient::connect(&url, &token()).await.unwrap();
    let ack = lost.emit_with_ack("subscribe", json!({ "topic": "channel:solo", "since": since })).await;
    assert_eq!(ack["recovered"], false, "{ack}");

    // Presence, and its departure when the socket goes.
    let track =
        publisher.emit_with_ack("presence:track", json!({ "topic": "channel:solo", "state": { "n": 1 } }));
    assert_eq!(track.await["ok"], true);
    let join = watcher.next_event("presence:join", WAIT).await.expect("presence:join");
    assert_eq!(join["data"]["state"], json!({ "n": 1 }));
    let list = watcher.emit_with_ack("presence:list", json!({ "topic": "channel:solo" })).await;
    assert_eq!(list["entries"].as_array().unwrap().len(), 1);
    publisher.close();
    let leave = watcher.next_event("presence:leave", WAIT).await.expect("presence:leave");
    assert_eq!(leave["data"]["state"], json!({ "n": 1 }));
    app.stop().await;
}

#[tokio::test]
async fn a_node_without_redis_still_counts_a_tenants_connections() {
    let app = TestApp::spawn_with(&[("REDIS_URL", "")]).await;
    let tenant = app.create_tenant("counted").await;
    let limits = json!({ "limits": { "max_connections": 1 } });
    let path = format!("/api/v1/tenants/{tenant}");
    let (status, _) = app.send_json(reqwest::Method::PATCH, &path, platform_token(), &limits).await;
    assert_eq!(status, 200);
    let first =
        SioClient::connect(&app.url(""), &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
    let refused = SioClient::connect(&app.url(""), &user_token(tenant, UserId::new(), Role::Member)).await;
    assert_eq!(
        refused.err().unwrap().codes(),
        ("over_capacity".to_owned(), "tenant_connection_limit".to_owned())
    );
    first.close();
    let mut admitted = false;
    for _ in 0..50 {
        if SioClient::connect(&app.url(""), &user_token(tenant, UserId::new(), Role::Member)).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "the closed socket's slot was not given back");
    app.stop().await;
}
