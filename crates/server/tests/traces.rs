//! Traces as an OTLP collector receives them, from two real nodes exporting to
//! a real OTLP/HTTP receiver on loopback (decoded with `opentelemetry-proto`):
//! a REST write continues the caller's `traceparent` down to its Postgres
//! transaction; a socket publish on one node is the parent of its delivery on
//! the other (the context travels with the event through Redis); refused
//! handshakes carry their code, the caller's trace and, when the token named
//! one, the tenant. Log lines carry the trace and span ids, and no attribute
//! or event of any span holds a token, a key or a secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{
    JWT_SECRET, Node, OtlpReceiver, PLATFORM_KEY, ReceivedSpan, SioClient, platform_token, user_token,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WAIT: Duration = Duration::from_secs(10);

fn ids() -> (String, String) {
    let u = uuid::Uuid::new_v4().simple().to_string();
    (u.clone(), u[..16].to_owned())
}

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

fn attr<'a>(s: &'a ReceivedSpan, key: &str) -> &'a str {
    s.attributes.get(key).map(String::as_str).unwrap_or("")
}

fn node_of(s: &ReceivedSpan) -> &str {
    s.resource.get("service.instance.id").map(String::as_str).unwrap_or("")
}

#[tokio::test]
async fn rest_writes_socket_publishes_across_nodes_and_refused_handshakes_are_traced() {
    let rx = OtlpReceiver::start().await;
    let endpoint = rx.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
    ];
    let a = Node::spawn_keeping_log(BIN, "trace-a", &env);
    // B logs only warnings of the Socket.IO layer: its spans (the delivery)
    // are exported all the same.
    let quiet: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("RUST_LOG", "warn,switchboard=info,switchboard_realtime=warn")])
        .collect();
    let b = Node::spawn_with(BIN, "trace-b", &quiet);
    let tenant = a.create_tenant("traces").await;
    let token = user_token(tenant, UserId::new(), Role::Admin);
    let api_key = a.api_key(tenant, &["read", "write"]).await;

    // A REST write continuing the caller's trace, down to its transaction.
    let (trace, parent) = ids();
    let res = a
        .http
        .post(a.url("/api/v1/projects"))
        .bearer_auth(&token)
        .header("traceparent", traceparent(&trace, &parent))
        .json(&json!({ "name": "traced" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let request = rx
        .wait_for(WAIT, "for the REST write", |s| s.trace_id == trace && s.name == "POST /api/v1/projects")
        .await;
    assert_eq!(request.parent_span_id, parent, "the caller's span is its parent");
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(attr(&request, "http.route"), "/api/v1/projects");
    assert_eq!(attr(&request, "http.response.status_code"), "201");
    assert_eq!(attr(&request, "tenant_id"), tenant.to_string());
    assert_eq!(node_of(&request), "trace-a");
    assert_eq!(request.resource.get("service.name").map(String::as_str), Some("switchboard"));
    assert_eq!(request.resource.get("deployment.environment").map(String::as_str), Some("test"));
    let tx =
        rx.wait_for(WAIT, "for its transaction", |s| s.trace_id == trace && s.name == "db.transaction").await;
    assert_eq!(tx.parent_span_id, request.span_id);
    assert_eq!((tx.kind, attr(&tx, "db.system.name"), attr(&tx, "kind")), (3, "postgresql", "tenant"));
    assert_eq!((attr(&tx, "outcome"), attr(&tx, "tenant_id")), ("commit", tenant.to_string().as_str()));
    // The request's log lines carry its trace and span ids.
    let logged = a.log().into_iter().any(|l| {
        l.contains("request done")
            && l.contains(&format!("\"trace_id\":\"{trace}\""))
            && l.contains(&format!("\"span_id\":\"{}\"", request.span_id))
    });
    assert!(logged, "no log line with the trace: {:#?}", a.log());
    // A traceparent that does not parse is ignored: the request is served
    // and starts a trace of its own.
    let res = a
        .http
        .get(a.url("/api/v1/projects"))
        .bearer_auth(&token)
        .header("traceparent", "00-not-a-trace-01")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let own = rx
        .wait_for(WAIT, "for the request with a bad traceparent", |s| s.name == "GET /api/v1/projects")
        .await;
    assert_eq!(own.parent_span_id, "", "a root span");
    assert_eq!(own.trace_id.len(), 32);
    // An agent's call with an API key is traced too.
    let res = a.http.get(a.url("/api/v1/runs")).bearer_auth(&api_key).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());

    // A publish on A and its delivery on B: one trace, parent and child.
    let mut sub = SioClient::connect(&b.url(""), &token).await.unwrap();
    assert_eq!(sub.emit_with_ack("subscribe", json!({ "topic": "channel:traced" })).await["ok"], true);
    let publisher = SioClient::connect(&a.url(""), &token).await.unwrap();
    assert_eq!(publisher.emit_with_ack("subscribe", json!({ "topic": "channel:traced" })).await["ok"], true);
    let ack = publisher
        .emit_with_ack("publish", json!({ "topic": "channel:traced", "event": "note", "data": { "n": 1 } }))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(sub.next_event("note", WAIT).await.is_some());
    let publish =
        rx.wait_for(WAIT, "for the publish", |s| s.name == "publish" && node_of(s) == "trace-a").await;
    assert_eq!((attr(&publish, "tenant_id"), publish.kind), (tenant.to_string().as_str(), 2));
    let delivered = rx
        .wait_for(WAIT, "for the delivery on B", |s| {
            s.name == "deliver" && s.trace_id == publish.trace_id && node_of(s) == "trace-b"
        })
        .await;
    assert_eq!(delivered.parent_span_id, publish.span_id, "the delivery on B is the publish's child");
    assert_eq!(delivered.kind, 5, "a consumer span");
    let script = rx
        .wait_for(WAIT, "for the publish's Redis call", |s| {
            s.trace_id == publish.trace_id && s.name == "topic_publish"
        })
        .await;
    assert_eq!(
        (script.parent_span_id.as_str(), attr(&script, "db.system.name")),
        (publish.span_id.as_str(), "redis")
    );
    for s in [&publish, &script, &delivered] {
        eprintln!(
            "span {:<13} node {:<7} trace {} span {} parent {:<16} kind {} {:?}",
            s.name,
            node_of(s),
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            s.kind,
            s.attributes
        );
    }

    // Refused handshakes: a forged token, and a suspended tenant's valid one.
    let (trace, parent) = ids();
    let auth = json!({ "token": "forged.token.value", "traceparent": traceparent(&trace, &parent) });
    let refused = SioClient::connect_auth(&a.url(""), auth, None).await.err().expect("refused");
    assert_eq!(refused.codes().1, "token_invalid");
    let hs =
        rx.wait_for(WAIT, "for the forged handshake", |s| s.trace_id == trace && s.name == "handshake").await;
    assert_eq!((hs.parent_span_id.as_str(), hs.kind), (parent.as_str(), 2));
    assert_eq!((attr(&hs, "code"), attr(&hs, "tenant_id")), ("token_invalid", ""));
    // A traceparent that is not a string is ignored too.
    let auth = json!({ "token": "forged.token.value", "traceparent": 42 });
    let refused = SioClient::connect_auth(&a.url(""), auth, None).await.err().expect("refused");
    assert_eq!(refused.codes().1, "token_invalid");
    let suspended = a.create_tenant("traces-suspended").await;
    let (status, body) = a
        .send_json(
            Method::PATCH,
            &format!("/api/v1/tenants/{suspended}"),
            platform_token(),
            &json!({ "status": "suspended" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (trace, parent) = ids();
    let theirs = user_token(suspended, UserId::new(), Role::Member);
    let auth = json!({ "token": theirs, "traceparent": traceparent(&trace, &parent) });
    let refused = SioClient::connect_auth(&b.url(""), auth, None).await.err().expect("refused");
    assert_eq!(refused.codes().1, "tenant_suspended");
    let hs = rx
        .wait_for(WAIT, "for the suspended tenant's handshake", |s| {
            s.trace_id == trace && s.name == "handshake"
        })
        .await;
    assert_eq!((hs.parent_span_id.as_str(), node_of(&hs)), (parent.as_str(), "trace-b"));
    assert_eq!(
        (attr(&hs, "code"), attr(&hs, "tenant_id")),
        ("tenant_suspended", suspended.to_string().as_str())
    );

    // Nothing secret in any attribute or resource, of any span.
    let spans = rx.spans();
    assert!(spans.len() > 10, "{} spans", spans.len());
    let secrets =
        [token.as_str(), theirs.as_str(), api_key.as_str(), "forged.token.value", JWT_SECRET, PLATFORM_KEY];
    for s in &spans {
        let events = s.events.iter().flat_map(|(name, attrs)| std::iter::once(name).chain(attrs.values()));
        for v in s.attributes.values().chain(s.resource.values()).chain(events) {
            for secret in secrets {
                assert!(!v.contains(secret), "{secret:?} in span {} ({v})", s.name);
            }
        }
    }
    sub.close();
    publisher.close();
}
