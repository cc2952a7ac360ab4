//! The transformer forward pass for llama- and qwen2-family GGUF models.

use std::fs::File;
use std::path::Path;

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::config::{Architecture, ModelConfig};
use crate::kv_cache::KvCache;
use crate::LlmError;

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    wo: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// A loaded model: weights and rope tables; sessions own the caches.
pub struct Model {
    pub config: ModelConfig,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// Bytes the weights hold in memory (quantized matrices, plus the f32 tensors: embeddings,
    /// norms, biases, rope tables).
    pub weight_bytes: usize,
}

impl Model {
    /// Loads a GGUF file; returns the model and the file's metadata (for the tokenizer).
    /// `max_context` bounds the positions the rope tables cover (the file's context length can
    /// be far more than a session will use).
    pub fn load(path: &Path, max_context: usize) -> Result<(Self, gguf_file::Content), LlmError> {
        let name = path.display().to_string();
        if !path.is_file() {
            return Err(LlmError::Missing(name));
        }
        let fmt = |detail: String| LlmError::Format {
            path: name.clone(),
            detail,
        };
        let mut file = File::open(path).map_err(|e| fmt(e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| fmt(e.to_string()))?;
        let config = ModelConfig::from_metadata(&content.metadata).map_err(|e| {
            match e.strip_prefix("architecture:") {
                Some(arch) => LlmError::Architecture(arch.to_string()),
                None => fmt(e),
            }
        })?;
        let device = Device::Cpu;
        if !content
            .tensor_infos
            .contains_key(&format!("blk.{}.attn_q.weight", config.n_layer - 1))
        {
            return Err(fmt(format!(
                "the file has fewer than the {} layers its metadata claims",
                config.n_layer
            )));
        }
        let mut tensor = |name: &str| -> Result<QTensor, LlmError> {
            content
                .tensor(&mut file, name, &device)
                .map_err(|e| fmt(format!("tensor `{name}`: {e}")))
        };
        let embed_q = tensor("token_embd.weight")?;
        let embeddings = embed_q.dequantize(&device)?;
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => QMatMul::from_qtensor(tensor("output.weight")?)?,
            // Tied embeddings: the output projection is the embedding matrix.
            false => QMatMul::from_qtensor(embed_q)?,
        };
        let norm = tensor("output_norm.weight")?.dequantize(&device)?;
        let has_bias = config.arch == Architecture::Qwen2;
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            let mut bias = |s: &str| -> Result<Option<Tensor>, LlmError> {
                if has_bias {
                    Ok(Some(tensor(&p(s))?.dequantize(&device)?))
                } else {
                    Ok(None)
                }
            };
            let (bq, bk, bv) = (
                bias("attn_q.bias")?,
                bias("attn_k.bias")?,
                bias("attn_v.bias")?,
            );
            layers.push(Layer {
                attn_norm: tensor(&p("attn_norm.weight"))?.dequantize(&device)?,
                wq: QMatMul::from_qtensor(tensor(&p("attn_q.weight"))?)?,
                wk: QMatMul::from_qtensor(tensor(&p("attn_k.weight"))?)?,
                wv: QMatMul::from_qtensor(tensor(&p("attn_v.weight"))?)?,
                bq,
                bk,
                bv,
                wo: QMatMul::from_qtensor(tensor(&p("attn_output.weight"))?)?,
                ffn_norm: tensor(&p("ffn_norm.weight"))?.dequantize(&device)?,
                gate: QMatMul::from_qtensor(tensor(&p("ffn_gate.weight"))?)?,
                up: QMatMul::from_qtensor(tensor(&p("ffn_up.weight"))?)?,
                down: QMatMul::from_qtensor(tensor(&p("ffn_down.weight"))?)?,
            });
        }
        let (cos, sin) = rope_tables(
            &config,
            config.context_length.min(max_context).max(1),
            &device,
        )?;
        let f32_bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let opt_bytes = |t: &Option<Tensor>| t.as_ref().map_or(0, f32_bytes);
        let weight_bytes = matmul_bytes(&output)
            + [&embeddings, &norm, &cos, &sin]
                .into_iter()
                .map(f32_bytes)
                .sum::<usize>()
            + layers
                .iter()
                .map(|l| {
                    [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                        .into_iter()
                        .map(matmul_bytes)
                        .sum::<usize>()
                        + f32_bytes(&l.attn_norm)
                        + f32_bytes(&l.ffn_norm)
                        + opt_bytes(&l.bq)
                        + opt_bytes(&l.bk)
                        + opt_bytes(&l.bv)
                })
                .sum::<usize>();
        Ok((
            Model {
                config,
                embeddings,
                layers,
                norm,
                output,
                cos,
                sin,
                device,
                weight_bytes,
            },
            content,
        ))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn vocab_size(&self) -> usize {
        self.embeddings.dim(0).unwrap_or(0)
    }

    /// Runs `tokens` at the cache's next positions and appends their keys and values. Returns
    /// logits `[tokens.len(), vocab]` when `all_logits`, else `[1, vocab]` for the last position.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Tensor, LlmError> {
        let t = tokens.len();
        if t == 0 {
            return Err(LlmError::Compute(candle_core::Error::Msg(
                "forward of no tokens".into(),
            )));
        }
        cache.reserve(t)?;
        let vocab = self.vocab_size();
        if let Some(bad) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(LlmError::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let cfg = &self.config;
        let pos = cache.len();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embeddings.index_select(&ids, 0)?.unsqueeze(0)?; // [1, t, d]
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        let rep = cfg.n_head / cfg.n_kv_head;
        let mask = if t > 1 {
            Some(causal_mask(t, pos, rep, &self.device)?)
        } else {
            None
        };
        let scale = 1.0 / (cfg.head_dim as f64).sqrt();
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps as f32)?;
            let proj = |w: &QMatMul, b: &Option<Tensor>| -> Result<Tensor, candle_core::Error> {
                let y = w.forward(&h)?;
                match b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            };
            let q = proj(&layer.wq, &layer.bq)?
                .reshape((1, t, cfg.n_head, cfg.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = proj(&layer.wk, &layer.bk)?
                .reshape((1, t, cfg.n_kv_head, cfg.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = proj(&layer.wv, &layer.bv)?
                .reshape((1, t, cfg.n_kv_head, cfg.head_dim))?
                .transpose(1, 2)?;
            let (q, k) = match cfg.arch {
                Architecture::Llama => (
                    candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
                ),
                Architecture::Qwen2 => (
                    candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
                ),
            };
            let (k_all, v_all) = cache.append(li, &k, &v)?; // [1, kv, L, hd]
                                                            // Grouped-query attention without copying K/V per head: the `rep` query heads that
                                                            // share a KV head are stacked along the time axis.
            let q = q.reshape((1, cfg.n_kv_head, rep * t, cfg.head_dim))?;
            let mut att = (q.matmul(&k_all.t()?)? * scale)?; // [1, kv, rep*t, L]
            if let Some(mask) = &mask {
                att = att.broadcast_add(mask)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v_all)?; // [1, kv, rep*t, hd]
            let y = y
                .reshape((1, cfg.n_head, t, cfg.head_dim))?
                .transpose(1, 2)?
                .reshape((1, t, cfg.d_model))?;
            x = (x + layer.wo.forward(&y)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps as f32)?;
            let ffn = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&ffn)?)?;
        }
        cache.advance(t);
        let x = if all_logits {
            x
        } else {
            x.narrow(1, t - 1, 1)?
        };
        let x = candle_nn::ops::rms_norm(&x, &self.norm, cfg.rms_eps as f32)?;
        let logits = self.output.forward(&x)?.squeeze(0)?.to_dtype(DType::F32)?;
        Ok(logits)
    }
}

fn matmul_bytes(m: &QMatMul) -> usize {
    match m {
        QMatMul::QTensor(t) => t.storage_size_in_bytes(),
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.elem_count() * t.dtype().size_in_bytes(),
    }
}

/// cos/sin tables `[context, head_dim / 2]`.
fn rope_tables(cfg: &ModelConfig, n: usize, device: &Device) -> Result<(Tensor, Tensor), LlmError> {
    let half = cfg.head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / cfg.rope_base.powf(2.0 * i as f32 / cfg.head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv_freq, (1, half), device)?;
    let positions = Tensor::arange(0u32, n as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?;
    let freqs = positions.broadcast_mul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// Additive mask `[rep * t, pos + t]` for `t` new tokens after `pos` cached ones, rows ordered as
/// the stacked query heads (`rep` copies of the `t` positions).
fn causal_mask(t: usize, pos: usize, rep: usize, device: &Device) -> Result<Tensor, LlmError> {
    let total = pos + t;
    let mut data = Vec::with_capacity(rep * t * total);
    for _ in 0..rep {
        for i in 0..t {
            data.extend((0..total).map(|j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }));
        }
    }
    Ok(Tensor::from_vec(data, (rep * t, total), device)?)
}
