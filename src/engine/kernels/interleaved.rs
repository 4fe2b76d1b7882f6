//! Weight matrices repacked at load so that eight rows share every register: a `Group` holds
//! block `b` of rows `8g..8g+8`, its quantized values interleaved four bytes per row, so one
//! 32-byte load has four weights of each of the eight rows in its eight 32-bit lanes. Against
//! four activation bytes broadcast to every lane, one VNNI `dpbusd` (AVX2: `maddubs` + `madd`)
//! then advances all eight rows' dot products at once, and the block's float scales — one per
//! row — are applied as one vector multiply for the eight rows instead of one broadcast per
//! (row, block) pair. The lanes end up holding the eight rows' results: no horizontal sums.
//!
//! This is what the row layout (`matrix.rs`) could not do once its integer work was one VNNI
//! instruction: there, the per-(row, activation row, block) float work cost as much as the
//! products. Block types opt in with `Interleaved`; the file's GGUF layout stays the definition
//! (`BlockKind::dequantize`, `dot_scalar`), which the tests hold these kernels to.

use rayon::prelude::*;

use super::matrix::{
    place_tiles, quantize_activations, Activations, BlockKind, PARALLEL_MIN_WEIGHTS,
};

/// Weight rows per group: the eight 32-bit lanes of an AVX2 register.
pub const ROWS: usize = 8;

/// One group-row (every block of eight rows) against one activation row: the eight results.
pub type GroupDotFn<G, A> = fn(&[G], &[A]) -> [f32; ROWS];
/// The same against four activation rows (prefill): each weight register is loaded once for
/// four broadcasts. Every result must be bit-identical to `GroupDotFn`'s (a row's product may
/// not depend on the batch it comes in).
pub type GroupTileFn<G, A> = fn(&[G], [&[A]; 4]) -> [[f32; ROWS]; 4];

/// One implementation of a grouped block type's products.
pub struct GroupKernel<G, A> {
    pub name: &'static str,
    pub dot: GroupDotFn<G, A>,
    pub tile: GroupTileFn<G, A>,
}

impl<G, A> Clone for GroupKernel<G, A> {
    fn clone(&self) -> Self {
        GroupKernel { ..*self }
    }
}

/// A block type with an eight-row interleaved layout.
pub trait Interleaved: BlockKind {
    type Group: Copy + Send + Sync;
    /// Block `b` of eight rows as one group.
    fn interleave(rows: [&Self::Block; ROWS]) -> Self::Group;
    /// Row `i`'s block back out of a group (embedding lookups, tests).
    fn block_of(group: &Self::Group, i: usize) -> Self::Block;
    /// The SIMD kernels this CPU runs, fastest first; empty when it has none (the row layout
    /// is used then).
    fn simd_group_kernels() -> Vec<GroupKernel<Self::Group, Self::Act>>;

    /// The reference: each row's blocks taken back out and run through `dot_scalar`.
    fn group_dot_scalar(g: &[Self::Group], a: &[Self::Act]) -> [f32; ROWS] {
        std::array::from_fn(|i| {
            let row: Vec<Self::Block> = g.iter().map(|g| Self::block_of(g, i)).collect();
            Self::dot_scalar(&row, a)
        })
    }

    fn group_kernels() -> Vec<GroupKernel<Self::Group, Self::Act>> {
        let mut all = Self::simd_group_kernels();
        all.push(GroupKernel {
            name: "scalar",
            dot: Self::group_dot_scalar,
            tile: |g, a| a.map(|a| Self::group_dot_scalar(g, a)),
        });
        all
    }
}

/// `dot_avx2`/`dot_avx512` group kernels from a block type's
/// `unsafe fn group_body<const RA: usize, const VNNI: bool>(&[Group], [&[Act]; RA]) -> [[f32; 8]; RA]`
/// (AVX2 intrinsics, inlined into both), and `x86_group_kernels()` listing those this CPU runs.
macro_rules! group_kernels_from_body {
    ($group:ty, $act:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn group_avx2<const RA: usize>(g: &[$group], a: [&[$act]; RA]) -> [[f32; 8]; RA] {
            // SAFETY: this function's target features are the body's.
            unsafe { group_body::<RA, false>(g, a) }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
        fn group_avx512<const RA: usize>(g: &[$group], a: [&[$act]; RA]) -> [[f32; 8]; RA] {
            // SAFETY: this function's target features include the body's.
            unsafe { group_body::<RA, true>(g, a) }
        }

        fn x86_group_kernels(
        ) -> Vec<$crate::engine::kernels::interleaved::GroupKernel<$group, $act>> {
            #[allow(unused_mut)]
            let mut all = Vec::new();
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::engine::kernels::interleaved::GroupKernel;
                if $crate::engine::kernels::matrix::has_avx512() {
                    all.push(GroupKernel {
                        name: "avx512",
                        // SAFETY: listed only after its features were detected.
                        dot: |g, a| unsafe { group_avx512::<1>(g, [a]) }[0],
                        // SAFETY: as above.
                        tile: |g, a| unsafe { group_avx512::<4>(g, a) },
                    });
                }
                if $crate::engine::kernels::matrix::has_avx2() {
                    all.push(GroupKernel {
                        name: "avx2",
                        // SAFETY: listed only after its features were detected.
                        dot: |g, a| unsafe { group_avx2::<1>(g, [a]) }[0],
                        // SAFETY: as above.
                        tile: |g, a| unsafe { group_avx2::<4>(g, a) },
                    });
                }
            }
            all
        }
    };
}
pub(crate) use group_kernels_from_body;

/// Four bytes at `p` (an activation's i8s, or a pair of i16 sums) in every 32-bit lane: what
/// each lane's row multiplies by.
///
/// # Safety
/// AVX2 must be enabled; `p` must point at 4 readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn broadcast4(p: *const i8) -> std::arch::x86_64::__m256i {
    // SAFETY: as the caller guarantees.
    unsafe { std::arch::x86_64::_mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32)) }
}

/// A group kernel's accumulator as the eight rows' results.
///
/// # Safety
/// AVX must be enabled.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn lanes(v: std::arch::x86_64::__m256) -> [f32; ROWS] {
    let mut out = [0f32; ROWS];
    // SAFETY: writes the 8 floats of `out`; the caller enables AVX.
    unsafe { std::arch::x86_64::_mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Asks for part `part` of `parts` of the group-sized window `AHEAD` bytes past `group` to be
/// fetched into cache. A single activation row (decode) streams the groups from memory, and
/// the hardware prefetcher does not keep up with a group's several regions read in turn
/// (measured on Q6_K: 41 -> 82 GMAC/s); groups lie back to back, so the window is the next
/// group or the one after, also across a row of groups.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead<G>(group: &G, part: usize, parts: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    const AHEAD: usize = 4096;
    let lines = std::mem::size_of::<G>().div_ceil(64);
    let per = lines.div_ceil(parts);
    let base = (group as *const G).cast::<i8>().wrapping_add(AHEAD);
    for line in part * per..((part + 1) * per).min(lines) {
        // SAFETY: a prefetch never faults and never reads into the program, whatever the
        // address (past the end of the matrix it fetches nothing useful).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(line * 64)) };
    }
}

/// A quantized matrix `(rows, cols)` held as groups of eight rows (the last group padded with
/// zero rows), group-major: group `g`'s blocks are `groups[g * nb..(g + 1) * nb]`.
pub struct InterleavedMatrix<K: Interleaved> {
    rows: usize,
    cols: usize,
    groups: Vec<K::Group>,
    kernel: GroupKernel<K::Group, K::Act>,
}

impl<K: Interleaved> InterleavedMatrix<K> {
    /// From GGUF's raw bytes (row-major blocks); `None` if the sizes do not fit the block type.
    pub fn from_gguf_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(K::WEIGHTS) || bytes.len() != rows * cols / K::WEIGHTS * K::BYTES {
            return None;
        }
        let nb = cols / K::WEIGHTS;
        let zero = K::parse(&vec![0u8; K::BYTES]);
        let block = |r: usize, b: usize| {
            if r < rows {
                let at = (r * nb + b) * K::BYTES;
                K::parse(&bytes[at..at + K::BYTES])
            } else {
                zero
            }
        };
        // An indexed iterator collects straight into one vector (an unindexed one would hold
        // the largest matrix twice while its pieces are joined).
        let groups = (0..rows.div_ceil(ROWS) * nb)
            .into_par_iter()
            .map(|at| {
                let (g, b) = (at / nb, at % nb);
                let blocks: [K::Block; ROWS] = std::array::from_fn(|i| block(g * ROWS + i, b));
                K::interleave(blocks.each_ref())
            })
            .collect();
        Some(Self {
            rows,
            cols,
            groups,
            kernel: K::group_kernels().swap_remove(0),
        })
    }

    /// The same matrix computed by another of `K::group_kernels()` (tests compare them).
    pub fn with_kernel(mut self, kernel: GroupKernel<K::Group, K::Act>) -> Self {
        self.kernel = kernel;
        self
    }

    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn group(&self, g: usize) -> &[K::Group] {
        let nb = self.cols / K::WEIGHTS;
        &self.groups[g * nb..(g + 1) * nb]
    }

    /// Row `r` in f32 (embedding lookups).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (g, o) in self
            .group(r / ROWS)
            .iter()
            .zip(out.chunks_exact_mut(K::WEIGHTS))
        {
            K::dequantize(&K::block_of(g, r % ROWS), o);
        }
    }

    /// `x (m, cols)` row-major -> `(m, rows)`: every activation row times every weight row.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let qx = quantize_activations::<K::Act>(x, m, self.cols);
        let na = self.cols / K::Act::VALUES;
        let act = |r: usize| &qx[r * na..(r + 1) * na];
        let ngroups = self.rows.div_ceil(ROWS);
        let width = ngroups * ROWS;
        let dot = self.kernel.dot;
        let mut out = vec![0f32; m * width];
        if m == 1 {
            let run = |first: usize, chunk: &mut [f32]| {
                for (i, o) in chunk.chunks_exact_mut(ROWS).enumerate() {
                    o.copy_from_slice(&dot(self.group(first + i), &qx));
                }
            };
            if self.rows * self.cols < PARALLEL_MIN_WEIGHTS {
                run(0, &mut out);
            } else {
                // Enough tiles that work stealing rebalances when another process preempts
                // one of our threads.
                let per = (ngroups / (rayon::current_num_threads() * 8)).clamp(1, 32);
                out.par_chunks_mut(per * ROWS)
                    .enumerate()
                    .for_each(|(t, chunk)| run(t * per, chunk));
            }
        } else {
            // Prefill: two groups (16 rows, a few KB per block column) stay in cache while the
            // activation rows pass by four at a time; each tile fills a row-major block that is
            // copied into place after.
            const TILE_GROUPS: usize = 2;
            let tile_fn = self.kernel.tile;
            let tiles: Vec<(usize, Vec<f32>)> = (0..ngroups.div_ceil(TILE_GROUPS))
                .into_par_iter()
                .map(|t| {
                    let g0 = t * TILE_GROUPS;
                    let g1 = (g0 + TILE_GROUPS).min(ngroups);
                    let w = (g1 - g0) * ROWS;
                    let mut part = vec![0f32; m * w];
                    let mut r = 0;
                    while r + 4 <= m {
                        let a = [act(r), act(r + 1), act(r + 2), act(r + 3)];
                        for g in g0..g1 {
                            for (j, v) in tile_fn(self.group(g), a).iter().enumerate() {
                                let at = (r + j) * w + (g - g0) * ROWS;
                                part[at..at + ROWS].copy_from_slice(v);
                            }
                        }
                        r += 4;
                    }
                    for r in r..m {
                        for g in g0..g1 {
                            let at = r * w + (g - g0) * ROWS;
                            part[at..at + ROWS].copy_from_slice(&dot(self.group(g), act(r)));
                        }
                    }
                    (g0 * ROWS, part)
                })
                .collect();
            place_tiles(&mut out, width, tiles);
        }
        if width != self.rows {
            // The padding rows of the last group go.
            out = out
                .chunks_exact(width)
                .flat_map(|r| &r[..self.rows])
                .copied()
                .collect();
        }
        out
    }
}

/// The checks every interleaved block type passes (as `#[test]`s in the type's own module via
/// `interleaved_tests!`): the layout loses nothing, and every kernel computes what the row
/// layout's scalar reference does.
#[cfg(test)]
macro_rules! interleaved_tests {
    ($kind:ty, $seed:literal, $block:ident) => {
        #[test]
        fn interleaving_keeps_every_row() {
            $crate::engine::kernels::interleaved::testing::keeps_every_row::<$kind>($seed, $block);
        }

        #[test]
        fn group_kernels_equal_the_scalar_reference() {
            $crate::engine::kernels::interleaved::testing::kernels_equal_scalar::<$kind>(
                $seed + 1,
                $block,
            );
        }

        #[test]
        fn group_tiles_equal_single_rows_bit_for_bit() {
            $crate::engine::kernels::interleaved::testing::tiles_equal_single_rows::<$kind>(
                $seed + 2,
                $block,
            );
        }

        #[test]
        fn interleaved_matmul_equals_the_row_layout() {
            $crate::engine::kernels::interleaved::testing::matmul_equals_rows::<$kind>(
                $seed + 3,
                $block,
            );
        }
    };
}
#[cfg(test)]
pub(crate) use interleaved_tests;

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::engine::kernels::matrix::testing::{self, abs_contributions, random_bytes};
    use crate::engine::kernels::matrix::QMatrix;
    use rand::{rngs::StdRng, SeedableRng};

    fn activations<A: Activations>(rng: &mut StdRng, m: usize, cols: usize) -> (Vec<f32>, Vec<A>) {
        let x = testing::activations(rng, m * cols);
        let q = quantize_activations::<A>(&x, m, cols);
        (x, q)
    }

    /// Every row (13: the second group half padding) dequantizes as in the row layout.
    pub fn keeps_every_row<K: Interleaved>(seed: u64, block: fn(&mut StdRng) -> Vec<u8>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (rows, cols) = (13, 3 * K::WEIGHTS);
        let bytes = random_bytes::<K>(&mut rng, rows, cols, block);
        let grouped = InterleavedMatrix::<K>::from_gguf_bytes(&bytes, rows, cols).unwrap();
        let plain = QMatrix::<K>::from_gguf_bytes(&bytes, rows, cols).unwrap();
        let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
        for r in 0..rows {
            grouped.dequantize_row(r, &mut a);
            plain.dequantize_row(r, &mut b);
            assert_eq!(a, b, "{} row {r}", K::NAME);
        }
    }

    /// Every group kernel this CPU runs equals `dot_scalar` on each row: the same integer sums,
    /// float operations in another order — within 1e-5 of the sum of |block contributions|.
    pub fn kernels_equal_scalar<K: Interleaved>(seed: u64, block: fn(&mut StdRng) -> Vec<u8>) {
        let mut rng = StdRng::seed_from_u64(seed);
        for kernel in K::group_kernels() {
            for blocks in [1, 2, 3, 7] {
                let cols = blocks * K::WEIGHTS;
                let bytes = random_bytes::<K>(&mut rng, ROWS, cols, block);
                let grouped = InterleavedMatrix::<K>::from_gguf_bytes(&bytes, ROWS, cols).unwrap();
                let plain = QMatrix::<K>::from_gguf_bytes(&bytes, ROWS, cols).unwrap();
                let (_, q) = activations::<K::Act>(&mut rng, 1, cols);
                let got = (kernel.dot)(grouped.group(0), &q);
                for (i, got) in got.into_iter().enumerate() {
                    let want = K::dot_scalar(plain.row(i), &q);
                    let scale = abs_contributions::<K>(plain.row(i), &q);
                    assert!(
                        (got - want).abs() <= 1e-5 * scale.max(1.0),
                        "{} {} {blocks} blocks row {i}: {got} vs {want}",
                        K::NAME,
                        kernel.name
                    );
                }
            }
        }
    }

    /// A four-row tile gives each activation row's single result bit for bit, and the SIMD
    /// variants (AVX2, AVX-512) agree bit for bit: same integers, same float operations.
    pub fn tiles_equal_single_rows<K: Interleaved>(seed: u64, block: fn(&mut StdRng) -> Vec<u8>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cols = 3 * K::WEIGHTS;
        let bytes = random_bytes::<K>(&mut rng, ROWS, cols, block);
        let (_, q) = activations::<K::Act>(&mut rng, 4, cols);
        let na = cols / K::Act::VALUES;
        let a: [&[K::Act]; 4] = std::array::from_fn(|r| &q[r * na..(r + 1) * na]);
        let mut simd_bits = Vec::new();
        for kernel in K::group_kernels() {
            let w = InterleavedMatrix::<K>::from_gguf_bytes(&bytes, ROWS, cols).unwrap();
            let tile = (kernel.tile)(w.group(0), a);
            for (r, row) in tile.iter().enumerate() {
                let one = (kernel.dot)(w.group(0), a[r]);
                assert_eq!(
                    row.map(f32::to_bits),
                    one.map(f32::to_bits),
                    "{} {} activation row {r}",
                    K::NAME,
                    kernel.name
                );
            }
            if kernel.name != "scalar" {
                simd_bits.push((kernel.name, tile.map(|r| r.map(f32::to_bits))));
            }
        }
        assert!(
            simd_bits.windows(2).all(|p| p[0].1 == p[1].1),
            "{}: SIMD variants differ",
            K::NAME
        );
    }

    /// The whole matmul — decode (serial and parallel), prefill with 1-3 leftover activation
    /// rows, row counts that leave the last group partial — equals the row layout's scalar
    /// reference within 1e-5 of Σ|w·x| per output.
    pub fn matmul_equals_rows<K: Interleaved>(seed: u64, block: fn(&mut StdRng) -> Vec<u8>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let w = K::WEIGHTS;
        let parallel_rows = PARALLEL_MIN_WEIGHTS.div_ceil(2048 / w * w);
        let shapes = [
            (1, w, 1),
            (13, 2 * w, 3),
            (37, 3 * w, 1),
            (70, 2 * w, 9),
            (parallel_rows, 2048 / w * w, 1),
        ];
        for (kernel, (rows, cols, m)) in K::group_kernels()
            .into_iter()
            .flat_map(|k| shapes.map(|s| (k.clone(), s)))
        {
            let bytes = random_bytes::<K>(&mut rng, rows, cols, block);
            let grouped = InterleavedMatrix::<K>::from_gguf_bytes(&bytes, rows, cols)
                .unwrap()
                .with_kernel(kernel);
            let plain = QMatrix::<K>::from_gguf_bytes(&bytes, rows, cols).unwrap();
            let (x, q) = activations::<K::Act>(&mut rng, m, cols);
            let got = grouped.matmul(&x, m);
            assert_eq!(got.len(), m * rows);
            let na = cols / K::Act::VALUES;
            let mut dense = vec![0f32; cols];
            for c in 0..rows {
                plain.dequantize_row(c, &mut dense);
                for r in 0..m {
                    let want = K::dot_scalar(plain.row(c), &q[r * na..(r + 1) * na]);
                    let scale: f32 = (0..cols).map(|k| (dense[k] * x[r * cols + k]).abs()).sum();
                    let err = (got[r * rows + c] - want).abs();
                    assert!(
                        err <= 1e-5 * scale + 1e-6,
                        "{} {} ({rows},{cols},{m}) r{r} c{c}: {err} of {scale}",
                        K::NAME,
                        grouped.kernel_name()
                    );
                }
            }
        }
    }
}
