//! Q4_1 weights times f32 activations, the way llama.cpp does it: activations are quantized
//! to 8-bit blocks (`Q8Block`, like ggml's Q8_1) and multiplied with integer dot products.
//!
//! Q4_1 stores 32 weights per 20-byte block: `w[j] = d * q[j] + m`, q in 0..=15, the low
//! nibbles of `qs` holding j = 0..16 and the high nibbles j = 16..32. With an activation block
//! `a[j] ≈ da * qa[j]`:
//!   Σ w[j] a[j] = d * da * Σ q[j] qa[j] + m * (da * Σ qa[j])
//! so each block costs one 32-wide u8 x i8 integer dot product plus two multiply-adds.
//!
//! Roofline (decode, one activation row): every weight byte is read once per token —
//! 0.625 bytes per weight — and used for 2 flops, so decode is memory-bound; prefill reuses each
//! weight block for every activation row of a tile while it sits in L1, and is compute-bound on
//! the integer dot products (AVX2: 32 u8 x i8 products per `maddubs`).

use rayon::prelude::*;

pub const BLOCK: usize = 32;
/// Below this many weights a one-row product runs on the calling thread.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 21;
/// Bytes of one Q4_1 block as GGUF stores it: f16 d, f16 m, 16 bytes of nibbles.
pub const BLOCK_BYTES: usize = 20;

#[derive(Debug, Clone, Copy)]
pub struct Q4Block {
    pub d: f32,
    pub m: f32,
    pub qs: [u8; 16],
}

/// An activation block: `a[j] ≈ d * qs[j]`, and `s = d * Σ qs[j]` for the Q4_1 offset term.
#[derive(Debug, Clone, Copy)]
pub struct Q8Block {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

/// A Q4_1 matrix `(rows, cols)`: `rows` output features, each `cols / 32` blocks.
pub struct Q4_1Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<Q4Block>,
}

impl Q4_1Matrix {
    /// From GGUF's raw bytes (row-major blocks). `cols` must be a multiple of 32.
    pub fn from_gguf_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) || bytes.len() != rows * cols / BLOCK * BLOCK_BYTES {
            return None;
        }
        let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let blocks = bytes
            .chunks_exact(BLOCK_BYTES)
            .map(|b| {
                let mut qs = [0u8; 16];
                qs.copy_from_slice(&b[4..20]);
                Q4Block {
                    d: f16(&b[0..2]),
                    m: f16(&b[2..4]),
                    qs,
                }
            })
            .collect();
        Some(Self { rows, cols, blocks })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row(&self, r: usize) -> &[Q4Block] {
        let n = self.cols / BLOCK;
        &self.blocks[r * n..(r + 1) * n]
    }

    /// `x (m, cols)` row-major -> `(m, rows)`: every activation row times every weight row.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "activation shape");
        let nb = self.cols / BLOCK;
        let mut qx = vec![
            Q8Block {
                d: 0.0,
                s: 0.0,
                qs: [0; 32]
            };
            m * nb
        ];
        if m == 1 {
            quantize_row(x, &mut qx);
        } else {
            qx.par_chunks_mut(nb)
                .zip(x.par_chunks(self.cols))
                .for_each(|(q, row)| quantize_row(row, q));
        }
        let dot = dot_fn();
        let mut out = vec![0f32; m * self.rows];
        if m == 1 {
            // Decode: one activation row; tiles of output columns, enough of them that rayon's
            // work stealing rebalances when another process preempts one of our threads.
            // A small matrix (SmolLM2's layers: < 1 M weights, ~10-30 µs of work) costs less
            // on the calling thread than waking the pool.
            if self.rows * self.cols < PARALLEL_MIN_WEIGHTS {
                for (c, o) in out.iter_mut().enumerate() {
                    *o = dot(self.row(c), &qx);
                }
                return out;
            }
            let tile = (self.rows / (rayon::current_num_threads() * 8)).clamp(8, 256);
            out.par_chunks_mut(tile).enumerate().for_each(|(t, chunk)| {
                for (i, o) in chunk.iter_mut().enumerate() {
                    *o = dot(self.row(t * tile + i), &qx);
                }
            });
            return out;
        }
        // Prefill: a tile of 16 weight rows (a few KB) stays in L1 while every activation row
        // passes by; each tile fills a row-major block that is copied into place after.
        const TILE: usize = 16;
        let tiles: Vec<(usize, Vec<f32>)> = (0..self.rows.div_ceil(TILE))
            .into_par_iter()
            .map(|t| {
                let c0 = t * TILE;
                let c1 = (c0 + TILE).min(self.rows);
                let mut part = vec![0f32; m * (c1 - c0)];
                for r in 0..m {
                    let a = &qx[r * nb..(r + 1) * nb];
                    for c in c0..c1 {
                        part[r * (c1 - c0) + (c - c0)] = dot(self.row(c), a);
                    }
                }
                (c0, part)
            })
            .collect();
        for (c0, part) in tiles {
            let w = part.len() / m;
            for r in 0..m {
                out[r * self.rows + c0..r * self.rows + c0 + w]
                    .copy_from_slice(&part[r * w..(r + 1) * w]);
            }
        }
        out
    }
}

/// Symmetric 8-bit quantization of one activation row, block by block.
pub fn quantize_row(x: &[f32], out: &mut [Q8Block]) {
    for (chunk, q) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (o, v) in q.qs.iter_mut().zip(chunk) {
            let v = (v * inv).round() as i32;
            *o = v as i8;
            sum += v;
        }
        // Stored at f16 precision, as ggml's Q8_1 does: the results then round exactly like
        // llama.cpp's (the reference the tests compare with), not merely as accurately.
        q.d = half::f16::from_f32(d).to_f32();
        q.s = half::f16::from_f32(d * sum as f32).to_f32();
    }
}

type DotFn = fn(&[Q4Block], &[Q8Block]) -> f32;

/// The fastest dot product this CPU runs, chosen at run time (one binary for any x86-64).
pub fn dot_fn() -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return dot_avx2_entry;
    }
    dot_scalar
}

/// The reference: plain integer arithmetic, block by block.
pub fn dot_scalar(w: &[Q4Block], a: &[Q8Block]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..16 {
            let lo = (wb.qs[j] & 0x0F) as i32;
            let hi = (wb.qs[j] >> 4) as i32;
            isum += lo * ab.qs[j] as i32 + hi * ab.qs[j + 16] as i32;
        }
        sum += wb.d * ab.d * isum as f32 + wb.m * ab.s;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
fn dot_avx2_entry(w: &[Q4Block], a: &[Q8Block]) -> f32 {
    // SAFETY: chosen by dot_fn only after detecting AVX2 and FMA.
    unsafe { dot_avx2(w, a) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[Q4Block], a: &[Q8Block]) -> f32 {
    use std::arch::x86_64::*;
    let low_mask = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut offset = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        // SAFETY: the loads read exactly 16 and 32 bytes from arrays of that size.
        let packed = unsafe { _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i) };
        let lo = _mm_and_si128(packed, low_mask);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
        let q4 = _mm256_set_m128i(hi, lo);
        let q8 = unsafe { _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i) };
        // u8 (0..=15) x i8 pairs summed to i16 (|sum| <= 2 * 15 * 128: no saturation), then
        // pairs of those to i32.
        let products = _mm256_madd_epi16(_mm256_maddubs_epi16(q4, q8), ones);
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(wb.d * ab.d),
            _mm256_cvtepi32_ps(products),
            acc,
        );
        offset += wb.m * ab.s;
    }
    let hi = _mm256_extractf128_ps(acc, 1);
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    let sum1 = _mm_add_ss(sum2, _mm_shuffle_ps(sum2, sum2, 1));
    _mm_cvtss_f32(sum1) + offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn random_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> (Q4_1Matrix, Vec<f32>) {
        let mut bytes = Vec::new();
        let mut dense = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            let d = half::f16::from_f32(rng.random_range(0.001f32..0.05));
            let m = half::f16::from_f32(rng.random_range(-0.4f32..0.0));
            let qs: Vec<u8> = (0..16).map(|_| rng.random::<u8>()).collect();
            bytes.extend(d.to_le_bytes());
            bytes.extend(m.to_le_bytes());
            bytes.extend(&qs);
            let (d, m) = (d.to_f32(), m.to_f32());
            let mut block = [0f32; 32];
            for j in 0..16 {
                block[j] = d * (qs[j] & 0x0F) as f32 + m;
                block[j + 16] = d * (qs[j] >> 4) as f32 + m;
            }
            dense.extend(block);
        }
        (
            Q4_1Matrix::from_gguf_bytes(&bytes, rows, cols).unwrap(),
            dense,
        )
    }

    #[test]
    fn simd_dot_equals_the_scalar_reference() {
        let mut rng = StdRng::seed_from_u64(1);
        for blocks in [1, 2, 3, 7, 18, 64] {
            let (w, _) = random_matrix(&mut rng, 1, blocks * BLOCK);
            let x: Vec<f32> = (0..blocks * BLOCK)
                .map(|_| rng.random_range(-3.0f32..3.0))
                .collect();
            let mut q = vec![
                Q8Block {
                    d: 0.0,
                    s: 0.0,
                    qs: [0; 32]
                };
                blocks
            ];
            quantize_row(&x, &mut q);
            let (fast, exact) = (dot_fn()(w.row(0), &q), dot_scalar(w.row(0), &q));
            // Same integer sums; only the f32 accumulation order differs.
            let tol = 1e-5 * exact.abs().max(1.0);
            assert!(
                (fast - exact).abs() <= tol,
                "{blocks} blocks: {fast} vs {exact}"
            );
        }
    }

    #[test]
    fn matmul_matches_dense_math_within_activation_rounding() {
        let mut rng = StdRng::seed_from_u64(2);
        // Odd row counts and a row count that is not a multiple of the tile.
        for (rows, cols, m) in [(1, 32, 1), (5, 64, 3), (37, 96, 1), (70, 576, 4)] {
            let (w, dense) = random_matrix(&mut rng, rows, cols);
            let x: Vec<f32> = (0..m * cols)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let got = w.matmul(&x, m);
            for r in 0..m {
                for c in 0..rows {
                    let want: f32 = (0..cols)
                        .map(|k| dense[c * cols + k] * x[r * cols + k])
                        .sum();
                    let scale: f32 = (0..cols)
                        .map(|k| (dense[c * cols + k] * x[r * cols + k]).abs())
                        .sum();
                    // 8-bit activations: each product is off by at most |w| * d/2,
                    // d = max|x|/127 per block; bounded by 1% of Σ|w x| with margin.
                    let err = (got[r * rows + c] - want).abs();
                    assert!(
                        err <= 0.01 * scale + 1e-4,
                        "({rows},{cols},{m}) r{r} c{c}: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(Q4_1Matrix::from_gguf_bytes(&[0; 20], 1, 31).is_none());
        assert!(Q4_1Matrix::from_gguf_bytes(&[0; 19], 1, 32).is_none());
    }
}
