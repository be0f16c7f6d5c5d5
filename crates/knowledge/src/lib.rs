//! Knowledge for agents: documents cut into chunks and embedded in the
//! background, memories, and search that fuses nearest-vector and full-text
//! retrieval (with an optional reranker), everything inside the caller's
//! tenant.
//!
//! [`Knowledge`] is the handle the REST layer searches through; [`worker`]
//! is the ingestion loop every node runs.

pub mod breaker;
pub mod chunk;
pub mod embed;
pub mod model;
pub mod search;
pub mod worker;

use embed::{Embedder, Endpoint, Patience, Reranker};
use std::path::PathBuf;
use std::sync::Arc;
use switchboard_db::Database;

/// Where the pieces are.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The built-in model's directory (`model.safetensors`, `tokenizer.json`).
    pub model_dir: PathBuf,
    /// An OpenAI-compatible embeddings endpoint instead of the built-in model.
    pub embedding: Option<Endpoint>,
    /// A Cohere/Jina-compatible reranker; without one, hybrid search is fused by rank alone.
    pub rerank: Option<Endpoint>,
    pub patience: Option<Patience>,
}

#[derive(Clone, Debug)]
pub struct Knowledge {
    db: Database,
    embedder: Arc<Embedder>,
    reranker: Option<Arc<Reranker>>,
}

impl Knowledge {
    pub fn new(db: Database, settings: Settings) -> Self {
        let patience = settings.patience.unwrap_or_default();
        Self {
            db,
            embedder: Arc::new(Embedder::new(settings.model_dir, settings.embedding, patience)),
            reranker: settings.rerank.map(|e| Arc::new(Reranker::new(e, patience))),
        }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    pub fn db(&self) -> &Database {
        &self.db
    }
}
