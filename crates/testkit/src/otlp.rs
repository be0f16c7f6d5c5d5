//! A real OTLP/HTTP receiver on loopback, for the trace tests: it accepts
//! `POST /v1/traces` in protobuf, as any collector would, decodes each export
//! with the `opentelemetry-proto` types and keeps the spans.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One span as received.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP's span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// The exporting process's resource (`service.name`, `service.instance.id`, …).
    pub resource: BTreeMap<String, String>,
    /// Linked spans, as `trace_id/span_id`.
    pub links: Vec<String>,
    /// The span's events (its log lines): name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The receiver; stops with the test's runtime.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    spans: Spans,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let spans: Spans = Arc::default();
        let app = Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, spans }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for a node exporting here.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits (at most `within`) for a span that `matches`.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        matches: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| matches(s)) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {what} within {within:?}: {:#?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut got = Vec::new();
    for rs in request.resource_spans {
        let resource = rs.resource.as_ref().map(|r| map(&r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(ReceivedSpan {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    kind: s.kind,
                    attributes: map(&s.attributes),
                    resource: resource.clone(),
                    links: s
                        .links
                        .iter()
                        .map(|l| format!("{}/{}", hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    events: s.events.iter().map(|e| (e.name.clone(), map(&e.attributes))).collect(),
                });
            }
        }
    }
    spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(got);
    StatusCode::OK
}
