//! What every model is to the engine: the [`LanguageModel`] trait, its configuration, where
//! a decoder reads its weights from, and the facts a file states about itself. Everything in
//! `model/` imports this; this imports nothing of `model/`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use crate::engine::kernels::SimdLevel;
use crate::engine::kv_cache::KvCache;
use crate::engine::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

/// What the engine may ask of a loaded model. Implementations own their weights; all
/// per-sequence state lives in the [`KvCache`] handed in.
pub trait LanguageModel: Send {
    fn config(&self) -> &ModelConfig;
    fn device(&self) -> &Device;
    /// A cache for one sequence of up to `capacity` positions.
    fn new_cache(&self, capacity: usize) -> Result<KvCache>;
    /// Evaluates `tokens` after what `cache` holds; returns the next-token logits `(vocab)`.
    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor>;
    /// Like `forward`, but the logits of every position `(tokens, vocab)`.
    fn forward_all(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor>;
    /// Mean-pooled final hidden states `(hidden)` of `tokens` (for /api/embed).
    fn embed(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor>;
    /// One vector per input. Decoders run them one by one; encoders override this with one
    /// padded batch.
    fn embed_batch(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let longest = inputs.iter().map(Vec::len).max().unwrap_or(0);
        let mut cache = self.new_cache(longest.max(1))?;
        inputs
            .iter()
            .map(|ids| {
                cache.clear();
                Ok(self.embed(ids, &mut cache)?.to_vec1()?)
            })
            .collect()
    }
}

/// What a model can be asked for (Ollama's capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A decoder: generate, chat (and embeddings from its hidden states, as Ollama allows).
    Generative,
    /// A sentence encoder: embeddings only.
    Embedding,
}

impl ModelKind {
    pub fn capabilities(self) -> &'static [&'static str] {
        match self {
            ModelKind::Generative => &["completion"],
            ModelKind::Embedding => &["embedding"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): GGUF files, whose converter permutes Q/K rows for llama.cpp.
    Interleaved,
    /// Pairs (i, i + d/2): the Hugging Face layout.
    Halves,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    Linear {
        factor: f32,
    },
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: usize,
    },
}

impl RopeScaling {
    /// What each of the `dim / 2` RoPE frequencies `theta^(-2i/dim)` is divided by — the values
    /// llama.cpp's converter stores as `rope_freqs.weight`, so a GGUF file and its Hugging Face
    /// folder rotate by the same angles.
    pub fn divisors(&self, theta: f32, dim: usize) -> Vec<f32> {
        let freqs = (0..dim / 2).map(|i| 1.0 / theta.powf(2.0 * i as f32 / dim as f32));
        match *self {
            RopeScaling::Linear { factor } => freqs.map(|_| factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                let orig = original_context as f32;
                let low_wavelen = orig / low_freq_factor;
                let high_wavelen = orig / high_freq_factor;
                freqs
                    .map(|freq| {
                        let wavelen = 2.0 * std::f32::consts::PI / freq;
                        if wavelen < high_wavelen {
                            1.0
                        } else if wavelen > low_wavelen {
                            factor
                        } else {
                            let smooth = (orig / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            1.0 / ((1.0 - smooth) / factor + smooth)
                        }
                    })
                    .collect()
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub vocab_size: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    /// The context length the model was trained for (from the file's metadata).
    pub context_length: usize,
    /// Positions this instance can address: `min(context_length, requested limit)`.
    pub max_positions: usize,
}

/// Where the decoder gets its tensors from. Names follow the GGUF convention
/// (`blk.N.attn_q.weight`); other sources translate.
pub trait WeightSource {
    fn contains(&self, name: &str) -> bool;
    /// A weight matrix `(out, in)`, quantized or not.
    fn matrix(&mut self, name: &str) -> Result<QMatMul>;
    /// A 1-D tensor (norm weights) in `dtype`.
    fn vector(&mut self, name: &str, dtype: DType) -> Result<Tensor>;
    fn rope_style(&self) -> RopeStyle;
    /// Precomputed RoPE frequency divisors, if the file carries them.
    fn rope_freq_factors(&mut self) -> Result<Option<Vec<f32>>>;
    fn activation_dtype(&self) -> DType;
}

/// Options that apply to any model file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Upper bound on addressable positions (RoPE tables, caches). The model's own
    /// context length wins when it is smaller.
    pub max_context: usize,
    /// Dequantize every quantized matrix to f32 at load and multiply in exact f32: the
    /// reference the quantized kernels are measured against (KL of next-token distributions).
    /// 4-8x the memory and slower; for tests.
    pub exact_weights: bool,
    /// Which of our CPU kernels may run (`CANDLELIGHT_SIMD`).
    pub simd: SimdLevel,
}

/// Facts about a loaded model that the API reports (`/api/show`, `/api/ps`).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub format: &'static str,
    /// e.g. "Q4_1", "BF16".
    pub quantization: String,
    pub parameter_count: u64,
    pub file_size: u64,
    /// Scalar metadata (GGUF keys, or config.json translated to GGUF names).
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// The chat template source text shipped with the model, if any.
    pub chat_template: Option<String>,
    pub kind: ModelKind,
}
