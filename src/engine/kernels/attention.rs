//! Attention for one new position (decode) on the CPU, straight over the preallocated KV cache.
//!
//! candle's path for this is a batched gemm per KV head, which packs (copies) the whole cached
//! K and V into its panel layout on every token and layer: at SmolLM2's 512-token contexts that
//! copy was a visible share of decode time. Here each query head reads its KV head's rows in
//! place: scores `q·k_j`, softmax, `Σ p_j v_j`. Roofline: every cached K and V value is read
//! once per token for 2 flops — memory-bound on the cache (f32: 46 KB per position for SmolLM2).

use super::matrix::has_avx2;

/// The cached keys or values of one layer, `(n_kv_head, capacity, head_dim)` row-major, of
/// which the first `len` positions per head are valid.
pub struct CacheView<'a> {
    pub data: &'a [f32],
    pub capacity: usize,
    pub len: usize,
}

impl<'a> CacheView<'a> {
    /// KV head `g`'s valid positions, `(len, head_dim)`.
    fn rows(&self, g: usize, head_dim: usize) -> &'a [f32] {
        let base = g * self.capacity * head_dim;
        &self.data[base..base + self.len * head_dim]
    }
}

/// `q` is `(n_head, head_dim)`; query head `h` attends with KV head `h / (n_head / n_kv_head)`.
/// Returns `(n_head, head_dim)`.
pub fn decode_attention(
    q: &[f32],
    k: &CacheView,
    v: &CacheView,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected.
        return unsafe { decode_attention_avx2(q, k, v, n_head, n_kv_head, head_dim) };
    }
    attention_body(q, k, v, n_head, n_kv_head, head_dim)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn decode_attention_avx2(
    q: &[f32],
    k: &CacheView,
    v: &CacheView,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
) -> Vec<f32> {
    // The same code, vectorized by the compiler with this function's 8-wide registers.
    attention_body(q, k, v, n_head, n_kv_head, head_dim)
}

#[inline(always)]
fn attention_body(
    q: &[f32],
    k: &CacheView,
    v: &CacheView,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
) -> Vec<f32> {
    let n_rep = n_head / n_kv_head;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let len = k.len;
    let mut out = vec![0f32; n_head * head_dim];
    let mut scores = vec![0f32; len];
    for (h, (qh, oh)) in q
        .chunks_exact(head_dim)
        .zip(out.chunks_exact_mut(head_dim))
        .enumerate()
    {
        let g = h / n_rep;
        for (s, kj) in scores
            .iter_mut()
            .zip(k.rows(g, head_dim).chunks_exact(head_dim))
        {
            *s = dot(qh, kj) * scale;
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        for (&p, vj) in scores
            .iter()
            .zip(v.rows(g, head_dim).chunks_exact(head_dim))
        {
            let p = p * inv;
            for (o, &x) in oh.iter_mut().zip(vj) {
                *o += p * x;
            }
        }
    }
    out
}

/// Eight independent partial sums, so the compiler may keep them in one vector register
/// (a single running sum would force it to add in order, one lane at a time).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Against candle's softmax(q Kᵀ / √d) V on the same data, grouped-query heads included,
    /// with capacity beyond the valid length (stale values there must not leak in).
    #[test]
    fn matches_candles_attention() {
        let mut rng = StdRng::seed_from_u64(3);
        for (nh, nkv, hd, cap, len) in [(9, 3, 64, 40, 17), (4, 4, 12, 8, 1), (32, 8, 64, 300, 257)]
        {
            let mut fill =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
            let (q, kd, vd) = (fill(nh * hd), fill(nkv * cap * hd), fill(nkv * cap * hd));
            let k = CacheView {
                data: &kd,
                capacity: cap,
                len,
            };
            let v = CacheView {
                data: &vd,
                capacity: cap,
                len,
            };
            let ours = decode_attention(&q, &k, &v, nh, nkv, hd);

            let dev = Device::Cpu;
            let kt = Tensor::from_vec(kd.clone(), (nkv, cap, hd), &dev).unwrap();
            let vt = Tensor::from_vec(vd.clone(), (nkv, cap, hd), &dev).unwrap();
            let (kt, vt) = (kt.narrow(1, 0, len).unwrap(), vt.narrow(1, 0, len).unwrap());
            let qt = Tensor::from_vec(q.clone(), (nkv, nh / nkv, hd), &dev).unwrap();
            let att = (qt.matmul(&kt.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
            let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
            let theirs: Vec<f32> = att
                .matmul(&vt.contiguous().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5,
                    "({nh},{nkv},{hd},{cap},{len}) [{i}] {a} vs {b}"
                );
            }
        }
    }
}
