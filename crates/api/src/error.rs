//! The one `ErrorKind` → HTTP mapping and the error body (docs/rest.md):
//! `{ "error": { "code", "message", "details"?, "request_id" } }`.
//!
//! An `ApiError` puts its body in the response's extensions; the request-id
//! middleware serialises it with the request's id. A 5xx's cause goes to the log,
//! never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::ErrorKind;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub details: Option<Value>,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<std::time::Duration>,
}

/// The part of an error body known before the request id is attached.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), details: None, retry_after: None }
    }

    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// How long a 503 asks a client to wait when its cause does not say.
const UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Unauthenticated | ErrorKind::TokenInvalid | ErrorKind::TokenExpired => {
            StatusCode::UNAUTHORIZED
        }
        ErrorKind::Forbidden | ErrorKind::TenantSuspended => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::RateLimited | ErrorKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::OverCapacity | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.kind);
        let message = if status.is_server_error() && self.kind == ErrorKind::Internal {
            tracing::error!(message = %self.message, "internal error");
            "internal error".to_owned()
        } else {
            self.message
        };
        let body = ErrorBody { code: self.kind.code(), message, details: self.details };
        let mut response = status.into_response();
        // Every 503 says when to come back; a 429 carries its own wait.
        let retry_after = self
            .retry_after
            .or_else(|| (status == StatusCode::SERVICE_UNAVAILABLE).then_some(UNAVAILABLE_RETRY_AFTER));
        if let Some(wait) = retry_after {
            let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response.extensions_mut().insert(body);
        response
    }
}

/// The fallback for routes that do not exist.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "no such route")
}

impl From<switchboard_db::DbError> for ApiError {
    fn from(e: switchboard_db::DbError) -> Self {
        let kind = e.kind();
        match kind {
            ErrorKind::Unavailable => tracing::warn!(error = %e, "database unavailable"),
            ErrorKind::Internal => tracing::error!(error = %e, "database error"),
            _ => {}
        }
        ApiError::new(kind, e.public_message())
    }
}

impl From<std::sync::Arc<switchboard_realtime::DirectoryError>> for ApiError {
    fn from(e: std::sync::Arc<switchboard_realtime::DirectoryError>) -> Self {
        match &*e {
            switchboard_realtime::DirectoryError::Db(db) => {
                let kind = db.kind();
                if kind == ErrorKind::Internal {
                    tracing::error!(error = %db, "directory lookup failed");
                }
                ApiError::new(
                    kind,
                    if kind == ErrorKind::Unavailable {
                        "the database is unavailable"
                    } else {
                        "lookup failed"
                    },
                )
            }
            other => ApiError::new(ErrorKind::Internal, other.to_string()),
        }
    }
}
