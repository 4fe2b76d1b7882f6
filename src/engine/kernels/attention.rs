//! Causal attention on the CPU, straight over the preallocated KV cache: scores `q·k_j`,
//! softmax, `Σ p_j v_j`, for each query row against only the keys it may see.
//!
//! candle's path is a batched gemm per KV head plus an additive mask: it packs (copies) the
//! whole cached K and V into its panel layout on every call, builds and adds a `seq x kv_len`
//! mask, and computes the masked half of the scores too. At SmolLM2's 512-token contexts the
//! per-token copy was a visible share of decode time, and at 1,800-token prompts prefill fell
//! to 200 tok/s. Roofline: decode reads every cached K and V value once per token for 2 flops
//! (memory-bound on the cache, f32: 46 KB per position for SmolLM2); prefill is compute-bound
//! on the `q·k` and `p·v` multiply-adds, a head's K and V sitting in L2 (460 KB each at 1,800
//! positions) while its query rows pass.

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

/// Causal attention of `seq` new positions (absolute positions `pos..pos + seq`, already
/// written to the cache, so `k.len == v.len == pos + seq`). `q` is `(n_head, seq, head_dim)`;
/// query head `h` attends with KV head `h / (n_head / n_kv_head)`, row `i` to keys
/// `0..=pos + i`. Returns `(seq, n_head * head_dim)`.
///
/// Work is split into (head, block of 4 query rows) units on rayon; keys past a row's position
/// are never computed (the causal half candle's masked matmul computes and then throws away).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    q: &[f32],
    k: &CacheView,
    v: &CacheView,
    pos: usize,
    seq: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
) -> Vec<f32> {
    use rayon::prelude::*;
    let dims = Dims {
        pos,
        seq,
        n_rep: n_head / n_kv_head,
        head_dim,
    };
    let simd = has_avx2();
    let run = |h: usize, i0: usize| -> Vec<f32> {
        let rows = (seq - i0).min(BLOCK);
        #[cfg(target_arch = "x86_64")]
        if simd && (head_dim == 64 || head_dim == 128) {
            let g = h / dims.n_rep;
            let (keys, values) = (k.rows(g, head_dim), v.rows(g, head_dim));
            let mut out = vec![0f32; rows * head_dim];
            for (r, o) in out.chunks_exact_mut(head_dim).enumerate() {
                let i = i0 + r;
                let qi = &q[(h * seq + i) * head_dim..][..head_dim];
                let n = pos + i + 1;
                // SAFETY: AVX2 and FMA were detected; head_dim is 64 or 128 as dispatched.
                unsafe {
                    if head_dim == 64 {
                        row_avx2::<8>(qi, keys, values, n, o)
                    } else {
                        row_avx2::<16>(qi, keys, values, n, o)
                    }
                }
            }
            return out;
        }
        let _ = simd;
        if rows == 1 {
            unit::<1>(q, k, v, h, i0, &dims)
        } else {
            unit::<BLOCK>(q, k, v, h, i0, &dims)
        }
    };
    let units: Vec<(usize, usize)> = (0..n_head)
        .flat_map(|h| (0..seq).step_by(BLOCK).map(move |i0| (h, i0)))
        .collect();
    // One new position over a short cache is a few µs of work: not worth waking the pool.
    let parallel = n_head * k.len * head_dim * seq >= 1 << 18;
    let parts: Vec<Vec<f32>> = if parallel {
        units.par_iter().map(|&(h, i0)| run(h, i0)).collect()
    } else {
        units.iter().map(|&(h, i0)| run(h, i0)).collect()
    };
    let width = n_head * head_dim;
    let mut out = vec![0f32; seq * width];
    for (&(h, i0), part) in units.iter().zip(&parts) {
        for (r, row) in part.chunks_exact(head_dim).enumerate() {
            let at = (i0 + r) * width + h * head_dim;
            out[at..at + head_dim].copy_from_slice(row);
        }
    }
    out
}

/// Query rows per work unit.
const BLOCK: usize = 4;

struct Dims {
    pos: usize,
    seq: usize,
    n_rep: usize,
    head_dim: usize,
}

/// One query row (`C` chunks of 8: head_dim 64 or 128) against keys `0..n`: scores eight keys
/// at a time (eight running sums, reduced together by a horizontal-add tree), softmax, then
/// `out = Σ p_j v_j` with the output row held in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_avx2<const C: usize>(q: &[f32], keys: &[f32], values: &[f32], n: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let hd = 8 * C;
    assert!(q.len() == hd && out.len() == hd && keys.len() >= n * hd && values.len() >= n * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    // SAFETY: (all loads and stores) offsets stay below n * hd in keys/values (asserted above)
    // and below hd in q and out.
    let qv: [__m256; C] =
        std::array::from_fn(|c| unsafe { _mm256_loadu_ps(q.as_ptr().add(8 * c)) });
    let mut scores = vec![0f32; n];
    let mut j = 0;
    while j + 8 <= n {
        let acc: [__m256; 8] = std::array::from_fn(|t| {
            // SAFETY: (j + t) < n, so the key row starts inside keys (n * hd long).
            let kr = unsafe { keys.as_ptr().add((j + t) * hd) };
            let mut a = _mm256_setzero_ps();
            for (c, qc) in qv.iter().enumerate() {
                // SAFETY: 8 floats at 8 * c < hd within the key row.
                let k = unsafe { _mm256_loadu_ps(kr.add(8 * c)) };
                a = _mm256_fmadd_ps(*qc, k, a);
            }
            a
        });
        let h01 = _mm256_hadd_ps(acc[0], acc[1]);
        let h23 = _mm256_hadd_ps(acc[2], acc[3]);
        let h45 = _mm256_hadd_ps(acc[4], acc[5]);
        let h67 = _mm256_hadd_ps(acc[6], acc[7]);
        let (lo, hi) = (_mm256_hadd_ps(h01, h23), _mm256_hadd_ps(h45, h67));
        let sums = _mm256_add_ps(
            _mm256_permute2f128_ps(lo, hi, 0x20),
            _mm256_permute2f128_ps(lo, hi, 0x31),
        );
        let scaled = _mm256_mul_ps(sums, _mm256_set1_ps(scale));
        // SAFETY: j + 8 <= n = scores.len().
        unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(j), scaled) };
        j += 8;
    }
    for (t, s) in scores.iter_mut().enumerate().skip(j) {
        let kr = &keys[t * hd..(t + 1) * hd];
        *s = q.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale;
    }
    let max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for s in scores.iter_mut() {
        *s -= max;
    }
    exp_in_place(&mut scores);
    let inv = 1.0 / scores.iter().sum::<f32>();
    let mut acc = [_mm256_setzero_ps(); C];
    for (t, &p) in scores.iter().enumerate() {
        // SAFETY: t < n, so the value row starts inside values (n * hd long).
        let vr = unsafe { values.as_ptr().add(t * hd) };
        let p = _mm256_set1_ps(p * inv);
        for (c, a) in acc.iter_mut().enumerate() {
            // SAFETY: 8 floats at 8 * c < hd within the value row.
            let v = unsafe { _mm256_loadu_ps(vr.add(8 * c)) };
            *a = _mm256_fmadd_ps(p, v, *a);
        }
    }
    for (c, a) in acc.iter().enumerate() {
        // SAFETY: 8 floats at 8 * c < hd = out.len().
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), *a) };
    }
}

/// The portable version: rows `i0..i0 + R` (fewer at the end: the missing ones repeat the last
/// and are dropped) of head `h`, sharing each K and V row among them; returns `(rows, head_dim)`.
fn unit<const R: usize>(
    q: &[f32],
    k: &CacheView,
    v: &CacheView,
    h: usize,
    i0: usize,
    d: &Dims,
) -> Vec<f32> {
    let hd = d.head_dim;
    let rows = (d.seq - i0).min(R);
    let g = h / d.n_rep;
    let scale = 1.0 / (hd as f32).sqrt();
    let row = |r: usize| i0 + r.min(rows - 1);
    let qs: [&[f32]; R] = std::array::from_fn(|r| {
        let at = (h * d.seq + row(r)) * hd;
        &q[at..at + hd]
    });
    // Keys row r sees: 0..=pos + i.
    let visible: [usize; R] = std::array::from_fn(|r| d.pos + row(r) + 1);
    let n_keys = visible[R - 1];
    let (keys, values) = (k.rows(g, hd), v.rows(g, hd));
    let mut scores = vec![[0f32; R]; n_keys];
    for (s, kj) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
        *s = dot_rows(&qs, kj).map(|x| x * scale);
    }
    // Keys past a row's position (at most R - 1 of them) drop out of its softmax.
    for (r, &n) in visible.iter().enumerate() {
        for s in scores[n..].iter_mut() {
            s[r] = f32::NEG_INFINITY;
        }
    }
    let mut max = [f32::NEG_INFINITY; R];
    for s in &scores {
        for r in 0..R {
            max[r] = max[r].max(s[r]);
        }
    }
    for s in scores.iter_mut() {
        for r in 0..R {
            s[r] -= max[r];
        }
    }
    exp_in_place(scores.as_flattened_mut());
    let mut sum = [0f32; R];
    for s in &scores {
        for r in 0..R {
            sum[r] += s[r];
        }
    }
    let weights = sum.map(|s| 1.0 / s);
    let mut out = vec![0f32; R * hd];
    for (s, vj) in scores.iter().zip(values.chunks_exact(hd)) {
        for (r, o) in out.chunks_exact_mut(hd).enumerate() {
            let p = s[r] * weights[r];
            for (o, &x) in o.iter_mut().zip(vj) {
                *o += p * x;
            }
        }
    }
    out.truncate(rows * hd);
    out
}

/// `e^x` for `x <= 0` (softmax after subtracting the maximum), written so the compiler can turn
/// it into vector code: Cody-Waite reduction `x = n ln2 + r`, Cephes' degree-6 polynomial for
/// `e^r` (relative error ~1e-7), `2^n` from the exponent bits. Below -87 (and -inf) gives 0.
#[inline(always)]
fn exp_in_place(xs: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    for x in xs.iter_mut() {
        let v = x.max(-87.0);
        let n = (v * LOG2E + ROUND) - ROUND;
        let r = v - n * LN2_HI - n * LN2_LO;
        let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
            + 1.666_666_5e-1)
            * r
            + 0.5;
        let e = p * r * r + r + 1.0;
        let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
        *x = if *x < -87.0 { 0.0 } else { e * scale };
    }
}

/// `q_r · k` for every row, eight independent partial sums each (so the compiler may keep
/// them in vector registers; one running sum would force in-order adds).
fn dot_rows<const R: usize>(qs: &[&[f32]; R], k: &[f32]) -> [f32; R] {
    let mut acc = [[0f32; 8]; R];
    let n = k.len() / 8 * 8;
    for c in (0..n).step_by(8) {
        let kc = &k[c..c + 8];
        for (a, q) in acc.iter_mut().zip(qs) {
            let qc = &q[c..c + 8];
            for i in 0..8 {
                a[i] += qc[i] * kc[i];
            }
        }
    }
    std::array::from_fn(|r| {
        let tail: f32 = (n..k.len()).map(|i| qs[r][i] * k[i]).sum();
        acc[r].iter().sum::<f32>() + tail
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Plain f64 loops: the definition.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &CacheView,
        v: &CacheView,
        pos: usize,
        seq: usize,
        nh: usize,
        nkv: usize,
        hd: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; seq * nh * hd];
        for h in 0..nh {
            let g = h / (nh / nkv);
            let (keys, values) = (k.rows(g, hd), v.rows(g, hd));
            for i in 0..seq {
                let qi = &q[(h * seq + i) * hd..][..hd];
                let n = pos + i + 1;
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        let kj = &keys[j * hd..][..hd];
                        qi.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..hd {
                    let y: f64 = (0..n).map(|j| e[j] / sum * values[j * hd + c] as f64).sum();
                    out[i * nh * hd + h * hd + c] = y as f32;
                }
            }
        }
        out
    }

    #[test]
    fn exp_matches_std_within_2e_7_relative() {
        let mut xs: Vec<f32> = (0..100_000).map(|i| -(i as f32) * 0.000_9).collect();
        xs.extend([0.0, -1e-30, -86.9, -87.5, -1000.0, f32::NEG_INFINITY]);
        let want: Vec<f32> = xs
            .iter()
            .map(|x| if *x < -87.0 { 0.0 } else { x.exp() })
            .collect();
        exp_in_place(&mut xs);
        for (got, want) in xs.iter().zip(&want) {
            assert!((got - want).abs() <= 2e-7 * want, "{got} vs {want}");
        }
    }

    /// Decode (one row), prefill from an empty cache and after a cached prefix, blocks that do
    /// not divide the rows, grouped-query heads, the AVX2 head sizes (64, 128) and the portable
    /// path (others), and capacity beyond the valid length (stale values must not leak in).
    #[test]
    fn matches_the_definition() {
        let mut rng = StdRng::seed_from_u64(3);
        for (nh, nkv, hd, cap, pos, seq) in [
            (9, 3, 64, 40, 16, 1),
            (4, 4, 12, 8, 0, 1),
            (32, 8, 64, 300, 256, 1),
            (9, 3, 64, 64, 0, 23),
            (4, 2, 20, 50, 11, 6),
            (8, 8, 64, 700, 100, 513),
            (4, 2, 128, 40, 5, 9),
        ] {
            let mut fill =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.5f32..1.5)).collect() };
            let (q, kd, vd) = (
                fill(nh * seq * hd),
                fill(nkv * cap * hd),
                fill(nkv * cap * hd),
            );
            let len = pos + seq;
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
            let ours = causal_attention(&q, &k, &v, pos, seq, nh, nkv, hd);
            let want = reference(&q, &k, &v, pos, seq, nh, nkv, hd);
            for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 2e-5,
                    "({nh},{nkv},{hd},{cap},{pos},{seq}) [{i}] {a} vs {b}"
                );
            }
        }
    }
}
