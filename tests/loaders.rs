//! Both loaders exercised for real: the test writes a tiny Llama with random weights as a
//! Hugging Face safetensors folder (f32/f16/bf16) and as GGUF files (F32 and every quantization
//! type Llama-3.2 GGUFs use), then checks they all load and compute the same function.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candlelight::engine::{self, LoadOptions, LoadedModel};
use rand::{rngs::StdRng, Rng, SeedableRng};

const HIDDEN: usize = 256; // K-quants need rows that are multiples of 256
const FFN: usize = 512;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const THETA: f32 = 10_000.0;

struct Rope3 {
    factor: f32,
    low: f32,
    high: f32,
    original: usize,
}

/// Random weights in the Hugging Face layout (`model.layers.N....`, Q/K rows in halves order).
fn hf_weights(vocab: usize) -> HashMap<String, Tensor> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut t = |shape: (usize, usize), scale: f32| {
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let mut w = HashMap::new();
    w.insert("model.embed_tokens.weight".into(), t((vocab, HIDDEN), 0.5));
    w.insert(
        "model.norm.weight".into(),
        (t((1, HIDDEN), 0.1) + 1.0).unwrap().squeeze(0).unwrap(),
    );
    let s = 1.0 / (HIDDEN as f32).sqrt() * 1.7;
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        for (name, shape) in [
            ("self_attn.q_proj", (HIDDEN, HIDDEN)),
            ("self_attn.k_proj", (KV_HEADS * HEAD_DIM, HIDDEN)),
            ("self_attn.v_proj", (KV_HEADS * HEAD_DIM, HIDDEN)),
            ("self_attn.o_proj", (HIDDEN, HIDDEN)),
            ("mlp.gate_proj", (FFN, HIDDEN)),
            ("mlp.up_proj", (FFN, HIDDEN)),
            ("mlp.down_proj", (HIDDEN, FFN)),
        ] {
            w.insert(format!("{p}.{name}.weight"), t(shape, s));
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let v = (t((1, HIDDEN), 0.1) + 1.0).unwrap().squeeze(0).unwrap();
            w.insert(format!("{p}.{norm}.weight"), v);
        }
    }
    w
}

fn write_safetensors(
    dir: &Path,
    w: &HashMap<String, Tensor>,
    dtype: DType,
    rope: Option<&Rope3>,
    tok: &LoadedModel,
) {
    std::fs::create_dir_all(dir).unwrap();
    let converted: HashMap<String, Tensor> = w
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap()))
        .collect();
    candle_core::safetensors::save(&converted, dir.join("model.safetensors")).unwrap();
    let torch_dtype = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    };
    let rope_scaling = match rope {
        Some(r) => serde_json::json!({"rope_type": "llama3", "factor": r.factor,
            "low_freq_factor": r.low, "high_freq_factor": r.high,
            "original_max_position_embeddings": r.original}),
        None => serde_json::Value::Null,
    };
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "vocab_size": tok.tokenizer.vocab_size(), "rms_norm_eps": 1e-5, "rope_theta": THETA,
        "rope_scaling": rope_scaling, "max_position_embeddings": 8192,
        "tie_word_embeddings": true, "torch_dtype": torch_dtype,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    tok.tokenizer
        .save_json(&dir.join("tokenizer.json"))
        .unwrap();
    let tc = serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "chat_template": tok.card.info.chat_template});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

/// llama.cpp's converter permutes Q/K rows so that interleaved RoPE applies.
fn permute(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((heads, 2, out / heads / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

/// Llama 3 frequency divisors as llama.cpp's converter writes them to `rope_freqs.weight`,
/// written here independently of the engine's own implementation.
fn llama3_rope_freqs(r: &Rope3) -> Vec<f32> {
    let low_wavelen = r.original as f32 / r.low;
    let high_wavelen = r.original as f32 / r.high;
    (0..HEAD_DIM / 2)
        .map(|i| {
            let freq = 1.0 / THETA.powf(2.0 * i as f32 / HEAD_DIM as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                r.factor
            } else {
                let smooth = (r.original as f32 / wavelen - r.low) / (r.high - r.low);
                1.0 / ((1.0 - smooth) / r.factor + smooth)
            }
        })
        .collect()
}

fn write_gguf(
    path: &Path,
    w: &HashMap<String, Tensor>,
    quant: GgmlDType,
    rope: Option<&Rope3>,
    ctx: u32,
) {
    let real = common::test_model_path();
    let mut reader = std::io::BufReader::new(File::open(&real).unwrap());
    let content = gguf_file::Content::read(&mut reader).unwrap();
    use gguf_file::Value as V;
    let mut md: Vec<(String, V)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.extend([
        ("general.architecture".into(), V::String("llama".into())),
        ("llama.block_count".into(), V::U32(LAYERS as u32)),
        ("llama.context_length".into(), V::U32(ctx)),
        ("llama.embedding_length".into(), V::U32(HIDDEN as u32)),
        ("llama.feed_forward_length".into(), V::U32(FFN as u32)),
        ("llama.attention.head_count".into(), V::U32(HEADS as u32)),
        (
            "llama.attention.head_count_kv".into(),
            V::U32(KV_HEADS as u32),
        ),
        ("llama.rope.freq_base".into(), V::F32(THETA)),
        ("llama.rope.dimension_count".into(), V::U32(HEAD_DIM as u32)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            V::F32(1e-5),
        ),
    ]);
    let q = |t: &Tensor, dt: GgmlDType| QTensor::quantize(t, dt).unwrap();
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            q(&w["model.embed_tokens.weight"], quant),
        ),
        (
            "output_norm.weight".into(),
            q(&w["model.norm.weight"], GgmlDType::F32),
        ),
    ];
    if let Some(r) = rope {
        let f = Tensor::new(llama3_rope_freqs(r).as_slice(), &Device::Cpu).unwrap();
        tensors.push(("rope_freqs.weight".into(), q(&f, GgmlDType::F32)));
    }
    for i in 0..LAYERS {
        let hf = |n: &str| &w[&format!("model.layers.{i}.{n}.weight")];
        let b = |n: &str| format!("blk.{i}.{n}.weight");
        tensors.extend([
            (
                b("attn_q"),
                q(&permute(hf("self_attn.q_proj"), HEADS), quant),
            ),
            (
                b("attn_k"),
                q(&permute(hf("self_attn.k_proj"), KV_HEADS), quant),
            ),
            (b("attn_v"), q(hf("self_attn.v_proj"), quant)),
            (b("attn_output"), q(hf("self_attn.o_proj"), quant)),
            (b("ffn_gate"), q(hf("mlp.gate_proj"), quant)),
            (b("ffn_up"), q(hf("mlp.up_proj"), quant)),
            (b("ffn_down"), q(hf("mlp.down_proj"), quant)),
            (b("attn_norm"), q(hf("input_layernorm"), GgmlDType::F32)),
            (
                b("ffn_norm"),
                q(hf("post_attention_layernorm"), GgmlDType::F32),
            ),
        ]);
    }
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}

fn open(path: &Path) -> LoadedModel {
    common::init_threads();
    engine::load(
        path,
        &LoadOptions {
            device: Device::Cpu,
            max_context: 4096,
            exact_weights: false,
            simd: Default::default(),
        },
    )
    .unwrap()
}

/// Logits of every position of a fixed prompt, flattened.
fn logits(lm: &LoadedModel) -> Vec<f32> {
    let prompt = lm
        .tokenizer
        .encode("Die Stadtwerke München schicken eine Rechnung über 144,34 EUR.")
        .unwrap();
    let mut cache = lm.model.new_cache(256).unwrap();
    // Half the prompt at once, then the rest token by token: exercises the cache too.
    let half = prompt.len() / 2;
    let mut rows = vec![lm.model.forward_all(&prompt[..half], &mut cache).unwrap()];
    for t in &prompt[half..] {
        rows.push(lm.model.forward_all(&[*t], &mut cache).unwrap());
    }
    Tensor::cat(&rows, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn safetensors_and_gguf_compute_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    {
        let guard = common::model();
        let st = dir.path().join("st-f32");
        let w = hf_weights(guard.tokenizer.vocab_size());
        write_safetensors(&st, &w, DType::F32, None, &guard);
        for dt in [DType::F16, DType::BF16] {
            write_safetensors(&dir.path().join(format!("st-{dt:?}")), &w, dt, None, &guard);
        }
        write_gguf(&dir.path().join("f32.gguf"), &w, GgmlDType::F32, None, 8192);
    }
    let st = open(&dir.path().join("st-f32"));
    assert_eq!(st.card.info.format, "safetensors");
    assert_eq!(st.card.template.name(), "chatml");
    let gguf = open(&dir.path().join("f32.gguf"));
    let (a, b) = (logits(&st), logits(&gguf));
    assert!(
        max_abs_diff(&a, &b) < 1e-3,
        "HF layout vs GGUF layout: {}",
        max_abs_diff(&a, &b)
    );
    for dt in ["F16", "BF16"] {
        let lm = open(&dir.path().join(format!("st-{dt}")));
        assert_eq!(lm.card.info.quantization, dt);
        let c = cosine(&a, &logits(&lm));
        assert!(c > 0.999, "{dt}: cosine {c}");
    }
}

#[test]
fn llama3_rope_scaling_matches_gguf_rope_freqs() {
    let dir = tempfile::tempdir().unwrap();
    // A small original context puts most frequencies in the scaled bands, so a mistake shows.
    let rope = Rope3 {
        factor: 8.0,
        low: 1.0,
        high: 4.0,
        original: 16,
    };
    {
        let guard = common::model();
        let w = hf_weights(guard.tokenizer.vocab_size());
        write_safetensors(&dir.path().join("st"), &w, DType::F32, Some(&rope), &guard);
        write_gguf(
            &dir.path().join("scaled.gguf"),
            &w,
            GgmlDType::F32,
            Some(&rope),
            131_072,
        );
        write_gguf(
            &dir.path().join("plain.gguf"),
            &w,
            GgmlDType::F32,
            None,
            131_072,
        );
    }
    let st = logits(&open(&dir.path().join("st")));
    let scaled_model = open(&dir.path().join("scaled.gguf"));
    // Context length comes from the metadata (no silent 4096 cap); positions from the option.
    assert_eq!(scaled_model.model.config().context_length, 131_072);
    assert_eq!(scaled_model.model.config().max_positions, 4096);
    let scaled = logits(&scaled_model);
    let plain = logits(&open(&dir.path().join("plain.gguf")));
    assert!(
        max_abs_diff(&st, &scaled) < 1e-3,
        "{}",
        max_abs_diff(&st, &scaled)
    );
    assert!(
        max_abs_diff(&plain, &scaled) > 1e-2,
        "scaling must change the result"
    );
}

#[test]
fn every_llama_gguf_quantization_loads_and_stays_close() {
    let dir = tempfile::tempdir().unwrap();
    // Uniform random weights are the worst case for 4-bit blocks; real weights fare better.
    let types = [
        (GgmlDType::F16, 0.9999),
        (GgmlDType::Q8_0, 0.999),
        (GgmlDType::Q6K, 0.998),
        (GgmlDType::Q5K, 0.99),
        (GgmlDType::Q4K, 0.95),
        (GgmlDType::Q4_1, 0.95),
        (GgmlDType::Q4_0, 0.95),
    ];
    {
        let guard = common::model();
        let w = hf_weights(guard.tokenizer.vocab_size());
        write_gguf(&dir.path().join("F32.gguf"), &w, GgmlDType::F32, None, 8192);
        for (t, _) in types {
            write_gguf(&dir.path().join(format!("{t:?}.gguf")), &w, t, None, 8192);
        }
    }
    let reference = logits(&open(&dir.path().join("F32.gguf")));
    for (t, min_cos) in types {
        let lm = open(&dir.path().join(format!("{t:?}.gguf")));
        assert_eq!(lm.card.info.quantization, format!("{t:?}"));
        let c = cosine(&reference, &logits(&lm));
        assert!(c > min_cos, "{t:?}: cosine {c} <= {min_cos}");
    }
}

#[test]
fn broken_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.gguf");
    std::fs::write(&p, b"definitely not a model").unwrap();
    let err = engine::load(
        &p,
        &LoadOptions {
            device: Device::Cpu,
            max_context: 64,
            exact_weights: false,
            simd: Default::default(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a GGUF file"), "{err}");
    let st = dir.path().join("folder");
    std::fs::create_dir(&st).unwrap();
    let err = engine::load(
        &st,
        &LoadOptions {
            device: Device::Cpu,
            max_context: 64,
            exact_weights: false,
            simd: Default::default(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn a_tokenizer_json_beside_a_gguf_file_wins_over_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    {
        let guard = common::model();
        let w = hf_weights(guard.tokenizer.vocab_size());
        write_gguf(&gguf, &w, GgmlDType::F32, None, 8192);
        // The sidecar: the same vocabulary plus a marker token only it has.
        let json_path = dir.path().join("tiny.tokenizer.json");
        guard.tokenizer.save_json(&json_path).unwrap();
        let mut j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        j["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
            "id": 49151, "content": "<|sidecar|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}));
        std::fs::write(&json_path, j.to_string()).unwrap();
    }
    let lm = open(&gguf);
    assert!(lm.tokenizer.special_id("<|sidecar|>").is_some());
    assert_eq!(
        lm.tokenizer.eos,
        Some(2),
        "EOS still from the GGUF metadata"
    );
    assert_eq!(
        lm.tokenizer.encode("Hello world").unwrap(),
        vec![19556, 905]
    );
    std::fs::remove_file(dir.path().join("tiny.tokenizer.json")).unwrap();
    assert_eq!(open(&gguf).tokenizer.special_id("<|sidecar|>"), None);
}
