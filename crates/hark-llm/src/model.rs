//! The transformer forward pass for llama- and qwen2-family GGUF models, on our own kernels.
//!
//! Weights stay in their GGUF block formats ([`QMatrix`]); each matrix product quantizes its
//! input rows once and runs integer dot products (`hark-kernels`). One forward handles any
//! number of tokens: a decode step (one token), a prefill chunk, or a speculative verify batch,
//! returning logits for the last or for every position. Work is split across the model's
//! [`ThreadPool`]; all buffers live in a [`Scratch`] owned by the session, so a decode step
//! allocates nothing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType};
use hark_kernels::formats::ActType;
use hark_kernels::{vec, Activations, QMatrix, ThreadPool, WeightType};

use crate::config::{Architecture, ModelConfig};
use crate::kv_cache::KvCache;
use crate::LlmError;

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

/// Which tokens the output head scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadTokens {
    /// Every token: what decoding needs.
    #[default]
    All,
    /// The first `n` token ids and every special token; every other token's logit is -inf. For
    /// a model that only drafts: a byte-level BPE vocabulary lists its tokens in the order their
    /// merges were learned, most frequent first, so the first ids cover most of ordinary text
    /// (Qwen2.5's first 32,768 of 151,936: 91-94 % of English text), and a draft model's head
    /// is a large share of what it reads per token (Qwen2.5-0.5B: 145 of 393 MB). `n` is taken
    /// as at least 1; `n` at or above the vocabulary size is the whole head.
    FirstAndSpecial(usize),
}

/// The output head's weights.
enum Head {
    /// The embedding table.
    Tied,
    Own(QMatrix),
    /// Some tokens' rows only ([`HeadTokens::FirstAndSpecial`]).
    Subset {
        matrix: QMatrix,
        /// Rows `0..first` are token ids `0..first`; the rest are `extra`'s ids, in order.
        first: usize,
        extra: Vec<u32>,
    },
}

/// A loaded model: weights, rope tables and the thread pool; sessions own caches and scratch.
pub struct Model {
    pub config: ModelConfig,
    embeddings: QMatrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    head: Head,
    /// `[positions, head_dim / 2]`.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    rope_positions: usize,
    pool: ThreadPool,
    /// Bytes the weights hold in memory (quantized matrices, norms, biases, rope tables).
    pub weight_bytes: usize,
    /// Weight bytes one decoded token reads: every matrix except an embedding table that is
    /// not also the output head (a token reads one row of it). The memory-bandwidth bound on
    /// decoding is bandwidth / this.
    pub decode_read_bytes: usize,
}

/// Per-session buffers for the forward pass, grown to the largest batch seen.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    scores: Vec<f32>,
    /// Logits of a subset head, before they are spread over the vocabulary.
    head: Vec<f32>,
    /// Quantized activations, one buffer per activation format.
    acts: [Activations; 5],
}

fn act_slot(ty: ActType) -> usize {
    match ty {
        ActType::F32 => 0,
        ActType::Q8_0 => 1,
        ActType::Q8_1 => 2,
        ActType::Q8K => 3,
        ActType::Q8Sum => 4,
    }
}

fn grow(buf: &mut Vec<f32>, n: usize) {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
}

/// A raw pointer that parallel tasks write through, each to its own elements.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the tasks that share one `Out` write disjoint elements, and the loop that runs them
// returns before the buffer is used again.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element at `i` (a method, so closures capture the whole `Out`, which is `Sync`).
    #[inline]
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

fn weight_type(d: GgmlDType) -> Result<WeightType, String> {
    Ok(match d {
        GgmlDType::F32 => WeightType::F32,
        GgmlDType::F16 => WeightType::F16,
        GgmlDType::Q4_0 => WeightType::Q4_0,
        GgmlDType::Q4_1 => WeightType::Q4_1,
        GgmlDType::Q5_0 => WeightType::Q5_0,
        GgmlDType::Q8_0 => WeightType::Q8_0,
        GgmlDType::Q4K => WeightType::Q4K,
        GgmlDType::Q6K => WeightType::Q6K,
        other => {
            return Err(format!(
                "tensor type {other:?} is not supported (F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K are)"
            ))
        }
    })
}

impl Model {
    /// Loads a GGUF file; returns the model and the file's metadata (for the tokenizer).
    /// `max_context` bounds the positions the rope tables cover; `threads` is the size of the
    /// compute pool (counting the calling thread); `head_tokens` which tokens the output head
    /// scores.
    pub fn load(
        path: &Path,
        max_context: usize,
        threads: usize,
        head_tokens: HeadTokens,
    ) -> Result<(Self, gguf_file::Content), LlmError> {
        let name = path.display().to_string();
        if !path.is_file() {
            return Err(LlmError::Missing(name));
        }
        let fmt = |detail: String| LlmError::Format {
            path: name.clone(),
            detail,
        };
        let mut file = File::open(path).map_err(|e| fmt(e.to_string()))?;
        let file_len = file.metadata().map_err(|e| fmt(e.to_string()))?.len();
        let content = gguf_file::Content::read(&mut file).map_err(|e| fmt(e.to_string()))?;
        let config = ModelConfig::from_metadata(&content.metadata).map_err(|e| {
            match e.strip_prefix("architecture:") {
                Some(arch) => LlmError::Architecture(arch.to_string()),
                None => fmt(e),
            }
        })?;
        let cfg = &config;

        let mut reader = TensorReader {
            file: &mut file,
            file_len,
            content: &content,
            path: &name,
        };
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .map(|i| i.shape.dims().first().copied().unwrap_or(0))
            .ok_or_else(|| fmt("tensor `token_embd.weight` is missing".into()))?;
        let (d, hd) = (cfg.d_model, cfg.head_dim);
        let embeddings = reader.matrix("token_embd.weight", vocab, d)?;
        let head_name = match content.tensor_infos.contains_key("output.weight") {
            true => "output.weight",
            false => "token_embd.weight",
        };
        let head = match head_tokens {
            HeadTokens::FirstAndSpecial(first) if first < vocab => {
                // At least one row, so the head is never empty.
                let first = first.max(1);
                let extra: Vec<u32> = crate::tokenizer::special_token_ids(&content.metadata)?
                    .into_iter()
                    .filter(|&id| id as usize >= first && (id as usize) < vocab)
                    .collect();
                let (ty, data) = reader.read(head_name, &[vocab, d])?;
                let row = data.len() / vocab;
                let mut rows = data[..first * row].to_vec();
                for &id in &extra {
                    let at = id as usize * row;
                    rows.extend_from_slice(&data[at..at + row]);
                }
                let matrix = QMatrix::new(ty, first + extra.len(), d, rows)
                    .map_err(|e| fmt(format!("`{head_name}`: {e}")))?;
                Head::Subset {
                    matrix,
                    first,
                    extra,
                }
            }
            _ if head_name == "output.weight" => Head::Own(reader.matrix(head_name, vocab, d)?),
            _ => Head::Tied,
        };
        let norm = reader.f32s("output_norm.weight", d)?;
        let has_bias = cfg.arch == Architecture::Qwen2;
        let (q_dim, kv_dim) = (cfg.n_head * hd, cfg.n_kv_head * hd);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            let (bq, bk, bv) = match has_bias {
                true => (
                    Some(reader.f32s(&p("attn_q.bias"), q_dim)?),
                    Some(reader.f32s(&p("attn_k.bias"), kv_dim)?),
                    Some(reader.f32s(&p("attn_v.bias"), kv_dim)?),
                ),
                false => (None, None, None),
            };
            layers.push(Layer {
                attn_norm: reader.f32s(&p("attn_norm.weight"), d)?,
                ffn_norm: reader.f32s(&p("ffn_norm.weight"), d)?,
                bq,
                bk,
                bv,
                wq: reader.matrix(&p("attn_q.weight"), q_dim, d)?,
                wk: reader.matrix(&p("attn_k.weight"), kv_dim, d)?,
                wv: reader.matrix(&p("attn_v.weight"), kv_dim, d)?,
                wo: reader.matrix(&p("attn_output.weight"), d, q_dim)?,
                gate: reader.matrix(&p("ffn_gate.weight"), cfg.ffn, d)?,
                up: reader.matrix(&p("ffn_up.weight"), cfg.ffn, d)?,
                down: reader.matrix(&p("ffn_down.weight"), d, cfg.ffn)?,
            });
        }
        let rope_positions = cfg.context_length.min(max_context).max(1);
        let (rope_cos, rope_sin) = rope_tables(cfg, rope_positions);
        let f32s = |v: &Vec<f32>| v.len() * 4;
        let opt = |v: &Option<Vec<f32>>| v.as_ref().map_or(0, f32s);
        let head_bytes = match &head {
            Head::Tied => 0,
            Head::Own(m) | Head::Subset { matrix: m, .. } => m.bytes(),
        };
        let weight_bytes = embeddings.bytes()
            + head_bytes
            + f32s(&norm)
            + f32s(&rope_cos)
            + f32s(&rope_sin)
            + layers
                .iter()
                .map(|l| {
                    [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                        .iter()
                        .map(|m| m.bytes())
                        .sum::<usize>()
                        + f32s(&l.attn_norm)
                        + f32s(&l.ffn_norm)
                        + opt(&l.bq)
                        + opt(&l.bk)
                        + opt(&l.bv)
                })
                .sum::<usize>();
        let decode_read_bytes = weight_bytes
            - match head {
                Head::Tied => 0,
                _ => embeddings.bytes(),
            };
        Ok((
            Model {
                config,
                embeddings,
                layers,
                norm,
                head,
                rope_cos,
                rope_sin,
                rope_positions,
                pool: ThreadPool::new(threads),
                weight_bytes,
                decode_read_bytes,
            },
            content,
        ))
    }

    pub fn vocab_size(&self) -> usize {
        self.embeddings.rows()
    }

    /// Whether the output head scores token `id` (every token, unless it is a subset).
    pub fn head_scores(&self, id: u32) -> bool {
        match &self.head {
            Head::Subset { first, extra, .. } => (id as usize) < *first || extra.contains(&id),
            _ => (id as usize) < self.vocab_size(),
        }
    }

    /// How many tokens the output head scores, where it scores only some
    /// ([`HeadTokens::FirstAndSpecial`]).
    pub fn head_subset(&self) -> Option<usize> {
        match &self.head {
            Head::Subset { matrix, .. } => Some(matrix.rows()),
            _ => None,
        }
    }

    /// Threads the forward pass runs on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `tokens` at the cache's next positions and appends their keys and values. Writes
    /// logits for every position (`all_logits`) or for the last one into `logits`, which must
    /// hold that many rows of `vocab_size()` values.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        scratch: &mut Scratch,
        all_logits: bool,
        logits: &mut [f32],
    ) -> Result<(), LlmError> {
        let t = tokens.len();
        if t == 0 {
            return Err(LlmError::Compute("forward of no tokens".into()));
        }
        cache.reserve(t)?;
        let pos = cache.len();
        if pos + t > self.rope_positions {
            return Err(LlmError::ContextFull {
                needed: pos + t,
                capacity: self.rope_positions,
            });
        }
        let vocab = self.vocab_size();
        if let Some(bad) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(LlmError::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let out_rows = if all_logits { t } else { 1 };
        if logits.len() < out_rows * vocab {
            return Err(LlmError::Compute("logits buffer too small".into()));
        }
        let cfg = &self.config;
        let (d, hd, nq, nkv) = (cfg.d_model, cfg.head_dim, cfg.n_head, cfg.n_kv_head);
        let (q_dim, kv_dim) = (nq * hd, nkv * hd);
        let s = scratch;
        grow(&mut s.x, t * d);
        grow(&mut s.h, t * d);
        grow(&mut s.q, t * q_dim);
        grow(&mut s.k, t * kv_dim);
        grow(&mut s.v, t * kv_dim);
        grow(&mut s.att, t * q_dim);
        grow(&mut s.gate, t * cfg.ffn);
        grow(&mut s.up, t * cfg.ffn);
        grow(&mut s.scores, nq * (pos + t));

        for (i, &id) in tokens.iter().enumerate() {
            self.embeddings
                .dequantize_row(id as usize, &mut s.x[i * d..(i + 1) * d]);
        }
        let eps = cfg.rms_eps as f32;
        for (li, layer) in self.layers.iter().enumerate() {
            // Attention block.
            for i in 0..t {
                let r = i * d..(i + 1) * d;
                vec::rms_norm(&s.x[r.clone()], &layer.attn_norm, eps, &mut s.h[r]);
            }
            quantize_for(&mut s.acts, &[&layer.wq, &layer.wk, &layer.wv], &s.h, t, d);
            self.matmuls(
                &[
                    (&layer.wq, Out(s.q.as_mut_ptr())),
                    (&layer.wk, Out(s.k.as_mut_ptr())),
                    (&layer.wv, Out(s.v.as_mut_ptr())),
                ],
                &s.acts,
                t,
            );
            for (buf, bias, width) in [
                (&mut s.q, &layer.bq, q_dim),
                (&mut s.k, &layer.bk, kv_dim),
                (&mut s.v, &layer.bv, kv_dim),
            ] {
                if let Some(b) = bias {
                    for row in buf[..t * width].chunks_exact_mut(width) {
                        row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
                    }
                }
            }
            self.rope(&mut s.q[..t * q_dim], nq, pos);
            self.rope(&mut s.k[..t * kv_dim], nkv, pos);
            cache.write(li, pos, &s.k[..t * kv_dim], &s.v[..t * kv_dim]);
            self.attention(li, cache, pos, t, s);
            quantize_for(&mut s.acts, &[&layer.wo], &s.att, t, q_dim);
            self.matmuls(&[(&layer.wo, Out(s.h.as_mut_ptr()))], &s.acts, t);
            s.x[..t * d]
                .iter_mut()
                .zip(&s.h[..t * d])
                .for_each(|(x, y)| *x += y);

            // Feed-forward block: gate and up in one parallel loop, SiLU(gate) * up fused in.
            for i in 0..t {
                let r = i * d..(i + 1) * d;
                vec::rms_norm(&s.x[r.clone()], &layer.ffn_norm, eps, &mut s.h[r]);
            }
            quantize_for(&mut s.acts, &[&layer.gate, &layer.up], &s.h, t, d);
            self.gated_ffn(
                layer,
                &s.acts,
                t,
                Out(s.gate.as_mut_ptr()),
                Out(s.up.as_mut_ptr()),
            );
            quantize_for(&mut s.acts, &[&layer.down], &s.gate, t, cfg.ffn);
            self.matmuls(&[(&layer.down, Out(s.h.as_mut_ptr()))], &s.acts, t);
            s.x[..t * d]
                .iter_mut()
                .zip(&s.h[..t * d])
                .for_each(|(x, y)| *x += y);
        }
        cache.advance(t);

        let first = t - out_rows;
        for i in first..t {
            let r = i * d..(i + 1) * d;
            let o = (i - first) * d..(i - first + 1) * d;
            vec::rms_norm(&s.x[r], &self.norm, eps, &mut s.h[o]);
        }
        let head = match &self.head {
            Head::Tied => &self.embeddings,
            Head::Own(m) | Head::Subset { matrix: m, .. } => m,
        };
        quantize_for(&mut s.acts, &[head], &s.h, out_rows, d);
        match &self.head {
            Head::Subset { first, extra, .. } => {
                // Scored rows into scratch, then spread over the vocabulary.
                let n = head.rows();
                grow(&mut s.head, out_rows * n);
                self.matmuls(&[(head, Out(s.head.as_mut_ptr()))], &s.acts, out_rows);
                for (row, scored) in logits[..out_rows * vocab]
                    .chunks_exact_mut(vocab)
                    .zip(s.head.chunks_exact(n))
                {
                    row[..*first].copy_from_slice(&scored[..*first]);
                    row[*first..].fill(f32::NEG_INFINITY);
                    for (&id, &v) in extra.iter().zip(&scored[*first..]) {
                        row[id as usize] = v;
                    }
                }
            }
            _ => self.matmuls(&[(head, Out(logits.as_mut_ptr()))], &s.acts, out_rows),
        }
        Ok(())
    }

    /// `out_m[token][row] = m[row] · acts[token]` for each `(m, out_m)`, in one parallel loop.
    fn matmuls(&self, jobs: &[(&QMatrix, Out)], acts: &[Activations; 5], t: usize) {
        let chunk = rows_per_task(t);
        let mut counts = [0usize; 4];
        for (c, (m, _)) in counts.iter_mut().zip(jobs) {
            *c = m.rows().div_ceil(chunk);
        }
        let total: usize = counts.iter().sum();
        self.pool.for_each(total, &|mut task| {
            let mut j = 0;
            while task >= counts[j] {
                task -= counts[j];
                j += 1;
            }
            let (m, out) = jobs[j];
            debug_assert!(chunk.is_multiple_of(m.row_alignment()));
            let rows = task * chunk..((task + 1) * chunk).min(m.rows());
            let a = &acts[act_slot(m.act_type())];
            // SAFETY: each task writes only its own rows of `out`, which holds `t` rows of
            // `m.rows()` values (sized by the caller).
            unsafe { m.matmul_rows_raw(rows.clone(), a, out.at(rows.start), m.rows()) };
        });
    }

    /// `gate = silu(gate_w · h) * (up_w · h)`, row chunks in parallel.
    fn gated_ffn(&self, layer: &Layer, acts: &[Activations; 5], t: usize, gate: Out, up: Out) {
        let n = layer.gate.rows();
        let chunk = rows_per_task(t);
        self.pool.for_each(n.div_ceil(chunk), &|task| {
            let rows = task * chunk..((task + 1) * chunk).min(n);
            let ga = &acts[act_slot(layer.gate.act_type())];
            let ua = &acts[act_slot(layer.up.act_type())];
            // SAFETY: this task alone writes these rows of `gate` and `up` (`t` rows of `n`).
            unsafe {
                layer
                    .gate
                    .matmul_rows_raw(rows.clone(), ga, gate.at(rows.start), n);
                layer
                    .up
                    .matmul_rows_raw(rows.clone(), ua, up.at(rows.start), n);
                for i in 0..t {
                    let g = std::slice::from_raw_parts_mut(gate.at(i * n + rows.start), rows.len());
                    let u = std::slice::from_raw_parts(up.at(i * n + rows.start), rows.len());
                    vec::silu_mul(g, u);
                }
            }
        });
    }

    /// Rotary embedding in place on `t` rows of `heads` heads, at positions `pos..`.
    fn rope(&self, x: &mut [f32], heads: usize, pos: usize) {
        let hd = self.config.head_dim;
        let half = hd / 2;
        for (i, row) in x.chunks_exact_mut(heads * hd).enumerate() {
            let cos = &self.rope_cos[(pos + i) * half..(pos + i + 1) * half];
            let sin = &self.rope_sin[(pos + i) * half..(pos + i + 1) * half];
            for head in row.chunks_exact_mut(hd) {
                match self.config.arch {
                    // Adjacent pairs (GGUF permutes llama's Q/K weights for this).
                    Architecture::Llama => {
                        for j in 0..half {
                            let (a, b) = (head[2 * j], head[2 * j + 1]);
                            head[2 * j] = a * cos[j] - b * sin[j];
                            head[2 * j + 1] = a * sin[j] + b * cos[j];
                        }
                    }
                    // NeoX: the two halves of the head.
                    Architecture::Qwen2 => {
                        for j in 0..half {
                            let (a, b) = (head[j], head[j + half]);
                            head[j] = a * cos[j] - b * sin[j];
                            head[j + half] = a * sin[j] + b * cos[j];
                        }
                    }
                }
            }
        }
    }

    /// Causal attention of the `t` new queries over the cache (which already holds their own
    /// keys and values); one parallel task per query head.
    fn attention(&self, layer: usize, cache: &KvCache, pos: usize, t: usize, s: &mut Scratch) {
        let cfg = &self.config;
        let (hd, nq) = (cfg.head_dim, cfg.n_head);
        let rep = nq / cfg.n_kv_head;
        let q_dim = nq * hd;
        let span = pos + t;
        let scale = 1.0 / (hd as f32).sqrt();
        let (keys, values) = cache.layer(layer);
        let cap = cache.capacity();
        let q = &s.q;
        let att = Out(s.att.as_mut_ptr());
        let scores = Out(s.scores.as_mut_ptr());
        self.pool.for_each(nq, &|h| {
            let g = h / rep;
            let kv = &keys[g * cap * hd..];
            let vv = &values[g * cap * hd..];
            // SAFETY: head `h` alone uses its row of `scores` and its columns of `att`; both
            // buffers were sized for `nq * span` and `t * q_dim`.
            let sc = unsafe { std::slice::from_raw_parts_mut(scores.at(h * span), span) };
            for i in 0..t {
                let n = pos + i + 1;
                let qi = &q[i * q_dim + h * hd..i * q_dim + (h + 1) * hd];
                let out = unsafe { std::slice::from_raw_parts_mut(att.at(i * q_dim + h * hd), hd) };
                vec::attend(qi, kv, vv, n, scale, sc, out);
            }
        });
    }
}

/// Reads tensors out of a GGUF file, checking shapes and bounds.
struct TensorReader<'a> {
    file: &'a mut File,
    file_len: u64,
    content: &'a gguf_file::Content,
    path: &'a str,
}

impl TensorReader<'_> {
    fn err(&self, detail: String) -> LlmError {
        LlmError::Format {
            path: self.path.to_string(),
            detail,
        }
    }

    /// A tensor's type and bytes (rows in file order), after checking its shape against what
    /// the model needs.
    fn read(&mut self, name: &str, want: &[usize]) -> Result<(WeightType, Vec<u8>), LlmError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.err(format!("tensor `{name}` is missing")))?;
        let dims = info.shape.dims();
        if dims != want {
            return Err(self.err(format!(
                "tensor `{name}` has shape {dims:?}, the metadata implies {want:?}"
            )));
        }
        let ty = weight_type(info.ggml_dtype).map_err(|e| self.err(format!("`{name}`: {e}")))?;
        let cols = *dims.last().unwrap_or(&1);
        let rows: usize = dims.iter().rev().skip(1).product();
        let bytes = ty
            .row_bytes(cols)
            .map_err(|e| self.err(format!("`{name}`: {e}")))?
            * rows;
        let start = self.content.tensor_data_offset + info.offset;
        if start + bytes as u64 > self.file_len {
            return Err(self.err(format!(
                "tensor `{name}` runs past the end of the file (truncated download?)"
            )));
        }
        let mut data = vec![0u8; bytes];
        self.file
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.file.read_exact(&mut data))
            .map_err(|e| self.err(format!("reading `{name}`: {e}")))?;
        Ok((ty, data))
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<QMatrix, LlmError> {
        let (ty, data) = self.read(name, &[rows, cols])?;
        QMatrix::new(ty, rows, cols, data).map_err(|e| self.err(format!("`{name}`: {e}")))
    }

    /// A vector (norm weights, biases) as f32.
    fn f32s(&mut self, name: &str, n: usize) -> Result<Vec<f32>, LlmError> {
        let (ty, data) = self.read(name, &[n])?;
        let mut out = vec![0f32; n];
        hark_kernels::formats::dequantize_row(ty, &data, &mut out);
        Ok(out)
    }
}

/// Rows per parallel task: whole groups of interleaved rows ([`QMatrix::row_alignment`]),
/// enough work per task that handing tasks out (an atomic shared by the cores) costs little and
/// each core streams whole runs of rows, and enough tasks that the cores finish together.
/// Measured on Qwen2.5-0.5B decode: 16 rows per task 35 tok/s, 32 rows 38, 64 rows 41. For
/// 5-192 tokens (verify passes, the turn's prefill), 32 rows against 8, alternating in one
/// process: SmolLM2 5-12 % faster, Qwen2.5-Coder-1.5B 5-16 %; at 256 tokens (a long prefill
/// chunk, where a task is long and the last one keeps a core waiting) alike, so 8 stays there.
fn rows_per_task(tokens: usize) -> usize {
    match tokens {
        0 | 1 => 64,
        2..=192 => 32,
        _ => 8,
    }
}

/// Quantizes `rows` rows of `x` into each activation format the matrices need.
fn quantize_for(acts: &mut [Activations; 5], ms: &[&QMatrix], x: &[f32], rows: usize, cols: usize) {
    let mut done = [false; 5];
    for m in ms {
        let ty = m.act_type();
        let slot = act_slot(ty);
        if !done[slot] {
            acts[slot].quantize(ty, &x[..rows * cols], rows, cols);
            done[slot] = true;
        }
    }
}

/// cos/sin tables `[positions, head_dim / 2]`, computed as ggml does (`theta *= scale` in f32)
/// so positions rotate exactly as in llama.cpp.
fn rope_tables(cfg: &ModelConfig, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = cfg.head_dim / 2;
    let theta_scale = cfg.rope_base.powf(-2.0 / cfg.head_dim as f32);
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        let mut theta = p as f32;
        for _ in 0..half {
            cos.push(theta.cos());
            sin.push(theta.sin());
            theta *= theta_scale;
        }
    }
    (cos, sin)
}
