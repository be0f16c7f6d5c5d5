//! REST: shared state and extractors, one file per resource with its own
//! `router()`, and [`error::ApiError`], the single `ErrorKind` → HTTP mapping.
//! Every response carries `x-request-id`; every error body carries it too.

mod admin;
mod api_keys;
mod approvals;
mod audit_logs;
pub mod auth;
mod broadcast;
pub mod client_addr;
mod connections;
mod conversations;
pub mod error;
pub mod extract;
pub mod health;
mod hooks;
mod knowledge;
mod me;
mod messages;
pub mod metrics;
pub mod openapi;
mod presence;
mod projects;
pub mod ratelimit;
mod request_id;
mod run_views;
mod runs;
mod secrets;
mod session_requests;
mod state;
mod tasks;
mod tenants;
mod usage;
mod webhooks;

pub use state::AppState;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use request_id::REQUEST_ID;
pub use session_requests::{App, MakeApp, SessionService, session_service};

/// Browser access from exact origins (`CORS_ALLOWED_ORIGINS`), with credentials;
/// none listed means same-origin only. Clients may read the request id and the
/// rate-limit headers.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    if origins.is_empty() {
        return None;
    }
    let name = |n: &'static str| HeaderName::from_static(n);
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                name("x-api-key"),
                name("idempotency-key"),
                name("x-request-id"),
            ])
            .expose_headers([
                name("x-request-id"),
                name("ratelimit-limit"),
                name("ratelimit-remaining"),
                name("ratelimit-reset"),
                name("retry-after"),
                name("idempotent-replayed"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The whole HTTP application: routes, CORS, request ids, request spans, the
/// client's address, error bodies. `socket_io` mounts the Socket.IO layer
/// inside CORS, request ids, tracing and the limit on new sessions per address,
/// but outside the per-address and per-tenant request limiters (sockets have
/// their own).
pub fn router(state: AppState, cors_origins: &[String], socket_io: impl FnOnce(Router) -> Router) -> Router {
    let trusted = state.trusted_proxies.clone();
    let gate_state = state.clone();
    let v1 = Router::new()
        .merge(api_keys::router())
        .merge(tenants::router())
        .merge(me::router())
        .merge(projects::router())
        .merge(conversations::router())
        .merge(messages::router())
        .merge(runs::router())
        .merge(audit_logs::router())
        .merge(usage::router())
        .merge(broadcast::router())
        .merge(presence::router())
        .merge(connections::router())
        .merge(knowledge::router())
        .merge(tasks::router())
        .merge(approvals::router())
        .merge(secrets::router())
        .merge(hooks::router())
        .merge(webhooks::router())
        .layer(middleware::from_fn_with_state(state.clone(), ratelimit::per_tenant));
    let http = Router::new()
        .merge(health::router())
        .merge(openapi::router())
        .merge(admin::router())
        .nest("/api/v1", v1)
        .route_layer(middleware::from_fn(request_id::mark_route))
        .fallback(error::not_found)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(ratelimit::per_ip());
    socket_io(http)
        .layer(middleware::from_fn_with_state(gate_state, ratelimit::limit_new_sessions))
        .layer(middleware::from_fn(request_id::stamp_error_bodies))
        .layer(tower::util::option_layer(cors(cors_origins)))
        .layer(middleware::from_fn_with_state(trusted, client_addr::stamp))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            session_requests::REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(request_id::observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_id::make_span)
                .on_request(())
                .on_response(request_id::on_response),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}
