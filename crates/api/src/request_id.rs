//! Request ids: set (or taken from the client's `x-request-id`), put on the
//! request's span so every log line of the request carries it, echoed in the
//! response, and written into error bodies.

use crate::error::ErrorBody;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use axum::middleware::Next;
use serde_json::json;
use std::time::Duration;
use tracing::Span;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id_of<B>(request: &Request<B>) -> &str {
    request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("")
}

pub(crate) fn make_span(request: &Request<Body>) -> Span {
    tracing::info_span!(
        "request",
        request_id = %request_id_of(request),
        method = %request.method(),
        path = %request.uri().path(),
        client_ip = tracing::field::Empty,
        tenant_id = tracing::field::Empty,
        run_id = tracing::field::Empty,
    )
}

/// Responses by status class (1xx..5xx) since start, for `/metrics`.
pub(crate) static RESPONSES: [std::sync::atomic::AtomicU64; 5] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 5];

pub(crate) fn on_response(response: &Response<Body>, latency: Duration, _span: &Span) {
    let class = usize::from(response.status().as_u16() / 100).clamp(1, 5) - 1;
    RESPONSES[class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        let mut error = json!(body);
        error["request_id"] = json!(id);
        let bytes = json!({ "error": error }).to_string();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(bytes);
    }
    response
}
