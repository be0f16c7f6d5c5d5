//! The built-in embedding model: all-MiniLM-L6-v2 (a 6-layer BERT, 384
//! dimensions) run in-process on the CPU with candle, as sentence-transformers
//! runs it: WordPiece tokens (at most 256), the encoder, the mean of the token
//! states under the attention mask, L2 normalisation.
//!
//! The encoder is written here on candle's tensors and layers (about a hundred
//! lines) rather than taken from candle-transformers, whose hundred models
//! would cost minutes of every build for the one used.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The name chunks embedded with this model are stored under.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
pub const DIMS: usize = 384;
/// The longest input the model reads, in tokens (sentence-transformers'
/// `max_seq_length` for this model); longer text is cut.
pub const MAX_TOKENS: usize = 256;

const LAYERS: usize = 6;
const HEADS: usize = 12;
const HIDDEN: usize = 384;
const EPS: f64 = 1e-12;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the embedding model is not installed at {0} (scripts/services model installs it)")]
    Missing(String),
    #[error("the embedding model could not be loaded: {0}")]
    Load(String),
    #[error("embedding failed: {0}")]
    Run(String),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        ModelError::Run(e.to_string())
    }
}

/// The tokenizer alone: counts tokens for the chunker.
#[derive(Clone)]
pub struct Tokens {
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens")
    }
}

impl Tokens {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Missing(dir.display().to_string()));
        }
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| ModelError::Load(e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| ModelError::Load(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        Ok(Self { tokenizer })
    }

    /// How many word pieces `text` is, without the two markers the model adds.
    pub fn count(&self, text: &str) -> usize {
        self.tokenizer
            .encode_fast(text, false)
            .map(|e| e.len())
            .unwrap_or_else(|_| text.split_whitespace().count())
    }
}

/// The loaded model; cheap to share (`Arc`), one inference at a time per call.
pub struct MiniLm {
    tokens: Tokens,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    device: Device,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MiniLm")
    }
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

fn layer_norm(vb: VarBuilder) -> candle_core::Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get(HIDDEN, "weight")?, vb.get(HIDDEN, "bias")?, EPS))
}

fn linear(vb: VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Linear> {
    Ok(Linear::new(vb.get((outputs, inputs), "weight")?, Some(vb.get(outputs, "bias")?)))
}

impl MiniLm {
    /// Loads `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let tokens = Tokens::load(dir)?;
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(ModelError::Missing(dir.display().to_string()));
        }
        let device = Device::Cpu;
        // Read whole (90 MB) rather than mapped: no unsafe code in this workspace.
        let bytes = std::fs::read(&weights).map_err(|e| ModelError::Load(e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(|e| ModelError::Load(e.to_string()))?;
        let build = || -> candle_core::Result<(Embeddings, Vec<Layer>)> {
            let e = vb.pp("embeddings");
            let embeddings = Embeddings {
                word: Embedding::new(e.get((30522, HIDDEN), "word_embeddings.weight")?, HIDDEN),
                position: Embedding::new(e.get((512, HIDDEN), "position_embeddings.weight")?, HIDDEN),
                token_type: Embedding::new(e.get((2, HIDDEN), "token_type_embeddings.weight")?, HIDDEN),
                norm: layer_norm(e.pp("LayerNorm"))?,
            };
            let mut layers = Vec::with_capacity(LAYERS);
            for i in 0..LAYERS {
                let l = vb.pp(format!("encoder.layer.{i}"));
                layers.push(Layer {
                    query: linear(l.pp("attention.self.query"), HIDDEN, HIDDEN)?,
                    key: linear(l.pp("attention.self.key"), HIDDEN, HIDDEN)?,
                    value: linear(l.pp("attention.self.value"), HIDDEN, HIDDEN)?,
                    attention_out: linear(l.pp("attention.output.dense"), HIDDEN, HIDDEN)?,
                    attention_norm: layer_norm(l.pp("attention.output.LayerNorm"))?,
                    intermediate: linear(l.pp("intermediate.dense"), HIDDEN, 4 * HIDDEN)?,
                    output: linear(l.pp("output.dense"), 4 * HIDDEN, HIDDEN)?,
                    output_norm: layer_norm(l.pp("output.LayerNorm"))?,
                });
            }
            Ok((embeddings, layers))
        };
        let (embeddings, layers) = build().map_err(|e| ModelError::Load(e.to_string()))?;
        Ok(Self { tokens, embeddings, layers, device })
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Unit vectors of `texts`, in order. CPU-bound: call from a blocking thread.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokens
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let (batch, len) = (encodings.len(), encodings[0].len());
        let mut ids = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        for e in &encodings {
            ids.extend(e.get_ids().iter().copied());
            mask.extend(e.get_attention_mask().iter().map(|&m| m as f32));
        }
        let ids = Tensor::from_vec(ids, (batch, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, len), &self.device)?;
        let states = self.forward(&ids, &mask)?;
        // Mean of the token states the mask keeps, then unit length.
        let m = mask.unsqueeze(2)?;
        let summed = states.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }

    fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, &self.device)?.unsqueeze(0)?;
        let types = ids.zeros_like()?;
        let e = &self.embeddings;
        let mut x = e.word.forward(ids)?.broadcast_add(&e.position.forward(&positions)?)?;
        x = x.broadcast_add(&e.token_type.forward(&types)?)?;
        x = e.norm.forward(&x)?;
        // Padding positions get a large negative score before the softmax.
        let bias = ((mask.ones_like()? - mask)? * -1e4)?.reshape((batch, 1, 1, len))?;
        let head = HIDDEN / HEADS;
        let scale = 1.0 / (head as f64).sqrt();
        for l in &self.layers {
            let split = |t: Tensor| t.reshape((batch, len, HEADS, head))?.transpose(1, 2)?.contiguous();
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let context = weights.matmul(&v)?.transpose(1, 2)?.reshape((batch, len, HIDDEN))?;
            let attended = l.attention_norm.forward(&(l.attention_out.forward(&context)? + &x)?)?;
            let inner = l.intermediate.forward(&attended)?.gelu_erf()?;
            x = l.output_norm.forward(&(l.output.forward(&inner)? + &attended)?)?;
        }
        Ok(x)
    }
}
