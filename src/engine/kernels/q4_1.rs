//! Q4_1: 32 weights per 20-byte block, `w[j] = d * q[j] + m`, q in 0..=15; the low nibbles of
//! `qs` hold j = 0..16, the high nibbles j = 16..32. With an activation block `a[j] ≈ da * qa[j]`:
//!   Σ w[j] a[j] = d * da * Σ q[j] qa[j] + m * (da * Σ qa[j])
//! so each block costs one 32-wide u8 x i8 integer dot product plus two multiply-adds.
//!
//! Roofline (decode, one activation row): every weight byte is read once per token —
//! 0.75 bytes per weight as held here (d and m widened to f32 at load) — and used for 2 flops,
//! so decode is memory-bound; prefill reuses each weight block for every activation row of a
//! tile while it sits in cache, and is compute-bound on the integer dot products (AVX2: 32
//! u8 x i8 products per `maddubs`).

#[cfg(target_arch = "x86_64")]
use super::interleaved::{broadcast4, lanes, prefetch_ahead};
use super::interleaved::{group_kernels_from_body, GroupKernel, Interleaved};
use super::matrix::{BlockKind, Q8Block};

pub struct Q4_1;

#[derive(Debug, Clone, Copy)]
pub struct Block {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

impl BlockKind for Q4_1 {
    type Block = Block;
    type Act = Q8Block;
    const NAME: &'static str = "Q4_1";
    const WEIGHTS: usize = 32;
    const BYTES: usize = 20;

    fn parse(b: &[u8]) -> Block {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[4..20]);
        Block {
            d: f16(&b[0..2]),
            m: f16(&b[2..4]),
            qs,
        }
    }

    fn dequantize(b: &Block, out: &mut [f32]) {
        for j in 0..16 {
            out[j] = b.d * (b.qs[j] & 0x0F) as f32 + b.m;
            out[j + 16] = b.d * (b.qs[j] >> 4) as f32 + b.m;
        }
    }

    fn dot_scalar(w: &[Block], a: &[Q8Block]) -> f32 {
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
}

/// Block `b` of eight rows, interleaved (see `interleaved.rs`): `qs[k][row]` holds the row's
/// nibble bytes 4k..4k+4 — weights 4k..4k+4 in the low nibbles, 16+4k..16+4k+4 in the high.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Group {
    d: [f32; 8],
    m: [f32; 8],
    qs: [[[u8; 4]; 8]; 4],
}

impl Interleaved for Q4_1 {
    type Group = Group;

    fn interleave(rows: [&Block; 8]) -> Group {
        let mut g = Group {
            d: rows.map(|b| b.d),
            m: rows.map(|b| b.m),
            qs: [[[0; 4]; 8]; 4],
        };
        for (row, b) in rows.iter().enumerate() {
            for k in 0..4 {
                g.qs[k][row].copy_from_slice(&b.qs[4 * k..4 * k + 4]);
            }
        }
        g
    }

    fn block_of(g: &Group, row: usize) -> Block {
        let mut qs = [0u8; 16];
        for k in 0..4 {
            qs[4 * k..4 * k + 4].copy_from_slice(&g.qs[k][row]);
        }
        Block {
            d: g.d[row],
            m: g.m[row],
            qs,
        }
    }

    fn simd_group_kernels() -> Vec<GroupKernel<Group, Q8Block>> {
        x86_group_kernels()
    }
}

/// Eight rows against `RA` activation rows: four loads per block, each split into low and high
/// nibbles against four broadcast activation bytes (one `dpbusd` each per activation row), then
/// per block `d * da * Σ q qa + m * s` as two float multiply-adds with the rows' `d` and `m` as
/// vectors. Exact integers, and every lane's float operations in the same order whatever `RA`.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and with `VNNI` also AVX-512 F/VL/BW/VNNI: the
/// `target_feature` wrappers this is inlined into are chosen only after run-time detection.
/// Slices are indexed with bounds checks; the loads read whole blocks.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_body<const RA: usize, const VNNI: bool>(
    g: &[Group],
    a: [&[Q8Block]; RA],
) -> [[f32; 8]; RA] {
    use super::matrix::add_dot_u8_i8;
    use std::arch::x86_64::*;
    // SAFETY: (whole body) the caller guarantees AVX2 and FMA (and VNNI's features when set);
    // aligned loads read 32 bytes of the 32-aligned group, broadcasts 4 bytes of an
    // activation block's 32.
    unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); RA];
        let mut offsets = [_mm256_setzero_ps(); RA];
        for (b, gb) in g.iter().enumerate() {
            if RA == 1 {
                prefetch_ahead(gb, 0, 1);
            }
            let mut dot = [_mm256_setzero_si256(); RA];
            for k in 0..4 {
                let packed = _mm256_load_si256(gb.qs[k].as_ptr() as *const __m256i);
                let lo = _mm256_and_si256(packed, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
                for r in 0..RA {
                    let x = a[r][b].qs.as_ptr().add(4 * k);
                    dot[r] = add_dot_u8_i8::<VNNI>(dot[r], lo, broadcast4(x));
                    dot[r] = add_dot_u8_i8::<VNNI>(dot[r], hi, broadcast4(x.add(16)));
                }
            }
            let d = _mm256_load_ps(gb.d.as_ptr());
            let m = _mm256_load_ps(gb.m.as_ptr());
            for r in 0..RA {
                let ab = &a[r][b];
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(ab.d));
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot[r]), acc[r]);
                offsets[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(ab.s), offsets[r]);
            }
        }
        std::array::from_fn(|r| lanes(_mm256_add_ps(acc[r], offsets[r])))
    }
}

group_kernels_from_body!(Group, Q8Block);

#[cfg(test)]
mod tests {
    use super::super::interleaved::interleaved_tests;
    use super::super::matrix::{block_kind_tests, testing, QMatrix};
    use super::*;
    use candle_core::quantized::GgmlDType;
    use rand::{rngs::StdRng, Rng};

    fn block(rng: &mut StdRng) -> Vec<u8> {
        let mut b = Vec::with_capacity(20);
        b.extend(testing::f16_bytes(rng, 0.001, 0.05));
        b.extend(testing::f16_bytes(rng, -0.4, 0.0));
        b.extend((0..16).map(|_| rng.random::<u8>()));
        b
    }

    block_kind_tests!(Q4_1, GgmlDType::Q4_1, 1, block);
    interleaved_tests!(Q4_1, 51, block);

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(QMatrix::<Q4_1>::from_gguf_bytes(&[0; 20], 1, 31).is_none());
        assert!(QMatrix::<Q4_1>::from_gguf_bytes(&[0; 19], 1, 32).is_none());
    }
}
