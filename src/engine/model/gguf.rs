//! GGUF files (llama.cpp's format): metadata, tokenizer and quantized weights, as written
//! by llama.cpp's converter.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul};
use candle_core::{DType, Device, Tensor};

use super::card::{LoadedModel, ModelCard};
use super::llama::Llama;
use super::spec::{
    LoadOptions, ModelConfig, ModelInfo, ModelKind, RopeScaling, RopeStyle, WeightSource,
};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

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

/// The header of a GGUF file (metadata and tensor directory), the reader left after it.
fn read_header(path: &Path) -> Result<(gguf_file::Content, BufReader<File>, u64)> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let file_size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| EngineError::BadModel(format!("{}: not a GGUF file: {e}", path.display())))?;
    Ok((content, reader, file_size))
}

/// What the file is, from its header alone.
pub(super) fn inspect(path: &Path) -> Result<ModelInfo> {
    let (content, _, file_size) = read_header(path)?;
    Ok(gguf_info(path, &content, file_size))
}

/// The card, from the header (the tokenizer lives in the metadata).
pub(super) fn card(path: &Path) -> Result<ModelCard> {
    let (content, _, file_size) = read_header(path)?;
    let tokenizer = Tokenizer::for_gguf(path, &content)?;
    Ok(ModelCard::decoder(
        gguf_info(path, &content, file_size),
        &tokenizer,
    ))
}

pub(super) fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let (content, reader, file_size) = read_header(path)?;
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
    let model = Llama::load(&mut src, cfg, &opts.device, opts.simd)?;
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
