//! Q8_0: 32 weights per 34-byte block, `w[j] = d * q[j]`, q an i8. Against an activation block
//! `a[j] ≈ da * qa[j]`: Σ w a = d * da * Σ q qa — one 32-wide i8 x i8 dot product per block.
//! AVX2 multiplies only u8 x i8 (`maddubs`), so the weight's sign moves onto the activation:
//! q * qa = |q| * (sign(q) * qa).
//!
//! Roofline: 1.125 bytes per weight as held here (d widened to f32 at load), 2 flops each —
//! decode is memory-bound, more so than the 4-bit types; prefill is compute-bound like Q4_1.

use super::matrix::{
    avx2_and_avx512_from_body, dot_u8_i8, x86_kernels, BlockKind, Kernel, Q8Block,
};

pub struct Q8_0;

#[derive(Debug, Clone, Copy)]
pub struct Block {
    d: f32,
    qs: [i8; 32],
}

impl BlockKind for Q8_0 {
    type Block = Block;
    type Act = Q8Block;
    const NAME: &'static str = "Q8_0";
    const WEIGHTS: usize = 32;
    const BYTES: usize = 34;

    fn parse(b: &[u8]) -> Block {
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(&b[2..34]) {
            *q = v as i8;
        }
        Block {
            d: half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            qs,
        }
    }

    fn dequantize(b: &Block, out: &mut [f32]) {
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = b.d * q as f32;
        }
    }

    fn dot_scalar(w: &[Block], a: &[Q8Block]) -> f32 {
        let mut sum = 0f32;
        for (wb, ab) in w.iter().zip(a) {
            let isum: i32 = wb
                .qs
                .iter()
                .zip(&ab.qs)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            sum += wb.d * ab.d * isum as f32;
        }
        sum
    }

    fn simd_kernels() -> Vec<Kernel<Block, Q8Block>> {
        x86_kernels!(dot_avx512, dot_avx2)
    }
}

/// `RW` weight rows against `RA` activation rows, AVX2 instructions. Every pair's operations run
/// in the same order whatever the tile shape, so results are bit-identical across shapes.
/// Inlined into the `target_feature` wrappers below, which decide the register count.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_body<const RW: usize, const RA: usize, const VNNI: bool>(
    w: [&[Block]; RW],
    a: [&[Q8Block]; RA],
) -> [[f32; RA]; RW] {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees AVX2 and FMA; every load reads exactly the 32
    // bytes of an array of that size.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); RA]; RW];
        for b in 0..w[0].len() {
            let x: [__m256i; RA] =
                std::array::from_fn(|j| _mm256_loadu_si256(a[j][b].qs.as_ptr() as *const __m256i));
            for i in 0..RW {
                let wb = &w[i][b];
                let qw = _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i);
                let abs = _mm256_sign_epi8(qw, qw);
                for j in 0..RA {
                    // |q| (up to 128, read as u8) x ±x: pair sums stay within i16.
                    let products = dot_u8_i8::<VNNI>(abs, _mm256_sign_epi8(x[j], qw));
                    acc[i][j] = _mm256_fmadd_ps(
                        _mm256_set1_ps(wb.d * a[j][b].d),
                        _mm256_cvtepi32_ps(products),
                        acc[i][j],
                    );
                }
            }
        }
        acc.map(|row| row.map(|v| super::matrix::hsum_avx2(v)))
    }
}

avx2_and_avx512_from_body!(Block, Q8Block);

#[cfg(test)]
mod tests {
    use super::super::matrix::{block_kind_tests, testing};
    use super::*;
    use candle_core::quantized::GgmlDType;
    use rand::{rngs::StdRng, Rng};

    fn block(rng: &mut StdRng) -> Vec<u8> {
        let mut b = Vec::with_capacity(34);
        b.extend(testing::f16_bytes(rng, 0.0005, 0.01));
        // -128 included: ggml never writes it, but a file may hold it and it must not overflow.
        b.extend((0..32).map(|_| rng.random::<u8>()));
        b
    }

    block_kind_tests!(Q8_0, GgmlDType::Q8_0, 11, block);
}
