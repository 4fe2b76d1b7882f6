//! Per-sequence key/value cache, preallocated to the context length.
//!
//! One allocation per layer up front instead of a `Tensor::cat` per generated token (which
//! reallocates and copies the whole cache every step). `truncate` makes prefix reuse cheap.

use candle_core::{DType, Device, Tensor};

use super::EngineError;

pub struct KvCache {
    /// Per layer: K and V, each `(n_kv_head, capacity, head_dim)`.
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    pending: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let layers = (0..n_layer)
            .map(|_| {
                let k = Tensor::zeros((n_kv_head, capacity, head_dim), dtype, device)?;
                let v = Tensor::zeros((n_kv_head, capacity, head_dim), dtype, device)?;
                Ok((k, v))
            })
            .collect::<Result<Vec<_>, candle_core::Error>>()?;
        Ok(Self {
            layers,
            len: 0,
            pending: 0,
            capacity,
        })
    }

    /// Number of positions whose keys/values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything after the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes held by the cache (all layers, K and V).
    pub fn size_in_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// Writes `k`/`v` (`(1, n_kv_head, seq, head_dim)`) of `layer` after the stored positions
    /// and returns views of all positions so far, `(n_kv_head, len + seq, head_dim)`.
    /// The new length becomes visible to the next layer only via [`KvCache::advance`].
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor), EngineError> {
        let seq = k.dim(2)?;
        let end = self.len + seq;
        if end > self.capacity {
            return Err(EngineError::ContextOverflow {
                needed: end,
                limit: self.capacity,
            });
        }
        self.pending = seq;
        let (kc, vc) = &self.layers[layer];
        kc.slice_set(&k.squeeze(0)?, 1, self.len)?;
        vc.slice_set(&v.squeeze(0)?, 1, self.len)?;
        Ok((kc.narrow(1, 0, end)?, vc.narrow(1, 0, end)?))
    }

    /// Commits the positions written by the last round of `append` calls.
    pub(crate) fn advance(&mut self, seq: usize) {
        debug_assert_eq!(seq, self.pending);
        self.len += seq;
        self.pending = 0;
    }
}
