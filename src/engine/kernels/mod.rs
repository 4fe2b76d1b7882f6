//! Our own CPU kernels for the GGUF block types Llama-family files use (Q4_1, Q8_0, Q4_K,
//! Q6_K): candle 0.11's Q4_1 dot product is a scalar loop, and its K-quant path runs on a
//! spin-waiting thread pool that collapses when another process wants the cores. Ours run on
//! rayon. Everything else (f32/bf16 weights, other block types, the GPU) stays candle's
//! `QMatMul`. `attention.rs` is the causal attention over the KV cache that `llama.rs` uses on
//! the CPU. Measurements and rooflines: `kernels-notes.md`.

pub mod attention;
pub mod matrix;
pub mod q4_1;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Module, Tensor};

use self::matrix::{BlockKind, QMatrix};
use super::EngineError;

/// What the model needs from a quantized matrix of any of our block types.
pub trait QuantMatmul: Send + Sync {
    fn block_type(&self) -> &'static str;
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// `x (m, cols)` row-major -> `(m, rows)`.
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32>;
    fn dequantize_row(&self, r: usize, out: &mut [f32]);
}

impl<K: BlockKind> QuantMatmul for QMatrix<K> {
    fn block_type(&self) -> &'static str {
        K::NAME
    }
    fn rows(&self) -> usize {
        QMatrix::rows(self)
    }
    fn cols(&self) -> usize {
        QMatrix::cols(self)
    }
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        QMatrix::matmul(self, x, m)
    }
    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        QMatrix::dequantize_row(self, r, out)
    }
}

/// A weight matrix `(out, in)` applied as `x @ W^T`.
#[derive(Clone)]
pub enum Weight {
    Candle(QMatMul),
    Own(Arc<dyn QuantMatmul>),
}

fn own<K: BlockKind>(bytes: &[u8], rows: usize, cols: usize) -> Option<Arc<dyn QuantMatmul>> {
    QMatrix::<K>::from_gguf_bytes(bytes, rows, cols).map(|m| Arc::new(m) as Arc<dyn QuantMatmul>)
}

impl Weight {
    /// Takes over the block types we have kernels for, on the CPU; leaves the rest to candle.
    pub fn new(m: QMatMul) -> Result<Self, EngineError> {
        if let QMatMul::QTensor(t) = &m {
            if let ([rows, cols], true) = (t.shape().dims(), t.device().is_cpu()) {
                let (rows, cols) = (*rows, *cols);
                let build = match t.dtype() {
                    GgmlDType::Q4_1 => own::<q4_1::Q4_1>,
                    GgmlDType::Q8_0 => own::<q8_0::Q8_0>,
                    GgmlDType::Q4K => own::<q4_k::Q4K>,
                    GgmlDType::Q6K => own::<q6_k::Q6K>,
                    _ => return Ok(Weight::Candle(m)),
                };
                if let Some(q) = build(&t.data()?, rows, cols) {
                    return Ok(Weight::Own(q));
                }
            }
        }
        Ok(Weight::Candle(m))
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
