//! Hybrid search: the vector retriever (nearest embeddings) and the keyword
//! retriever (full-text match, BM25) each return their best candidates;
//! relative score fusion merges them (a chunk both found rises), and a reranker, when
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

/// How much the vector retriever's score weighs in a hybrid result; the
/// keyword retriever's weighs the rest.
pub const VECTOR_WEIGHT: f64 = 0.7;

/// Merges the retrievers' ranked lists by relative score: each list's scores
/// are scaled to 0..1 between its worst and best candidate, and a result
/// scores the weighted sum over the lists that hold it (`VECTOR_WEIGHT` for
/// the vector list, the rest for the keyword one). Unlike reciprocal rank
/// fusion, how far a candidate stands above the others counts, not only its
/// place: a keyword list of weak matches for every word of a paraphrase no
/// longer outvotes the vector retriever's clear first. Ties keep the first
/// list's order.
pub fn fuse<T: Clone>(
    lists: &[(Retriever, Vec<T>)],
    id: impl Fn(&T) -> Uuid,
    score: impl Fn(&T) -> f64,
) -> Vec<Hit<T>> {
    let mut by_id: HashMap<Uuid, (usize, Hit<T>)> = HashMap::new();
    let mut order = 0;
    for (retriever, items) in lists {
        let weight = match retriever {
            Retriever::Vector => VECTOR_WEIGHT,
            Retriever::Keyword => 1.0 - VECTOR_WEIGHT,
        };
        let (low, high) = items
            .iter()
            .map(&score)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(s), hi.max(s)));
        for item in items {
            let scaled = if high > low { (score(item) - low) / (high - low) } else { 1.0 };
            let entry = by_id.entry(id(item)).or_insert_with(|| {
                order += 1;
                (order, Hit { item: item.clone(), score: 0.0, matched_by: Vec::new() })
            });
            entry.1.score += weight * scaled;
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
        let mut hits = fuse(lists, id, &own_score);
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
    fn fusion_weighs_how_far_each_candidate_stands_above_the_rest() {
        let [a, b, c, d] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        let lists = vec![
            (Retriever::Vector, vec![(a, 0.9), (c, 0.8), (b, 0.5)]),
            (Retriever::Keyword, vec![(d, 10.0), (c, 8.0), (a, 0.0)]),
        ];
        let hits = fuse(&lists, |x| x.0, |x| x.1);
        let order: Vec<Uuid> = hits.iter().map(|h| h.item.0).collect();
        // c, a close second in both lists (0.7 * 0.75 + 0.3 * 0.8), passes a,
        // the vector list's first but the keyword list's last (0.7); d, the
        // keyword list's best alone (0.3), passes b, the vector list's worst.
        assert_eq!(order, vec![c, a, d, b]);
        assert!((hits[0].score - 0.765).abs() < 1e-9, "{}", hits[0].score);
        assert_eq!(hits[0].matched_by, vec![Retriever::Vector, Retriever::Keyword]);
        assert_eq!(hits[2].matched_by, vec![Retriever::Keyword]);
        assert_eq!(hits[3].score, 0.0);
    }

    #[test]
    fn a_list_of_equal_scores_counts_each_as_its_best() {
        let [a, b] = [Uuid::new_v4(), Uuid::new_v4()];
        let lists = vec![(Retriever::Vector, vec![(a, 0.4)]), (Retriever::Keyword, vec![(b, 2.0), (a, 2.0)])];
        let hits = fuse(&lists, |x| x.0, |x| x.1);
        assert_eq!(hits[0].item.0, a);
        assert!((hits[0].score - 1.0).abs() < 1e-9);
        assert!((hits[1].score - (1.0 - VECTOR_WEIGHT)).abs() < 1e-9);
    }
}
