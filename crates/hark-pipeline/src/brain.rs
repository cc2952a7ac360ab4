//! The LLM's side of the conversation: the prompt, the history and the KV cache, shared by the
//! offline pipeline and the live one.

use hark_core::EngineFigures;
use hark_llm::chat::chatml_prompt;
use hark_llm::{ChatMessage, Engine, Generation, GenerationParams, Role, Session};

use crate::{PipelineConfig, PipelineError};

pub(crate) struct Brain<'a> {
    pub config: &'a PipelineConfig,
    pub engine: &'a Engine,
    pub session: &'a mut Session,
    pub history: &'a mut Vec<ChatMessage>,
}

impl Brain<'_> {
    /// A finished generation's engine figures, memory as the session holds it now.
    pub(crate) fn figures(&self, generation: &Generation) -> EngineFigures {
        EngineFigures {
            prompt_tokens: generation.prompt_tokens,
            prefill_tokens: generation.prefill_tokens,
            reply_tokens: generation.tokens.len(),
            prefill_tok_s: generation.prefill_tok_s(),
            decode_tok_s: generation.decode_tok_s(),
            tpot_ms: generation.tpot_ms(),
            peak_memory_mb: self.session.memory_bytes() as f64 / 1e6,
        }
    }

    /// How a reply is generated: the configured length cap and sampler.
    pub(crate) fn generation_params(&self) -> GenerationParams {
        GenerationParams {
            max_tokens: self.config.max_reply_tokens,
            sampler: self.config.sampler,
            stop_strings: Vec::new(),
        }
    }

    pub(crate) fn prompt_text(&self, history: &[ChatMessage]) -> String {
        let mut messages = vec![ChatMessage::new(
            Role::System,
            self.config.system_prompt.clone(),
        )];
        messages.extend_from_slice(history);
        chatml_prompt(&messages)
    }

    pub(crate) fn prompt_tokens(&self, history: &[ChatMessage]) -> Result<Vec<u32>, PipelineError> {
        Ok(self.engine.tokenizer().encode(&self.prompt_text(history))?)
    }

    /// See [`crate::Pipeline::prefill_partial`].
    pub(crate) fn prefill_partial(&mut self, stable: &str) -> Result<usize, PipelineError> {
        let stable = stable.trim();
        if stable.is_empty() {
            return Ok(0);
        }
        let mut history = self.history.clone();
        history.push(ChatMessage::new(Role::User, stable));
        let prompt = self.prompt_text(&history);
        // The message is not over: leave it open (no end-of-message, no assistant header).
        let open = prompt
            .strip_suffix("<|im_end|>\n<|im_start|>assistant\n")
            .unwrap_or(&prompt);
        let tokens = self.engine.tokenizer().encode(open)?;
        let room = self
            .session
            .capacity()
            .saturating_sub(self.config.max_reply_tokens);
        if tokens.len() > room {
            return Ok(0);
        }
        let _span = tracing::info_span!("prefill_partial").entered();
        Ok(self.session.sync(&tokens)?.1)
    }

    /// The prompt for the next reply, dropping the oldest exchanges until it leaves room for the
    /// reply in the context.
    pub(crate) fn fitted_prompt(&mut self) -> Result<Vec<u32>, PipelineError> {
        loop {
            let tokens = self.prompt_tokens(self.history)?;
            let room = self
                .session
                .capacity()
                .saturating_sub(self.config.max_reply_tokens);
            if tokens.len() <= room || self.history.len() <= 1 {
                return Ok(tokens);
            }
            // Drop the oldest user/assistant pair.
            let drop = self.history.len().min(2);
            self.history.drain(..drop);
        }
    }

    /// Computes the KV cache for the next turn's prompt as far as it is known: the system
    /// prompt, the conversation so far and the next user message's header. (The empty user
    /// message's closing tokens computed with it are rolled back by the next turn's prefix
    /// match.)
    pub(crate) fn prefill_next_turn(&mut self) -> Result<(), PipelineError> {
        let mut history = self.history.clone();
        history.push(ChatMessage::new(Role::User, ""));
        let tokens = self.prompt_tokens(&history)?;
        let room = self
            .session
            .capacity()
            .saturating_sub(self.config.max_reply_tokens);
        if tokens.len() <= room {
            let _span = tracing::info_span!("prefill_next_turn").entered();
            self.session.sync(&tokens)?;
        }
        Ok(())
    }
}

/// What was heard of a reply cut short after `played` samples, given where each of its chunks
/// starts (samples) and its text: whole chunks, and of the chunk cut short the share of its
/// words that had played.
pub(crate) fn heard_part(chunks: &[(usize, String)], played: usize) -> String {
    let mut heard: Vec<String> = Vec::new();
    for (i, (start, text)) in chunks.iter().enumerate() {
        if *start >= played {
            break;
        }
        let end = chunks.get(i + 1).map_or(usize::MAX, |(s, _)| *s);
        if played >= end {
            heard.push(text.clone());
        } else {
            let words: Vec<&str> = text.split_whitespace().collect();
            let share = (played - start) as f64 / (end - start).max(1) as f64;
            let n = ((words.len() as f64 * share).floor() as usize).min(words.len());
            if n > 0 {
                heard.push(words[..n].join(" "));
            }
        }
    }
    heard.join(" ")
}
