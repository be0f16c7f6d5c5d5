//! The ingestion worker every node runs: it claims embedding jobs from the
//! Postgres queue (any tenant's, `FOR UPDATE SKIP LOCKED`, under a lease it
//! renews while it works), cuts documents into chunks, embeds them and stores
//! them in the job's tenant, and says how it goes (`document:updated`).
//!
//! Nothing is lost: a job is settled in the same transaction as its result; a
//! node that dies mid-job leaves its lease to run out, and another node takes
//! the job again. A provider that is down makes a job wait (it is put back
//! without counting an attempt); an error counts, with backoff, and after
//! [`MAX_ATTEMPTS`] the job is dead and its document `failed`.

use crate::Knowledge;
use crate::chunk::{self, Kind, Sizes};
use crate::embed::EmbedError;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchboard_db::repo::knowledge::{self as repo, Document, Job, NewChunk, Outcome, Target};
use switchboard_db::repo::webhooks;
use switchboard_db::{DbError, TenantContext};
use switchboard_domain::{Role, TenantId};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

/// Claims that ended in an error before a job is given up.
pub const MAX_ATTEMPTS: i32 = 5;

/// A `document:updated` for `project:<project>` of `tenant`.
#[derive(Debug, Clone)]
pub struct Update {
    pub tenant: TenantId,
    pub project: Uuid,
    pub data: Value,
}

/// What a document's watchers are told.
pub fn update_of(tenant: TenantId, doc: &Document) -> Update {
    Update {
        tenant,
        project: doc.project_id,
        data: json!({
            "document_id": doc.id,
            "status": doc.status,
            "progress": doc.progress,
            "chunk_count": doc.chunk_count,
            "error": doc.error,
            // Events of one document may arrive out of order (the node that
            // stored it and the one working it each announce): this orders them.
            "updated_at": doc.updated_at,
        }),
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub node: String,
    /// How long a claim holds a job before another node may take it.
    pub lease: Duration,
    /// How often an idle worker looks for jobs (a local write wakes it sooner).
    pub poll: Duration,
    /// How long a job waits while the provider is down.
    pub wait: Duration,
}

impl WorkerSettings {
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            wait: Duration::from_secs(5),
        }
    }
}

/// Wakes the worker when a job was queued on this node.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The lease was lost (another node holds the job now): stop quietly.
    #[error("the lease on the job was lost")]
    Lost,
}

/// Runs for as long as its task lives (abort it to stop: whatever it was
/// doing is settled by its lease running out).
pub async fn run(knowledge: Knowledge, settings: WorkerSettings, updates: mpsc::Sender<Update>, wake: Wake) {
    let model = knowledge.embedder.model_name();
    let worker = Worker { knowledge, settings, updates, model };
    loop {
        let claimed = worker.claim().await;
        let idle = claimed.as_ref().map(|jobs| jobs.is_empty()).unwrap_or(true);
        if let Ok(jobs) = claimed {
            for job in jobs {
                worker.work(&job).await;
            }
        }
        if idle {
            tokio::select! {
                _ = wake.0.notified() => {}
                _ = tokio::time::sleep(worker.settings.poll) => {}
            }
        }
    }
}

struct Worker {
    knowledge: Knowledge,
    settings: WorkerSettings,
    updates: mpsc::Sender<Update>,
    model: String,
}

impl Worker {
    async fn claim(&self) -> Result<Vec<Job>, DbError> {
        let mut tx = self.knowledge.db.begin_platform().await?;
        let jobs = repo::claim_jobs(&mut tx, &self.settings.node, 1, self.settings.lease).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    fn ctx(job: &Job) -> TenantContext {
        TenantContext::new(job.tenant_id, None, Role::Service)
    }

    fn announce(&self, tenant: TenantId, doc: &Document) {
        if self.updates.try_send(update_of(tenant, doc)).is_err() {
            tracing::warn!(document_id = %doc.id, "document update not announced: the queue is full");
        }
    }

    /// A transaction in the job's tenant in which this claim still holds the
    /// job (its row locked until the end): `Lost` otherwise.
    async fn holding(&self, job: &Job) -> Result<switchboard_db::TenantTx, JobError> {
        let mut tx = self.knowledge.db.begin(&Self::ctx(job)).await?;
        if repo::hold(&mut tx, job.id, &job.holder).await? { Ok(tx) } else { Err(JobError::Lost) }
    }

    async fn renew(&self, job: &Job) -> Result<(), JobError> {
        let mut tx = self.knowledge.db.begin_platform().await?;
        let held = repo::renew_lease(&mut tx, job.id, &job.holder, self.settings.lease).await?;
        tx.commit().await?;
        if held { Ok(()) } else { Err(JobError::Lost) }
    }

    /// Renews the lease every third of it for as long as the job is worked;
    /// ends (with `Lost`) only when the job is no longer this node's.
    async fn keep_lease(&self, job: &Job) -> Result<(), JobError> {
        loop {
            tokio::time::sleep(self.settings.lease / 3).await;
            match self.renew(job).await {
                Err(JobError::Lost) => return Err(JobError::Lost),
                // Postgres hiccuped: the lease has two more thirds to go.
                Err(e) => tracing::warn!(job_id = %job.id, error = %e, "could not renew a lease"),
                Ok(()) => {}
            }
        }
    }

    async fn work(&self, job: &Job) {
        // Claimed again after its node died or hung too often: given up.
        if job.attempts >= MAX_ATTEMPTS {
            let outcome = Outcome::Dead(format!("abandoned {} times by nodes that stopped", job.attempts));
            if let Err(e) = self.settle(job, &outcome).await {
                tracing::warn!(job_id = %job.id, error = %e, "could not bury an embedding job");
            }
            return;
        }
        let process = async {
            match job.target {
                Target::Document(id) => self.document(job, id).await,
                Target::Memory(id) => self.memory(job, id).await,
            }
        };
        let result = tokio::select! {
            result = process => result,
            lost = self.keep_lease(job) => lost,
        };
        let metrics = switchboard_telemetry::metrics();
        let count = |outcome: &'static str| {
            metrics
                .embedding_jobs
                .get_or_create(&switchboard_telemetry::metrics::JobLabels { outcome })
                .inc();
        };
        let outcome = match result {
            Ok(()) => return count("done"),
            Err(JobError::Lost) => {
                tracing::warn!(job_id = %job.id, "lost the lease on an embedding job; another node has it");
                return;
            }
            Err(JobError::Embed(EmbedError::Unavailable(why))) => {
                tracing::info!(job_id = %job.id, reason = %why, "embedding job waits for its provider");
                count("waiting");
                Outcome::Again { after: self.settings.wait, failed: false, error: Some(why) }
            }
            Err(e) => {
                // What the document's watchers may read: never Postgres's own words.
                let error = match &e {
                    JobError::Db(db) => {
                        tracing::warn!(job_id = %job.id, error = %db, "embedding job: database error");
                        format!("storing the chunks failed: {}", db.public_message())
                    }
                    other => other.to_string(),
                };
                if job.attempts + 1 >= MAX_ATTEMPTS {
                    tracing::error!(job_id = %job.id, error = %error, "embedding job dead after its last attempt");
                    count("dead");
                    Outcome::Dead(error)
                } else {
                    tracing::warn!(job_id = %job.id, attempt = job.attempts + 1, error = %error, "embedding job failed; retrying");
                    count("retry");
                    let backoff = Duration::from_secs(2u64.pow(job.attempts.clamp(0, 8) as u32));
                    Outcome::Again { after: backoff, failed: true, error: Some(error) }
                }
            }
        };
        if let Err(e) = self.settle(job, &outcome).await {
            // The lease runs out and the job is taken again: nothing lost.
            tracing::warn!(job_id = %job.id, error = %e, "could not settle an embedding job");
        }
    }

    /// Puts back (or buries) a job that did not finish, and tells the document's watchers.
    async fn settle(&self, job: &Job, outcome: &Outcome) -> Result<(), DbError> {
        let mut tx = self.knowledge.db.begin(&Self::ctx(job)).await?;
        repo::lock_target(&mut tx, job.id).await?;
        if !repo::settle_job(&mut tx, job.id, &job.holder, outcome).await? {
            return Ok(());
        }
        let doc = match (job.target, outcome) {
            (Target::Document(id), Outcome::Dead(error)) => {
                let doc = repo::set_document_status(&mut tx, id, "failed", 0.0, Some(error)).await?;
                webhooks::event(&mut tx, "document.failed", update_of(job.tenant_id, &doc).data).await?;
                Some(doc)
            }
            (Target::Document(id), Outcome::Again { error, .. }) => {
                Some(repo::set_document_status(&mut tx, id, "pending", 0.0, error.as_deref()).await?)
            }
            _ => None,
        };
        tx.commit().await?;
        if let Some(doc) = doc {
            self.announce(job.tenant_id, &doc);
        }
        Ok(())
    }

    async fn document(&self, job: &Job, id: Uuid) -> Result<(), JobError> {
        let mut tx = self.holding(job).await?;
        let source = match repo::document_source(&mut tx, id).await {
            Ok(s) => s,
            // Deleted meanwhile: the cascade took the job too; nothing to do.
            Err(DbError::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let doc = repo::set_document_status(&mut tx, id, "processing", 0.0, None).await?;
        tx.commit().await?;
        self.announce(job.tenant_id, &doc);

        let embedder = &self.knowledge.embedder;
        let tokens = embedder.tokens().await.cloned();
        let (content, kind) = (source.content.clone(), Kind::of(&source.content_type));
        let chunks = tokio::task::spawn_blocking(move || {
            let count = |t: &str| match &tokens {
                Some(tokens) => tokens.count(t),
                None => t.split_whitespace().count(),
            };
            chunk::chunk(&content, kind, Sizes::default(), &count)
        })
        .await
        .map_err(|e| EmbedError::Failed(e.to_string()))?;

        // The chunks first (full-text search finds them even while the
        // embedding provider is down), then their vectors batch by batch.
        let rows: Vec<NewChunk> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| NewChunk {
                position: i as i32,
                heading: c.heading.clone(),
                content: c.content.clone(),
                token_count: c.tokens as i32,
            })
            .collect();
        let mut tx = self.holding(job).await?;
        repo::replace_chunks(&mut tx, &source, &rows).await?;
        tx.commit().await?;

        let batches = chunks.chunks(16).count().max(1);
        for (i, batch) in chunks.chunks(16).enumerate() {
            let texts: Vec<String> = batch.iter().map(|c| c.embedded_text()).collect();
            let vectors = embedder.embed(&texts).await?;
            let first = (i * 16) as i32;
            let numbered: Vec<(i32, Vec<f32>)> =
                vectors.into_iter().enumerate().map(|(j, v)| (first + j as i32, v)).collect();
            let mut tx = self.holding(job).await?;
            repo::embed_chunks(&mut tx, id, &numbered, &self.model).await?;
            // Progress for the watchers, a few times per document.
            let announce = i + 1 < batches && (i + 1) % (batches / 4).max(1) == 0;
            let doc = if announce {
                Some(
                    repo::set_document_status(
                        &mut tx,
                        id,
                        "processing",
                        (i + 1) as f32 / batches as f32,
                        None,
                    )
                    .await?,
                )
            } else {
                None
            };
            tx.commit().await?;
            if let Some(doc) = doc {
                self.announce(job.tenant_id, &doc);
            }
        }

        let mut tx = self.holding(job).await?;
        let doc = match repo::mark_ready(&mut tx, id, chunks.len(), &self.model).await {
            Ok(doc) => doc,
            Err(DbError::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !repo::settle_job(&mut tx, job.id, &job.holder, &Outcome::Done).await? {
            return Err(JobError::Lost);
        }
        webhooks::event(&mut tx, "document.ready", update_of(job.tenant_id, &doc).data).await?;
        tx.commit().await?;
        switchboard_telemetry::metrics().chunks_embedded.inc_by(chunks.len() as u64);
        self.announce(job.tenant_id, &doc);
        Ok(())
    }

    async fn memory(&self, job: &Job, id: Uuid) -> Result<(), JobError> {
        let mut tx = self.holding(job).await?;
        let text = match repo::memory_text(&mut tx, id).await {
            Ok(t) => t,
            Err(DbError::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        let mut vectors = self.knowledge.embedder.embed(&[text]).await?;
        let vector = vectors.pop().ok_or_else(|| EmbedError::Failed("no vector".into()))?;
        let mut tx = self.holding(job).await?;
        match repo::set_memory_embedding(&mut tx, id, &vector, &self.model).await {
            Ok(()) => {}
            // Deleted meanwhile, with its job.
            Err(DbError::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if !repo::settle_job(&mut tx, job.id, &job.holder, &Outcome::Done).await? {
            return Err(JobError::Lost);
        }
        tx.commit().await?;
        Ok(())
    }
}
