//! Validated input: [`ValidJson`] parses a JSON body and runs its `validator`
//! rules, so bad input gets 400 (unparsable), 413 (too large) or 422 (invalid,
//! with the failing fields in `details`) and never reaches a handler.
//! [`Page`] is the cursor pagination every list route takes.

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_db::repo::{Created, Slice};
use switchboard_domain::json::{self, JsonCap, Shape};
use switchboard_domain::{ErrorKind, IdempotencyKey};
use uuid::Uuid;
use validator::{Validate, ValidationErrors};

/// The largest JSON body any route accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct ValidJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(ErrorKind::PayloadTooLarge, format!("the body is over {MAX_BODY_BYTES} bytes"))
            }
            // Well-formed JSON of the wrong shape (missing field, wrong type).
            StatusCode::UNPROCESSABLE_ENTITY => {
                ApiError::new(ErrorKind::Validation, "the body does not match")
                    .with_details(json!({ "body": rejection.body_text() }))
            }
            _ => ApiError::new(ErrorKind::BadRequest, rejection.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(ErrorKind::Validation, "invalid query parameters")
            .with_details(json!({ "query": rejection.body_text() }))
    }
}

/// 422 for one field, in the shape of `validator`'s errors: `{ field: [why] }`.
pub fn invalid_field(field: &str, why: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Validation, "invalid fields").with_details(json!({ field: [why.into()] }))
}

/// `validator`'s errors as `{ field: [code, …] }`.
pub fn validation_details(errors: &ValidationErrors) -> Value {
    let fields: serde_json::Map<String, Value> = errors
        .field_errors()
        .into_iter()
        .map(|(field, errs)| {
            let codes: Vec<Value> = errs
                .iter()
                .map(|e| e.message.as_ref().map(|m| json!(m)).unwrap_or_else(|| json!(e.code)))
                .collect();
            (field.to_string(), Value::Array(codes))
        })
        .collect();
    Value::Object(fields)
}

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        value.validate().map_err(|e| {
            ApiError::new(ErrorKind::Validation, "invalid fields").with_details(validation_details(&e))
        })?;
        Ok(ValidJson(value))
    }
}

/// A query string parsed and run through its `validator` rules: 422 with the
/// failing parameters in `details` otherwise.
pub struct ValidQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ValidQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        value.validate().map_err(|e| {
            ApiError::new(ErrorKind::Validation, "invalid query parameters")
                .with_details(validation_details(&e))
        })?;
        Ok(ValidQuery(value))
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 200 printable ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().and_then(|v| IdempotencyKey::parse(v).ok());
    match key {
        Some(key) => Ok(Some(key)),
        None => Err(ApiError::new(ErrorKind::Validation, "invalid Idempotency-Key")
            .with_details(json!({ "Idempotency-Key": ["1 to 200 printable ASCII characters"] }))),
    }
}

/// `201` with what was stored now; `200` and `Idempotent-Replayed: true` with
/// what an earlier request with the same idempotency key stored.
pub fn created_response<T: Serialize>(created: Created<T>) -> Response {
    match created {
        Created::New(item) => replayable_response(StatusCode::CREATED, item, false),
        Created::Replayed(item) => replayable_response(StatusCode::CREATED, item, true),
    }
}

/// `status` with `item`, or, when an earlier request with the same idempotency
/// key did the work (`replayed`), `200` with `Idempotent-Replayed: true`.
pub fn replayable_response<T: Serialize>(status: StatusCode, item: T, replayed: bool) -> Response {
    if !replayed {
        return (status, axum::Json(item)).into_response();
    }
    let mut response = (StatusCode::OK, axum::Json(item)).into_response();
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// A path id that does not parse names nothing: 404, like another tenant's id.
pub fn path_id<T: std::str::FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::new(ErrorKind::NotFound, "not found"))
}

/// `?limit=&cursor=`: at most `limit` items (1-100, default 50) after `cursor`,
/// the `next_cursor` of the previous page.
#[derive(Debug, Clone, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<Uuid>,
}

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub cursor: Option<Uuid>,
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ValidQuery(q) = ValidQuery::<PageQuery>::from_request_parts(parts, state).await?;
        Ok(Page { limit: q.limit.unwrap_or(50), cursor: q.cursor })
    }
}

impl Page {
    /// Asks the repository for one more than the page, to know if another follows.
    pub fn fetch_limit(&self) -> i64 {
        self.limit + 1
    }
}

/// A page of items and the cursor of the next one (`null` on the last page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Paged<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<Uuid>,
}

impl<T> Paged<T> {
    /// A page the repository already bounded (in count and bytes).
    pub fn from_slice<R>(slice: Slice<R>, id: impl Fn(&R) -> Uuid, view: impl Fn(R) -> T) -> Self {
        let next_cursor = if slice.more { slice.items.last().map(&id) } else { None };
        Paged { data: slice.items.into_iter().map(view).collect(), next_cursor }
    }

    /// Trims the extra item fetched by [`Page::fetch_limit`].
    pub fn new(mut items: Vec<T>, page: Page, id: impl Fn(&T) -> Uuid) -> Self {
        let more = items.len() as i64 > page.limit;
        items.truncate(page.limit.max(0) as usize);
        let next_cursor = if more { items.last().map(id) } else { None };
        Paged { data: items, next_cursor }
    }
}

/// Checks a client-supplied JSON field before it is stored or sent: its shape,
/// depth and numbers (422 naming the field), and its size cap (413 naming the
/// field and the cap).
pub fn check_json(field: &str, value: &Value, shape: Shape, cap: JsonCap) -> Result<(), ApiError> {
    json::check(value, shape, cap).map_err(|e| {
        let kind = if e.is_too_large() { ErrorKind::PayloadTooLarge } else { ErrorKind::Validation };
        let message = if e.is_too_large() { format!("{field} {e}") } else { "invalid fields".to_owned() };
        ApiError::new(kind, message).with_details(json!({ field: [e.to_string()] }))
    })
}
