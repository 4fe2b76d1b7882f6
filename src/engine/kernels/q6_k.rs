//! Q6_K: 256 weights per 210-byte block — 128 bytes of low nibbles (`ql`), 64 bytes of 2-bit
//! high parts (`qh`), sixteen i8 scales (one per 16 weights) and an f16 `d`:
//! `w = d * sc[g] * (q - 32)`, q in 0..=63. Layout, per half of 128 weights (ql + 64n,
//! qh + 32n, scales + 8n), for l in 0..32:
//!   w[l]      low nibble of ql[l]      | bits 0-1 of qh[l]   scale (l/16)
//!   w[l + 32] low nibble of ql[l + 32] | bits 2-3 of qh[l]   scale (l/16) + 2
//!   w[l + 64] high nibble of ql[l]     | bits 4-5 of qh[l]   scale (l/16) + 4
//!   w[l + 96] high nibble of ql[l + 32]| bits 6-7 of qh[l]   scale (l/16) + 6
//!
//! The kernel rebuilds 32 signed weights (q - 32, in -32..=31) per register and multiplies them
//! with 32 activations; the two 16-weight scales are applied as integers when pairs of i16
//! products are summed (`madd` against [sc_lo x 8, sc_hi x 8]), and with one activation scale
//! per 256 (`Q8KBlock`) a whole block costs one float multiply-add. 0.83 bytes per weight:
//! decode is memory-bound. In Llama 3.2 Q4_K_M this is the type of the tied embedding, the
//! biggest matrix there is.

use super::matrix::{
    add_dot_i16, avx2_and_avx512_from_body, x86_kernels, BlockKind, Kernel, Q8KBlock,
};

pub struct Q6K;

#[derive(Debug, Clone, Copy)]
pub struct Block {
    d: f32,
    scales: [i8; 16],
    ql: [u8; 128],
    qh: [u8; 64],
}

impl Block {
    /// Weight `p` (0..256) as q - 32, and its scale index.
    fn q(&self, p: usize) -> (i32, usize) {
        let (n, g, l) = (p / 128, (p % 128) / 32, p % 32);
        let ql = self.ql[64 * n + l + 32 * (g % 2)];
        let low = if g < 2 { ql & 0xF } else { ql >> 4 };
        let high = (self.qh[32 * n + l] >> (2 * g)) & 3;
        ((low | (high << 4)) as i32 - 32, 8 * n + 2 * g + l / 16)
    }
}

impl BlockKind for Q6K {
    type Block = Block;
    type Act = Q8KBlock;
    const NAME: &'static str = "Q6_K";
    const WEIGHTS: usize = 256;
    const BYTES: usize = 210;

    fn parse(b: &[u8]) -> Block {
        let mut block = Block {
            d: half::f16::from_le_bytes([b[208], b[209]]).to_f32(),
            scales: [0; 16],
            ql: [0; 128],
            qh: [0; 64],
        };
        block.ql.copy_from_slice(&b[0..128]);
        block.qh.copy_from_slice(&b[128..192]);
        for (s, &v) in block.scales.iter_mut().zip(&b[192..208]) {
            *s = v as i8;
        }
        block
    }

    fn dequantize(b: &Block, out: &mut [f32]) {
        for (p, o) in out.iter_mut().enumerate().take(256) {
            let (q, s) = b.q(p);
            *o = b.d * b.scales[s] as f32 * q as f32;
        }
    }

    fn dot_scalar(w: &[Block], a: &[Q8KBlock]) -> f32 {
        let mut sum = 0f32;
        for (wb, ab) in w.iter().zip(a) {
            let mut isum = 0i32;
            for (p, &x) in ab.qs.iter().enumerate() {
                let (q, s) = wb.q(p);
                isum += wb.scales[s] as i32 * q * x as i32;
            }
            sum += wb.d * ab.d * isum as f32;
        }
        sum
    }

    fn simd_kernels() -> Vec<Kernel<Block, Q8KBlock>> {
        x86_kernels!(dot_avx512, dot_avx2)
    }
}

/// `RW` weight rows against `RA` activation rows, AVX2 instructions. Every pair's float
/// operations run in the same order whatever the tile shape (the integer sums are exact), so
/// results are bit-identical across shapes. Inlined into the `target_feature` wrappers below,
/// which decide the register count.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_body<const RW: usize, const RA: usize, const VNNI: bool>(
    w: [&[Block]; RW],
    a: [&[Q8KBlock]; RA],
) -> [[f32; RA]; RW] {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees AVX2 and FMA; each load reads 32 bytes inside
    // an array of 128, 64 or 256.
    unsafe {
        let low_mask = _mm256_set1_epi8(0x0F);
        let high_mask = _mm256_set1_epi8(0x30);
        let bias = _mm256_set1_epi8(32);
        let mut acc = [[_mm256_setzero_ps(); RA]; RW];
        for b in 0..w[0].len() {
            let mut isum = [[_mm256_setzero_si256(); RA]; RW];
            for n in 0..2 {
                for g in 0..4 {
                    let x: [__m256i; RA] = std::array::from_fn(|r| {
                        let at = a[r][b].qs.as_ptr().add(128 * n + 32 * g);
                        _mm256_loadu_si256(at as *const __m256i)
                    });
                    for iw in 0..RW {
                        let wb = &w[iw][b];
                        let ql = _mm256_loadu_si256(
                            wb.ql.as_ptr().add(64 * n + 32 * (g % 2)) as *const __m256i
                        );
                        let qh = _mm256_loadu_si256(wb.qh.as_ptr().add(32 * n) as *const __m256i);
                        // Bits 2g..2g+2 of qh moved to bits 4..6 of each byte; 16-bit shifts
                        // spill bits across byte boundaries only where the mask clears them.
                        let (low, high) = match g {
                            0 => (ql, _mm256_slli_epi16(qh, 4)),
                            1 => (ql, _mm256_slli_epi16(qh, 2)),
                            2 => (_mm256_srli_epi16(ql, 4), qh),
                            _ => (_mm256_srli_epi16(ql, 4), _mm256_srli_epi16(qh, 2)),
                        };
                        let q = _mm256_sub_epi8(
                            _mm256_or_si256(
                                _mm256_and_si256(low, low_mask),
                                _mm256_and_si256(high, high_mask),
                            ),
                            bias,
                        );
                        let abs = _mm256_sign_epi8(q, q);
                        let s = 8 * n + 2 * g;
                        let scales = _mm256_set_m128i(
                            _mm_set1_epi16(wb.scales[s + 1] as i16),
                            _mm_set1_epi16(wb.scales[s] as i16),
                        );
                        for r in 0..RA {
                            // |q| <= 32 (u8) x ±x: pair sums within i16 (2 * 32 * 127), then
                            // times the i8 scales in i32.
                            let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(x[r], q));
                            isum[iw][r] = add_dot_i16::<VNNI>(isum[iw][r], pairs, scales);
                        }
                    }
                }
            }
            for iw in 0..RW {
                for r in 0..RA {
                    acc[iw][r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(w[iw][b].d * a[r][b].d),
                        _mm256_cvtepi32_ps(isum[iw][r]),
                        acc[iw][r],
                    );
                }
            }
        }
        acc.map(|row| row.map(|v| super::matrix::hsum_avx2(v)))
    }
}

avx2_and_avx512_from_body!(Block, Q8KBlock);

#[cfg(test)]
mod tests {
    use super::super::matrix::{block_kind_tests, testing};
    use super::*;
    use candle_core::quantized::GgmlDType;
    use rand::{rngs::StdRng, Rng};

    fn block(rng: &mut StdRng) -> Vec<u8> {
        let mut b: Vec<u8> = (0..208).map(|_| rng.random::<u8>()).collect();
        b.extend(testing::f16_bytes(rng, 0.00001, 0.0002));
        b
    }

    block_kind_tests!(Q6K, GgmlDType::Q6K, 31, block);
}
