//! Hark's LLM engine: GGUF models (llama and qwen2 families) with their quantized weights kept
//! quantized, a KV cache owned by each session, the tokenizer built from the GGUF metadata, and
//! a sampler.
//!
//! The model code and its CPU kernels (`hark-kernels`) are ours: the engine needs what
//! candle-transformers' models hide (logits for every position of a batch, a cache we can
//! truncate), and candle's quantized CPU matmul decodes at a fraction of llama.cpp's speed here.
//! candle still reads the GGUF container.

pub mod chat;
pub mod config;
pub mod engine;
pub mod kv_cache;
pub mod model;
pub mod sampler;
pub mod speculative;
pub mod tokenizer;

pub use chat::{ChatMessage, Role};
pub use engine::{Engine, Generation, GenerationParams, Session, StopReason};
pub use model::HeadTokens;
pub use sampler::SamplerConfig;
pub use speculative::{
    Controller, DraftModel, Drafter, PromptLookup, SpeculationStats, Speculator,
};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("model file not found at {0}; run `hark models fetch`")]
    Missing(String),
    #[error("{path}: not a usable GGUF model: {detail}")]
    Format { path: String, detail: String },
    #[error("unsupported model architecture `{0}` (supported: llama, qwen2)")]
    Architecture(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the prompt needs {needed} tokens but the context holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },
    #[error("compute: {0}")]
    Compute(String),
}
