//! Model hyper-parameters, read from GGUF metadata.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

/// The architecture families we run; they differ in rope layout and attention biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama, SmolLM2: interleaved rope (GGUF's permuted Q/K), no attention biases.
    Llama,
    /// Qwen2 / Qwen2.5: NeoX rope, biases on Q, K and V.
    Qwen2,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub arch_name: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub d_model: usize,
    pub ffn: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f64,
    pub context_length: usize,
}

fn get<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value, String> {
    md.get(key).ok_or_else(|| format!("metadata lacks `{key}`"))
}

fn uint(md: &HashMap<String, Value>, key: &str) -> Result<usize, String> {
    let v = get(md, key)?;
    v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))
        .or_else(|_| v.to_i32().map(|x| x.max(0) as usize))
        .map_err(|e| format!("`{key}`: {e}"))
}

impl ModelConfig {
    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Self, String> {
        let arch_name = get(md, "general.architecture")?
            .to_string()
            .map_err(|e| e.to_string())?
            .clone();
        let arch = match arch_name.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => return Err(format!("architecture:{other}")),
        };
        let p = |k: &str| format!("{arch_name}.{k}");
        let n_head = uint(md, &p("attention.head_count"))?;
        let n_kv_head = uint(md, &p("attention.head_count_kv")).unwrap_or(n_head);
        let d_model = uint(md, &p("embedding_length"))?;
        if n_head == 0 || n_kv_head == 0 || d_model % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(format!(
                "inconsistent head counts: {n_head} heads, {n_kv_head} kv heads, width {d_model}"
            ));
        }
        let head_dim = uint(md, &p("rope.dimension_count")).unwrap_or(d_model / n_head);
        let rope_base = md
            .get(&p("rope.freq_base"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(10_000.0);
        let rms_eps = md
            .get(&p("attention.layer_norm_rms_epsilon"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-5) as f64;
        let n_layer = uint(md, &p("block_count"))?;
        let ffn = uint(md, &p("feed_forward_length"))?;
        // Sizes come from the file: refuse the absurd before anything is allocated from them.
        for (name, v, max) in [
            ("block_count", n_layer, 1024),
            ("head_count", n_head, 1024),
            ("embedding_length", d_model, 1 << 16),
            ("feed_forward_length", ffn, 1 << 18),
            ("head dimension", head_dim, 1024),
        ] {
            if v == 0 || v > max {
                return Err(format!("`{name}` is {v}, outside 1..={max}"));
            }
        }
        Ok(ModelConfig {
            arch,
            n_layer,
            n_head,
            n_kv_head,
            d_model,
            ffn,
            head_dim,
            rope_base,
            rms_eps,
            context_length: uint(md, &p("context_length")).unwrap_or(2048),
            arch_name,
        })
    }
}
