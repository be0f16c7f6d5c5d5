//! `/metrics` as an operator scrapes it, from two real nodes on one Redis: on
//! `METRICS_ADDR` and not on the public port; histograms by route template,
//! handshake outcome, publish-to-write, Postgres transaction and Redis call;
//! counters of events in and out, refusals by code, rate-limit hits and
//! recoveries; and no label value that names a tenant, user, topic or path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{Node, SioClient, metric_sum, user_token};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn two_nodes_expose_bounded_histograms_and_counters_on_the_metrics_address() {
    let a = Node::spawn(BIN, "metrics-a");
    let b = Node::spawn(BIN, "metrics-b");
    let tenant = a.create_tenant_with("metrics", json!({ "events_per_second": 20 })).await;
    let user = UserId::new();
    let token = user_token(tenant, user, Role::Admin);

    // The public port does not serve it; the metrics address does.
    assert_eq!(a.status_of(Method::GET, "/metrics", "").await, 404);
    assert!(a.metrics().await.ends_with("# EOF\n"));

    // REST: a project made and read by its id, and an unknown path.
    let (status, project) =
        a.send_json(Method::POST, "/api/v1/projects", &token, &json!({ "name": "observed" })).await;
    assert_eq!(status, 201, "{project}");
    let id = project["id"].as_str().unwrap().to_owned();
    assert_eq!(a.status_of(Method::GET, &format!("/api/v1/projects/{id}"), &token).await, 200);
    assert_eq!(a.status_of(Method::GET, &format!("/nowhere/{id}"), &token).await, 404);

    // Sockets: a subscriber on B, a publisher on A, a refused handshake.
    let mut sub = SioClient::connect(&b.url(""), &token).await.unwrap();
    let topic = format!("channel:observed-{id}");
    let first = sub.emit_with_ack("subscribe", json!({ "topic": topic })).await;
    assert_eq!(first["ok"], true, "{first}");
    let publisher = SioClient::connect(&a.url(""), &token).await.unwrap();
    assert_eq!(publisher.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"], true);
    let acked = publisher
        .emit_with_ack("publish", json!({ "topic": topic, "event": "note", "data": { "n": 1 } }))
        .await;
    assert_eq!(acked["ok"], true, "{acked}");
    assert!(sub.next_event("note", WAIT).await.is_some(), "delivered on the other node");
    let refused = SioClient::connect(&a.url(""), "not-a-token").await.err().expect("refused");
    assert_eq!(refused.codes().1, "token_invalid");
    // Over the tenant's 20 events a second: some publishes are refused.
    let mut limited = 0;
    for n in 0..40 {
        let ack = publisher
            .emit_with_ack("publish", json!({ "topic": topic, "event": "note", "data": { "n": n } }))
            .await;
        if ack["error"]["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited > 0, "the tenant's budget refused some publishes");
    // Recovery from the first offset, on B.
    let since = first["offset"].as_str().unwrap();
    let mut again = SioClient::connect(&b.url(""), &token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resumed = again.emit_with_ack("subscribe", json!({ "topic": topic, "since": since })).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert!(again.next_event("note", WAIT).await.is_some());

    let (ta, tb) = (a.metrics().await, b.metrics().await);
    let count = |text: &str, name: &str, labels: &[(&str, &str)]| metric_sum(text, name, labels);
    // HTTP by route template and status class, never the raw path.
    let http = "switchboard_http_request_duration_seconds_count";
    assert_eq!(count(&ta, http, &[("route", "/api/v1/projects"), ("method", "POST"), ("class", "2xx")]), 1.0);
    assert_eq!(
        count(&ta, http, &[("route", "/api/v1/projects/{id}"), ("method", "GET"), ("class", "2xx")]),
        1.0
    );
    assert_eq!(count(&ta, http, &[("route", "unmatched"), ("class", "4xx")]), 2.0, "{ta}");
    assert!(
        count(
            &ta,
            "switchboard_http_request_duration_seconds_bucket",
            &[("route", "/api/v1/projects"), ("le", "+Inf")]
        ) >= 1.0
    );
    // Handshakes by outcome; refusals by layer and code.
    let hs = "switchboard_handshake_duration_seconds_count";
    assert!(count(&ta, hs, &[("outcome", "accepted")]) >= 1.0, "{ta}");
    assert_eq!(count(&ta, hs, &[("outcome", "refused")]), 1.0, "{ta}");
    assert_eq!(
        count(&ta, "switchboard_refusals_total", &[("layer", "handshake"), ("code", "token_invalid")]),
        1.0
    );
    // /metrics on the public port and /nowhere/{id}.
    assert_eq!(count(&ta, "switchboard_refusals_total", &[("layer", "http"), ("code", "not_found")]), 2.0);
    assert_eq!(
        count(&ta, "switchboard_refusals_total", &[("layer", "event"), ("code", "rate_limited")]),
        f64::from(limited)
    );
    assert!(count(&ta, "switchboard_rate_limit_hits_total", &[]) >= f64::from(limited), "{ta}");
    // Events in on A by name, out and publish-to-write on B.
    assert!(count(&ta, "switchboard_events_in_total", &[("event", "publish")]) >= 41.0, "{ta}");
    assert_eq!(count(&ta, "switchboard_events_in_total", &[("event", "subscribe")]), 1.0, "{ta}");
    assert!(count(&tb, "switchboard_events_out_total", &[]) >= 2.0, "{tb}");
    assert!(count(&tb, "switchboard_publish_to_write_seconds_count", &[]) >= 1.0, "{tb}");
    assert_eq!(count(&tb, "switchboard_recoveries_total", &[("outcome", "true")]), 1.0, "{tb}");
    // Postgres and Redis.
    assert!(
        count(
            &ta,
            "switchboard_db_transaction_duration_seconds_count",
            &[("kind", "tenant"), ("outcome", "commit")]
        ) >= 1.0
    );
    assert!(
        count(
            &ta,
            "switchboard_redis_call_duration_seconds_count",
            &[("call", "topic_publish"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert_eq!(count(&tb, "switchboard_sockets", &[]), 2.0, "{tb}");
    assert_eq!(count(&tb, "switchboard_topics", &[]), 1.0, "{tb}");
    assert_eq!(count(&ta, "switchboard_draining", &[]), 0.0);
    // Every series names its node; none names the tenant, the user, the
    // project, the topic or a path a client chose.
    for (text, node) in [(&ta, "metrics-a"), (&tb, "metrics-b")] {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains(&format!("node=\"{node}\"")), "{line}");
        }
        for secret in
            [tenant.to_string(), user.to_string(), id.clone(), "observed".to_owned(), "nowhere".to_owned()]
        {
            assert!(!text.contains(&secret), "{secret} in the metrics");
        }
    }
    sub.close();
    again.close();
    publisher.close();
}
