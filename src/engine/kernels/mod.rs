//! Our own CPU kernels for the GGUF block types Llama-family files use (Q4_1, Q8_0, Q4_K,
//! Q6_K): candle 0.11's Q4_1 dot product is a scalar loop, and its K-quant path runs on a
//! spin-waiting thread pool that collapses when another process wants the cores. Ours run on
//! rayon, on x86-64 with AVX2 (AVX-512/VNNI where present). Everything else — f32/bf16
//! weights, other block types, the GPU, and CPUs we have no SIMD kernel for (ARM's NEON,
//! x86 without AVX2) — stays candle's `QMatMul`, never a scalar loop of ours.
//!
//! `matrix.rs` holds what the block types share (activation quantization, the row-order
//! `QMatrix` multiplied by the scalar reference the tests hold the SIMD kernels to);
//! `interleaved.rs` the layout the SIMD kernels use (eight rows per register); one file per
//! block type holds its block, its definition (`dequantize`), the scalar reference and its
//! interleaved kernels. `attention.rs` is the causal attention over the KV cache that
//! `llama.rs` uses on the CPU. Measurements and rooflines: `kernels-notes.md`;
//! `candlelight bench --kernels` times ours against candle's on the same weights.

// Nearly all of the crate's unsafe code lives here: every unsafe block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod attention;
pub mod interleaved;
pub mod matrix;
pub mod q4_1;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;

use std::sync::Arc;

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use self::interleaved::{Interleaved, InterleavedMatrix};
use super::EngineError;

/// What the model needs from a quantized matrix of any of our block types.
pub trait QuantMatmul: Send + Sync {
    fn block_type(&self) -> &'static str;
    /// Layout and instruction set, e.g. `interleaved/avx512`.
    fn kernel(&self) -> String;
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// `x (m, cols)` row-major -> `(m, rows)`.
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32>;
    fn dequantize_row(&self, r: usize, out: &mut [f32]);
}

impl<K: Interleaved> QuantMatmul for InterleavedMatrix<K> {
    fn block_type(&self) -> &'static str {
        K::NAME
    }
    fn kernel(&self) -> String {
        format!("interleaved/{}", self.kernel_name())
    }
    fn rows(&self) -> usize {
        InterleavedMatrix::rows(self)
    }
    fn cols(&self) -> usize {
        InterleavedMatrix::cols(self)
    }
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        InterleavedMatrix::matmul(self, x, m)
    }
    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        InterleavedMatrix::dequantize_row(self, r, out)
    }
}

/// A weight matrix `(out, in)` applied as `x @ W^T`.
#[derive(Clone)]
pub enum Weight {
    Candle(QMatMul),
    Own(Arc<dyn QuantMatmul>),
}

/// Which of our SIMD kernels may run (`CANDLELIGHT_SIMD`): the best this CPU has (`auto`),
/// only the AVX-512 or only the AVX2 ones (where the CPU has them), or `none` of ours — candle's
/// `QMatMul` for every matrix. For timing each level side by side on one machine (an AVX2-only
/// home-lab CPU runs what `avx2` runs here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimdLevel {
    #[default]
    Auto,
    Avx512,
    Avx2,
    None,
}

impl SimdLevel {
    fn allows(self, kernel: &str) -> bool {
        match self {
            SimdLevel::Auto => true,
            SimdLevel::Avx512 => kernel == "avx512",
            SimdLevel::Avx2 => kernel == "avx2",
            SimdLevel::None => false,
        }
    }
}

impl std::str::FromStr for SimdLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(SimdLevel::Auto),
            "avx512" => Ok(SimdLevel::Avx512),
            "avx2" => Ok(SimdLevel::Avx2),
            "none" | "candle" => Ok(SimdLevel::None),
            other => Err(format!(
                "CANDLELIGHT_SIMD '{other}': use auto, avx512, avx2 or none (candle's kernels)"
            )),
        }
    }
}

/// The interleaved layout with the best of this CPU's SIMD kernels that `simd` allows; `None`
/// leaves the matrix to candle's `QMatMul` (its own SIMD: NEON on ARM, AVX on x86 without
/// AVX2), never a scalar loop.
fn grouped<K: Interleaved>(
    bytes: &[u8],
    rows: usize,
    cols: usize,
    simd: SimdLevel,
) -> Option<Arc<dyn QuantMatmul>> {
    let kernel = K::simd_group_kernels()
        .into_iter()
        .find(|k| simd.allows(k.name))?;
    InterleavedMatrix::<K>::from_gguf_bytes(bytes, rows, cols)
        .map(|m| Arc::new(m.with_kernel(kernel)) as Arc<dyn QuantMatmul>)
}

type Builder = fn(&[u8], usize, usize, SimdLevel) -> Option<Arc<dyn QuantMatmul>>;

/// How a block type's matrices are held, if we have kernels for it.
fn builder(dtype: GgmlDType) -> Option<Builder> {
    match dtype {
        GgmlDType::Q4_1 => Some(grouped::<q4_1::Q4_1>),
        GgmlDType::Q8_0 => Some(grouped::<q8_0::Q8_0>),
        GgmlDType::Q4K => Some(grouped::<q4_k::Q4K>),
        GgmlDType::Q6K => Some(grouped::<q6_k::Q6K>),
        _ => None,
    }
}

/// candle's own `QMatMul` on the same weights, as a [`QuantMatmul`]: what `bench --kernels`
/// measures ours against.
struct CandleMatmul {
    block_type: &'static str,
    rows: usize,
    cols: usize,
    inner: QMatMul,
}

impl QuantMatmul for CandleMatmul {
    fn block_type(&self) -> &'static str {
        self.block_type
    }
    fn kernel(&self) -> String {
        "candle".into()
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let run = || -> candle_core::Result<Vec<f32>> {
            let x = Tensor::from_slice(x, (m, self.cols), &Device::Cpu)?;
            self.inner.forward(&x)?.flatten_all()?.to_vec1()
        };
        // A benchmark's product of sizes it built itself; an error would be a bug in the bench.
        run().unwrap_or_default()
    }
    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let row = Tensor::new(&[r as u32], &Device::Cpu)
            .and_then(|ids| self.inner.embedding(&ids))
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>());
        if let Ok(row) = row {
            out.copy_from_slice(&row);
        }
    }
}

/// Every SIMD kernel this CPU runs for a block type in the interleaved layout, then candle's
/// `QMatMul` on the same weights: `candlelight bench --kernels` times them side by side (the
/// scalar references are left out; they are for tests).
pub fn variants(
    dtype: GgmlDType,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Vec<Arc<dyn QuantMatmul>> {
    fn of<K: Interleaved>(
        dtype: GgmlDType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
    ) -> Vec<Arc<dyn QuantMatmul>> {
        let mut all: Vec<Arc<dyn QuantMatmul>> = K::simd_group_kernels()
            .into_iter()
            .filter_map(|k| {
                InterleavedMatrix::<K>::from_gguf_bytes(bytes, rows, cols).map(|m| m.with_kernel(k))
            })
            .map(|m| Arc::new(m) as Arc<dyn QuantMatmul>)
            .collect();
        let candle = QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, dtype)
            .and_then(|storage| QTensor::new(storage, (rows, cols)))
            .and_then(QMatMul::from_qtensor);
        if let Ok(inner) = candle {
            all.push(Arc::new(CandleMatmul {
                block_type: K::NAME,
                rows,
                cols,
                inner,
            }));
        }
        all
    }
    match dtype {
        GgmlDType::Q4_1 => of::<q4_1::Q4_1>(dtype, bytes, rows, cols),
        GgmlDType::Q8_0 => of::<q8_0::Q8_0>(dtype, bytes, rows, cols),
        GgmlDType::Q4K => of::<q4_k::Q4K>(dtype, bytes, rows, cols),
        GgmlDType::Q6K => of::<q6_k::Q6K>(dtype, bytes, rows, cols),
        _ => Vec::new(),
    }
}

impl Weight {
    /// Takes over the block types we have kernels for, on the CPU, at the best level `simd`
    /// allows; leaves the rest to candle.
    pub fn new(m: QMatMul, simd: SimdLevel) -> Result<Self, EngineError> {
        if let QMatMul::QTensor(t) = &m {
            if let ([rows, cols], true) = (t.shape().dims(), t.device().is_cpu()) {
                if let Some(build) = builder(t.dtype()) {
                    if let Some(q) = build(&t.data()?, *rows, *cols, simd) {
                        return Ok(Weight::Own(q));
                    }
                }
            }
        }
        Ok(Weight::Candle(m))
    }

    /// Layout and instruction set of our kernel (`interleaved/avx2`), `None` when candle does
    /// the work.
    pub fn kernel(&self) -> Option<String> {
        match self {
            Weight::Own(w) => Some(w.kernel()),
            Weight::Candle(_) => None,
        }
    }

    /// The block type our kernel runs, `None` when candle does the work.
    pub fn own_block_type(&self) -> Option<&'static str> {
        match self {
            Weight::Own(w) => Some(w.block_type()),
            Weight::Candle(_) => None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        match self {
            Weight::Candle(m) => Ok(m.forward(x)?),
            Weight::Own(w) => {
                let dims = x.dims().to_vec();
                let cols = *dims.last().unwrap_or(&0);
                if cols != w.cols() {
                    return Err(EngineError::InvalidInput(format!(
                        "matmul: input width {cols}, weight expects {}",
                        w.cols()
                    )));
                }
                let m = x.elem_count() / cols.max(1);
                let dtype = x.dtype();
                let flat: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let out = w.matmul(&flat, m);
                let mut shape = dims;
                *shape.last_mut().unwrap_or(&mut 0) = w.rows();
                Ok(Tensor::from_vec(out, shape, x.device())?.to_dtype(dtype)?)
            }
        }
    }

    /// Rows `ids` of the matrix, `(ids.len(), cols)` in f32: the token embedding lookup, so a
    /// tied embedding is held once, in our format, for both lookup and output projection.
    pub fn embedding(
        &self,
        ids: &[u32],
        device: &candle_core::Device,
    ) -> Result<Tensor, EngineError> {
        match self {
            Weight::Candle(m) => Ok(m.embedding(&Tensor::new(ids, device)?)?),
            Weight::Own(w) => {
                let cols = w.cols();
                let mut out = vec![0f32; ids.len() * cols];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(cols)) {
                    let id = id as usize;
                    if id >= w.rows() {
                        return Err(EngineError::InvalidInput(format!(
                            "token id {id} is outside the vocabulary ({})",
                            w.rows()
                        )));
                    }
                    w.dequantize_row(id, row);
                }
                Ok(Tensor::from_vec(out, (ids.len(), cols), device)?)
            }
        }
    }
}
