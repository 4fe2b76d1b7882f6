//! The Llama-family decoder (Llama 2/3.x, SmolLM, TinyLlama, ...): one model, one file.
//!
//! Weights come from a [`WeightSource`] (GGUF or safetensors, see `model.rs`); the math is the
//! same for both except for the RoPE pairing, which depends on how the file stores Q/K.

use candle_core::{DType, Device, Tensor, D};

use super::spec::{LanguageModel, ModelConfig, RopeStyle, WeightSource};
use crate::engine::kernels::{self, SimdLevel, Weight};
use crate::engine::kv_cache::KvCache;
use crate::engine::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

struct Layer {
    attn_norm: Tensor,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    ffn_norm: Tensor,
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
}

pub struct Llama {
    cfg: ModelConfig,
    embed: Weight,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Weight,
    /// RoPE tables for positions `0..cfg.max_positions`, each `(positions, head_dim / 2)`.
    cos: Tensor,
    sin: Tensor,
    rope_style: RopeStyle,
    device: Device,
    /// Activation dtype: f32 on CPU; the weights' float type for unquantized weights on a GPU.
    act_dtype: DType,
}

impl Llama {
    pub fn load(
        src: &mut dyn WeightSource,
        cfg: ModelConfig,
        device: &Device,
        simd: SimdLevel,
    ) -> Result<Self> {
        let act_dtype = src.activation_dtype();
        let embed = Weight::new(src.matrix("token_embd.weight")?, simd)?;
        // Tied embeddings (SmolLM2, Llama 3.2 1B/3B): no separate output matrix in the file;
        // both uses share one copy.
        let lm_head = if src.contains("output.weight") {
            Weight::new(src.matrix("output.weight")?, simd)?
        } else {
            embed.clone()
        };
        let norm = src.vector("output_norm.weight", act_dtype)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: src.vector(&format!("{p}.attn_norm.weight"), act_dtype)?,
                wq: Weight::new(src.matrix(&format!("{p}.attn_q.weight"))?, simd)?,
                wk: Weight::new(src.matrix(&format!("{p}.attn_k.weight"))?, simd)?,
                wv: Weight::new(src.matrix(&format!("{p}.attn_v.weight"))?, simd)?,
                wo: Weight::new(src.matrix(&format!("{p}.attn_output.weight"))?, simd)?,
                ffn_norm: src.vector(&format!("{p}.ffn_norm.weight"), act_dtype)?,
                w_gate: Weight::new(src.matrix(&format!("{p}.ffn_gate.weight"))?, simd)?,
                w_up: Weight::new(src.matrix(&format!("{p}.ffn_up.weight"))?, simd)?,
                w_down: Weight::new(src.matrix(&format!("{p}.ffn_down.weight"))?, simd)?,
            });
        }
        let freq_factors = src.rope_freq_factors()?;
        let (cos, sin) = rope_tables(&cfg, freq_factors.as_deref(), device, act_dtype)?;
        Ok(Self {
            rope_style: src.rope_style(),
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
            act_dtype,
        })
    }

    fn rope(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        Ok(match self.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, &cos, &sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(x, &cos, &sin)?,
        })
    }

    fn attention(
        &self,
        layer: &Layer,
        idx: usize,
        x: &Tensor,
        pos: usize,
        cache: &mut KvCache,
        mask: &mut Option<Tensor>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let seq = x.dim(0)?;
        let (hd, nh, nkv) = (c.head_dim, c.n_head, c.n_kv_head);
        let n_rep = nh / nkv;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((1, seq, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = self.rope(&heads(layer.wq.forward(x)?, nh)?, pos)?;
        let k = self.rope(&heads(layer.wk.forward(x)?, nkv)?, pos)?;
        let v = heads(layer.wv.forward(x)?, nkv)?;
        let (k, v) = cache.append(idx, &k, &v)?;
        let kv_len = k.dim(1)?;
        if let Some(y) = cpu_attention(&q, &k, &v, pos, (nh, nkv, hd))? {
            return layer.wo.forward(&y);
        }

        // Grouped-query attention without copying K/V: the n_rep query heads that share one KV
        // head are stacked along the row axis, so one batched matmul per KV head does the work.
        let q = q.reshape((nkv, n_rep * seq, hd))?;
        let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let att = if seq > 1 {
            // Built on the host once per forward pass and uploaded once, not once per layer.
            let mask = match mask {
                Some(m) => m,
                None => mask.insert(causal_mask(seq, pos, kv_len, &self.device, att.dtype())?),
            };
            att.reshape((nkv, n_rep, seq, kv_len))?
                .broadcast_add(mask)?
                .reshape((nkv, n_rep * seq, kv_len))?
        } else {
            att
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?; // (nkv, n_rep * seq, hd)
        let y = y
            .reshape((nh, seq, hd))?
            .transpose(0, 1)?
            .reshape((seq, nh * hd))?;
        layer.wo.forward(&y)
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, w, self.cfg.rms_eps as f32)?)
    }

    /// Runs the decoder over `tokens`, appending to `cache`; returns the hidden states after
    /// the final norm for the positions selected by `rows` (`None` = all).
    fn hidden(&self, tokens: &[u32], cache: &mut KvCache, last_only: bool) -> Result<Tensor> {
        if tokens.is_empty() {
            return Err(EngineError::InvalidInput("no tokens to evaluate".into()));
        }
        let pos = cache.len();
        if pos + tokens.len() > self.cfg.max_positions {
            return Err(EngineError::ContextOverflow {
                needed: pos + tokens.len(),
                limit: self.cfg.max_positions,
            });
        }
        let mut x = self
            .embed
            .embedding(tokens, &self.device)?
            .to_dtype(self.act_dtype)?;
        let mut mask = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = self.rms_norm(&x, &layer.attn_norm)?;
            x = (x + self.attention(layer, i, &h, pos, cache, &mut mask)?)?;
            let h = self.rms_norm(&x, &layer.ffn_norm)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            x = (x + layer.w_down.forward(&(gate * up)?)?)?;
        }
        cache.advance(tokens.len());
        let x = if last_only {
            x.narrow(0, tokens.len() - 1, 1)?
        } else {
            x
        };
        self.rms_norm(&x, &self.norm)
    }
}

impl LanguageModel for Llama {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        let capacity = capacity.min(self.cfg.max_positions);
        KvCache::new(
            self.cfg.n_layer,
            self.cfg.n_kv_head,
            self.cfg.head_dim,
            capacity,
            self.act_dtype,
            &self.device,
        )
    }

    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let h = self.hidden(tokens, cache, true)?;
        let logits = self.lm_head.forward(&h)?;
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?)
    }

    fn forward_all(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let h = self.hidden(tokens, cache, false)?;
        Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
    }

    fn embed(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let h = self.hidden(tokens, cache, false)?.to_dtype(DType::F32)?;
        Ok(h.mean(0)?)
    }
}

/// Causal attention by our kernel over the cache in place, when the tensors are f32 on the CPU
/// (`None` otherwise: candle's path runs). `q` is `(1, n_head, seq, head_dim)`; `k`/`v` are the
/// cache's views `(n_kv_head, pos + seq, head_dim)` into its `(n_kv_head, capacity, head_dim)`
/// buffers. Returns `(seq, n_head * head_dim)`.
fn cpu_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: usize,
    (nh, nkv, hd): (usize, usize, usize),
) -> Result<Option<Tensor>> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 || k.dtype() != DType::F32 {
        return Ok(None);
    }
    let q_flat: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (k_store, k_layout) = k.storage_and_layout();
    let (v_store, v_layout) = v.storage_and_layout();
    let (candle_core::Storage::Cpu(ks), candle_core::Storage::Cpu(vs)) = (&*k_store, &*v_store)
    else {
        return Ok(None);
    };
    // The capacity of a view that starts a contiguous (nkv, capacity, hd) buffer: strides
    // (capacity*hd, hd, 1), offset 0.
    let capacity = |data: &'_ [f32], layout: &candle_core::Layout| -> Option<usize> {
        let (st, dims) = (layout.stride(), layout.dims());
        let cap = st.first()? / hd;
        (st.len() == 3
            && st[1] == hd
            && st[2] == 1
            && st[0].is_multiple_of(hd)
            && dims[0] == nkv
            && layout.start_offset() == 0
            && data.len() >= nkv * cap * hd)
            .then_some(cap)
    };
    let (kd, vd) = (ks.as_slice::<f32>()?, vs.as_slice::<f32>()?);
    let (Some(k_cap), Some(v_cap)) = (capacity(kd, k_layout), capacity(vd, v_layout)) else {
        return Ok(None);
    };
    let len = k_layout.dims()[1];
    let seq = q.dim(2)?;
    let cache = |data, capacity| kernels::attention::CacheView {
        data,
        capacity,
        len,
    };
    let out = kernels::attention::causal_attention(
        &q_flat,
        &cache(kd, k_cap),
        &cache(vd, v_cap),
        pos,
        seq,
        nh,
        nkv,
        hd,
    );
    Ok(Some(Tensor::from_vec(out, (seq, nh * hd), q.device())?))
}

/// `(seq, kv_len)` additive mask: query `i` (absolute position `pos + i`) sees keys `0..=pos+i`.
fn causal_mask(seq: usize, pos: usize, kv_len: usize, dev: &Device, dt: DType) -> Result<Tensor> {
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..kv_len).map(move |j| if j <= pos + i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, kv_len), dev)?.to_dtype(dt)?)
}

/// Inverse frequencies of RoPE, with Llama 3.x frequency scaling or GGUF `rope_freqs` applied.
pub(crate) fn rope_inv_freqs(cfg: &ModelConfig, freq_factors: Option<&[f32]>) -> Vec<f32> {
    let dim = cfg.rope_dim;
    let mut freqs: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / cfg.rope_theta.powf(i as f32 / dim as f32))
        .collect();
    // GGUF files carry the scaling precomputed (llama.cpp `rope_freqs`); config.json names it.
    let computed;
    let divisors = match (freq_factors, &cfg.rope_scaling) {
        (Some(factors), _) => factors,
        (None, Some(scaling)) => {
            computed = scaling.divisors(cfg.rope_theta, dim);
            &computed[..]
        }
        (None, None) => return freqs,
    };
    for (f, d) in freqs.iter_mut().zip(divisors) {
        *f /= d;
    }
    freqs
}

fn rope_tables(
    cfg: &ModelConfig,
    freq_factors: Option<&[f32]>,
    dev: &Device,
    dt: DType,
) -> Result<(Tensor, Tensor)> {
    let inv = rope_inv_freqs(cfg, freq_factors);
    let half = inv.len();
    let n = cfg.max_positions;
    let inv = Tensor::from_vec(inv, (1, half), dev)?;
    let pos = Tensor::arange(0u32, n as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?;
    let angles = pos.broadcast_mul(&inv)?;
    // rope_dim may be smaller than head_dim (partial rotary); Llama uses the full head.
    let cos = angles.cos()?.to_dtype(dt)?;
    let sin = angles.sin()?.to_dtype(dt)?;
    debug_assert_eq!(cos.dim(D::Minus1)?, half);
    Ok((cos, sin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::spec::RopeScaling;

    fn cfg(scaling: Option<RopeScaling>) -> ModelConfig {
        ModelConfig {
            architecture: "llama".into(),
            hidden_size: 2048,
            intermediate_size: 8192,
            n_layer: 1,
            n_head: 32,
            n_kv_head: 8,
            head_dim: 64,
            rope_dim: 64,
            vocab_size: 10,
            rms_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: scaling,
            context_length: 131_072,
            max_positions: 16,
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        let plain = rope_inv_freqs(&cfg(None), None);
        let scaled = rope_inv_freqs(
            &cfg(Some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context: 8192,
            })),
            None,
        );
        assert_eq!(plain[0], scaled[0], "highest frequency is untouched");
        let last = plain.len() - 1;
        assert!((plain[last] / 32.0 - scaled[last]).abs() < 1e-12);
        // In the smooth band the result lies strictly between the two extremes.
        let mid = (0..plain.len())
            .find(|&i| scaled[i] != plain[i] && (scaled[i] - plain[i] / 32.0).abs() > 1e-12)
            .expect("a frequency in the interpolated band");
        assert!(scaled[mid] < plain[mid] && scaled[mid] > plain[mid] / 32.0);
    }

    #[test]
    fn gguf_freq_factors_divide_frequencies() {
        let plain = rope_inv_freqs(&cfg(None), None);
        let factors = vec![2.0f32; plain.len()];
        let scaled = rope_inv_freqs(&cfg(None), Some(&factors));
        for (p, s) in plain.iter().zip(scaled) {
            assert!((p / 2.0 - s).abs() < 1e-12);
        }
    }

    #[test]
    fn causal_mask_respects_cached_prefix() {
        let m = causal_mask(2, 3, 5, &Device::Cpu, DType::F32).unwrap();
        let m: Vec<Vec<f32>> = m.to_vec2().unwrap();
        assert_eq!(m[0], vec![0.0, 0.0, 0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(m[1], vec![0.0; 5]);
    }

    /// The KV cache's views are what our attention kernel reads in place; were the check to
    /// refuse them, every CPU forward pass would silently fall back to candle's path.
    #[test]
    fn cpu_attention_takes_the_kv_cache_views() {
        let (nh, nkv, hd, seq) = (4, 2, 8, 3);
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, nkv, hd, 16, DType::F32, &dev).unwrap();
        let kv = Tensor::ones((1, nkv, seq, hd), DType::F32, &dev).unwrap();
        let (k, v) = cache.append(0, &kv, &kv).unwrap();
        let q = Tensor::ones((1, nh, seq, hd), DType::F32, &dev).unwrap();
        let y = cpu_attention(&q, &k, &v, 0, (nh, nkv, hd)).unwrap();
        let y: Vec<Vec<f32>> = y.expect("our kernel runs").to_vec2().unwrap();
        // All values are 1: every output is the mean of ones.
        assert_eq!(y, vec![vec![1.0; nh * hd]; seq]);
    }
}
