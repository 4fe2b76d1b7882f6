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

#[cfg(target_arch = "x86_64")]
use super::interleaved::{broadcast4, lanes, prefetch_ahead};
use super::interleaved::{group_kernels_from_body, GroupKernel, Interleaved};
use super::matrix::{BlockKind, Q8KBlock};

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
}

/// Block `b` of eight rows, interleaved (see `interleaved.rs`) and re-laid-out for it: weights
/// go in registers of four per row, register `v` holding weights 4v..4v+4 (so sub-block j, of
/// one scale, is registers 4j..4j+4), each as q in 0..=63. Their low nibbles sit in `ql`
/// (register 2c low, 2c+1 high nibble of chunk c), their top two bits in `qh` (registers
/// 4e..4e+4 at bits 0, 2, 4, 6 of chunk e): 6.6 bits per weight, about the file's 6.56.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Group {
    d: [f32; 8],
    /// `scales[p][row]` = the row's (sc[2p], sc[2p+1]): i16 pairs for `madd`, and each half
    /// alone as i32 lanes.
    scales: [[[i8; 2]; 8]; 8],
    ql: [[[u8; 4]; 8]; 32],
    qh: [[[u8; 4]; 8]; 16],
}

impl Interleaved for Q6K {
    type Group = Group;

    fn interleave(rows: [&Block; 8]) -> Group {
        let mut g = Group {
            d: rows.map(|b| b.d),
            scales: [[[0; 2]; 8]; 8],
            ql: [[[0; 4]; 8]; 32],
            qh: [[[0; 4]; 8]; 16],
        };
        for (row, b) in rows.iter().enumerate() {
            for j in 0..16 {
                g.scales[j / 2][row][j % 2] = b.scales[j];
            }
            for p in 0..256 {
                let q = (b.q(p).0 + 32) as u8;
                let (v, t) = (p / 4, p % 4);
                g.ql[v / 2][row][t] |= (q & 0xF) << (4 * (v % 2));
                g.qh[v / 4][row][t] |= (q >> 4) << (2 * (v % 4));
            }
        }
        g
    }

    fn block_of(g: &Group, row: usize) -> Block {
        let mut b = Block {
            d: g.d[row],
            scales: [0; 16],
            ql: [0; 128],
            qh: [0; 64],
        };
        for j in 0..16 {
            b.scales[j] = g.scales[j / 2][row][j % 2];
        }
        // The inverse of `Block::q`: weight p = 128n + 32s + l.
        for p in 0..256 {
            let (v, t) = (p / 4, p % 4);
            let low = (g.ql[v / 2][row][t] >> (4 * (v % 2))) & 0xF;
            let high = (g.qh[v / 4][row][t] >> (2 * (v % 4))) & 3;
            let (n, s, l) = (p / 128, (p % 128) / 32, p % 32);
            b.ql[64 * n + l + 32 * (s % 2)] |= low << (4 * (s / 2));
            b.qh[32 * n + l] |= high << (2 * s);
        }
        b
    }

    fn simd_group_kernels() -> Vec<GroupKernel<Group, Q8KBlock>> {
        x86_group_kernels()
    }
}

/// Eight rows against `RA` activation rows. Per sub-block (16 weights, one scale): three loads
/// rebuild four registers of q (0..=63), one `dpbusd` each per activation row, and the eight
/// rows' sums take their scales as one i32 multiply. The `- 32` of every weight is applied per
/// block: `32 * Σ sc * (activation sums of 16)`, one `madd` per sub-block pair. Exact integers,
/// and every lane's float operations in the same order whatever `RA` is.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and with `VNNI` also AVX-512 F/VL/BW/VNNI: the
/// `target_feature` wrappers this is inlined into are chosen only after run-time detection.
/// Slices are indexed with bounds checks; the loads read whole blocks.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_body<const RA: usize, const VNNI: bool>(
    g: &[Group],
    a: [&[Q8KBlock]; RA],
) -> [[f32; 8]; RA] {
    use super::matrix::add_dot_u8_i8;
    use std::arch::x86_64::*;
    // SAFETY: (whole body) the caller guarantees AVX2 and FMA (and VNNI's features when set);
    // aligned loads read 32 bytes of the 32-aligned group, the scale load 16 bytes of its
    // array, broadcasts 4 bytes inside an activation block's arrays.
    unsafe {
        let low = _mm256_set1_epi8(0x0F);
        let high = _mm256_set1_epi8(0x30);
        let load = |p: &[[u8; 4]; 8]| _mm256_load_si256(p.as_ptr() as *const __m256i);
        let mut acc = [_mm256_setzero_ps(); RA];
        for (b, gb) in g.iter().enumerate() {
            let mut isum = [_mm256_setzero_si256(); RA];
            let mut osum = [_mm256_setzero_si256(); RA];
            for p in 0..8 {
                if RA == 1 {
                    prefetch_ahead(gb, p, 8);
                }
                let pairs =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(gb.scales[p].as_ptr() as *const __m128i));
                let even = _mm256_srai_epi32(_mm256_slli_epi32(pairs, 16), 16);
                let odd = _mm256_srai_epi32(pairs, 16);
                for (j, scale) in [(2 * p, even), (2 * p + 1, odd)] {
                    let (ql0, ql1, qh) = (
                        load(&gb.ql[2 * j]),
                        load(&gb.ql[2 * j + 1]),
                        load(&gb.qh[j]),
                    );
                    // 16-bit shifts spill bits across byte boundaries only where the masks
                    // clear them.
                    let w = [
                        _mm256_or_si256(
                            _mm256_and_si256(ql0, low),
                            _mm256_and_si256(_mm256_slli_epi16(qh, 4), high),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                            _mm256_and_si256(_mm256_slli_epi16(qh, 2), high),
                        ),
                        _mm256_or_si256(_mm256_and_si256(ql1, low), _mm256_and_si256(qh, high)),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), high),
                        ),
                    ];
                    // Two chains of products per activation row: a single row (decode) would
                    // otherwise wait on each `dpbusd`'s latency in turn.
                    let mut dot = [[_mm256_setzero_si256(); RA]; 2];
                    for (k, w) in w.into_iter().enumerate() {
                        for r in 0..RA {
                            let x = broadcast4(a[r][b].qs.as_ptr().add(16 * j + 4 * k));
                            // q <= 63 (u8) x i8: maddubs pairs stay within i16.
                            dot[k % 2][r] = add_dot_u8_i8::<VNNI>(dot[k % 2][r], w, x);
                        }
                    }
                    for r in 0..RA {
                        let both = _mm256_add_epi32(dot[0][r], dot[1][r]);
                        isum[r] = _mm256_add_epi32(isum[r], _mm256_mullo_epi32(both, scale));
                    }
                }
                for r in 0..RA {
                    let sums = broadcast4(a[r][b].bsums16.as_ptr().add(2 * p) as *const i8);
                    osum[r] = super::matrix::add_dot_i16::<VNNI>(osum[r], pairs, sums);
                }
            }
            let d = _mm256_load_ps(gb.d.as_ptr());
            for r in 0..RA {
                let ints = _mm256_sub_epi32(isum[r], _mm256_slli_epi32(osum[r], 5));
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[r][b].d));
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(ints), acc[r]);
            }
        }
        acc.map(|v| lanes(v))
    }
}

group_kernels_from_body!(Group, Q8KBlock);

#[cfg(test)]
mod tests {
    use super::super::interleaved::interleaved_tests;
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
    interleaved_tests!(Q6K, 61, block);
}
