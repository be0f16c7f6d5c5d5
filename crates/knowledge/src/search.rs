//! Hybrid search: the vector retriever (nearest embeddings) and the keyword
//! retriever (full-text match) each return their best candidates; reciprocal
//! rank fusion merges them (a chunk both found rises), and a reranker, when
//! one is configured and up, orders the fused candidates by relevance. When
//! the query cannot be embedded (the provider is down, the model missing) the
//! search answers from full text alone and says `degraded`.

use crate::Knowledge;
use crate::chunk::embedded_text;
use crate::embed::EmbedError;
use std::collections::HashMap;
use switchboard_db::repo::knowledge::{self as repo, ChunkFilter, ChunkHit, MemoryHit};
use switchboard_db::{DbError, TenantContext};
use switchboard_domain::UserId;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Vector,
    Keyword,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Vector => "vector",
            Mode::Keyword => "keyword",
        }
    }
}

/// Which retrievers found a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Retriever {
    Vector,
    Keyword,
}

#[derive(Debug, Clone)]
pub struct Hit<T> {
    pub item: T,
    pub score: f64,
    pub matched_by: Vec<Retriever>,
}

#[derive(Debug, Clone)]
pub struct Found<T> {
    pub hits: Vec<Hit<T>>,
    /// The vector retriever could not run: these are full-text results only.
    pub degraded: bool,
    /// A reranker ordered them.
    pub reranked: bool,
}

/// Reciprocal rank fusion's constant: ranks past the first few weigh little.
const RRF_K: f64 = 60.0;

/// Merges ranked lists: each item scores Σ 1/(k + rank) over the lists that
/// hold it; ties keep the first list's order.
pub fn fuse<T: Clone>(lists: &[(Retriever, Vec<T>)], id: impl Fn(&T) -> Uuid) -> Vec<Hit<T>> {
    let mut by_id: HashMap<Uuid, (usize, Hit<T>)> = HashMap::new();
    let mut order = 0;
    for (retriever, items) in lists {
        for (rank, item) in items.iter().enumerate() {
            let entry = by_id.entry(id(item)).or_insert_with(|| {
                order += 1;
                (order, Hit { item: item.clone(), score: 0.0, matched_by: Vec::new() })
            });
            entry.1.score += 1.0 / (RRF_K + rank as f64 + 1.0);
            entry.1.matched_by.push(*retriever);
        }
    }
    let mut hits: Vec<(usize, Hit<T>)> = by_id.into_values().collect();
    hits.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
    hits.into_iter().map(|(_, h)| h).collect()
}

impl Knowledge {
    /// The query's vector, or `None` when it cannot be had now.
    async fn query_vector(&self, query: &str) -> Option<Vec<f32>> {
        match self.embedder.embed(&[query.to_owned()]).await {
            Ok(mut v) => v.pop(),
            Err(EmbedError::Unavailable(why) | EmbedError::Failed(why)) => {
                tracing::warn!(reason = %why, "search without vectors");
                None
            }
        }
    }

    /// Chunks of the caller's tenant that answer `query`.
    pub async fn search(
        &self,
        ctx: &TenantContext,
        query: &str,
        mode: Mode,
        filter: &ChunkFilter,
        limit: usize,
    ) -> Result<Found<ChunkHit>, DbError> {
        let started = std::time::Instant::now();
        let candidates = (limit * 4).clamp(20, 200) as i64;
        let vector = if mode == Mode::Keyword { None } else { self.query_vector(query).await };
        let degraded = mode != Mode::Keyword && vector.is_none();
        let model = self.embedder.model_name();
        let mut tx = self.db.begin(ctx).await?;
        let mut lists = Vec::new();
        if let Some(v) = &vector {
            lists.push((
                Retriever::Vector,
                repo::nearest_chunks(&mut tx, v, &model, filter, candidates).await?,
            ));
        }
        if mode != Mode::Vector || degraded {
            lists
                .push((Retriever::Keyword, repo::matching_chunks(&mut tx, query, filter, candidates).await?));
        }
        tx.commit().await?;
        let (hits, reranked) = self
            .rank(query, &lists, limit, |c| c.id, |c| c.score, |c| embedded_text(&c.heading, &c.content))
            .await;
        let metrics = switchboard_telemetry::metrics();
        metrics
            .search_duration
            .get_or_create(&switchboard_telemetry::metrics::SearchLabels {
                mode: mode.as_str(),
                degraded: if degraded { "true" } else { "false" },
            })
            .observe(started.elapsed().as_secs_f64());
        Ok(Found { hits, degraded, reranked })
    }

    /// Memories of `user` (or all the caller may see) that answer `query`.
    pub async fn search_memories(
        &self,
        ctx: &TenantContext,
        query: &str,
        user: Option<UserId>,
        limit: usize,
    ) -> Result<Found<MemoryHit>, DbError> {
        let candidates = (limit * 4).clamp(20, 200) as i64;
        let vector = self.query_vector(query).await;
        let model = self.embedder.model_name();
        let mut tx = self.db.begin(ctx).await?;
        let mut lists = Vec::new();
        if let Some(v) = &vector {
            lists.push((
                Retriever::Vector,
                repo::nearest_memories(&mut tx, v, &model, user, candidates).await?,
            ));
        }
        lists.push((Retriever::Keyword, repo::matching_memories(&mut tx, query, user, candidates).await?));
        tx.commit().await?;
        let (hits, reranked) =
            self.rank(query, &lists, limit, |m| m.memory.id, |m| m.score, |m| m.memory.content.clone()).await;
        Ok(Found { hits, degraded: vector.is_none(), reranked })
    }

    /// The retrievers' lists as one ranking: fused (one list alone keeps its
    /// retriever's own score: similarity, rank), then reranked when a
    /// reranker answers (whether it did), cut to `limit`.
    async fn rank<T: Clone>(
        &self,
        query: &str,
        lists: &[(Retriever, Vec<T>)],
        limit: usize,
        id: impl Fn(&T) -> Uuid,
        own_score: impl Fn(&T) -> f64,
        text: impl Fn(&T) -> String,
    ) -> (Vec<Hit<T>>, bool) {
        let mut hits = fuse(lists, id);
        if lists.len() == 1 {
            for h in &mut hits {
                h.score = own_score(&h.item);
            }
        }
        let reranked = self.rerank(query, &mut hits, text).await;
        hits.truncate(limit);
        (hits, reranked)
    }

    /// Orders `hits` by the reranker when there is one and it answers;
    /// whether it did.
    async fn rerank<T>(&self, query: &str, hits: &mut Vec<Hit<T>>, text: impl Fn(&T) -> String) -> bool {
        let Some(reranker) = &self.reranker else { return false };
        if hits.len() < 2 {
            return false;
        }
        hits.truncate(RERANK_CANDIDATES);
        let documents: Vec<String> = hits.iter().map(|h| text(&h.item)).collect();
        match reranker.rerank(query, &documents).await {
            Ok(order) => {
                let mut slots: Vec<Option<Hit<T>>> = std::mem::take(hits).into_iter().map(Some).collect();
                for (index, score) in order {
                    if let Some(mut h) = slots.get_mut(index).and_then(Option::take) {
                        h.score = score;
                        hits.push(h);
                    }
                }
                // Anything the reranker left out keeps its fused place after the rest.
                hits.extend(slots.into_iter().flatten());
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "search without reranking");
                false
            }
        }
    }
}

/// The fused candidates a reranker sees.
const RERANK_CANDIDATES: usize = 50;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_lifts_what_both_retrievers_found() {
        let [a, b, c, d] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        let lists = vec![(Retriever::Vector, vec![a, b, c]), (Retriever::Keyword, vec![d, c, a])];
        let hits = fuse(&lists, |x| *x);
        let order: Vec<Uuid> = hits.iter().map(|h| h.item).collect();
        // a: ranks 1 and 3; c: 3 and 2; then d (first of one list) before b (second of one).
        assert_eq!(order, vec![a, c, d, b]);
        assert_eq!(hits[0].matched_by, vec![Retriever::Vector, Retriever::Keyword]);
        assert_eq!(hits[2].matched_by, vec![Retriever::Keyword]);
    }
}
