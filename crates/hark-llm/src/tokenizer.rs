//! The tokenizer, built from the GGUF metadata (`tokenizer.ggml.*`): byte-level BPE with the
//! pre-tokenizer the model was trained with, and its special tokens matched whole.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::LlmError;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Qwen2's pre-tokenizer pattern (from its tokenizer.json).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub eos: u32,
    pub bos: Option<u32>,
    /// Tokens that end a turn (EOS, `<|im_end|>`, `<|endoftext|>`).
    pub stop_tokens: Vec<u32>,
    pub chat_template: Option<String>,
    tokens: Vec<String>,
}

fn err(e: impl std::fmt::Display) -> LlmError {
    LlmError::Tokenizer(e.to_string())
}

fn strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, LlmError> {
    let v = md
        .get(key)
        .ok_or_else(|| err(format!("GGUF metadata lacks `{key}`")))?;
    v.to_vec()
        .map_err(err)?
        .iter()
        .map(|x| x.to_string().cloned().map_err(err))
        .collect()
}

/// Each token's GGUF type (1, normal, where the metadata has none).
fn token_types(md: &HashMap<String, Value>, n: usize) -> Result<Vec<i32>, LlmError> {
    Ok(match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(err)?
            .iter()
            .map(|x| x.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; n],
    })
}

/// Tokens that end a turn besides EOS, by name.
const STOP_NAMES: [&str; 3] = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"];

/// The ids of the special tokens (control and user-defined: `<|im_end|>`, `<|im_start|>`, …)
/// and of every token that ends a turn, in order.
pub(crate) fn special_token_ids(md: &HashMap<String, Value>) -> Result<Vec<u32>, LlmError> {
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let types = token_types(md, tokens.len())?;
    let eos = md
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok());
    Ok(tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(i, (name, &t))| {
            t == TYPE_CONTROL
                || t == TYPE_USER_DEFINED
                || Some(*i as u32) == eos
                || STOP_NAMES.contains(&name.as_str())
        })
        .map(|(i, _)| i as u32)
        .collect())
}

impl Tokenizer {
    pub fn from_gguf(md: &HashMap<String, Value>) -> Result<Self, LlmError> {
        let model = md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("gpt2");
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)"
            )));
        }
        let tokens = strings(md, "tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings(md, "tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let types = token_types(md, tokens.len())?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(err)?;
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("default");
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "qwen2" => Sequence::new(vec![
                Split::new(
                    SplitPattern::Regex(QWEN2_PATTERN.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(err)?
                .into(),
                ByteLevel::new(false, false, false).into(),
            ])
            .into(),
            // SmolLM ("smollm"): digits one by one, then GPT-2's byte-level split.
            "smollm" => Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            _ => ByteLevel::new(false, true, true).into(),
        };
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TYPE_CONTROL || t == TYPE_USER_DEFINED)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(special).map_err(err)?;

        let id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        let eos = id("tokenizer.ggml.eos_token_id")
            .ok_or_else(|| err("GGUF metadata lacks an EOS token id"))?;
        let mut stop_tokens = vec![eos];
        for name in STOP_NAMES {
            if let Some(i) = tokens.iter().position(|t| t == name) {
                if !stop_tokens.contains(&(i as u32)) {
                    stop_tokens.push(i as u32);
                }
            }
        }
        let chat_template = md
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
        Ok(Tokenizer {
            inner,
            eos,
            bos: id("tokenizer.ggml.bos_token_id"),
            stop_tokens,
            chat_template,
            tokens,
        })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.inner.decode(ids, true).map_err(err)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokens
            .iter()
            .position(|t| t == token)
            .map(|i| i as u32)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
}
