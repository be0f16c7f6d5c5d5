//! Knowledge: documents and their chunks, memories, the embedding-job queue,
//! and the two retrievers (nearest embeddings, full-text match).
//!
//! A document or memory is stored with its job in one transaction, so nothing
//! written is ever left without one. Jobs are claimed on the platform path
//! (any tenant's, `FOR UPDATE SKIP LOCKED`, under a lease) and worked inside
//! the job's tenant, where RLS binds every statement like any request's.

use super::{Created, Sender, Slice, by_key};
use crate::{DbError, PlatformTx, TenantTx};
use chrono::{DateTime, Utc};
use pgvector::Vector;
use serde::Serialize;
use serde_json::Value;
use switchboard_domain::{Fingerprint, IdempotencyKey, ProjectId, TenantId, UserId};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Document {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub source: Option<String>,
    pub content_type: String,
    pub metadata: Value,
    /// `pending`, `processing`, `ready` or `failed`.
    pub status: String,
    pub progress: f32,
    pub error: Option<String>,
    pub checksum: String,
    pub bytes: i32,
    pub chunk_count: i32,
    pub model: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DOCUMENT_COLUMNS: &str = "id, project_id, title, source, content_type, metadata, status, progress, error, \
     checksum, bytes, chunk_count, model, idempotency_key, created_by, created_at, updated_at";

/// A document to store; its content is kept whole (chunks are cut from it).
#[derive(Debug, Serialize)]
pub struct NewDocument<'a> {
    pub project: ProjectId,
    pub title: &'a str,
    pub source: Option<&'a str>,
    pub content_type: &'a str,
    pub metadata: &'a Value,
    pub content: &'a str,
    pub checksum: &'a str,
    #[serde(skip)]
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

/// Stores a document and queues its embedding job; the same idempotency key
/// with the same request answers the stored document.
pub async fn create_document(tx: &mut TenantTx, new: &NewDocument<'_>) -> Result<Created<Document>, DbError> {
    super::projects::get(tx, new.project).await?;
    let (tenant, user) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    let fingerprint =
        new.idempotency_key.map(|_| Fingerprint::of("document", &(Sender::of(tx.context()), new)));
    let bytes = i32::try_from(new.content.len()).map_err(|_| DbError::Invalid("content too large".into()))?;
    let inserted: Option<Document> = sqlx::query_as(&format!(
        "INSERT INTO documents (tenant_id, project_id, title, source, content_type, metadata, checksum, content,
                                bytes, idempotency_key, idempotency_fingerprint, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING {DOCUMENT_COLUMNS}"
    ))
    .bind(tenant)
    .bind(new.project.as_uuid())
    .bind(new.title)
    .bind(new.source)
    .bind(new.content_type)
    .bind(new.metadata)
    .bind(new.checksum)
    .bind(new.content)
    .bind(bytes)
    .bind(new.idempotency_key.map(IdempotencyKey::as_str))
    .bind(fingerprint.as_ref().map(Fingerprint::as_bytes))
    .bind(user)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(doc) = inserted {
        enqueue(tx, Target::Document(doc.id)).await?;
        return Ok(Created::New(doc));
    }
    let (Some(key), Some(fingerprint)) = (new.idempotency_key, fingerprint) else {
        return Err(DbError::Conflict("the document conflicts with a stored one".to_owned()));
    };
    let stored = by_key::<Document>(tx, "documents", DOCUMENT_COLUMNS, key).await?;
    let stored = stored.ok_or_else(|| DbError::Conflict("nothing was stored; retry".to_owned()))?;
    Ok(Created::Replayed(stored.replay(&fingerprint)?))
}

pub async fn get_document(tx: &mut TenantTx, id: Uuid) -> Result<Document, DbError> {
    sqlx::query_as(&format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// A project's documents, newest first, after the `cursor` document.
pub async fn list_documents(
    tx: &mut TenantTx,
    project: ProjectId,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Slice<Document>, DbError> {
    super::projects::get(tx, project).await?;
    let mut rows: Vec<Document> = sqlx::query_as(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents
          WHERE project_id = $1
            AND ($2::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM documents WHERE id = $2))
          ORDER BY created_at DESC, id DESC LIMIT $3"
    ))
    .bind(project.as_uuid())
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(tx.conn())
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(Slice { items: rows, more })
}

/// Deletes a document with its chunks and job.
pub async fn delete_document(tx: &mut TenantTx, id: Uuid) -> Result<Document, DbError> {
    sqlx::query_as(&format!("DELETE FROM documents WHERE id = $1 RETURNING {DOCUMENT_COLUMNS}"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// What an ingestion job needs of its document.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Source {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub content_type: String,
    pub content: String,
    pub checksum: String,
    pub status: String,
    pub model: Option<String>,
}

pub async fn document_source(tx: &mut TenantTx, id: Uuid) -> Result<Source, DbError> {
    sqlx::query_as(
        "SELECT id, project_id, title, content_type, content, checksum, status, model FROM documents WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Moves a document's status (and progress, and error).
pub async fn set_document_status(
    tx: &mut TenantTx,
    id: Uuid,
    status: &str,
    progress: f32,
    error: Option<&str>,
) -> Result<Document, DbError> {
    sqlx::query_as(&format!(
        "UPDATE documents SET status = $2, progress = $3, error = $4, updated_at = now()
          WHERE id = $1 RETURNING {DOCUMENT_COLUMNS}"
    ))
    .bind(id)
    .bind(status)
    .bind(progress.clamp(0.0, 1.0))
    .bind(error)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// A chunk as the chunker cut it.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub position: i32,
    pub heading: String,
    pub content: String,
    pub token_count: i32,
}

/// Replaces a document's chunks with `chunks`, not embedded yet (full-text
/// search finds them at once), and marks the document `processing`.
pub async fn replace_chunks(
    tx: &mut TenantTx,
    document: &Source,
    chunks: &[NewChunk],
) -> Result<(), DbError> {
    let tenant = tx.tenant_id().as_uuid();
    sqlx::query("DELETE FROM chunks WHERE document_id = $1").bind(document.id).execute(tx.conn()).await?;
    // One statement per batch of rows: unnest keeps it to one round trip.
    for batch in chunks.chunks(500) {
        let positions: Vec<i32> = batch.iter().map(|c| c.position).collect();
        let headings: Vec<&str> = batch.iter().map(|c| c.heading.as_str()).collect();
        let contents: Vec<&str> = batch.iter().map(|c| c.content.as_str()).collect();
        let tokens: Vec<i32> = batch.iter().map(|c| c.token_count).collect();
        sqlx::query(
            "INSERT INTO chunks (tenant_id, project_id, document_id, position, heading, content, token_count)
             SELECT $1, $2, $3, p, h, c, t FROM unnest($4::int[], $5::text[], $6::text[], $7::int[]) AS u(p, h, c, t)",
        )
        .bind(tenant)
        .bind(document.project_id)
        .bind(document.id)
        .bind(&positions)
        .bind(&headings)
        .bind(&contents)
        .bind(&tokens)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Stores the vectors of a document's chunks, by position.
pub async fn embed_chunks(
    tx: &mut TenantTx,
    document: Uuid,
    vectors: &[(i32, Vec<f32>)],
    model: &str,
) -> Result<(), DbError> {
    let positions: Vec<i32> = vectors.iter().map(|(p, _)| *p).collect();
    // Text form of each vector (`[0.1,0.2,…]`), cast in SQL: an array of
    // vectors does not bind as one parameter.
    let texts: Vec<String> = vectors.iter().map(|(_, v)| vector_text(v)).collect();
    let dims: Vec<i32> = vectors.iter().map(|(_, v)| v.len() as i32).collect();
    sqlx::query(
        "UPDATE chunks c SET embedding = u.v::vector, dims = u.d, model = $5
           FROM unnest($2::int[], $3::text[], $4::int[]) AS u(p, v, d)
          WHERE c.document_id = $1 AND c.position = u.p",
    )
    .bind(document)
    .bind(&positions)
    .bind(&texts)
    .bind(&dims)
    .bind(model)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Marks a document ready: its `chunks` chunks embedded with `model`.
pub async fn mark_ready(
    tx: &mut TenantTx,
    document: Uuid,
    chunks: usize,
    model: &str,
) -> Result<Document, DbError> {
    sqlx::query_as(&format!(
        "UPDATE documents SET status = 'ready', progress = 1, error = NULL, chunk_count = $2, model = $3,
                updated_at = now()
          WHERE id = $1 RETURNING {DOCUMENT_COLUMNS}"
    ))
    .bind(document)
    .bind(chunks as i32)
    .bind(model)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

fn vector_text(v: &[f32]) -> String {
    let mut out = String::with_capacity(v.len() * 10 + 2);
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Finite by construction (normalised model output); a NaN would be refused by Postgres.
        out.push_str(&x.to_string());
    }
    out.push(']');
    out
}

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Memory {
    pub id: Uuid,
    pub user_id: Uuid,
    pub project_id: Option<Uuid>,
    pub content: String,
    pub tags: Vec<String>,
    pub importance: f32,
    pub expires_at: Option<DateTime<Utc>>,
    pub model: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const MEMORY_COLUMNS: &str =
    "id, user_id, project_id, content, tags, importance, expires_at, model, created_by, created_at";

#[derive(Debug)]
pub struct NewMemory<'a> {
    pub user: UserId,
    pub project: Option<ProjectId>,
    pub content: &'a str,
    pub tags: &'a [String],
    pub importance: f32,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores a memory and queues its embedding.
pub async fn create_memory(tx: &mut TenantTx, new: &NewMemory<'_>) -> Result<Memory, DbError> {
    if let Some(project) = new.project {
        super::projects::get(tx, project).await?;
    }
    let (tenant, caller) = (tx.tenant_id().as_uuid(), tx.context().user_id.map(|u| u.as_uuid()));
    let memory: Memory = sqlx::query_as(&format!(
        "INSERT INTO memories (tenant_id, user_id, project_id, content, tags, importance, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {MEMORY_COLUMNS}"
    ))
    .bind(tenant)
    .bind(new.user.as_uuid())
    .bind(new.project.map(|p| p.as_uuid()))
    .bind(new.content)
    .bind(new.tags)
    .bind(new.importance)
    .bind(new.expires_at)
    .bind(caller)
    .fetch_one(tx.conn())
    .await?;
    enqueue(tx, Target::Memory(memory.id)).await?;
    Ok(memory)
}

/// Memories the caller may see (RLS: a member's own), of `user` if given,
/// newest first; expired ones are left out.
pub async fn list_memories(
    tx: &mut TenantTx,
    user: Option<UserId>,
    project: Option<ProjectId>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Slice<Memory>, DbError> {
    let mut rows: Vec<Memory> = sqlx::query_as(&format!(
        "SELECT {MEMORY_COLUMNS} FROM memories
          WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::uuid IS NULL OR project_id = $2)
            AND (expires_at IS NULL OR expires_at > now())
            AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM memories WHERE id = $3))
          ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(user.map(|u| u.as_uuid()))
    .bind(project.map(|p| p.as_uuid()))
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(tx.conn())
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(Slice { items: rows, more })
}

pub async fn delete_memory(tx: &mut TenantTx, id: Uuid) -> Result<(), DbError> {
    super::one_row(sqlx::query("DELETE FROM memories WHERE id = $1").bind(id).execute(tx.conn()).await?)
}

/// A memory's text, for its embedding job.
pub async fn memory_text(tx: &mut TenantTx, id: Uuid) -> Result<String, DbError> {
    sqlx::query_scalar("SELECT content FROM memories WHERE id = $1")
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

pub async fn set_memory_embedding(
    tx: &mut TenantTx,
    id: Uuid,
    embedding: &[f32],
    model: &str,
) -> Result<(), DbError> {
    super::one_row(
        sqlx::query("UPDATE memories SET embedding = $2::vector, dims = $3, model = $4 WHERE id = $1")
            .bind(id)
            .bind(vector_text(embedding))
            .bind(embedding.len() as i32)
            .bind(model)
            .execute(tx.conn())
            .await?,
    )
}

/// What a job embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Document(Uuid),
    Memory(Uuid),
}

/// Queues a job for `target` unless one is already open.
pub async fn enqueue(tx: &mut TenantTx, target: Target) -> Result<(), DbError> {
    let (document, memory) = match target {
        Target::Document(d) => (Some(d), None),
        Target::Memory(m) => (None, Some(m)),
    };
    sqlx::query(
        "INSERT INTO embedding_jobs (tenant_id, document_id, memory_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(tx.tenant_id().as_uuid())
    .bind(document)
    .bind(memory)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A claimed job: this node holds it until `lease` runs out.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub target: Target,
    /// Earlier claims that ended in an error, or whose node died holding it.
    pub attempts: i32,
    /// This claim: `<node>/<random>`. Every write of the job's work checks it
    /// still holds the job ([`hold`]), so a node whose lease ran out cannot
    /// overwrite what the node that took the job over did.
    pub holder: String,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    tenant_id: Uuid,
    document_id: Option<Uuid>,
    memory_id: Option<Uuid>,
    attempts: i32,
    locked_by: String,
}

/// Claims up to `n` due jobs of any tenant for `node`, for `lease`: queued
/// ones whose time has come, and running ones whose node let the lease run
/// out (it died, or hung: that counts as an attempt). Other nodes skip what
/// this one locked.
pub async fn claim_jobs(
    tx: &mut PlatformTx,
    node: &str,
    n: i64,
    lease: std::time::Duration,
) -> Result<Vec<Job>, DbError> {
    let rows: Vec<JobRow> = sqlx::query_as(
        "UPDATE embedding_jobs j SET status = 'running', locked_by = $1 || '/' || gen_random_uuid()::text,
                attempts = attempts + (status = 'running')::int,
                locked_until = now() + make_interval(secs => $3), updated_at = now()
          WHERE j.id IN (SELECT id FROM embedding_jobs
                          WHERE (status = 'queued' AND run_after <= now())
                             OR (status = 'running' AND locked_until < now())
                          ORDER BY run_after LIMIT $2 FOR UPDATE SKIP LOCKED)
          RETURNING j.id, j.tenant_id, j.document_id, j.memory_id, j.attempts, j.locked_by",
    )
    .bind(node)
    .bind(n)
    .bind(lease.as_secs_f64())
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let target = match (r.document_id, r.memory_id) {
                (Some(d), _) => Target::Document(d),
                (None, Some(m)) => Target::Memory(m),
                (None, None) => return None,
            };
            Some(Job {
                id: r.id,
                tenant_id: TenantId::from(r.tenant_id),
                target,
                attempts: r.attempts,
                holder: r.locked_by,
            })
        })
        .collect())
}

/// Locks the row of `job`'s document (or memory), before the job's own: the
/// order a delete takes them in (the document, then its jobs by cascade), so
/// a worker and a delete never wait on each other in a circle. Every
/// transaction that writes a job's work or settles it starts with this.
pub async fn lock_target(tx: &mut TenantTx, job: Uuid) -> Result<(), DbError> {
    sqlx::query(
        "WITH d AS (SELECT 1 FROM documents WHERE id = (SELECT document_id FROM embedding_jobs WHERE id = $1)
                     FOR NO KEY UPDATE),
              m AS (SELECT 1 FROM memories WHERE id = (SELECT memory_id FROM embedding_jobs WHERE id = $1)
                     FOR NO KEY UPDATE)
         SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM m)",
    )
    .bind(job)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Whether `holder` still holds `job`, locking the job's row until the
/// transaction ends: the first statement of every transaction that writes a
/// job's work, in the job's tenant.
pub async fn hold(tx: &mut TenantTx, job: Uuid, holder: &str) -> Result<bool, DbError> {
    lock_target(tx, job).await?;
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM embedding_jobs WHERE id = $1 AND locked_by = $2 AND status = 'running' FOR UPDATE",
    )
    .bind(job)
    .bind(holder)
    .fetch_optional(tx.conn())
    .await?;
    Ok(held.is_some())
}

/// Extends a lease on a job still being worked; false if `holder` no longer
/// holds it (the lease ran out and another node took it).
pub async fn renew_lease(
    tx: &mut PlatformTx,
    job: Uuid,
    node: &str,
    lease: std::time::Duration,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE embedding_jobs SET locked_until = now() + make_interval(secs => $3), updated_at = now()
          WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(job)
    .bind(node)
    .bind(lease.as_secs_f64())
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts back every job `node` holds (it is stopping); how many.
pub async fn release_jobs(tx: &mut PlatformTx, node: &str) -> Result<u64, DbError> {
    Ok(sqlx::query(
        "UPDATE embedding_jobs SET status = 'queued', locked_by = NULL, locked_until = NULL, run_after = now(),
                updated_at = now()
          WHERE starts_with(locked_by, $1 || '/') AND status = 'running'",
    )
    .bind(node)
    .execute(tx.conn())
    .await?
    .rows_affected())
}

/// How a claimed job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    /// Try again after `after`; `failed` counts it as an attempt (an error),
    /// otherwise it is a wait (the model's provider is down) that costs nothing.
    Again {
        after: std::time::Duration,
        failed: bool,
        error: Option<String>,
    },
    /// Given up: no more attempts.
    Dead(String),
}

/// Settles a job this node holds (in the job's tenant, with the rest of its
/// work when there is any).
pub async fn settle_job(
    tx: &mut TenantTx,
    job: Uuid,
    node: &str,
    outcome: &Outcome,
) -> Result<bool, DbError> {
    let query = match outcome {
        Outcome::Done => sqlx::query(
            "UPDATE embedding_jobs SET status = 'done', locked_by = NULL, locked_until = NULL, last_error = NULL,
                    updated_at = now() WHERE id = $1 AND locked_by = $2",
        )
        .bind(job)
        .bind(node),
        Outcome::Again { after, failed, error } => sqlx::query(
            "UPDATE embedding_jobs SET status = 'queued', locked_by = NULL, locked_until = NULL,
                    attempts = attempts + $3::int, last_error = coalesce($4, last_error),
                    run_after = now() + make_interval(secs => $5), updated_at = now()
              WHERE id = $1 AND locked_by = $2",
        )
        .bind(job)
        .bind(node)
        .bind(i32::from(*failed))
        .bind(error.as_deref())
        .bind(after.as_secs_f64()),
        Outcome::Dead(error) => sqlx::query(
            "UPDATE embedding_jobs SET status = 'dead', locked_by = NULL, locked_until = NULL,
                    attempts = attempts + 1, last_error = $3, updated_at = now()
              WHERE id = $1 AND locked_by = $2",
        )
        .bind(job)
        .bind(node)
        .bind(error.as_str()),
    };
    Ok(query.execute(tx.conn()).await?.rows_affected() == 1)
}

/// A job's state, for tests and operators.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct JobState {
    pub id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub async fn jobs_of_document(tx: &mut TenantTx, document: Uuid) -> Result<Vec<JobState>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, status, attempts, last_error FROM embedding_jobs WHERE document_id = $1 ORDER BY created_at",
    )
    .bind(document)
    .fetch_all(tx.conn())
    .await?)
}

/// Queues a job for every ready document and embedded memory of the
/// transaction's tenant whose vectors came from another model than `model`;
/// how many.
pub async fn enqueue_reembedding(tx: &mut TenantTx, model: &str) -> Result<u64, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    let docs = sqlx::query(
        "INSERT INTO embedding_jobs (tenant_id, document_id)
         SELECT tenant_id, id FROM documents WHERE status = 'ready' AND model IS DISTINCT FROM $1
         ON CONFLICT DO NOTHING",
    )
    .bind(model)
    .execute(tx.conn())
    .await?;
    let memories = sqlx::query(
        "INSERT INTO embedding_jobs (tenant_id, memory_id)
         SELECT $2, id FROM memories WHERE model IS NOT NULL AND model <> $1
         ON CONFLICT DO NOTHING",
    )
    .bind(model)
    .bind(tenant)
    .execute(tx.conn())
    .await?;
    Ok(docs.rows_affected() + memories.rows_affected())
}

/// How many of `ids` are chunks the transaction's tenant can see.
pub async fn chunks_known(tx: &mut TenantTx, ids: &[Uuid]) -> Result<usize, DbError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(tx.conn())
        .await?;
    Ok(n as usize)
}

/// Which chunks a search may return.
#[derive(Debug, Clone, Default)]
pub struct ChunkFilter {
    pub project: Option<ProjectId>,
    pub documents: Option<Vec<Uuid>>,
    pub content_type: Option<String>,
    /// Documents whose metadata contains this object.
    pub metadata: Option<Value>,
}

/// A chunk a retriever found, with its score (cosine similarity for the
/// vector retriever, `ts_rank_cd` for the keyword one).
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct ChunkHit {
    pub id: Uuid,
    pub document_id: Uuid,
    pub project_id: Uuid,
    pub document_title: String,
    pub position: i32,
    pub heading: String,
    pub content: String,
    pub token_count: i32,
    pub score: f64,
}

const HIT_COLUMNS: &str = "c.id, c.document_id, c.project_id, d.title AS document_title, c.position, c.heading, \
     c.content, c.token_count";

const FILTER: &str = "($2::uuid IS NULL OR c.project_id = $2)
     AND ($3::uuid[] IS NULL OR c.document_id = ANY($3))
     AND ($4::text IS NULL OR d.content_type = $4)
     AND ($5::jsonb IS NULL OR d.metadata @> $5)";

/// The `limit` chunks nearest `query` (cosine) among those embedded with
/// `model`. Through the HNSW index when the model's dimensions have one; the
/// index walks the nearest chunks of every tenant and RLS keeps this tenant's,
/// so when that leaves fewer than `limit` the search is redone exactly over
/// the tenant's own chunks.
pub async fn nearest_chunks(
    tx: &mut TenantTx,
    query: &[f32],
    model: &str,
    filter: &ChunkFilter,
    limit: i64,
) -> Result<Vec<ChunkHit>, DbError> {
    let dims = query.len();
    let indexed = dims == 384;
    let typed = format!("vector({dims})");
    let distance = format!("c.embedding::{typed} <=> $1::{typed}");
    let sql = format!(
        "SELECT {HIT_COLUMNS}, (1 - ({distance}))::float8 AS score
           FROM chunks c JOIN documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id
          WHERE c.dims = {dims} AND c.model = $6 AND {FILTER}
          ORDER BY {distance} LIMIT $7"
    );
    if indexed {
        let ef = (limit * 4).clamp(40, 1000);
        sqlx::query(&format!("SET LOCAL hnsw.ef_search = {ef}")).execute(tx.conn()).await?;
    }
    let hits = nearest_query(tx, &sql, query, model, filter, limit).await?;
    if !indexed || hits.len() as i64 >= limit {
        return Ok(hits);
    }
    // Exact: no index scan, the tenant's candidate chunks sorted by distance.
    sqlx::query("SET LOCAL enable_indexscan = off").execute(tx.conn()).await?;
    let exact = nearest_query(tx, &sql, query, model, filter, limit).await?;
    sqlx::query("SET LOCAL enable_indexscan = on").execute(tx.conn()).await?;
    Ok(exact)
}

async fn nearest_query(
    tx: &mut TenantTx,
    sql: &str,
    query: &[f32],
    model: &str,
    filter: &ChunkFilter,
    limit: i64,
) -> Result<Vec<ChunkHit>, DbError> {
    Ok(sqlx::query_as::<_, ChunkHit>(sql)
        .bind(Vector::from(query.to_vec()))
        .bind(filter.project.map(|p| p.as_uuid()))
        .bind(filter.documents.as_deref())
        .bind(filter.content_type.as_deref())
        .bind(filter.metadata.as_ref())
        .bind(model)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?)
}

/// The `limit` chunks that best match `query`'s words (stemmed, any of
/// them), scored by BM25 over the chunks the filter leaves: each word
/// weighs by how rare it is among them (its inverse document frequency), a
/// word in the chunk's heading path counts twice, and a long chunk's matches
/// count for a little less. (`ts_rank` weighs every word alike, so a chunk
/// holding one common word of the query ranked with one holding its rare
/// one.)
///
/// Row-level security shapes the plan: `@@` is not a leakproof operator, so
/// Postgres may not test it before the tenant policy and cannot start from
/// the full-text (GIN) index; it reads the tenant's chunks in scope and
/// scores only those that hold a word. The documents are joined for their
/// titles after the best are picked.
pub async fn matching_chunks(
    tx: &mut TenantTx,
    query: &str,
    filter: &ChunkFilter,
    limit: i64,
) -> Result<Vec<ChunkHit>, DbError> {
    Ok(sqlx::query_as(&format!(
        r"WITH words AS (
              SELECT w, w::tsquery AS anywhere, (w || ':A')::tsquery AS in_heading
                FROM (SELECT DISTINCT {QUOTED_LEXEME} AS w
                        FROM unnest(tsvector_to_array(to_tsvector('english', $1))) l LIMIT {MAX_WORDS}) l),
          hits AS MATERIALIZED (
              SELECT c.id, c.token_count, c.tsv FROM chunks c
               WHERE c.tsv @@ (SELECT string_agg(w, ' | ')::tsquery FROM words) AND {CHUNK_SCOPE}),
          per_word AS MATERIALIZED (
              SELECT h.id, h.token_count, words.w, CASE WHEN h.tsv @@ words.in_heading THEN 2.0 ELSE 1.0 END AS tf
                FROM hits h JOIN words ON h.tsv @@ words.anywhere),
          corpus AS (
              SELECT (SELECT count(*) FROM chunks c WHERE {CHUNK_SCOPE})::float8 AS n,
                     (SELECT greatest(avg(token_count), 1) FROM hits)::float8 AS avg_len),
          idf AS (
              SELECT w, ln(1 + (corpus.n - count(*) + 0.5) / (count(*) + 0.5)) AS idf
                FROM per_word, corpus GROUP BY w, corpus.n),
          best AS (
              SELECT p.id, sum(idf.idf * p.tf * ({BM25_K1} + 1)
                         / (p.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * p.token_count / corpus.avg_len))) AS score
                FROM per_word p JOIN idf USING (w) CROSS JOIN corpus
               GROUP BY p.id ORDER BY score DESC, p.id LIMIT $6)
        SELECT {HIT_COLUMNS}, best.score::float8 AS score
          FROM best JOIN chunks c ON c.id = best.id
          JOIN documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id
         ORDER BY best.score DESC, c.id"
    ))
    .bind(query)
    .bind(filter.project.map(|p| p.as_uuid()))
    .bind(filter.documents.as_deref())
    .bind(filter.content_type.as_deref())
    .bind(filter.metadata.as_ref())
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// The most distinct words of a query the keyword retriever scores: each
/// costs a match against every chunk that holds any of them, so a long query
/// (up to 2,000 characters) would otherwise cost hundreds.
const MAX_WORDS: usize = 32;

/// BM25's term-frequency saturation and length normalisation, at their
/// usual values.
const BM25_K1: f64 = 1.2;
const BM25_B: f64 = 0.75;

/// [`FILTER`] for a query over chunks alone: the document's type and
/// metadata through a semi-join, only when asked for.
const CHUNK_SCOPE: &str = "($2::uuid IS NULL OR c.project_id = $2)
     AND ($3::uuid[] IS NULL OR c.document_id = ANY($3))
     AND (($4::text IS NULL AND $5::jsonb IS NULL) OR c.document_id IN (
          SELECT d.id FROM documents d
           WHERE ($4::text IS NULL OR d.content_type = $4) AND ($5::jsonb IS NULL OR d.metadata @> $5)))";

/// A lexeme `l` quoted as one tsquery word: a lexeme such as
/// `example.com/a(b` is not tsquery syntax.
const QUOTED_LEXEME: &str = r"'''' || replace(replace(l, '\', '\\'), '''', '''''') || ''''";

/// `query`'s stemmed words joined with OR, as tsquery text (`plainto_tsquery`
/// would AND them, which misses a passage that uses most but not all of the
/// words); `None` when it has no word worth searching. Each word is quoted
/// ([`QUOTED_LEXEME`]).
async fn or_query(tx: &mut TenantTx, query: &str) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT nullif(array_to_string(array(
                  SELECT {QUOTED_LEXEME} FROM unnest(tsvector_to_array(to_tsvector('english', $1))) l), ' | '), '')"
    ))
    .bind(query)
    .fetch_one(tx.conn())
    .await?)
}

/// A memory a search found.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct MemoryHit {
    #[sqlx(flatten)]
    pub memory: Memory,
    pub score: f64,
}

/// Memories of `user` (or every user the caller may see) nearest `query`.
pub async fn nearest_memories(
    tx: &mut TenantTx,
    query: &[f32],
    model: &str,
    user: Option<UserId>,
    limit: i64,
) -> Result<Vec<MemoryHit>, DbError> {
    let dims = query.len();
    Ok(sqlx::query_as(&format!(
        "SELECT {MEMORY_COLUMNS}, (1 - (embedding::vector({dims}) <=> $1::vector({dims})))::float8 AS score
           FROM memories
          WHERE dims = {dims} AND model = $2 AND ($3::uuid IS NULL OR user_id = $3)
            AND (expires_at IS NULL OR expires_at > now())
          ORDER BY embedding::vector({dims}) <=> $1::vector({dims}) LIMIT $4"
    ))
    .bind(Vector::from(query.to_vec()))
    .bind(model)
    .bind(user.map(|u| u.as_uuid()))
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn matching_memories(
    tx: &mut TenantTx,
    query: &str,
    user: Option<UserId>,
    limit: i64,
) -> Result<Vec<MemoryHit>, DbError> {
    let Some(words) = or_query(tx, query).await? else { return Ok(Vec::new()) };
    Ok(sqlx::query_as(&format!(
        "SELECT {MEMORY_COLUMNS}, ts_rank_cd(tsv, $1::tsquery, 1)::float8 AS score
           FROM memories
          WHERE tsv @@ $1::tsquery AND ($2::uuid IS NULL OR user_id = $2) AND (expires_at IS NULL OR expires_at > now())
          ORDER BY score DESC, id LIMIT $3"
    ))
    .bind(&words)
    .bind(user.map(|u| u.as_uuid()))
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}
