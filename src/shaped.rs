//! Models with a real architecture's exact shape and random weights (`candlelight dev
//! make-model`). Speed and memory do not depend on weight values, so such a file measures
//! production throughput where the production weights cannot be fetched. Its output is noise:
//! it says nothing about quality, and nothing may present it as if it did.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::engine::model::{gguf_tensor_name, RopeScaling};

#[derive(Debug, thiserror::Error)]
pub enum ShapedError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: String, msg: String },
}

type Result<T> = std::result::Result<T, ShapedError>;

/// Llama 3 RoPE frequency scaling (`rope_scaling: {rope_type: llama3}` in config.json).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context: usize,
}

/// A Llama-family configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub rope_theta: f32,
    pub rope: Option<Llama3Rope>,
    pub context: usize,
    pub rms_eps: f32,
}

impl Shape {
    /// Llama-3.2-1B(-Instruct) exactly, as its config.json states it.
    pub fn llama32_1b() -> Self {
        Self {
            name: "llama3.2-1b",
            hidden: 2048,
            intermediate: 8192,
            layers: 16,
            heads: 32,
            kv_heads: 8,
            vocab: 128_256,
            rope_theta: 500_000.0,
            rope: Some(Llama3Rope {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context: 8192,
            }),
            context: 131_072,
            rms_eps: 1e-5,
        }
    }

    /// Llama 3.2's vocabulary, RoPE and head layout with tiny layers: what tests can afford.
    /// (K-quants need rows that are multiples of 256.)
    pub fn llama32_tiny() -> Self {
        Self {
            name: "llama3.2-tiny",
            hidden: 256,
            intermediate: 512,
            layers: 2,
            heads: 4,
            kv_heads: 1,
            ..Self::llama32_1b()
        }
    }

    pub fn by_name(name: &str) -> Option<Self> {
        [Self::llama32_1b(), Self::llama32_tiny()]
            .into_iter()
            .find(|s| s.name == name)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn parameter_count(&self) -> usize {
        let kv = self.kv_heads * self.head_dim();
        let attn = 2 * self.hidden * self.hidden + 2 * kv * self.hidden;
        let ffn = 3 * self.hidden * self.intermediate;
        self.vocab * self.hidden + self.layers * (attn + ffn + 2 * self.hidden) + self.hidden
    }

    /// Every tensor in the Hugging Face layout: name, shape, and whether it is a norm.
    fn hf_tensors(&self) -> Vec<(String, Vec<usize>, bool)> {
        let (h, kv) = (self.hidden, self.kv_heads * self.head_dim());
        let mut out = vec![
            (
                "model.embed_tokens.weight".into(),
                vec![self.vocab, h],
                false,
            ),
            ("model.norm.weight".into(), vec![h], true),
        ];
        for i in 0..self.layers {
            let p = format!("model.layers.{i}");
            for (n, shape) in [
                ("self_attn.q_proj", vec![h, h]),
                ("self_attn.k_proj", vec![kv, h]),
                ("self_attn.v_proj", vec![kv, h]),
                ("self_attn.o_proj", vec![h, h]),
                ("mlp.gate_proj", vec![self.intermediate, h]),
                ("mlp.up_proj", vec![self.intermediate, h]),
                ("mlp.down_proj", vec![h, self.intermediate]),
            ] {
                out.push((format!("{p}.{n}.weight"), shape, false));
            }
            for n in ["input_layernorm", "post_attention_layernorm"] {
                out.push((format!("{p}.{n}.weight"), vec![h], true));
            }
        }
        out
    }
}

/// Weight values: HF's initializer (std 0.02, here uniform with that std) for matrices, 1 for
/// norms, so activations keep a realistic scale through the layers.
fn random_tensor(rng: &mut StdRng, shape: &[usize], norm: bool) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = if norm {
        vec![1.0; n]
    } else {
        let a = 0.02 * 3f32.sqrt();
        (0..n).map(|_| rng.random_range(-a..a)).collect()
    };
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Which GGUF file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufMix {
    /// Every matrix Q8_0.
    Q8_0,
    /// llama.cpp's Q4_K_M recipe: Q4_K, with Q6_K for the embedding/output matrix and for
    /// attn_v/ffn_down in the first and last eighth of the layers and every third in between.
    Q4KM,
}

impl GgufMix {
    fn dtype(self, gguf_name: &str, layer: Option<usize>, layers: usize) -> GgmlDType {
        match self {
            GgufMix::Q8_0 => GgmlDType::Q8_0,
            GgufMix::Q4KM => {
                let more_bits = layer.is_some_and(|i| {
                    let eighth = layers / 8;
                    // The second test runs only when i >= eighth, so the subtraction is safe.
                    i < eighth || i >= 7 * layers / 8 || (i - eighth) % 3 == 2
                });
                let sensitive = gguf_name.contains("attn_v") || gguf_name.contains("ffn_down");
                if gguf_name == "token_embd.weight" || (sensitive && more_bits) {
                    GgmlDType::Q6K
                } else {
                    GgmlDType::Q4K
                }
            }
        }
    }

    /// llama.cpp's `general.file_type` for this mix.
    fn file_type(self) -> u32 {
        match self {
            GgufMix::Q8_0 => 7,
            GgufMix::Q4KM => 15,
        }
    }

    pub fn file_suffix(self) -> &'static str {
        match self {
            GgufMix::Q8_0 => "Q8_0",
            GgufMix::Q4KM => "Q4_K_M",
        }
    }
}

/// A chat template in Llama 3.2's layout (our own text): the engine recognises its control
/// tokens and knowledge-cutoff line and renders it natively.
const CHAT_TEMPLATE: &str = "{{- bos_token }}\
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}\
{{- 'Cutting Knowledge Date: December 2023\\n\\n' }}\
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] | trim }}{%- endif %}\
{{- '<|eot_id|>' }}\
{%- for m in messages if m['role'] != 'system' %}\
{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/// What a GGUF needs of a Hugging Face `tokenizer.json` (a byte-level BPE like Llama 3's).
struct BpeVocab {
    tokens: Vec<String>,
    /// llama.cpp token types: 1 normal, 3 control.
    types: Vec<i32>,
    merges: Vec<String>,
}

fn read_bpe_vocab(path: &Path, vocab_size: usize) -> Result<BpeVocab> {
    let bad = |msg: &str| ShapedError::Tokenizer {
        path: path.display().to_string(),
        msg: msg.to_owned(),
    };
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path)?).map_err(|e| bad(&e.to_string()))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(bad("not a BPE tokenizer"));
    }
    let mut by_id: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: usize, piece: &str, ty: i32| {
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some((piece.to_owned(), ty));
    };
    for (piece, id) in model["vocab"].as_object().ok_or_else(|| bad("no vocab"))? {
        put(id.as_u64().ok_or_else(|| bad("bad id"))? as usize, piece, 1);
    }
    for t in json["added_tokens"].as_array().into_iter().flatten() {
        let id = t["id"].as_u64().ok_or_else(|| bad("bad added token"))? as usize;
        let special = t["special"].as_bool().unwrap_or(false);
        put(
            id,
            t["content"].as_str().unwrap_or_default(),
            if special { 3 } else { 4 },
        );
    }
    // The Llama 3.2 family's tokenizer also lists Vision's `<|image|>` (id 128256) after the
    // 1B/3B models' 128,256 embedding rows; a file keeps only the ids its model can embed.
    by_id.truncate(vocab_size);
    let (tokens, types) = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or((format!("[PAD{i}]"), 5)))
        .unzip();
    let merges = model["merges"]
        .as_array()
        .ok_or_else(|| bad("no merges"))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) => {
                Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("malformed merges"))?;
    Ok(BpeVocab {
        tokens,
        types,
        merges,
    })
}

/// Writes a GGUF in llama.cpp's layout (Q/K rows permuted for interleaved RoPE, Llama 3
/// frequency divisors in `rope_freqs.weight`, the tokenizer in `tokenizer.ggml.*`).
pub fn write_gguf(
    shape: &Shape,
    tokenizer_json: &Path,
    mix: GgufMix,
    out: &Path,
    seed: u64,
) -> Result<()> {
    use gguf_file::Value as V;
    let vocab = read_bpe_vocab(tokenizer_json, shape.vocab)?;
    let id_of = |t: &str| vocab.tokens.iter().position(|x| x == t).map(|i| i as u32);
    let u32v = |n: usize| V::U32(n as u32);
    let mut md: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String("llama".into())),
        (
            "general.name".into(),
            V::String(format!("{} shape, random weights", shape.name)),
        ),
        ("general.file_type".into(), V::U32(mix.file_type())),
        ("llama.block_count".into(), u32v(shape.layers)),
        ("llama.context_length".into(), u32v(shape.context)),
        ("llama.embedding_length".into(), u32v(shape.hidden)),
        ("llama.feed_forward_length".into(), u32v(shape.intermediate)),
        ("llama.attention.head_count".into(), u32v(shape.heads)),
        ("llama.attention.head_count_kv".into(), u32v(shape.kv_heads)),
        ("llama.rope.freq_base".into(), V::F32(shape.rope_theta)),
        ("llama.rope.dimension_count".into(), u32v(shape.head_dim())),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            V::F32(shape.rms_eps),
        ),
        ("llama.vocab_size".into(), u32v(shape.vocab)),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("llama-bpe".into())),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(true)),
        (
            "tokenizer.chat_template".into(),
            V::String(CHAT_TEMPLATE.into()),
        ),
    ];
    for (key, token) in [
        ("tokenizer.ggml.bos_token_id", "<|begin_of_text|>"),
        ("tokenizer.ggml.eos_token_id", "<|eot_id|>"),
    ] {
        if let Some(id) = id_of(token) {
            md.push((key.into(), V::U32(id)));
        }
    }
    md.push((
        "tokenizer.ggml.tokens".into(),
        V::Array(vocab.tokens.into_iter().map(V::String).collect()),
    ));
    md.push((
        "tokenizer.ggml.token_type".into(),
        V::Array(vocab.types.into_iter().map(V::I32).collect()),
    ));
    md.push((
        "tokenizer.ggml.merges".into(),
        V::Array(vocab.merges.into_iter().map(V::String).collect()),
    ));

    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    if let Some(r) = shape.rope {
        let f = Tensor::new(llama3_rope_divisors(shape, r).as_slice(), &Device::Cpu)?;
        tensors.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&f, GgmlDType::F32)?,
        ));
    }
    for (hf_name, dims, norm) in shape.hf_tensors() {
        let (name, layer) = gguf_tensor_name(&hf_name);
        let mut t = random_tensor(&mut rng, &dims, norm)?;
        if name.ends_with("attn_q.weight") {
            t = permute_for_interleaved_rope(&t, shape.heads)?;
        } else if name.ends_with("attn_k.weight") {
            t = permute_for_interleaved_rope(&t, shape.kv_heads)?;
        }
        let dtype = if norm {
            GgmlDType::F32
        } else {
            mix.dtype(&name, layer, shape.layers)
        };
        tensors.push((name, QTensor::quantize(&t, dtype)?));
    }
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = BufWriter::new(File::create(out)?);
    gguf_file::write(&mut f, &md_refs, &t_refs)?;
    Ok(())
}

/// Writes a Hugging Face folder: bf16 `model.safetensors`, `config.json`, the tokenizer.
pub fn write_safetensors(
    shape: &Shape,
    tokenizer_json: &Path,
    out_dir: &Path,
    seed: u64,
) -> Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = HashMap::new();
    for (name, dims, norm) in shape.hf_tensors() {
        let t = random_tensor(&mut rng, &dims, norm)?.to_dtype(DType::BF16)?;
        weights.insert(name, t);
    }
    candle_core::safetensors::save(&weights, out_dir.join("model.safetensors"))?;
    let rope_scaling = shape.rope.map(|r| {
        serde_json::json!({"rope_type": "llama3", "factor": r.factor,
            "low_freq_factor": r.low_freq_factor, "high_freq_factor": r.high_freq_factor,
            "original_max_position_embeddings": r.original_context})
    });
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "head_dim": shape.head_dim(),
        "vocab_size": shape.vocab, "rms_norm_eps": shape.rms_eps, "rope_theta": shape.rope_theta,
        "rope_scaling": rope_scaling, "max_position_embeddings": shape.context,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    });
    std::fs::write(
        out_dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )?;
    write_tokenizer_json(tokenizer_json, shape.vocab, &out_dir.join("tokenizer.json"))?;
    let tc = serde_json::json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "add_bos_token": true, "chat_template": CHAT_TEMPLATE,
        "model_max_length": shape.context});
    std::fs::write(out_dir.join("tokenizer_config.json"), tc.to_string())?;
    Ok(())
}

/// A copy of `tokenizer.json` without added tokens past the model's vocabulary (see
/// `read_bpe_vocab`).
fn write_tokenizer_json(src: &Path, vocab_size: usize, dst: &Path) -> Result<()> {
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src)?)
        .map_err(|e| ShapedError::Tokenizer {
            path: src.display().to_string(),
            msg: e.to_string(),
        })?;
    if let Some(added) = json["added_tokens"].as_array_mut() {
        added.retain(|t| {
            t["id"]
                .as_u64()
                .is_some_and(|id| (id as usize) < vocab_size)
        });
    }
    std::fs::write(dst, json.to_string())?;
    Ok(())
}

/// llama.cpp's converter reorders Q/K rows from the halves pairing to interleaved pairs.
fn permute_for_interleaved_rope(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    Ok(w.reshape((heads, 2, out / heads / 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?)
}

/// Llama 3's per-frequency divisors, as the converter stores them in `rope_freqs.weight`.
fn llama3_rope_divisors(shape: &Shape, r: Llama3Rope) -> Vec<f32> {
    RopeScaling::Llama3 {
        factor: r.factor,
        low_freq_factor: r.low_freq_factor,
        high_freq_factor: r.high_freq_factor,
        original_context: r.original_context,
    }
    .divisors(shape.rope_theta, shape.head_dim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama32_1b_has_its_published_parameter_count() {
        // 1.24 B with tied embeddings (Meta's model card: 1.23 B).
        let n = Shape::llama32_1b().parameter_count();
        assert!((1_230_000_000..1_240_000_000).contains(&n), "{n}");
    }

    #[test]
    fn q4_k_m_recipe_gives_more_bits_where_llama_cpp_does() {
        let layers = 16;
        let v: Vec<GgmlDType> = (0..layers)
            .map(|i| GgufMix::Q4KM.dtype(&format!("blk.{i}.attn_v.weight"), Some(i), layers))
            .collect();
        let q6: Vec<usize> = (0..layers).filter(|i| v[*i] == GgmlDType::Q6K).collect();
        assert_eq!(q6, vec![0, 1, 4, 7, 10, 13, 14, 15]);
        assert_eq!(
            GgufMix::Q4KM.dtype("blk.4.attn_q.weight", Some(4), layers),
            GgmlDType::Q4K
        );
        assert_eq!(
            GgufMix::Q4KM.dtype("token_embd.weight", None, layers),
            GgmlDType::Q6K
        );
    }

    #[test]
    fn gguf_names_follow_llama_cpp() {
        assert_eq!(
            gguf_tensor_name("model.layers.12.mlp.down_proj.weight"),
            ("blk.12.ffn_down.weight".into(), Some(12))
        );
        assert_eq!(
            gguf_tensor_name("model.embed_tokens.weight"),
            ("token_embd.weight".into(), None)
        );
    }
}
