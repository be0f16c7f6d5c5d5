//! The OpenAPI document, generated from the handlers' annotations, served at
//! `/api/openapi.json`, with a reference page at `/api/docs`. The page's script
//! (Redoc's standalone bundle, pinned in `assets/redoc/`) is compiled into the
//! binary and served at `/api/docs/redoc.js`, so the page works offline.

use crate::AppState;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// `{ "error": { … } }`.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `not_found`, `validation_failed`.
    code: String,
    message: String,
    /// For 422: the failing fields and why.
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
    request_id: String,
}

/// The errors any authenticated route may answer.
#[derive(IntoResponses)]
pub enum CommonErrors {
    #[response(status = 400, description = "Unparsable input")]
    BadRequest(ErrorResponse),
    #[response(status = 401, description = "Missing, invalid or expired credentials")]
    Unauthorized(ErrorResponse),
    #[response(status = 403, description = "Not allowed, or the tenant is suspended")]
    Forbidden(ErrorResponse),
    #[response(status = 404, description = "Not found (also another tenant's ids)")]
    NotFound(ErrorResponse),
    #[response(status = 409, description = "Conflicts with the current state")]
    Conflict(ErrorResponse),
    #[response(status = 413, description = "Body too large")]
    TooLarge(ErrorResponse),
    #[response(status = 422, description = "Invalid fields, listed in details")]
    Invalid(ErrorResponse),
    #[response(status = 429, description = "Rate limited; see Retry-After")]
    RateLimited(ErrorResponse),
    #[response(status = 503, description = "A dependency is unavailable")]
    Unavailable(ErrorResponse),
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT or sb_ API key").build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "platform_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("the platform key (PLATFORM_KEY)")
                    .description(Some(
                        "Platform operators only: tenants and drains. No token stands in for it.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard", description = "Multi-tenant realtime platform: REST surface."),
    paths(
        crate::tenants::create, crate::tenants::list, crate::tenants::show, crate::tenants::update, crate::tenants::remove,
        crate::me::me,
        crate::api_keys::create, crate::api_keys::list, crate::api_keys::revoke,
        crate::projects::create, crate::projects::list, crate::projects::show, crate::projects::update, crate::projects::remove,
        crate::conversations::create, crate::conversations::list, crate::conversations::show, crate::conversations::remove,
        crate::messages::create, crate::messages::list,
        crate::runs::create, crate::runs::list, crate::runs::show, crate::runs::update,
        crate::runs::list_steps, crate::runs::list_tool_calls,
        crate::runs::append_step, crate::runs::add_tool_call, crate::runs::stream_deltas,
        crate::audit_logs::list,
        crate::usage::show,
        crate::broadcast::broadcast, crate::presence::show, crate::connections::disconnect,
        crate::knowledge::create_document, crate::knowledge::list_documents, crate::knowledge::show_document,
        crate::knowledge::delete_document, crate::knowledge::search,
        crate::knowledge::create_memory, crate::knowledge::list_memories, crate::knowledge::delete_memory,
        crate::knowledge::search_memories,
        crate::tasks::create, crate::tasks::list, crate::tasks::show, crate::tasks::update,
        crate::approvals::show_policy, crate::approvals::put_policy,
        crate::approvals::list, crate::approvals::show, crate::approvals::decide,
        crate::secrets::create, crate::secrets::list, crate::secrets::rotate, crate::secrets::remove,
        crate::secrets::read_value,
        crate::hooks::create, crate::hooks::list, crate::hooks::remove, crate::hooks::github, crate::hooks::slack,
        crate::webhooks::create, crate::webhooks::list, crate::webhooks::show, crate::webhooks::update,
        crate::webhooks::remove, crate::webhooks::deliveries, crate::webhooks::retry,
        crate::admin::drain,
    ),
    components(schemas(ErrorResponse, ErrorDetail)),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
)]
pub struct ApiDoc;

/// The pinned Redoc release; `assets/redoc/README.md` records its checksum.
const REDOC_VERSION: &str = "2.5.4";
const REDOC_JS: &str = include_str!("../assets/redoc/redoc.standalone.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(document))
        .route("/api/docs", get(docs))
        .route("/api/docs/redoc.js", get(redoc_js))
}

async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn docs() -> Html<String> {
    // The version in the script's URL lets browsers keep it for a year and
    // still fetch a new one after an upgrade.
    Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Switchboard API</title></head>
<body><redoc spec-url="/api/openapi.json"></redoc>
<script src="/api/docs/redoc.js?v={REDOC_VERSION}"></script>
<noscript>The API description is at <a href="/api/openapi.json">/api/openapi.json</a>.</noscript>
</body></html>"#
    ))
}

async fn redoc_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        REDOC_JS,
    )
}
