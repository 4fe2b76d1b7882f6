//! Hugging Face safetensors folders of Llama-family decoders (`config.json`, the tokenizer,
//! `*.safetensors` shards), read through the GGUF tensor names the decoder asks for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::QMatMul;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::card::{LoadedModel, ModelCard};
use super::llama::Llama;
use super::spec::{
    LoadOptions, ModelConfig, ModelInfo, ModelKind, RopeScaling, RopeStyle, WeightSource,
};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

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

/// Tensors outside the layers: GGUF name, Hugging Face name (without `.weight`).
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// A layer's tensors, as llama.cpp's converter renames them.
const LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// `blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`.
pub(crate) fn hf_tensor_name(gguf: &str) -> String {
    let (base, suffix) = gguf.rsplit_once('.').unwrap_or((gguf, ""));
    let renamed = match base.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        Some((layer, part)) => {
            let part = LAYER_NAMES
                .iter()
                .find(|(g, _)| *g == part)
                .map_or(part, |(_, hf)| hf);
            format!("model.layers.{layer}.{part}")
        }
        None => match GLOBAL_NAMES.iter().find(|(g, _)| *g == base) {
            Some((_, hf)) => (*hf).to_owned(),
            None => return gguf.to_owned(),
        },
    };
    format!("{renamed}.{suffix}")
}

/// `model.layers.3.self_attn.q_proj.weight` -> (`blk.3.attn_q.weight`, Some(3)).
pub(crate) fn gguf_tensor_name(hf: &str) -> (String, Option<usize>) {
    let (base, suffix) = hf.rsplit_once('.').unwrap_or((hf, ""));
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == base) {
        return (format!("{g}.{suffix}"), None);
    }
    let rest = base.strip_prefix("model.layers.").unwrap_or(base);
    let (layer, part) = rest.split_once('.').unwrap_or(("0", rest));
    let part = LAYER_NAMES
        .iter()
        .find(|(_, h)| *h == part)
        .map_or(part, |(g, _)| g);
    (format!("blk.{layer}.{part}.{suffix}"), layer.parse().ok())
}

struct SafetensorsSource {
    st: MmapedSafetensors,
    device: Device,
    dtype: DType,
    tied: bool,
}

impl SafetensorsSource {
    fn load(&self, name: &str) -> Result<Tensor> {
        let hf = hf_tensor_name(name);
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
        self.st.get(&hf_tensor_name(name)).is_ok()
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

/// What the folder is; the headers are small and the mmap reads no weights.
pub(super) fn inspect(dir: &Path) -> Result<ModelInfo> {
    Ok(load_safetensors_parts(dir, &Device::Cpu, usize::MAX)?.info)
}

pub(super) fn card(dir: &Path) -> Result<ModelCard> {
    let parts = load_safetensors_parts(dir, &Device::Cpu, usize::MAX)?;
    Ok(ModelCard::decoder(parts.info, &parts.tokenizer))
}

/// Everything of a safetensors folder short of the weights themselves (they stay mapped).
struct SafetensorsParts {
    src: SafetensorsSource,
    cfg: ModelConfig,
    tokenizer: Tokenizer,
    info: ModelInfo,
}

pub(super) fn load(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let mut parts = load_safetensors_parts(dir, &opts.device, opts.max_context)?;
    let model = Llama::load(&mut parts.src, parts.cfg, &opts.device, opts.simd)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_round_trip() {
        for hf in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.11.self_attn.q_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.3.post_attention_layernorm.weight",
        ] {
            let (gguf, _) = gguf_tensor_name(hf);
            assert_eq!(hf_tensor_name(&gguf), hf, "{gguf}");
        }
        assert_eq!(
            gguf_tensor_name("model.layers.3.self_attn.q_proj.weight"),
            ("blk.3.attn_q.weight".to_owned(), Some(3))
        );
        assert_eq!(
            hf_tensor_name("token_embd.weight"),
            "model.embed_tokens.weight"
        );
    }
}
