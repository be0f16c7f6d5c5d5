//! Realtime across two `switchboard` processes on one Redis, driven from REST on
//! one node and sockets on the other: `POST /broadcast`, `GET /presence`,
//! `POST /connections/{user_id}/disconnect`, their validation and their audit rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{Node, SioClient, expired_token, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WAIT: Duration = Duration::from_secs(5);

async fn post(node: &Node, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    node.send_json(reqwest::Method::POST, path, token, &body).await
}

#[tokio::test]
async fn a_broadcast_through_one_node_reaches_sockets_on_the_other_with_its_offset() {
    let (a, b) = (Node::spawn(BIN, "rt-a"), Node::spawn(BIN, "rt-b"));
    let tenant = a.create_tenant("broadcasts").await;
    let mut watcher =
        SioClient::connect(&a.url(""), &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
    let ack = watcher.emit_with_ack("subscribe", json!({ "topic": "channel:news" })).await;
    assert_eq!(ack["ok"], true, "{ack}");

    let key = b.api_key(tenant, &["broadcast"]).await;
    let body = json!({ "topic": "channel:news", "event": "headline", "data": { "text": "hello" } });
    let (status, sent) = post(&b, "/api/v1/broadcast", &key, body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let got = watcher.next_event("headline", WAIT).await.expect("the broadcast did not arrive");
    assert_eq!(got["topic"], "channel:news");
    assert_eq!(got["data"], json!({ "text": "hello" }));
    assert_eq!(got["offset"], sent["offset"]);
    assert_eq!(got["from"]["kind"], "agent");

    // Only keys with `broadcast` (or `admin`) and tenant admins may broadcast.
    let reader = b.api_key(tenant, &["read", "write"]).await;
    assert_eq!(post(&b, "/api/v1/broadcast", &reader, body.clone()).await.0, StatusCode::FORBIDDEN);
    let member = user_token(tenant, UserId::new(), Role::Member);
    assert_eq!(post(&b, "/api/v1/broadcast", &member, body.clone()).await.0, StatusCode::FORBIDDEN);
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    assert_eq!(post(&b, "/api/v1/broadcast", &admin, body).await.0, StatusCode::ACCEPTED);

    // Bad input changes nothing and says which field is wrong.
    for (bad, field) in [
        (json!({ "topic": "lobby", "event": "x", "data": {} }), "topic"),
        (json!({ "topic": "channel:news", "event": "message:new", "data": {} }), "event"),
        (json!({ "topic": "channel:news", "event": "a b", "data": {} }), "event"),
    ] {
        let (status, err) = post(&b, "/api/v1/broadcast", &key, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert!(err["error"]["details"][field].is_array(), "{err}");
    }
    let huge = json!({ "topic": "channel:news", "event": "x", "data": { "s": "y".repeat(70_000) } });
    assert_eq!(post(&b, "/api/v1/broadcast", &key, huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        watcher.next_event("headline", Duration::from_millis(300)).await.is_some(),
        "the admin's broadcast"
    );
    assert!(
        watcher.next_event("x", Duration::from_millis(300)).await.is_none(),
        "a refused broadcast was sent"
    );

    let audit = b.get_json("/api/v1/audit-logs?action=broadcast", &admin).await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 2, "{audit}");
    assert_eq!(audit["data"][0]["target_id"], "channel:news");
}

#[tokio::test]
async fn presence_is_listed_over_rest_from_any_node_and_only_inside_the_tenant() {
    let (a, b) = (Node::spawn(BIN, "rtp-a"), Node::spawn(BIN, "rtp-b"));
    let (tenant, other) = (a.create_tenant("presence").await, a.create_tenant("elsewhere").await);
    let user = UserId::new();
    let s = SioClient::connect(&a.url(""), &user_token(tenant, user, Role::Member)).await.unwrap();
    s.emit_with_ack("subscribe", json!({ "topic": "channel:room" })).await;
    let ack = s
        .emit_with_ack("presence:track", json!({ "topic": "channel:room", "state": { "typing": false } }))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    let listed = b
        .get_json("/api/v1/presence?topic=channel:room", user_token(tenant, UserId::new(), Role::Member))
        .await;
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["user_id"], user.to_string());
    assert_eq!(entries[0]["conn_id"], s.sid);

    let elsewhere = b
        .get_json("/api/v1/presence?topic=channel:room", user_token(other, UserId::new(), Role::Member))
        .await;
    assert_eq!(elsewhere["entries"], json!([]));
    let bad = b
        .status_of(
            reqwest::Method::GET,
            "/api/v1/presence?topic=nope",
            user_token(tenant, user, Role::Member),
        )
        .await;
    assert_eq!(bad, StatusCode::UNPROCESSABLE_ENTITY);
    let unseen = format!("/api/v1/presence?topic=conversation:{}", uuid::Uuid::new_v4());
    assert_eq!(
        b.status_of(reqwest::Method::GET, &unseen, user_token(tenant, user, Role::Member)).await,
        StatusCode::NOT_FOUND
    );

    s.close();
    let gone = b.get_json("/api/v1/presence?topic=channel:room", user_token(tenant, user, Role::Member));
    let mut left = gone.await;
    for _ in 0..50 {
        if left["entries"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left =
            b.get_json("/api/v1/presence?topic=channel:room", user_token(tenant, user, Role::Member)).await;
    }
    assert_eq!(left["entries"], json!([]), "the entry outlived its socket");
}

#[tokio::test]
async fn an_admin_disconnects_a_users_sockets_on_every_node_and_it_is_audited() {
    let (a, b) = (Node::spawn(BIN, "rtd-a"), Node::spawn(BIN, "rtd-b"));
    let tenant = a.create_tenant("disconnects").await;
    let (target, bystander) = (UserId::new(), UserId::new());
    let mut on_a = SioClient::connect(&a.url(""), &user_token(tenant, target, Role::Member)).await.unwrap();
    let mut on_b = SioClient::connect(&b.url(""), &user_token(tenant, target, Role::Member)).await.unwrap();
    let mut other =
        SioClient::connect(&a.url(""), &user_token(tenant, bystander, Role::Member)).await.unwrap();

    let member = user_token(tenant, UserId::new(), Role::Member);
    let path = format!("/api/v1/connections/{target}/disconnect");
    assert_eq!(post(&b, &path, &member, json!({})).await.0, StatusCode::FORBIDDEN);
    let admin = user_token(tenant, UserId::new(), Role::Admin);
    let (status, body) = post(&b, &path, &admin, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(on_a.next_event("disconnect", WAIT).await.is_some(), "the socket on the other node stayed");
    assert!(on_b.next_event("disconnect", WAIT).await.is_some(), "the socket on this node stayed");
    assert!(
        other.next_event("disconnect", Duration::from_millis(300)).await.is_none(),
        "a bystander was cut"
    );
    let audit = a.get_json("/api/v1/audit-logs?action=connection.disconnect", &admin).await;
    assert_eq!(audit["data"][0]["target_id"], target.to_string(), "{audit}");
    assert_eq!(
        post(&b, "/api/v1/connections/not-a-uuid/disconnect", &admin, json!({})).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn refused_handshakes_carry_their_code_to_a_plain_socket_io_client() {
    let a = Node::spawn(BIN, "rth-a");
    let tenant = a.create_tenant("handshakes").await;
    let err = SioClient::connect(&a.url(""), &expired_token(tenant, UserId::new())).await.err().unwrap();
    assert_eq!(err.codes(), ("unauthorized".to_owned(), "token_expired".to_owned()));
    let err = SioClient::connect(&a.url(""), "not-a-token").await.err().unwrap();
    assert_eq!(err.codes(), ("unauthorized".to_owned(), "token_invalid".to_owned()));
    let ok = SioClient::connect(&a.url(""), &user_token(tenant, UserId::new(), Role::Owner)).await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn an_event_sent_the_moment_the_socket_connects_is_handled() {
    // The handlers are registered before the CONNECT packet goes out; a client
    // that emits at once must never lose its first event.
    let a = Node::spawn(BIN, "rte-a");
    let tenant = a.create_tenant("eager").await;
    let clients = (0..40).map(|i| {
        let (url, token) = (a.url(""), user_token(tenant, UserId::new(), Role::Member));
        tokio::spawn(async move {
            let s = SioClient::connect(&url, &token).await.unwrap();
            s.emit_with_ack("subscribe", json!({ "topic": format!("channel:eager-{i}") })).await
        })
    });
    for c in clients {
        assert_eq!(c.await.unwrap()["ok"], true);
    }
}
