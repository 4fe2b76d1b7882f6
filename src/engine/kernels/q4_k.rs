//! Q4_K: 256 weights per 144-byte block — f16 `d` and `dmin`, twelve bytes packing eight 6-bit
//! scales and eight 6-bit mins, and 128 bytes of nibbles. Sub-block j (32 weights) is
//! `w = d * sc[j] * q - dmin * m[j]`, q in 0..=15: a Q4_1 block whose scale and offset are
//! themselves quantized. Nibbles are laid out by 64: bytes 32i..32i+32 hold sub-block 2i in
//! their low nibbles and sub-block 2i+1 in their high nibbles.
//!
//! Activations come in 256-wide blocks with one scale (`Q8KBlock`), so per sub-block the work is
//! integer only — a u8 x i8 dot product (`maddubs`) whose i16 pair sums are multiplied by the
//! 6-bit scale and summed to i32 (`madd`) — and a whole block costs one float multiply-add, plus
//! one for the offsets: `dmin * da * Σ m[j] * (Σ of activation sub-block j)`, from the
//! activation's precomputed sums. The 6-bit scales are unpacked once at load (16 bytes instead
//! of 12: 0.59 bytes per weight as held, vs 0.5625 in the file). Decode is memory-bound at those
//! 0.59 bytes per weight; prefill (4 x 4 tiles: each weight block unpacked once for four
//! activation rows) is bound by the integer instructions — three per 32 products with AVX2, two
//! per 64 with AVX-512 VNNI — and by one broadcast float scale per (row, row, block) triple.

#[cfg(target_arch = "x86_64")]
use super::interleaved::{broadcast4, lanes, prefetch_ahead};
use super::interleaved::{group_kernels_from_body, GroupKernel, Interleaved};
use super::matrix::{BlockKind, Q8KBlock};

pub struct Q4K;

#[derive(Debug, Clone, Copy)]
pub struct Block {
    d: f32,
    dmin: f32,
    scales: [u8; 8],
    mins: [u8; 8],
    qs: [u8; 128],
}

/// Sub-block `j`'s (scale, min) from the 12 packed bytes: 0..4 sit in the low 6 bits of bytes
/// j and j+4; 4..8 take 4 bits from byte j+4 and their top 2 from the spare bits of 0..4.
fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

impl BlockKind for Q4K {
    type Block = Block;
    type Act = Q8KBlock;
    const NAME: &'static str = "Q4_K";
    const WEIGHTS: usize = 256;
    const BYTES: usize = 144;

    fn parse(b: &[u8]) -> Block {
        let f16 = |i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let mut block = Block {
            d: f16(0),
            dmin: f16(2),
            scales: [0; 8],
            mins: [0; 8],
            qs: [0; 128],
        };
        for j in 0..8 {
            (block.scales[j], block.mins[j]) = scale_min(j, &b[4..16]);
        }
        block.qs.copy_from_slice(&b[16..144]);
        block
    }

    fn dequantize(b: &Block, out: &mut [f32]) {
        for i in 0..4 {
            let q = &b.qs[32 * i..32 * i + 32];
            for (half, shift) in [(0, 0), (1, 4)] {
                let j = 2 * i + half;
                let d = b.d * b.scales[j] as f32;
                let m = b.dmin * b.mins[j] as f32;
                for (l, &q) in q.iter().enumerate() {
                    out[32 * j + l] = d * ((q >> shift) & 0xF) as f32 - m;
                }
            }
        }
    }

    fn dot_scalar(w: &[Block], a: &[Q8KBlock]) -> f32 {
        let mut sum = 0f32;
        for (wb, ab) in w.iter().zip(a) {
            let (mut isum, mut msum) = (0i32, 0i32);
            for j in 0..8 {
                let (i, shift) = (j / 2, 4 * (j % 2));
                let dot: i32 = wb.qs[32 * i..32 * i + 32]
                    .iter()
                    .zip(&ab.qs[32 * j..32 * j + 32])
                    .map(|(&q, &x)| ((q >> shift) & 0xF) as i32 * x as i32)
                    .sum();
                isum += wb.scales[j] as i32 * dot;
                msum += wb.mins[j] as i32 * ab.bsums[j] as i32;
            }
            sum += wb.d * ab.d * isum as f32 - wb.dmin * ab.d * msum as f32;
        }
        sum
    }
}

/// Block `b` of eight rows, interleaved (see `interleaved.rs`): per 32-byte load, four nibble
/// bytes of each row — the low nibbles four weights of sub-block 2i, the high nibbles the same
/// four of sub-block 2i+1 — and the per-row scales laid out as lanes.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Group {
    d: [f32; 8],
    dmin: [f32; 8],
    /// `scales[j][row]`, widened to i32 lanes when used.
    scales: [[u8; 8]; 8],
    /// `mins[p][row]` = the row's (m[2p], m[2p+1]), widened to i16 pairs for `madd`.
    mins: [[[u8; 2]; 8]; 4],
    /// `qs[i][k][row]` = bytes 4k..4k+4 of the row's nibble chunk i.
    qs: [[[[u8; 4]; 8]; 8]; 4],
}

impl Interleaved for Q4K {
    type Group = Group;

    fn interleave(rows: [&Block; 8]) -> Group {
        let mut g = Group {
            d: rows.map(|b| b.d),
            dmin: rows.map(|b| b.dmin),
            scales: [[0; 8]; 8],
            mins: [[[0; 2]; 8]; 4],
            qs: [[[[0; 4]; 8]; 8]; 4],
        };
        for (row, b) in rows.iter().enumerate() {
            for j in 0..8 {
                g.scales[j][row] = b.scales[j];
                g.mins[j / 2][row][j % 2] = b.mins[j];
            }
            for i in 0..4 {
                for k in 0..8 {
                    g.qs[i][k][row].copy_from_slice(&b.qs[32 * i + 4 * k..32 * i + 4 * k + 4]);
                }
            }
        }
        g
    }

    fn block_of(g: &Group, row: usize) -> Block {
        let mut b = Block {
            d: g.d[row],
            dmin: g.dmin[row],
            scales: [0; 8],
            mins: [0; 8],
            qs: [0; 128],
        };
        for j in 0..8 {
            b.scales[j] = g.scales[j][row];
            b.mins[j] = g.mins[j / 2][row][j % 2];
        }
        for i in 0..4 {
            for k in 0..8 {
                b.qs[32 * i + 4 * k..32 * i + 4 * k + 4].copy_from_slice(&g.qs[i][k][row]);
            }
        }
        b
    }

    fn simd_group_kernels() -> Vec<GroupKernel<Group, Q8KBlock>> {
        x86_group_kernels()
    }
}

/// Eight rows against `RA` activation rows. Per sub-block pair: eight loads of 4 x 8 nibble
/// bytes, each split into low and high nibbles and multiplied against four broadcast activation
/// bytes (one `dpbusd` per activation row and half); the eight rows' sub-block sums then take
/// their 6-bit scales as one i32 multiply each. Per block, the mins against the activation's
/// sums (`madd`) and two float multiply-adds with the rows' `d`/`dmin` as one vector. All
/// integer sums are exact and every lane's float operations run in the same order whatever
/// `RA` is, so tiles equal single rows bit for bit.
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
    use super::matrix::{add_dot_i16, add_dot_u8_i8};
    use std::arch::x86_64::*;
    // SAFETY: (whole body) the caller guarantees AVX2 and FMA (and VNNI's features when set);
    // aligned loads read 32 bytes of the 32-aligned group, broadcasts read 4 bytes inside an
    // activation block's arrays, the scale/min loads 8 or 16 bytes of their arrays.
    unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); RA];
        for (b, gb) in g.iter().enumerate() {
            let mut isum = [_mm256_setzero_si256(); RA];
            for i in 0..4 {
                if RA == 1 {
                    prefetch_ahead(gb, i, 4);
                }
                let mut lo = [_mm256_setzero_si256(); RA];
                let mut hi = [_mm256_setzero_si256(); RA];
                for k in 0..8 {
                    let packed = _mm256_load_si256(gb.qs[i][k].as_ptr() as *const __m256i);
                    let wl = _mm256_and_si256(packed, mask);
                    let wh = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
                    for r in 0..RA {
                        let x = a[r][b].qs.as_ptr().add(64 * i + 4 * k);
                        lo[r] = add_dot_u8_i8::<VNNI>(lo[r], wl, broadcast4(x));
                        hi[r] = add_dot_u8_i8::<VNNI>(hi[r], wh, broadcast4(x.add(32)));
                    }
                }
                let scale = |j: usize| {
                    _mm256_cvtepu8_epi32(_mm_loadl_epi64(gb.scales[j].as_ptr() as *const __m128i))
                };
                let (sl, sh) = (scale(2 * i), scale(2 * i + 1));
                for r in 0..RA {
                    let both = _mm256_add_epi32(
                        _mm256_mullo_epi32(lo[r], sl),
                        _mm256_mullo_epi32(hi[r], sh),
                    );
                    isum[r] = _mm256_add_epi32(isum[r], both);
                }
            }
            let mut msum = [_mm256_setzero_si256(); RA];
            for p in 0..4 {
                let mins =
                    _mm256_cvtepu8_epi16(_mm_loadu_si128(gb.mins[p].as_ptr() as *const __m128i));
                for r in 0..RA {
                    let sums = broadcast4(a[r][b].bsums.as_ptr().add(2 * p) as *const i8);
                    msum[r] = add_dot_i16::<VNNI>(msum[r], mins, sums);
                }
            }
            let d = _mm256_loadu_ps(gb.d.as_ptr());
            let dmin = _mm256_loadu_ps(gb.dmin.as_ptr());
            for r in 0..RA {
                let da = _mm256_set1_ps(a[r][b].d);
                acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(isum[r]), acc[r]);
                acc[r] =
                    _mm256_fnmadd_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(msum[r]), acc[r]);
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
        let mut b = Vec::with_capacity(144);
        b.extend(testing::f16_bytes(rng, 0.0001, 0.002));
        b.extend(testing::f16_bytes(rng, 0.0001, 0.004));
        // Any 12 bytes are valid packed scales; any 128 bytes valid nibbles.
        b.extend((0..140).map(|_| rng.random::<u8>()));
        b
    }

    block_kind_tests!(Q4K, GgmlDType::Q4K, 21, block);
    interleaved_tests!(Q4K, 31, block);
}
