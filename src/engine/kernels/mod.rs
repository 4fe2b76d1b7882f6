//! Our own CPU kernels, for the block types where candle 0.11's are slow (its Q4_1 dot
//! product is a scalar loop). Everything else stays candle's `QMatMul`.

pub mod q4_1;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Module, Tensor};

use super::EngineError;

/// A weight matrix `(out, in)` applied as `x @ W^T`.
#[derive(Clone)]
pub enum Weight {
    Candle(QMatMul),
    Q4_1(std::sync::Arc<q4_1::Q4_1Matrix>),
}

impl Weight {
    /// Takes over Q4_1 matrices on the CPU; leaves the rest to candle.
    pub fn new(m: QMatMul) -> Result<Self, EngineError> {
        if let QMatMul::QTensor(t) = &m {
            if t.dtype() == GgmlDType::Q4_1 && t.device().is_cpu() {
                if let [rows, cols] = t.shape().dims() {
                    let bytes = t.data()?;
                    if let Some(q) = q4_1::Q4_1Matrix::from_gguf_bytes(&bytes, *rows, *cols) {
                        return Ok(Weight::Q4_1(std::sync::Arc::new(q)));
                    }
                }
            }
        }
        Ok(Weight::Candle(m))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        match self {
            Weight::Candle(m) => Ok(m.forward(x)?),
            Weight::Q4_1(w) => {
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
                let flat: Vec<f32> = x
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                let out = w.matmul(&flat, m);
                let mut shape = dims;
                *shape.last_mut().unwrap_or(&mut 0) = w.rows();
                Ok(Tensor::from_vec(out, shape, x.device())?.to_dtype(dtype)?)
            }
        }
    }
}
