//! A KV cache owned by one session: allocated once at a fixed capacity, appended to in place,
//! and truncated to roll back.

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::LlmError;

/// Keys and values of every layer, `[1, kv_heads, capacity, head_dim]` each, of which the first
/// `len` positions are valid.
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, capacity: usize, device: &Device) -> Result<Self, LlmError> {
        let shape = (1, cfg.n_kv_head, capacity, cfg.head_dim);
        let mut keys = Vec::with_capacity(cfg.n_layer);
        let mut values = Vec::with_capacity(cfg.n_layer);
        for _ in 0..cfg.n_layer {
            keys.push(Tensor::zeros(shape, DType::F32, device)?);
            values.push(Tensor::zeros(shape, DType::F32, device)?);
        }
        Ok(KvCache {
            keys,
            values,
            len: 0,
            capacity,
        })
    }

    /// A deep copy (candle tensors share storage when cloned, and we write in place).
    pub fn fork(&self) -> Result<Self, LlmError> {
        Ok(KvCache {
            keys: self
                .keys
                .iter()
                .map(|t| t.copy())
                .collect::<Result<_, _>>()?,
            values: self
                .values
                .iter()
                .map(|t| t.copy())
                .collect::<Result<_, _>>()?,
            len: self.len,
            capacity: self.capacity,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by the cache at full capacity.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|t| t.elem_count() * 4)
            .sum()
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Checks that `extra` more positions fit.
    pub fn reserve(&self, extra: usize) -> Result<(), LlmError> {
        if self.len + extra > self.capacity {
            return Err(LlmError::ContextFull {
                needed: self.len + extra,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Writes layer `layer`'s new keys/values (`[1, kv_heads, t, head_dim]`) at the end and returns
    /// the whole valid history of that layer. The caller advances with [`KvCache::advance`] once
    /// every layer has been written.
    pub fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor), LlmError> {
        let t = k.dim(2)?;
        self.reserve(t)?;
        self.keys[layer].slice_set(&k.contiguous()?, 2, self.len)?;
        self.values[layer].slice_set(&v.contiguous()?, 2, self.len)?;
        let total = self.len + t;
        Ok((
            self.keys[layer].narrow(2, 0, total)?.contiguous()?,
            self.values[layer].narrow(2, 0, total)?.contiguous()?,
        ))
    }

    pub fn advance(&mut self, t: usize) {
        self.len = (self.len + t).min(self.capacity);
    }
}
