//! Turning text into vectors: the built-in model in-process, or an
//! OpenAI-compatible `/v1/embeddings` endpoint (EMBEDDING_URL) behind a
//! timeout, retries with jittered backoff and a circuit breaker; and the
//! optional Cohere/Jina-compatible `/v1/rerank` endpoint (RERANK_URL) the same
//! way. A provider that is down makes calls fail as [`EmbedError::Unavailable`]:
//! searches then answer from full text, ingestion waits.

use crate::breaker::Breaker;
use crate::model::{self, MiniLm, ModelError, Tokens};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The provider is down, slow or refusing for now: try later.
    #[error("the embedding provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider answered something unusable for this input.
    #[error("embedding failed: {0}")]
    Failed(String),
}

/// An outside HTTP service: where, with which model and key.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("Endpoint").field("url", &self.url).field("model", &self.model).finish_non_exhaustive()
    }
}

/// How hard an outside call tries before it gives up.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub timeout: Duration,
    pub attempts: u32,
    pub backoff: Duration,
    pub breaker_threshold: u32,
    pub breaker_cool_down: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_millis(200),
            breaker_threshold: 3,
            breaker_cool_down: Duration::from_secs(15),
        }
    }
}

/// One JSON call with retries (timeouts, 429 and 5xx, with exponential backoff
/// and full jitter) behind `breaker`.
async fn call<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    breaker: &Breaker,
    patience: &Patience,
    endpoint: &Endpoint,
    body: &serde_json::Value,
) -> Result<T, EmbedError> {
    let Some(permit) = breaker.permit() else {
        return Err(EmbedError::Unavailable(format!("{} circuit breaker is open", breaker.name())));
    };
    let mut last = String::new();
    for attempt in 0..patience.attempts.max(1) {
        if attempt > 0 {
            let cap = patience.backoff.as_millis() as u64 * (1 << attempt.min(6));
            tokio::time::sleep(Duration::from_millis(jitter(cap))).await;
        }
        let mut request = client.post(&endpoint.url).timeout(patience.timeout).json(body);
        if let Some(key) = &endpoint.api_key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(res) if res.status().is_success() => match res.json::<T>().await {
                Ok(v) => {
                    breaker.succeeded(permit);
                    return Ok(v);
                }
                Err(e) => last = format!("unreadable answer: {e}"),
            },
            Ok(res) if res.status().as_u16() == 429 || res.status().is_server_error() => {
                last = format!("answered {}", res.status());
            }
            Ok(res) if matches!(res.status().as_u16(), 401 | 403 | 404) => {
                // The endpoint or its key is wrong: nothing this input can fix,
                // and no use trying again now. Wait (as for an outage) until
                // the configuration is fixed, rather than failing every document.
                let status = res.status();
                breaker.failed(permit);
                return Err(EmbedError::Unavailable(format!(
                    "{} answered {status}: check its URL, model and API key",
                    breaker.name()
                )));
            }
            Ok(res) => {
                // Another 4xx: this input, not the service. Not the breaker's business.
                let status = res.status();
                breaker.succeeded(permit);
                return Err(EmbedError::Failed(format!("{} answered {status}", breaker.name())));
            }
            Err(e) if e.is_timeout() => {
                last = format!("no answer within {} ms", patience.timeout.as_millis())
            }
            Err(e) => last = format!("unreachable: {}", without_url(&e)),
        }
    }
    breaker.failed(permit);
    Err(EmbedError::Unavailable(format!("{} {last}", breaker.name())))
}

/// reqwest's error text without the URL (it may carry a key in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "(endpoint)");
    }
    text
}

/// A random number of milliseconds in [0, cap).
fn jitter(cap: u64) -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let r =
        u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]);
    if cap == 0 { 0 } else { r % cap }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

enum Provider {
    Local,
    Http { endpoint: Endpoint, breaker: Breaker },
}

/// Where vectors come from, and the model's tokenizer (chunks are cut in its
/// tokens whichever model embeds them).
pub struct Embedder {
    provider: Provider,
    model_dir: PathBuf,
    local: OnceCell<Arc<MiniLm>>,
    tokens: OnceCell<Tokens>,
    client: reqwest::Client,
    patience: Patience,
    /// Model runs at once: one per core (searches and ingestion share them),
    /// so a burst of searches queues instead of piling threads on the CPU.
    cpu: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("model", &self.model_name()).finish_non_exhaustive()
    }
}

/// Texts embedded per model call.
const BATCH: usize = 16;

impl Embedder {
    /// The built-in model from `model_dir`, or `endpoint` when given.
    pub fn new(model_dir: PathBuf, endpoint: Option<Endpoint>, patience: Patience) -> Self {
        let provider = match endpoint {
            Some(endpoint) => Provider::Http {
                endpoint: Endpoint { url: endpoint_url(&endpoint.url, "embeddings"), ..endpoint },
                breaker: Breaker::new("embedding", patience.breaker_threshold, patience.breaker_cool_down),
            },
            None => Provider::Local,
        };
        Self {
            provider,
            model_dir,
            local: OnceCell::new(),
            tokens: OnceCell::new(),
            client: reqwest::Client::new(),
            patience,
            cpu: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            ),
        }
    }

    /// The name stored with each vector: a change of model re-embeds.
    pub fn model_name(&self) -> String {
        match &self.provider {
            Provider::Local => model::MODEL_NAME.to_owned(),
            Provider::Http { endpoint, .. } => endpoint.model.clone(),
        }
    }

    pub fn breaker(&self) -> Option<&Breaker> {
        match &self.provider {
            Provider::Local => None,
            Provider::Http { breaker, .. } => Some(breaker),
        }
    }

    /// The tokenizer, loaded on first use; `None` when the model is not installed
    /// (chunks are then measured in words).
    pub async fn tokens(&self) -> Option<&Tokens> {
        let dir = self.model_dir.clone();
        self.tokens
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || Tokens::load(&dir))
                    .await
                    .map_err(|e| ModelError::Load(e.to_string()))?
            })
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "no tokenizer: chunks are measured in words"))
            .ok()
    }

    async fn local(&self) -> Result<Arc<MiniLm>, EmbedError> {
        let dir = self.model_dir.clone();
        self.local
            .get_or_try_init(|| async move {
                let started = std::time::Instant::now();
                let model = tokio::task::spawn_blocking(move || MiniLm::load(&dir))
                    .await
                    .map_err(|e| ModelError::Load(e.to_string()))??;
                tracing::info!(
                    model = model::MODEL_NAME,
                    took_ms = started.elapsed().as_millis() as u64,
                    "embedding model loaded"
                );
                Ok::<_, ModelError>(Arc::new(model))
            })
            .await
            .cloned()
            .map_err(|e| EmbedError::Unavailable(e.to_string()))
    }

    /// Unit-length (for the built-in model) vectors of `texts`, in order.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            out.extend(self.embed_batch(batch).await?);
        }
        Ok(out)
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        match &self.provider {
            Provider::Local => {
                let model = self.local().await?;
                let _turn = self.cpu.acquire().await.map_err(|e| EmbedError::Failed(e.to_string()))?;
                let texts = texts.to_vec();
                tokio::task::spawn_blocking(move || {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    model.embed(&refs)
                })
                .await
                .map_err(|e| EmbedError::Failed(e.to_string()))?
                .map_err(|e| EmbedError::Failed(e.to_string()))
            }
            Provider::Http { endpoint, breaker } => {
                let body = json!({ "model": endpoint.model, "input": texts });
                let res: EmbeddingsResponse =
                    call(&self.client, breaker, &self.patience, endpoint, &body).await?;
                if res.data.len() != texts.len() {
                    return Err(EmbedError::Failed(format!(
                        "{} vectors for {} texts",
                        res.data.len(),
                        texts.len()
                    )));
                }
                let mut data = res.data;
                if data.iter().all(|d| d.index.is_some()) {
                    data.sort_by_key(|d| d.index);
                }
                let dims = data.first().map(|d| d.embedding.len()).unwrap_or(0);
                if dims == 0
                    || data
                        .iter()
                        .any(|d| d.embedding.len() != dims || d.embedding.iter().any(|x| !x.is_finite()))
                {
                    return Err(EmbedError::Failed("vectors of differing or no dimensions".into()));
                }
                Ok(data.into_iter().map(|d| d.embedding).collect())
            }
        }
    }
}

/// `base` as given when it already names the route, else with `/v1/<route>`
/// (or `/<route>` after a `/v1`).
fn endpoint_url(base: &str, route: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(&format!("/{route}")) {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/{route}")
    } else {
        format!("{base}/v1/{route}")
    }
}

#[derive(Deserialize)]
struct RerankResponse {
    results: Vec<RerankItem>,
}

#[derive(Deserialize)]
struct RerankItem {
    index: usize,
    relevance_score: f64,
}

/// A Cohere/Jina-compatible reranker.
pub struct Reranker {
    endpoint: Endpoint,
    breaker: Breaker,
    client: reqwest::Client,
    patience: Patience,
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reranker").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Reranker {
    pub fn new(endpoint: Endpoint, patience: Patience) -> Self {
        Self {
            endpoint: Endpoint { url: endpoint_url(&endpoint.url, "rerank"), ..endpoint },
            breaker: Breaker::new("rerank", patience.breaker_threshold, patience.breaker_cool_down),
            client: reqwest::Client::new(),
            patience,
        }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Relevance of each document to `query`, as `(index, score)` best first.
    pub async fn rerank(&self, query: &str, documents: &[String]) -> Result<Vec<(usize, f64)>, EmbedError> {
        let body = json!({
            "model": self.endpoint.model,
            "query": query,
            "documents": documents,
            "top_n": documents.len(),
        });
        let res: RerankResponse =
            call(&self.client, &self.breaker, &self.patience, &self.endpoint, &body).await?;
        let mut out: Vec<(usize, f64)> = res
            .results
            .into_iter()
            .filter(|r| r.index < documents.len() && r.relevance_score.is_finite())
            .map(|r| (r.index, r.relevance_score))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_take_a_base_or_the_route() {
        assert_eq!(
            endpoint_url("https://api.example.com", "embeddings"),
            "https://api.example.com/v1/embeddings"
        );
        assert_eq!(
            endpoint_url("https://api.example.com/v1/", "embeddings"),
            "https://api.example.com/v1/embeddings"
        );
        assert_eq!(
            endpoint_url("http://127.0.0.1:9/x/v1/rerank", "rerank"),
            "http://127.0.0.1:9/x/v1/rerank"
        );
    }

    #[test]
    fn jitter_stays_under_its_cap() {
        assert!((0..1000).all(|_| jitter(50) < 50));
        assert_eq!(jitter(0), 0);
    }
}
