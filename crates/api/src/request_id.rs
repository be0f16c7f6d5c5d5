//! Request ids: set (or taken from the client's `x-request-id`), put on the
//! request's span so every log line of the request carries it, echoed in the
//! response, and written into error bodies. And what every request leaves for
//! operators: its duration by route template in the metrics, its refusal code,
//! and with traces on, its span's parent from `traceparent`.

use crate::error::ErrorBody;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use axum::middleware::Next;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::Span;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id_of<B>(request: &Request<B>) -> &str {
    request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The request's span. With traces on it is a server span, the child of the
/// caller's `traceparent` when it sends one, and carries its trace and span
/// ids so that its log lines can be found from the trace.
pub(crate) fn make_span(request: &Request<Body>) -> Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "request",
        request_id = %request_id_of(request),
        method = %request.method(),
        path = %request.uri().path(),
        client_ip = Empty,
        tenant_id = Empty,
        run_id = Empty,
        // Traces only (an empty field never reaches a log line).
        "otel.name" = Empty,
        "otel.kind" = Empty,
        "http.request.method" = Empty,
        "http.route" = Empty,
        "http.response.status_code" = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    if switchboard_telemetry::trace::enabled() {
        let method = request.method().as_str();
        span.record("otel.name", method);
        span.record("otel.kind", "server");
        span.record("http.request.method", method);
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        switchboard_telemetry::trace::set_parent(&span, header("traceparent"), header("tracestate"));
        switchboard_telemetry::trace::stamp_ids(&span);
    }
    span
}

/// The route template a request matched (`/api/v1/runs/{id}`), left in the
/// response by [`mark_route`] for [`observe`].
#[derive(Clone)]
struct Route(Arc<str>);

/// Inside the router: notes the matched route's template on the response.
pub(crate) async fn mark_route(request: Request<Body>, next: Next) -> Response<Body> {
    let route = request.extensions().get::<MatchedPath>().map(|m| Route(Arc::from(m.as_str())));
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Outermost: every HTTP request's duration by route template, method and
/// status class. Socket.IO's requests are one route, `/socket.io/`; paths
/// that matched no route are `unmatched`, so clients cannot add series.
pub(crate) async fn observe(request: Request<Body>, next: Next) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let socket_io = request.uri().path().starts_with("/socket.io");
    let response = next.run(request).await;
    let route: std::borrow::Cow<'static, str> = match response.extensions().get::<Route>() {
        Some(Route(r)) => std::borrow::Cow::Owned(r.to_string()),
        None if socket_io => std::borrow::Cow::Borrowed("/socket.io/"),
        None => std::borrow::Cow::Borrowed("unmatched"),
    };
    if switchboard_telemetry::trace::enabled() {
        let span = Span::current();
        span.record("http.route", &*route);
        switchboard_telemetry::trace::rename(&span, format!("{method} {route}"));
        span.record("http.response.status_code", response.status().as_u16());
    }
    switchboard_telemetry::metrics().http(
        route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

pub(crate) fn on_response(response: &Response<Body>, latency: Duration, _span: &Span) {
    tracing::info!(
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1e3,
        "request done"
    );
}

/// Serialises an [`ErrorBody`] left in the response's extensions, with the id.
pub(crate) async fn stamp_error_bodies(request: Request<Body>, next: Next) -> Response<Body> {
    let id = request_id_of(&request).to_owned();
    let mut response = next.run(request).await;
    if let Some(body) = response.extensions_mut().remove::<ErrorBody>() {
        switchboard_telemetry::metrics().refused("http", body.code);
        let mut error = json!(body);
        error["request_id"] = json!(id);
        let bytes = json!({ "error": error }).to_string();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(bytes);
    }
    response
}
