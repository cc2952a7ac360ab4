//! A KV cache owned by one session: allocated once at a fixed capacity, written in place, and
//! truncated to roll back.

use crate::config::ModelConfig;
use crate::LlmError;

/// Keys and values of every layer, each `[kv_heads, capacity, head_dim]` f32, of which the
/// first `len` positions are valid.
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_heads: usize,
    head_dim: usize,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, capacity: usize) -> Result<Self, LlmError> {
        let per_layer = cfg
            .n_kv_head
            .checked_mul(capacity)
            .and_then(|n| n.checked_mul(cfg.head_dim))
            .ok_or_else(|| LlmError::Compute("KV cache size overflows".into()))?;
        Ok(KvCache {
            keys: (0..cfg.n_layer).map(|_| vec![0f32; per_layer]).collect(),
            values: (0..cfg.n_layer).map(|_| vec![0f32; per_layer]).collect(),
            kv_heads: cfg.n_kv_head,
            head_dim: cfg.head_dim,
            len: 0,
            capacity,
        })
    }

    /// A deep copy, for a second session that starts from the same prefix.
    pub fn fork(&self) -> Self {
        self.clone()
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
            .map(|t| t.len() * 4)
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

    /// Writes layer `layer`'s keys and values for positions `pos..pos + t`, given as `t` rows
    /// of `[kv_heads * head_dim]`. The caller has checked the room with [`KvCache::reserve`].
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (hd, width) = (self.head_dim, self.kv_heads * self.head_dim);
        for (i, (kr, vr)) in k.chunks_exact(width).zip(v.chunks_exact(width)).enumerate() {
            for g in 0..self.kv_heads {
                let at = (g * self.capacity + pos + i) * hd;
                self.keys[layer][at..at + hd].copy_from_slice(&kr[g * hd..(g + 1) * hd]);
                self.values[layer][at..at + hd].copy_from_slice(&vr[g * hd..(g + 1) * hd]);
            }
        }
    }

    /// Layer `layer`'s keys and values, `[kv_heads, capacity, head_dim]`.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }

    pub fn advance(&mut self, t: usize) {
        self.len = (self.len + t).min(self.capacity);
    }
}
