//! What every block type shares: activations quantized to 8-bit blocks — of 32 for Q4_1 and
//! Q8_0 (`Q8Block`, like ggml's Q8_1), of 256 for the K-quants (`Q8KBlock`, like Q8_K, so a
//! whole weight block's integer products add up before one float multiply) — and the row
//! layout, `QMatrix`: the GGUF's blocks as they are, a block type's dot product run over rows
//! (on the calling thread for small decode products, on rayon otherwise). Where the CPU has
//! SIMD kernels for it, matrices are held interleaved instead (`interleaved.rs`); the row
//! layout remains the fallback and the baseline `bench --kernels` measures against.

use rayon::prelude::*;

/// Activation values per `Q8Block`.
pub const QK: usize = 32;
/// Below this many weights a one-row product runs on the calling thread: only the smallest
/// matrices (SmolLM2's K and V projections, 110 K weights, a few µs of work) cost less there
/// than handing half to the pool. It was 2 M, which kept every SmolLM2 layer matrix on one
/// core: decode read its weights at half the machine's bandwidth, 0.56-0.68x llama.cpp's
/// decode (kernels-notes, "Decode on both cores"); at 128 K both cores share them.
pub(crate) const PARALLEL_MIN_WEIGHTS: usize = 1 << 17;

/// An activation block: `a[j] ≈ d * qs[j]`, `sum = Σ qs[j]`, and `s = d * sum` for offset terms.
#[derive(Debug, Clone, Copy)]
pub struct Q8Block {
    pub d: f32,
    pub s: f32,
    pub sum: i32,
    pub qs: [i8; QK],
}

/// Activations quantized for one block type's dot product.
pub trait Activations: Copy + Send + Sync + 'static {
    /// Values per block.
    const VALUES: usize;
    const ZERO: Self;
    fn quantize(x: &[f32], out: &mut [Self]);
}

impl Activations for Q8Block {
    const VALUES: usize = QK;
    const ZERO: Q8Block = Q8Block {
        d: 0.0,
        s: 0.0,
        sum: 0,
        qs: [0; QK],
    };
    fn quantize(x: &[f32], out: &mut [Self]) {
        quantize_row(x, out)
    }
}

/// Activations for the 256-wide K-quants (like ggml's Q8_K): one scale per 256 values, so a
/// whole weight block's integer products add up before the one float multiply; `bsums` are the
/// sums of each 32 values (Q4_K's offsets), `bsums16` of each 16 (Q6_K's `- 32`).
#[derive(Debug, Clone, Copy)]
pub struct Q8KBlock {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 8],
    pub bsums16: [i16; 16],
}

impl Activations for Q8KBlock {
    const VALUES: usize = 256;
    const ZERO: Q8KBlock = Q8KBlock {
        d: 0.0,
        qs: [0; 256],
        bsums: [0; 8],
        bsums16: [0; 16],
    };
    fn quantize(x: &[f32], out: &mut [Self]) {
        let simd = has_avx2();
        for (chunk, q) in x.chunks_exact(256).zip(out.iter_mut()) {
            let d = amax(chunk, simd) / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            for ((x, qs), s) in chunk
                .chunks_exact(QK)
                .zip(q.qs.chunks_exact_mut(QK))
                .zip(q.bsums.iter_mut())
            {
                *s = round_block(x, inv, qs, simd) as i16;
            }
            for (s16, qs) in q.bsums16.iter_mut().zip(q.qs.chunks_exact(16)) {
                *s16 = qs.iter().map(|&v| v as i16).sum();
            }
            q.d = d;
        }
    }
}

/// `x (m, cols)` quantized row by row (rows in parallel when there are several).
pub fn quantize_activations<A: Activations>(x: &[f32], m: usize, cols: usize) -> Vec<A> {
    assert_eq!(x.len(), m * cols, "activation shape");
    let nb = cols / A::VALUES;
    let mut qx = vec![A::ZERO; m * nb];
    if m == 1 {
        A::quantize(x, &mut qx);
    } else {
        qx.par_chunks_mut(nb)
            .zip(x.par_chunks(cols))
            .for_each(|(q, row)| A::quantize(row, q));
    }
    qx
}

/// Symmetric 8-bit quantization of one activation row, block by block.
pub fn quantize_row(x: &[f32], out: &mut [Q8Block]) {
    let simd = has_avx2();
    for (chunk, q) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let d = amax(chunk, simd) / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let sum = round_block(chunk, inv, &mut q.qs, simd);
        // Stored at f16 precision, as ggml's Q8_1 does: Q4_1 results then round exactly like
        // llama.cpp's (the reference its test compares with), not merely as accurately.
        q.d = half::f16::from_f32(d).to_f32();
        q.s = half::f16::from_f32(d * sum as f32).to_f32();
        q.sum = sum;
    }
}

/// The largest |x| of a slice of whole blocks of 32.
fn amax(x: &[f32], simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is has_avx2().
        return unsafe { amax_avx2(x) };
    }
    let _ = simd;
    x.iter().fold(0f32, |a, v| a.max(v.abs()))
}

/// `round(x * inv)` (half away from zero, as `f32::round`) of 32 values into `out`; returns
/// their sum. The SIMD version gives the same bits.
fn round_block(x: &[f32], inv: f32, out: &mut [i8], simd: bool) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is has_avx2().
        return unsafe { round_block_avx2(x, inv, out) };
    }
    let _ = simd;
    let mut sum = 0i32;
    for (o, v) in out.iter_mut().zip(x) {
        let v = (v * inv).round() as i32;
        *o = v as i8;
        sum += v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn amax_avx2(x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        // SAFETY: reads the 8 floats of `c`.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn round_block_avx2(x: &[f32], inv: f32, out: &mut [i8]) -> i32 {
    use std::arch::x86_64::*;
    assert!(x.len() == QK && out.len() == QK);
    let sign = _mm256_set1_ps(-0.0);
    let (half, one, scale) = (
        _mm256_set1_ps(0.5),
        _mm256_set1_ps(1.0),
        _mm256_set1_ps(inv),
    );
    let ints: [__m256i; 4] = std::array::from_fn(|i| {
        // SAFETY: reads floats 8i..8i+8 of the 32 asserted above.
        let p = _mm256_mul_ps(unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * i)) }, scale);
        // Truncate, then step away from zero where the dropped fraction is >= 0.5.
        let t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
        let away = _mm256_or_ps(one, _mm256_and_ps(p, sign));
        let step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), away);
        _mm256_cvttps_epi32(_mm256_add_ps(t, step))
    });
    let sum = _mm256_add_epi32(
        _mm256_add_epi32(ints[0], ints[1]),
        _mm256_add_epi32(ints[2], ints[3]),
    );
    // i32 -> i16 -> i8 packs work per 128-bit lane; the permute puts the values back in order.
    let packed = _mm256_packs_epi16(
        _mm256_packs_epi32(ints[0], ints[1]),
        _mm256_packs_epi32(ints[2], ints[3]),
    );
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: writes the 32 bytes of `out` asserted above.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, ordered) };
    let s4 = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
    _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01)))
}

/// One GGUF block type: how its bytes become a block, what a block means (`dequantize`, the
/// definition the tests hold the dot products to), and its dot products.
pub trait BlockKind: Send + Sync + 'static {
    type Block: Copy + Send + Sync;
    /// How activations are quantized for this type's dot products.
    type Act: Activations;
    const NAME: &'static str;
    /// Weights per block (a multiple of `QK`).
    const WEIGHTS: usize;
    /// Bytes per block in a GGUF file.
    const BYTES: usize;
    fn parse(bytes: &[u8]) -> Self::Block;
    fn dequantize(block: &Self::Block, out: &mut [f32]);
    /// The reference: plain integer arithmetic, block by block.
    fn dot_scalar(w: &[Self::Block], a: &[Self::Act]) -> f32;
}

/// A quantized matrix `(rows, cols)` in GGUF's row order, multiplied by the scalar reference:
/// what the interleaved SIMD kernels are held to, bit for bit, in the tests.
pub struct QMatrix<K: BlockKind> {
    rows: usize,
    cols: usize,
    blocks: Vec<K::Block>,
}

impl<K: BlockKind> QMatrix<K> {
    /// From GGUF's raw bytes (row-major blocks); `None` if the sizes do not fit the block type.
    pub fn from_gguf_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(K::WEIGHTS) || bytes.len() != rows * cols / K::WEIGHTS * K::BYTES {
            return None;
        }
        let blocks = bytes.chunks_exact(K::BYTES).map(K::parse).collect();
        Some(Self { rows, cols, blocks })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn row(&self, r: usize) -> &[K::Block] {
        let n = self.cols / K::WEIGHTS;
        &self.blocks[r * n..(r + 1) * n]
    }

    /// Row `r` in f32.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (b, o) in self.row(r).iter().zip(out.chunks_exact_mut(K::WEIGHTS)) {
            K::dequantize(b, o);
        }
    }

    /// `x (m, cols)` row-major -> `(m, rows)`: every activation row times every weight row.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let nb = self.cols / K::Act::VALUES;
        let qx = quantize_activations::<K::Act>(x, m, self.cols);
        let mut out = vec![0f32; m * self.rows];
        for (r, out_row) in out.chunks_exact_mut(self.rows).enumerate() {
            let act = &qx[r * nb..(r + 1) * nb];
            for (c, o) in out_row.iter_mut().enumerate() {
                *o = K::dot_scalar(self.row(c), act);
            }
        }
        out
    }
}

/// Copies prefill tiles — `(first output column, row-major m x w block)` — into `out`, row-major
/// with `width` columns.
pub(crate) fn place_tiles(out: &mut [f32], width: usize, tiles: Vec<(usize, Vec<f32>)>) {
    let m = out.len() / width.max(1);
    for (c0, part) in tiles {
        let w = part.len() / m.max(1);
        for (r, src) in part.chunks_exact(w.max(1)).enumerate() {
            out[r * width + c0..r * width + c0 + w].copy_from_slice(src);
        }
    }
}

/// `Σ` of each four adjacent u8 x i8 products, per i32 lane: VNNI's one instruction, or AVX2's
/// `maddubs` (pairs to i16 — callers keep pair sums within i16, so both are exact and equal)
/// then `madd` against ones. Inlined into kernels that enable the features.
///
/// # Safety
/// AVX2 must be enabled, and with `VNNI` also AVX-512 VL/VNNI (inlined into kernels that
/// enable them after run-time detection); register arguments only, no memory is touched.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn dot_u8_i8<const VNNI: bool>(
    u: std::arch::x86_64::__m256i,
    s: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the caller enables AVX2, and AVX-512 VNNI + VL when VNNI is set.
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }
}

/// `acc` plus `dot_u8_i8(u, s)`: one `dpbusd` with VNNI.
///
/// # Safety
/// AVX2 must be enabled, and with `VNNI` also AVX-512 VL/VNNI (inlined into kernels that
/// enable them after run-time detection); register arguments only, no memory is touched.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn add_dot_u8_i8<const VNNI: bool>(
    acc: std::arch::x86_64::__m256i,
    u: std::arch::x86_64::__m256i,
    s: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: as for dot_u8_i8.
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(acc, u, s)
        } else {
            _mm256_add_epi32(acc, dot_u8_i8::<false>(u, s))
        }
    }
}

/// `acc` plus the sums of adjacent i16 x i16 products per i32 lane (`dpwssd`, or `madd` + add).
///
/// # Safety
/// AVX2 must be enabled, and with `VNNI` also AVX-512 VL/VNNI (inlined into kernels that
/// enable them after run-time detection); register arguments only, no memory is touched.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn add_dot_i16<const VNNI: bool>(
    acc: std::arch::x86_64::__m256i,
    a: std::arch::x86_64::__m256i,
    b: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: as for dot_u8_i8.
    unsafe {
        if VNNI {
            _mm256_dpwssd_epi32(acc, a, b)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
        }
    }
}

/// Whether the AVX2 + FMA kernels may run here.
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 kernels may run here: 64-byte registers (BW for the byte/word
/// multiplies), VL (32 registers and the new instructions on 32-byte vectors) and VNNI's fused
/// integer dot products. (Only x86 code asks.)
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && has_avx2()
}

#[cfg(test)]
mod quantize_tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// The SIMD activation quantization gives the scalar one's bits, ties (x * inv exactly
    /// n + 0.5) and zero blocks included.
    #[test]
    fn simd_quantization_equals_scalar() {
        if !has_avx2() {
            return;
        }
        let mut rng = StdRng::seed_from_u64(7);
        let mut x: Vec<f32> = (0..4096).map(|_| rng.random_range(-4.0f32..4.0)).collect();
        // A block whose amax is 127 (inv = 1): half-integers are exact ties.
        for (i, v) in x[..32].iter_mut().enumerate() {
            *v = i as f32 - 15.5;
        }
        x[31] = 127.0;
        x[32..64].fill(0.0);
        for i in (0..x.len()).step_by(32) {
            let inv = 1.0 / (amax(&x[i..i + 32], false) / 127.0).max(f32::MIN_POSITIVE);
            assert_eq!(amax(&x[i..i + 32], true), amax(&x[i..i + 32], false));
            let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
            let sa = round_block(&x[i..i + 32], inv, &mut a, true);
            let sb = round_block(&x[i..i + 32], inv, &mut b, false);
            assert_eq!((a, sa), (b, sb), "block at {i}");
        }
    }
}

/// The checks every block type passes, as `#[test]`s in the type's own test module: `$block`
/// makes one random GGUF block of the type, seeds are `$seed..$seed + 5`.
#[cfg(test)]
macro_rules! block_kind_tests {
    ($kind:ty, $dtype:expr, $seed:literal, $block:ident) => {
        #[test]
        fn dequantize_matches_candle() {
            $crate::engine::kernels::matrix::testing::dequantize_matches_candle::<$kind>(
                $dtype, $seed, $block,
            );
        }

        #[test]
        fn matmul_matches_dense_math() {
            $crate::engine::kernels::matrix::testing::matmul_matches_dense::<$kind>(
                $seed + 3,
                $block,
            );
        }
    };
}
#[cfg(test)]
pub(crate) use block_kind_tests;

/// The checks every block type passes, on random blocks from the type's own generator.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
    use candle_core::Device;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Random GGUF bytes for `rows x cols` weights of type `K`.
    pub fn random_bytes<K: BlockKind>(
        rng: &mut StdRng,
        rows: usize,
        cols: usize,
        block: fn(&mut StdRng) -> Vec<u8>,
    ) -> Vec<u8> {
        let bytes: Vec<u8> = (0..rows * cols / K::WEIGHTS)
            .flat_map(|_| block(rng))
            .collect();
        assert_eq!(bytes.len(), rows * cols / K::WEIGHTS * K::BYTES);
        bytes
    }

    pub fn activations(rng: &mut StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect()
    }

    /// Σ over blocks of |one block's contribution to the row's dot product|: the scale that
    /// float-order differences are measured against.
    pub fn abs_contributions<K: BlockKind>(row: &[K::Block], a: &[K::Act]) -> f32 {
        row.iter()
            .zip(a.chunks_exact(K::WEIGHTS / K::Act::VALUES))
            .map(|(b, a)| K::dot_scalar(std::slice::from_ref(b), a).abs())
            .sum()
    }

    /// `dequantize` is what candle (ggml's layout, independently written) reads from the same
    /// bytes, exactly.
    pub fn dequantize_matches_candle<K: BlockKind>(
        dtype: GgmlDType,
        seed: u64,
        block: fn(&mut StdRng) -> Vec<u8>,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (rows, cols) = (3, 2 * K::WEIGHTS);
        let bytes = random_bytes::<K>(&mut rng, rows, cols, block);
        let theirs: Vec<f32> = qtensor_from_ggml(dtype, &bytes, vec![rows, cols], &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let w = QMatrix::<K>::from_gguf_bytes(&bytes, rows, cols).unwrap();
        let mut ours = vec![0f32; rows * cols];
        for (r, out) in ours.chunks_exact_mut(cols).enumerate() {
            w.dequantize_row(r, out);
        }
        assert_eq!(ours, theirs, "{} dequantization", K::NAME);
    }

    /// The scalar reference's matmul (odd row counts, several activation rows) against dense
    /// f32 math on the dequantized weights. 8-bit activations
    /// move each product by at most |w| * d/2 with d = max|x|/127 per activation block: under
    /// 1% of Σ|w x| here.
    pub fn matmul_matches_dense<K: BlockKind>(seed: u64, block: fn(&mut StdRng) -> Vec<u8>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let w = K::WEIGHTS;
        let shapes = [(1, w, 1), (5, 2 * w, 3), (37, 3 * w, 1), (70, 2 * w, 9)];
        for (rows, cols, m) in shapes {
            let bytes = random_bytes::<K>(&mut rng, rows, cols, block);
            let q = QMatrix::<K>::from_gguf_bytes(&bytes, rows, cols).unwrap();
            let mut dense = vec![0f32; rows * cols];
            for (r, out) in dense.chunks_exact_mut(cols).enumerate() {
                q.dequantize_row(r, out);
            }
            let x = activations(&mut rng, m * cols);
            let got = q.matmul(&x, m);
            for r in 0..m {
                for c in 0..rows {
                    let products = (0..cols).map(|k| dense[c * cols + k] * x[r * cols + k]);
                    let want: f32 = products.clone().sum();
                    let scale: f32 = products.map(f32::abs).sum();
                    let err = (got[r * rows + c] - want).abs();
                    assert!(
                        err <= 0.01 * scale + 1e-4,
                        "{} ({rows},{cols},{m}) r{r} c{c}: {err} of {scale}",
                        K::NAME
                    );
                }
            }
        }
    }

    /// A random f16 in `lo..hi`, little-endian.
    pub fn f16_bytes(rng: &mut StdRng, lo: f32, hi: f32) -> [u8; 2] {
        half::f16::from_f32(rng.random_range(lo..hi)).to_le_bytes()
    }
}
