//! Q8_0: 32 weights per 34-byte block, `w[j] = d * q[j]`, q an i8. Against an activation block
//! `a[j] ≈ da * qa[j]`: Σ w a = d * da * Σ q qa — one 32-wide i8 x i8 dot product per block.
//! AVX2 multiplies only u8 x i8 (`maddubs`), so the weight's sign moves onto the activation:
//! q * qa = |q| * (sign(q) * qa).
//!
//! Roofline: 1.125 bytes per weight as held here (d widened to f32 at load), 2 flops each —
//! decode is memory-bound, more so than the 4-bit types; prefill is compute-bound like Q4_1.

#[cfg(target_arch = "x86_64")]
use super::interleaved::{broadcast4, lanes, prefetch_ahead};
use super::interleaved::{group_kernels_from_body, GroupKernel, Interleaved};
use super::matrix::{BlockKind, Q8Block};

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
}

/// Block `b` of eight rows, interleaved (see `interleaved.rs`): `qs[k][row]` holds the row's
/// weights 4k..4k+4, so one 32-byte load has four weights of each row.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Group {
    d: [f32; 8],
    qs: [[[i8; 4]; 8]; 8],
}

impl Interleaved for Q8_0 {
    type Group = Group;

    fn interleave(rows: [&Block; 8]) -> Group {
        let mut g = Group {
            d: rows.map(|b| b.d),
            qs: [[[0; 4]; 8]; 8],
        };
        for (row, b) in rows.iter().enumerate() {
            for k in 0..8 {
                g.qs[k][row].copy_from_slice(&b.qs[4 * k..4 * k + 4]);
            }
        }
        g
    }

    fn block_of(g: &Group, row: usize) -> Block {
        let mut qs = [0i8; 32];
        for k in 0..8 {
            qs[4 * k..4 * k + 4].copy_from_slice(&g.qs[k][row]);
        }
        Block { d: g.d[row], qs }
    }

    fn simd_group_kernels() -> Vec<GroupKernel<Group, Q8Block>> {
        x86_group_kernels()
    }
}

/// Eight rows against `RA` activation rows: eight loads per block, each against four broadcast
/// activation bytes per activation row, then one float multiply-add per block with the rows'
/// `d` as one vector. VNNI multiplies u8 x i8 only, so the weights go in as `q + 128` (a sign
/// flip of the top bit) and the `128 * Σ qa` that adds is taken off with the activation's sum;
/// AVX2 moves the weight's sign onto the activation instead (`maddubs` pairs stay within i16).
/// Both give the same exact integers, and every lane's float operations run in the same order
/// whatever `RA` is.
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
        let flip = _mm256_set1_epi8(i8::MIN);
        let mut acc = [_mm256_setzero_ps(); RA];
        for (b, gb) in g.iter().enumerate() {
            if RA == 1 {
                prefetch_ahead(gb, 0, 1);
            }
            let mut dot = [_mm256_setzero_si256(); RA];
            for k in 0..8 {
                let w = _mm256_load_si256(gb.qs[k].as_ptr() as *const __m256i);
                if VNNI {
                    let u = _mm256_xor_si256(w, flip);
                    for r in 0..RA {
                        let x = broadcast4(a[r][b].qs.as_ptr().add(4 * k));
                        dot[r] = add_dot_u8_i8::<true>(dot[r], u, x);
                    }
                } else {
                    // |q| (-128 reads as u8 128) against ±qa.
                    let abs = _mm256_abs_epi8(w);
                    for r in 0..RA {
                        let x = broadcast4(a[r][b].qs.as_ptr().add(4 * k));
                        dot[r] = add_dot_u8_i8::<false>(dot[r], abs, _mm256_sign_epi8(x, w));
                    }
                }
            }
            let d = _mm256_load_ps(gb.d.as_ptr());
            for r in 0..RA {
                let ab = &a[r][b];
                let ints = if VNNI {
                    _mm256_sub_epi32(dot[r], _mm256_set1_epi32(ab.sum * 128))
                } else {
                    dot[r]
                };
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(ab.d));
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(ints), acc[r]);
            }
        }
        acc.map(|v| lanes(v))
    }
}

group_kernels_from_body!(Group, Q8Block);

#[cfg(test)]
mod tests {
    use super::super::interleaved::interleaved_tests;
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
    interleaved_tests!(Q8_0, 41, block);
}
