//! The built-in model against the reference: sentence-transformers' own
//! all-MiniLM-L6-v2 embeddings of a few fixed sentences, committed in
//! `tests/data/minilm_reference.json` (how they were made is in its `about`).
//! Needs the installed model (EMBEDDING_MODEL_DIR; `scripts/services model`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use switchboard_knowledge::model::{DIMS, MiniLm};

fn model_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("EMBEDDING_MODEL_DIR").expect("EMBEDDING_MODEL_DIR names the installed model"),
    )
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_the_reference_model() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("data/minilm_reference.json")).expect("reference JSON");
    let items = reference["items"].as_array().expect("items");
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().expect("text")).collect();
    let model = MiniLm::load(&model_dir()).expect("the installed model loads");
    // In one batch (padded to the longest) and one by one: the same vectors.
    let batch = model.embed(&texts).expect("embedded");
    let mut lowest = 1.0f64;
    for (i, item) in items.iter().enumerate() {
        let want: Vec<f32> = item["embedding"]
            .as_array()
            .expect("vector")
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect();
        assert_eq!(batch[i].len(), DIMS);
        let alone = model.embed(&[texts[i]]).expect("embedded alone");
        let (c_batch, c_alone) = (cosine(&batch[i], &want), cosine(&alone[0], &want));
        assert!(
            c_batch >= 0.99 && c_alone >= 0.99,
            "{:?}: cosine {c_batch:.5} (batch) {c_alone:.5} (alone)",
            texts[i]
        );
        lowest = lowest.min(c_batch).min(c_alone);
        let norm: f64 = batch[i].iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length: {norm}");
    }
    eprintln!("lowest cosine to the reference over {} sentences: {lowest:.6}", items.len());
    // Related sentences are nearer than unrelated ones.
    let v = model
        .embed(&[
            "How do I reconnect after a network drop?",
            "Recovering a lost connection",
            "Bananas are yellow.",
        ])
        .expect("embedded");
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2);
}
