//! BERT-family sentence encoders (sentence-transformers folders such as all-MiniLM-L6-v2):
//! one model, one file. The encoder runs a whole list of inputs as one padded batch; pooling
//! and normalisation follow the folder's own `1_Pooling/config.json` and `modules.json`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};
use serde::Deserialize;

use super::card::LoadedModel;
use super::safetensors::safetensors_files;
use super::spec::{LanguageModel, LoadOptions, ModelConfig, ModelInfo, ModelKind};
use crate::engine::kv_cache::KvCache;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

#[derive(Debug, Deserialize)]
struct BertConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}

/// sentence-transformers' `1_Pooling/config.json` (the modes we implement).
#[derive(Debug, Default, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

/// Whether `dir` holds a BERT-family encoder (config.json `model_type: bert` or a
/// `Bert*` architecture).
pub fn is_bert_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    v["model_type"] == "bert"
        || v["architectures"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|s| s.starts_with("Bert")))
        })
}

pub(super) struct Layer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub out_norm: LayerNorm,
}

/// The token embedding table: a tensor, or 4-bit blocks dequantized row by row on lookup
/// (a 250k-token multilingual vocabulary is 96 M weights: 384 MB as f32, 54 MB as Q4_0).
pub(super) enum WordTable {
    Dense(Tensor),
    Q4_0 { blocks: Vec<u8>, hidden: usize },
}

/// Bytes of one Q4_0 block: an f16 scale and 32 four-bit weights.
pub(super) const Q4_0_BLOCK: usize = 18;

/// One Q4_0 block (ggml layout: byte j holds weight j low, weight j+16 high) into `out`.
pub(super) fn dequantize_q4_0(block: &[u8], out: &mut [f32]) {
    let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
    for (j, b) in block[2..Q4_0_BLOCK].iter().enumerate() {
        out[j] = ((b & 0x0f) as f32 - 8.0) * d;
        out[j + 16] = ((b >> 4) as f32 - 8.0) * d;
    }
}

impl WordTable {
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            WordTable::Dense(t) => Ok(t.index_select(ids, 0)?),
            WordTable::Q4_0 { blocks, hidden } => {
                let ids = ids.to_vec1::<u32>()?;
                let row_bytes = hidden / 32 * Q4_0_BLOCK;
                let rows = blocks.len() / row_bytes;
                let mut out = vec![0f32; ids.len() * hidden];
                for (i, id) in ids.iter().enumerate() {
                    let id = *id as usize;
                    if id >= rows {
                        return Err(EngineError::InvalidInput(format!(
                            "token id {id} beyond the vocabulary ({rows})"
                        )));
                    }
                    let row = &blocks[id * row_bytes..(id + 1) * row_bytes];
                    for (b, chunk) in row.chunks(Q4_0_BLOCK).enumerate() {
                        let at = i * hidden + b * 32;
                        dequantize_q4_0(chunk, &mut out[at..at + 32]);
                    }
                }
                Ok(Tensor::from_vec(out, (ids.len(), *hidden), &Device::Cpu)?)
            }
        }
    }
}

pub struct BertEncoder {
    cfg: ModelConfig,
    device: Device,
    word: WordTable,
    position: Tensor,
    token_type: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    pooling: Pooling,
    normalize: bool,
    cls: u32,
    sep: u32,
    pad: u32,
}

struct Weights<'a> {
    st: &'a MmapedSafetensors,
    prefix: &'static str,
    device: &'a Device,
}

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        Ok(self.st.load(&full, self.device)?.to_dtype(DType::F32)?)
    }
    fn linear(&self, name: &str) -> Result<Linear> {
        Ok(Linear::new(
            self.get(&format!("{name}.weight"))?,
            Some(self.get(&format!("{name}.bias"))?),
        ))
    }
    fn norm(&self, name: &str, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.get(&format!("{name}.weight"))?,
            self.get(&format!("{name}.bias"))?,
            eps,
        ))
    }
}

/// What a BERT-family encoder is made of, however its file stores it.
pub(super) struct Parts {
    pub cfg: ModelConfig,
    pub device: Device,
    pub word: WordTable,
    pub position: Tensor,
    pub token_type: Tensor,
    pub embed_norm: LayerNorm,
    pub layers: Vec<Layer>,
    pub heads: usize,
    /// Mean pooling (else the first token), L2-normalised or not.
    pub mean_pooling: bool,
    pub normalize: bool,
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
}

impl BertEncoder {
    pub(super) fn from_parts(p: Parts) -> Self {
        BertEncoder {
            cfg: p.cfg,
            device: p.device,
            word: p.word,
            position: p.position,
            token_type: p.token_type,
            embed_norm: p.embed_norm,
            layers: p.layers,
            heads: p.heads,
            pooling: if p.mean_pooling {
                Pooling::Mean
            } else {
                Pooling::Cls
            },
            normalize: p.normalize,
            cls: p.cls,
            sep: p.sep,
            pad: p.pad,
        }
    }

    /// `(batch, seq)` token ids with `mask` 1 for real tokens -> `(batch, hidden)` sentence
    /// vectors (pooled, normalised when the folder asks for it).
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let hidden = self.cfg.hidden_size;
        let positions = self.position.narrow(0, 0, seq)?;
        let types = self.token_type.narrow(0, 0, 1)?;
        let x = self
            .word
            .lookup(&ids.flatten_all()?)?
            .to_device(&self.device)?
            .reshape((batch, seq, hidden))?
            .broadcast_add(&positions)?
            .broadcast_add(&types)?;
        let mut x = self.embed_norm.forward(&x)?;
        // Padding keys get -inf before the softmax, so a padded batch equals one-by-one runs.
        let key_bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((batch, 1, 1, seq))?;
        let head_dim = hidden / self.heads;
        let scale = 1.0 / (head_dim as f64).sqrt();
        for l in &self.layers {
            let split = |t: Tensor| -> Result<Tensor> {
                Ok(t.reshape((batch, seq, self.heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&key_bias)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let ctx = att
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, seq, hidden))?;
            x = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let h = l.intermediate.forward(&x)?.gelu_erf()?;
            x = l.out_norm.forward(&(l.output.forward(&h)? + &x)?)?;
        }
        let pooled = match self.pooling {
            Pooling::Cls => x.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let sum = x.broadcast_mul(&m)?.sum(1)?;
                let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
                sum.broadcast_div(&count)?
            }
        };
        if !self.normalize {
            return Ok(pooled);
        }
        let norm = pooled
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        Ok(pooled.broadcast_div(&norm)?)
    }
}

impl LanguageModel for BertEncoder {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn new_cache(&self, _capacity: usize) -> Result<KvCache> {
        // An encoder keeps no state between calls.
        KvCache::new(0, 1, 1, 0, DType::F32, &self.device)
    }

    fn forward(&self, _tokens: &[u32], _cache: &mut KvCache) -> Result<Tensor> {
        Err(EngineError::InvalidInput(
            "this is an embedding model; it does not generate text".into(),
        ))
    }

    fn forward_all(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        self.forward(tokens, cache)
    }

    fn embed(&self, tokens: &[u32], _cache: &mut KvCache) -> Result<Tensor> {
        let v = self.embed_batch(&[tokens.to_vec()])?;
        Ok(Tensor::new(v[0].as_slice(), &Device::Cpu)?)
    }

    /// All inputs in one forward pass, each wrapped in `[CLS] … [SEP]` and padded to the
    /// longest.
    fn embed_batch(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let seq = inputs.iter().map(Vec::len).max().unwrap_or(0) + 2;
        let mut ids = Vec::with_capacity(inputs.len() * seq);
        let mut mask = Vec::with_capacity(inputs.len() * seq);
        for input in inputs {
            ids.push(self.cls);
            ids.extend_from_slice(input);
            ids.push(self.sep);
            ids.resize(ids.len() + seq - input.len() - 2, self.pad);
            mask.extend((0..seq).map(|i| u32::from(i < input.len() + 2)));
        }
        let shape = (inputs.len(), seq);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        Ok(self
            .encode(&ids, &mask)?
            .to_device(&Device::Cpu)?
            .to_vec2()?)
    }
}

/// What a folder says about itself, short of reading the weights (they stay mapped).
struct Folder {
    cfg: BertConfig,
    pooling: Pooling,
    normalize: bool,
    st: MmapedSafetensors,
    info: ModelInfo,
    model_cfg: ModelConfig,
}

fn read_folder(dir: &Path, max_context: usize) -> Result<Folder> {
    let read = |name: &str| -> Result<String> {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| EngineError::io(&p, e))
    };
    let bad = |m: String| EngineError::BadModel(format!("{}: {m}", dir.display()));
    let cfg: BertConfig = serde_json::from_str(&read("config.json")?)
        .map_err(|e| bad(format!("config.json: {e}")))?;
    if !cfg.hidden_act.is_empty() && cfg.hidden_act != "gelu" {
        return Err(bad(format!(
            "hidden_act '{}' is not supported (gelu only)",
            cfg.hidden_act
        )));
    }
    // sentence-transformers settings; a plain BERT folder gets mean pooling, normalised.
    let pooling: PoolingConfig = read("1_Pooling/config.json")
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let pooling = if pooling.pooling_mode_cls_token && !pooling.pooling_mode_mean_tokens {
        Pooling::Cls
    } else {
        Pooling::Mean
    };
    let normalize = match read("modules.json") {
        Ok(m) => m.contains("sentence_transformers.models.Normalize"),
        Err(_) => true,
    };
    let max_seq_length = read("sentence_bert_config.json")
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["max_seq_length"].as_u64())
        .map_or(cfg.max_position_embeddings, |n| n as usize)
        .min(cfg.max_position_embeddings);
    let files = safetensors_files(dir)?;
    // SAFETY: the files are mapped read-only and not modified while the model is loaded.
    let st = unsafe { MmapedSafetensors::multi(&files)? };
    let parameter_count: u64 = st
        .tensors()
        .iter()
        .filter(|(n, _)| !n.ends_with("position_ids"))
        .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
        .sum();
    let file_size = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let eps = cfg.layer_norm_eps;
    let model_cfg = ModelConfig {
        architecture: "bert".into(),
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        n_layer: cfg.num_hidden_layers,
        n_head: cfg.num_attention_heads,
        n_kv_head: cfg.num_attention_heads,
        head_dim: cfg.hidden_size / cfg.num_attention_heads,
        rope_dim: 0,
        vocab_size: cfg.vocab_size,
        rms_eps: eps,
        rope_theta: 0.0,
        rope_scaling: None,
        context_length: max_seq_length,
        // [CLS] and [SEP] take two of the positions; the rest is the text's.
        max_positions: max_seq_length.saturating_sub(2).min(max_context),
    };
    let kv = |k: &str, v: serde_json::Value| (k.to_owned(), v);
    let metadata = BTreeMap::from([
        kv("general.architecture", "bert".into()),
        kv("general.parameter_count", parameter_count.into()),
        kv("bert.block_count", cfg.num_hidden_layers.into()),
        kv("bert.context_length", max_seq_length.into()),
        kv("bert.embedding_length", cfg.hidden_size.into()),
        kv("bert.feed_forward_length", cfg.intermediate_size.into()),
        kv("bert.attention.head_count", cfg.num_attention_heads.into()),
        kv("bert.attention.layer_norm_epsilon", eps.into()),
        kv(
            "bert.pooling_type",
            if pooling == Pooling::Cls { 2 } else { 1 }.into(),
        ),
        kv("bert.vocab_size", cfg.vocab_size.into()),
    ]);
    let info = ModelInfo {
        path: dir.to_path_buf(),
        format: "safetensors",
        quantization: "F32".into(),
        parameter_count,
        file_size,
        metadata,
        chat_template: None,
        kind: ModelKind::Embedding,
    };
    Ok(Folder {
        cfg,
        pooling,
        normalize,
        st,
        info,
        model_cfg,
    })
}

/// The folder's facts for /api/show and /api/tags, without reading the weights.
pub fn inspect(dir: &Path) -> Result<ModelInfo> {
    Ok(read_folder(dir, usize::MAX)?.info)
}

/// Loads a sentence-transformers (or plain Hugging Face BERT) folder.
pub fn load(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let f = read_folder(dir, opts.max_context)?;
    let bad = |m: String| EngineError::BadModel(format!("{}: {m}", dir.display()));
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let id = |t: &str| {
        tokenizer
            .special_id(t)
            .ok_or_else(|| bad(format!("the tokenizer lacks {t}")))
    };
    let (cls, sep, pad) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
    let prefix = if f.st.get("bert.embeddings.word_embeddings.weight").is_ok() {
        "bert."
    } else {
        ""
    };
    let device = opts.device.clone();
    let w = Weights {
        st: &f.st,
        prefix,
        device: &device,
    };
    let eps = f.cfg.layer_norm_eps;
    let layers = (0..f.cfg.num_hidden_layers)
        .map(|i| {
            let p = format!("encoder.layer.{i}");
            Ok(Layer {
                query: w.linear(&format!("{p}.attention.self.query"))?,
                key: w.linear(&format!("{p}.attention.self.key"))?,
                value: w.linear(&format!("{p}.attention.self.value"))?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"))?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), eps)?,
                intermediate: w.linear(&format!("{p}.intermediate.dense"))?,
                output: w.linear(&format!("{p}.output.dense"))?,
                out_norm: w.norm(&format!("{p}.output.LayerNorm"), eps)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let model = BertEncoder {
        cfg: f.model_cfg,
        word: WordTable::Dense(w.get("embeddings.word_embeddings.weight")?),
        position: w.get("embeddings.position_embeddings.weight")?,
        token_type: w.get("embeddings.token_type_embeddings.weight")?,
        embed_norm: w.norm("embeddings.LayerNorm", eps)?,
        device: device.clone(),
        layers,
        heads: f.cfg.num_attention_heads,
        pooling: f.pooling,
        normalize: f.normalize,
        cls,
        sep,
        pad,
    };
    Ok(LoadedModel::new(Box::new(model), tokenizer, f.info))
}
