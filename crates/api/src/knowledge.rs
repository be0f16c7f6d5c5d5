//! Knowledge over REST: a project's documents (a JSON body or a multipart
//! upload, `Idempotency-Key`), search across them (hybrid, vector or keyword),
//! and memories per user. Documents are cut and embedded in the background;
//! `document:updated` on `project:<id>` says how it goes.

use crate::AppState;
use crate::auth::{Member, Reader};
use crate::error::ApiError;
use crate::extract::{
    MAX_BODY_BYTES, Page, Paged, ValidJson, ValidQuery, check_json, created_response, idempotency_key,
    invalid_field as invalid, path_id,
};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_db::repo::knowledge::{self as repo, ChunkFilter, Document, Memory, NewDocument, NewMemory};
use switchboard_db::repo::webhooks;
use switchboard_domain::json::{JsonCap, Shape};
use switchboard_domain::{ErrorKind, ProjectId, Role, UserId};
use switchboard_knowledge::search::{Mode, Retriever};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/projects/{id}/documents", get(list_documents).post(create_document))
        .route("/documents/{id}", get(show_document).delete(delete_document))
        .route("/search", post(search))
        .route("/memories", get(list_memories).post(create_memory))
        .route("/memories/{id}", delete(delete_memory))
        .route("/memories/search", post(search_memories))
}

/// The most text one document holds (the body cap leaves room for the rest).
pub const MAX_DOCUMENT_BYTES: usize = 1000 * 1024;

const CONTENT_TYPES: [&str; 3] = ["text/plain", "text/markdown", "application/json"];

/// A document without its text (which can be large; the chunks carry it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub source: Option<String>,
    /// `text/plain`, `text/markdown` or `application/json`.
    pub content_type: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// `pending`, `processing`, `ready` or `failed`.
    pub status: String,
    /// 0 to 1 while `processing`.
    pub progress: f32,
    pub error: Option<String>,
    /// SHA-256 of the text, hex.
    pub checksum: String,
    pub bytes: i32,
    pub chunk_count: i32,
    /// The embedding model of its chunks, once ready.
    pub model: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Document> for DocumentView {
    fn from(d: Document) -> Self {
        Self {
            id: d.id,
            project_id: d.project_id,
            title: d.title,
            source: d.source,
            content_type: d.content_type,
            metadata: d.metadata,
            status: d.status,
            progress: d.progress,
            error: d.error,
            checksum: d.checksum,
            bytes: d.bytes,
            chunk_count: d.chunk_count,
            model: d.model,
            idempotency_key: d.idempotency_key,
            created_by: d.created_by,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// A document as JSON.
#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDocument {
    #[validate(length(min = 1, max = 500))]
    #[schema(min_length = 1, max_length = 500)]
    title: String,
    /// The text, at most 1,000 KiB.
    #[validate(length(min = 1))]
    #[schema(min_length = 1)]
    content: String,
    /// `text/plain` (default), `text/markdown` or `application/json`.
    content_type: Option<String>,
    /// Where it came from (a URL, a path).
    #[validate(length(max = 2000))]
    #[schema(max_length = 2000)]
    source: Option<String>,
    /// An object, at most 16 KiB of JSON; searches can filter on it.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// The content type a file name implies.
fn type_of_name(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".md") || lower.ends_with(".markdown") {
        Some("text/markdown")
    } else if lower.ends_with(".json") {
        Some("application/json")
    } else if lower.ends_with(".txt") || lower.ends_with(".text") {
        Some("text/plain")
    } else {
        None
    }
}

/// The body of a create, from JSON or from a multipart upload (a `file`
/// part, and optional `title`, `source`, `metadata` parts).
async fn read_document(state: &AppState, request: Request) -> Result<CreateDocument, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        let ValidJson(body) = ValidJson::<CreateDocument>::from_request(request, state).await?;
        return Ok(body);
    }
    let mut form = Multipart::from_request(request, state).await.map_err(|e| {
        ApiError::new(ErrorKind::BadRequest, format!("not a multipart body: {}", e.body_text()))
    })?;
    let (mut title, mut source, mut metadata, mut file) = (None, None, None, None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                let file_name = field.file_name().unwrap_or_default().to_owned();
                let declared =
                    field.content_type().map(|t| t.split(';').next().unwrap_or_default().trim().to_owned());
                let bytes = field.bytes().await.map_err(multipart_error)?;
                let text =
                    String::from_utf8(bytes.to_vec()).map_err(|_| invalid("file", "not UTF-8 text"))?;
                let content_type = declared
                    .filter(|t| CONTENT_TYPES.contains(&t.as_str()))
                    .or_else(|| type_of_name(&file_name).map(str::to_owned));
                file = Some((file_name, content_type, text));
            }
            "title" | "source" | "metadata" => {
                let text = field.text().await.map_err(multipart_error)?;
                match name.as_str() {
                    "title" => title = Some(text),
                    "source" => source = Some(text),
                    _ => {
                        metadata = Some(
                            serde_json::from_str::<Value>(&text)
                                .map_err(|_| invalid("metadata", "not a JSON object"))?,
                        )
                    }
                }
            }
            other => return Err(invalid(other, "unknown part; expected file, title, source, metadata")),
        }
    }
    let Some((file_name, content_type, content)) = file else {
        return Err(invalid("file", "a `file` part is required"));
    };
    let title = title.filter(|t| !t.trim().is_empty()).unwrap_or(file_name);
    let body = CreateDocument { title, content, content_type, source, metadata };
    body.validate().map_err(|e| {
        ApiError::new(ErrorKind::Validation, "invalid fields")
            .with_details(crate::extract::validation_details(&e))
    })?;
    Ok(body)
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorKind::PayloadTooLarge, format!("the body is over {MAX_BODY_BYTES} bytes"))
    } else {
        ApiError::new(ErrorKind::BadRequest, format!("unreadable multipart body: {}", e.body_text()))
    }
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/documents", tag = "knowledge",
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key, same document: stored once", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$")),
    request_body(description = "JSON, or multipart/form-data with a `file` part (text, markdown or JSON; its type from the part's content type or the file name) and optional `title` (default: the file name), `source` and `metadata` (a JSON object) parts", content(
        (CreateDocument = "application/json"),
        (Object = "multipart/form-data"),
    )),
    responses((status = 201, body = DocumentView, description = "Stored; cut and embedded in the background (`document:updated` on `project:<id>`)"), (status = 200, body = DocumentView, description = "Replayed for a repeated Idempotency-Key"), crate::openapi::CommonErrors))]
pub(crate) async fn create_document(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let project: ProjectId = path_id(&id)?;
    let key = idempotency_key(&headers)?;
    let body = read_document(&state, request).await?;
    if body.content.len() > MAX_DOCUMENT_BYTES {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("content is over {MAX_DOCUMENT_BYTES} bytes; split the document"),
        ));
    }
    let content_type = body.content_type.as_deref().unwrap_or("text/plain");
    if !CONTENT_TYPES.contains(&content_type) {
        return Err(invalid("content_type", "one of text/plain, text/markdown, application/json"));
    }
    if content_type == "application/json" && serde_json::from_str::<Value>(&body.content).is_err() {
        return Err(invalid("content", "not JSON, though content_type says application/json"));
    }
    let metadata = body.metadata.unwrap_or_else(|| json!({}));
    check_json("metadata", &metadata, Shape::Object, JsonCap::Metadata)?;
    let checksum = hex(ring::digest::digest(&ring::digest::SHA256, body.content.as_bytes()).as_ref());
    let new = NewDocument {
        project,
        title: body.title.trim(),
        source: body.source.as_deref(),
        content_type,
        metadata: &metadata,
        content: &body.content,
        checksum: &checksum,
        idempotency_key: key.as_ref(),
    };
    let mut tx = state.db.begin(&member.ctx).await?;
    let created = repo::create_document(&mut tx, &new).await?;
    if let switchboard_db::repo::Created::New(doc) = &created {
        let data = switchboard_knowledge::worker::update_of(member.ctx.tenant_id, doc).data;
        webhooks::event(&mut tx, "document.created", data).await?;
    }
    tx.commit().await?;
    if let switchboard_db::repo::Created::New(doc) = &created {
        state.announce_document(member.ctx.tenant_id, doc).await;
        state.wake_knowledge();
    }
    Ok(created_response(created.map(DocumentView::from)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/documents", tag = "knowledge", params(("id" = Uuid, Path), crate::extract::PageQuery), responses((status = 200, body = Paged<DocumentView>), crate::openapi::CommonErrors))]
pub(crate) async fn list_documents(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    page: Page,
) -> Result<Json<Paged<DocumentView>>, ApiError> {
    let project: ProjectId = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let slice = repo::list_documents(&mut tx, project, page.cursor, page.limit).await?;
    tx.commit().await?;
    Ok(Json(Paged::from_slice(slice, |d: &Document| d.id, DocumentView::from)))
}

#[utoipa::path(get, path = "/api/v1/documents/{id}", tag = "knowledge", params(("id" = Uuid, Path)), responses((status = 200, body = DocumentView), crate::openapi::CommonErrors))]
pub(crate) async fn show_document(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Json<DocumentView>, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let doc = repo::get_document(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(doc.into()))
}

#[utoipa::path(delete, path = "/api/v1/documents/{id}", tag = "knowledge", params(("id" = Uuid, Path)), responses((status = 204, description = "Deleted with its chunks"), crate::openapi::CommonErrors))]
pub(crate) async fn delete_document(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    repo::delete_document(&mut tx, id).await?;
    webhooks::event(&mut tx, "document.deleted", json!({ "document_id": id })).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchFilters {
    /// Only these documents.
    #[validate(length(min = 1, max = 100))]
    document_ids: Option<Vec<Uuid>>,
    content_type: Option<String>,
    /// Documents whose metadata contains this object.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[validate(length(min = 1, max = 2000))]
    #[schema(min_length = 1, max_length = 2000)]
    query: String,
    project_id: Option<Uuid>,
    /// 1 to 50; 10 by default.
    #[validate(range(min = 1, max = 50))]
    #[schema(minimum = 1, maximum = 50)]
    limit: Option<usize>,
    /// `hybrid` (default), `vector` or `keyword`.
    #[schema(pattern = "^(hybrid|vector|keyword)$")]
    mode: Option<String>,
    #[validate(nested)]
    filters: Option<SearchFilters>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChunkView {
    pub id: Uuid,
    pub document_id: Uuid,
    pub position: i32,
    /// The headings the chunk sits under, `Title > Section`.
    pub heading: String,
    pub content: String,
    pub token_count: i32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub chunk: ChunkView,
    pub document_id: Uuid,
    pub document_title: String,
    pub project_id: Uuid,
    /// Fused (or reranked) relevance; higher is better.
    pub score: f64,
    /// Which retrievers found it: `vector`, `keyword`.
    #[schema(value_type = Vec<String>)]
    pub matched_by: Vec<Retriever>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub data: Vec<SearchHit>,
    /// True when vector search was unavailable: these are full-text results.
    pub degraded: bool,
    /// A reranker ordered the results.
    pub reranked: bool,
    /// The embedding model the vectors come from.
    pub model: String,
}

fn mode_of(raw: Option<&str>) -> Result<Mode, ApiError> {
    match raw.unwrap_or("hybrid") {
        "hybrid" => Ok(Mode::Hybrid),
        "vector" => Ok(Mode::Vector),
        "keyword" => Ok(Mode::Keyword),
        _ => Err(invalid("mode", "one of hybrid, vector, keyword")),
    }
}

#[utoipa::path(post, path = "/api/v1/search", tag = "knowledge", request_body = SearchRequest, responses((status = 200, body = SearchResponse), crate::openapi::CommonErrors))]
pub(crate) async fn search(
    State(state): State<AppState>,
    Reader(member): Reader,
    ValidJson(body): ValidJson<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    let mode = mode_of(body.mode.as_deref())?;
    let knowledge = state.knowledge()?;
    let filters =
        body.filters.unwrap_or(SearchFilters { document_ids: None, content_type: None, metadata: None });
    if let Some(m) = &filters.metadata {
        check_json("filters.metadata", m, Shape::Object, JsonCap::Metadata)?;
    }
    let filter = ChunkFilter {
        project: body.project_id.map(ProjectId::from),
        documents: filters.document_ids,
        content_type: filters.content_type,
        metadata: filters.metadata,
    };
    let found =
        knowledge.search(&member.ctx, body.query.trim(), mode, &filter, body.limit.unwrap_or(10)).await?;
    let data = found
        .hits
        .into_iter()
        .map(|h| SearchHit {
            document_id: h.item.document_id,
            document_title: h.item.document_title,
            project_id: h.item.project_id,
            chunk: ChunkView {
                id: h.item.id,
                document_id: h.item.document_id,
                position: h.item.position,
                heading: h.item.heading,
                content: h.item.content,
                token_count: h.item.token_count,
            },
            score: h.score,
            matched_by: h.matched_by,
        })
        .collect();
    Ok(Json(SearchResponse {
        data,
        degraded: found.degraded,
        reranked: found.reranked,
        model: knowledge.embedder().model_name(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemoryView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub project_id: Option<Uuid>,
    pub content: String,
    pub tags: Vec<String>,
    pub importance: f32,
    pub expires_at: Option<DateTime<Utc>>,
    /// The embedding model of its vector, once embedded.
    pub model: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<Memory> for MemoryView {
    fn from(m: Memory) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            project_id: m.project_id,
            content: m.content,
            tags: m.tags,
            importance: m.importance,
            expires_at: m.expires_at,
            model: m.model,
            created_by: m.created_by,
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemory {
    #[validate(length(min = 1, max = 8000))]
    #[schema(min_length = 1, max_length = 8000)]
    content: String,
    /// Whose memory: the caller by default; owners, admins and API keys may
    /// name another user (an API key must name one).
    user_id: Option<Uuid>,
    project_id: Option<Uuid>,
    #[validate(length(max = 32))]
    #[schema(max_items = 32)]
    tags: Option<Vec<String>>,
    /// 0 to 1; 0.5 by default.
    #[validate(range(min = 0.0, max = 1.0))]
    importance: Option<f32>,
    /// Forgotten after this many seconds (at most a year).
    #[validate(range(min = 1, max = 31_536_000))]
    ttl_seconds: Option<i64>,
}

/// Whose memories a request is about: the caller's own, or (for owners,
/// admins and API keys) the named user's.
fn memory_owner(member: &Member, named: Option<Uuid>) -> Result<UserId, ApiError> {
    let privileged = matches!(member.ctx.role, Role::Owner | Role::Admin | Role::Service);
    match (named.map(UserId::from), member.ctx.user_id) {
        (Some(u), Some(me)) if u == me => Ok(me),
        (Some(u), _) if privileged => Ok(u),
        (Some(_), _) => Err(ApiError::new(ErrorKind::Forbidden, "members keep only their own memories")),
        (None, Some(me)) => Ok(me),
        (None, None) => Err(invalid("user_id", "an API key names the user the memory belongs to")),
    }
}

#[utoipa::path(post, path = "/api/v1/memories", tag = "knowledge", request_body = CreateMemory, responses((status = 201, body = MemoryView), crate::openapi::CommonErrors))]
pub(crate) async fn create_memory(
    State(state): State<AppState>,
    member: Member,
    ValidJson(body): ValidJson<CreateMemory>,
) -> Result<Response, ApiError> {
    let user = memory_owner(&member, body.user_id)?;
    let tags = body.tags.unwrap_or_default();
    if tags.iter().any(|t| t.is_empty() || t.len() > 64) {
        return Err(invalid("tags", "each 1 to 64 characters"));
    }
    let new = NewMemory {
        user,
        project: body.project_id.map(ProjectId::from),
        content: body.content.trim(),
        tags: &tags,
        importance: body.importance.unwrap_or(0.5),
        expires_at: body.ttl_seconds.map(|s| Utc::now() + chrono::Duration::seconds(s)),
    };
    let mut tx = state.db.begin(&member.ctx).await?;
    let memory = repo::create_memory(&mut tx, &new).await?;
    tx.commit().await?;
    state.wake_knowledge();
    Ok((StatusCode::CREATED, Json(MemoryView::from(memory))).into_response())
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MemoryQuery {
    user_id: Option<Uuid>,
    project_id: Option<Uuid>,
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/api/v1/memories", tag = "knowledge", params(MemoryQuery), responses((status = 200, body = Paged<MemoryView>), crate::openapi::CommonErrors))]
pub(crate) async fn list_memories(
    State(state): State<AppState>,
    member: Member,
    ValidQuery(query): ValidQuery<MemoryQuery>,
) -> Result<Json<Paged<MemoryView>>, ApiError> {
    // A member lists their own (RLS would hide the others' anyway).
    let user = match (query.user_id, member.ctx.role) {
        (named, Role::Owner | Role::Admin | Role::Service) => named.map(UserId::from),
        (_, _) => member.ctx.user_id,
    };
    let limit = query.limit.unwrap_or(50);
    let mut tx = state.db.begin(&member.ctx).await?;
    let slice =
        repo::list_memories(&mut tx, user, query.project_id.map(ProjectId::from), query.cursor, limit)
            .await?;
    tx.commit().await?;
    Ok(Json(Paged::from_slice(slice, |m: &Memory| m.id, MemoryView::from)))
}

#[utoipa::path(delete, path = "/api/v1/memories/{id}", tag = "knowledge", params(("id" = Uuid, Path)), responses((status = 204, description = "Forgotten"), crate::openapi::CommonErrors))]
pub(crate) async fn delete_memory(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: Uuid = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    repo::delete_memory(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySearchRequest {
    #[validate(length(min = 1, max = 2000))]
    #[schema(min_length = 1, max_length = 2000)]
    query: String,
    /// Whose memories (owners, admins and API keys; a member searches their own).
    user_id: Option<Uuid>,
    #[validate(range(min = 1, max = 50))]
    #[schema(minimum = 1, maximum = 50)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemoryHitView {
    pub memory: MemoryView,
    pub score: f64,
    #[schema(value_type = Vec<String>)]
    pub matched_by: Vec<Retriever>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemorySearchResponse {
    pub data: Vec<MemoryHitView>,
    pub degraded: bool,
}

#[utoipa::path(post, path = "/api/v1/memories/search", tag = "knowledge", request_body = MemorySearchRequest, responses((status = 200, body = MemorySearchResponse), crate::openapi::CommonErrors))]
pub(crate) async fn search_memories(
    State(state): State<AppState>,
    Reader(member): Reader,
    ValidJson(body): ValidJson<MemorySearchRequest>,
) -> Result<Json<MemorySearchResponse>, ApiError> {
    let user = match member.ctx.role {
        Role::Owner | Role::Admin | Role::Service => body.user_id.map(UserId::from),
        _ => member.ctx.user_id,
    };
    let knowledge = state.knowledge()?;
    let found =
        knowledge.search_memories(&member.ctx, body.query.trim(), user, body.limit.unwrap_or(10)).await?;
    let data = found
        .hits
        .into_iter()
        .map(|h| MemoryHitView { memory: h.item.memory.into(), score: h.score, matched_by: h.matched_by })
        .collect();
    Ok(Json(MemorySearchResponse { data, degraded: found.degraded }))
}
