//! The engine and its sessions: prefill with prefix reuse and rollback, and streaming generation.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::kv_cache::KvCache;
use crate::model::{HeadTokens, Model, Scratch};
use crate::sampler::{Sampler, SamplerConfig, Verdict};
use crate::speculative::{SpeculationStats, Speculator};
use crate::tokenizer::Tokenizer;
use crate::LlmError;

/// Prompt tokens computed per forward pass; bounds the attention scratch of long prompts.
const PREFILL_CHUNK: usize = 256;

/// A loaded model and tokenizer, shared by any number of sessions.
#[derive(Clone)]
pub struct Engine {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    context: usize,
}

impl Engine {
    /// Loads a GGUF model computing on `threads` threads; each session's KV cache holds
    /// `context` positions (capped at the model's trained context).
    pub fn load(path: &Path, context: usize, threads: usize) -> Result<Self, LlmError> {
        Self::load_with(path, context, threads, HeadTokens::All)
    }

    /// [`Engine::load`], with an output head that scores only some tokens (a draft model's:
    /// [`HeadTokens::FirstAndSpecial`]).
    pub fn load_with(
        path: &Path,
        context: usize,
        threads: usize,
        head: HeadTokens,
    ) -> Result<Self, LlmError> {
        let (model, content) = Model::load(path, context, threads.max(1), head)?;
        let tokenizer = Tokenizer::from_gguf(&content.metadata)?;
        let context = context.min(model.config.context_length).max(1);
        Ok(Engine {
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            context,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn context(&self) -> usize {
        self.context
    }

    pub fn new_session(&self) -> Result<Session, LlmError> {
        Ok(Session {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            cache: KvCache::new(&self.model.config, self.context)?,
            tokens: Vec::new(),
            scratch: Scratch::default(),
            logits: Vec::new(),
        })
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn.
    EndOfTurn,
    /// A stop string appeared.
    StopString,
    MaxTokens,
    /// The callback asked to stop.
    Cancelled,
    /// The context is full.
    ContextFull,
}

#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation stops before any of these; they are not part of the text.
    pub stop_strings: Vec<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop_strings: Vec::new(),
        }
    }
}

/// A finished generation and what it cost.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    /// Prompt tokens computed (the rest were already in the cache).
    pub prefill_tokens: usize,
    pub prefill_ms: f64,
    /// Prompt in → first token sampled.
    pub ttft_ms: f64,
    /// First token → last token.
    pub decode_ms: f64,
    /// What speculative decoding proposed and kept (all zero without it).
    pub speculation: SpeculationStats,
}

impl Generation {
    pub fn decode_tok_s(&self) -> f64 {
        if self.tokens.len() < 2 || self.decode_ms <= 0.0 {
            return 0.0;
        }
        (self.tokens.len() - 1) as f64 * 1000.0 / self.decode_ms
    }
    pub fn prefill_tok_s(&self) -> f64 {
        if self.prefill_ms <= 0.0 {
            return 0.0;
        }
        self.prefill_tokens as f64 * 1000.0 / self.prefill_ms
    }
    /// Time per output token after the first.
    pub fn tpot_ms(&self) -> f64 {
        if self.tokens.len() < 2 {
            return 0.0;
        }
        self.decode_ms / (self.tokens.len() - 1) as f64
    }
}

/// One conversation's view of the model: its KV cache and the tokens in it.
pub struct Session {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    cache: KvCache,
    tokens: Vec<u32>,
    scratch: Scratch,
    /// Logits of the last append: one row, or one per token when all were asked for.
    logits: Vec<f32>,
}

impl Session {
    /// A second session holding the same tokens and cache (for example a shared system prompt
    /// computed once).
    pub fn fork(&self) -> Session {
        Session {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            cache: self.cache.fork(),
            tokens: self.tokens.clone(),
            scratch: Scratch::default(),
            logits: Vec::new(),
        }
    }

    /// The tokens whose keys and values are in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Model weights plus this session's KV cache at capacity.
    pub fn memory_bytes(&self) -> usize {
        self.model.weight_bytes + self.cache.bytes()
    }

    /// Rolls the cache back to its first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.cache.truncate(len);
        self.tokens.truncate(len);
    }

    /// Appends `tokens` to the cache, returning logits `[tokens.len(), vocab]` (row-major) when
    /// `all_logits`, else the last position's `[vocab]`. The slice is the session's buffer,
    /// valid until the next call.
    pub fn append(&mut self, tokens: &[u32], all_logits: bool) -> Result<&mut [f32], LlmError> {
        if tokens.is_empty() {
            return Err(LlmError::Compute("append of no tokens".into()));
        }
        self.cache.reserve(tokens.len())?;
        let vocab = self.model.vocab_size();
        let rows = if all_logits { tokens.len() } else { 1 };
        if self.logits.len() < rows * vocab {
            self.logits.resize(rows * vocab, 0.0);
        }
        let mut done = 0;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            let out = match all_logits {
                true => &mut self.logits[done * vocab..(done + chunk.len()) * vocab],
                false => &mut self.logits[..vocab],
            };
            let before = self.cache.len();
            if let Err(e) =
                self.model
                    .forward(chunk, &mut self.cache, &mut self.scratch, all_logits, out)
            {
                // A failed chunk leaves nothing half-appended.
                self.cache.truncate(before);
                return Err(e);
            }
            self.tokens.extend_from_slice(chunk);
            done += chunk.len();
        }
        Ok(&mut self.logits[..rows * vocab])
    }

    /// Measures what a forward pass over n tokens costs on this machine, for n = 1..=`max_n`
    /// (the median of `reps` passes each, ms), at the cache's current length; the cache is left
    /// as it was. This is what a speculative [`crate::Controller`] weighs drafts against.
    pub fn measure_passes(&mut self, max_n: usize, reps: usize) -> Result<Vec<f64>, LlmError> {
        let base = self.tokens.len();
        let filler = *self.tokens.last().unwrap_or(&0);
        let mut costs = Vec::with_capacity(max_n);
        for n in 1..=max_n {
            let mut times = Vec::with_capacity(reps.max(1));
            for _ in 0..reps.max(1) {
                let t = Instant::now();
                self.append(&vec![filler; n], n > 1)?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                self.truncate(base);
            }
            times.sort_by(f64::total_cmp);
            costs.push(times[times.len() / 2]);
        }
        Ok(costs)
    }

    /// Makes the cache hold exactly `prompt`: keeps the longest common prefix, rolls back the
    /// rest, and computes what is new. Returns the last position's logits and how many tokens
    /// were computed.
    pub fn sync(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize), LlmError> {
        if prompt.is_empty() {
            return Err(LlmError::Tokenizer("empty prompt".into()));
        }
        if prompt.len() > self.cache.capacity() {
            return Err(LlmError::ContextFull {
                needed: prompt.len(),
                capacity: self.cache.capacity(),
            });
        }
        let mut common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token is always recomputed: its logits start the reply.
        common = common.min(prompt.len() - 1);
        self.truncate(common);
        let logits = self.append(&prompt[common..], false)?.to_vec();
        Ok((logits, prompt.len() - common))
    }

    /// Generates a reply to `prompt` (token ids of the whole conversation so far), streaming each
    /// new piece of text to `on_text`; returning `false` from it cancels at once.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerationParams,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, LlmError> {
        self.generate_with(prompt, params, None, on_text)
    }

    /// [`Session::generate`], with speculative decoding when a [`Speculator`] is given: its
    /// drafter proposes tokens, one forward pass over them checks them all, and its controller
    /// drafts only where that pays. Greedy, the output is token for token that of plain decoding;
    /// sampling, it follows the same distribution.
    pub fn generate_with(
        &mut self,
        prompt: &[u32],
        params: &GenerationParams,
        mut speculator: Option<&mut Speculator>,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, LlmError> {
        let started = Instant::now();
        let (mut logits, computed) = self.sync(prompt)?;
        let prefill_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut sampler = Sampler::new(params.sampler);
        let mut reply = Reply {
            tokenizer: self.tokenizer.clone(),
            params,
            out: Vec::new(),
            text: String::new(),
            emitted: 0,
        };
        let vocab = self.model.vocab_size();
        // Everything before the position being sampled (the repetition penalty's history).
        let mut history = prompt.to_vec();
        let mut ttft_ms = 0.0;
        let mut first_at = started;
        let mut stats = SpeculationStats::default();
        // The decided token and its drafts, one forward pass (reused: no allocation a token).
        let mut batch = Vec::new();
        let stop = 'generation: {
            if params.max_tokens == 0 {
                break 'generation StopReason::MaxTokens;
            }
            let mut token = sampler.sample(&mut logits, &history);
            first_at = Instant::now();
            ttft_ms = started.elapsed().as_secs_f64() * 1000.0;
            loop {
                if let Some(stop) = reply.take(token, &mut on_text)? {
                    break 'generation stop;
                }
                history.push(token);
                // `token` is decided but not yet in the cache: it goes in with any drafts.
                let room = self
                    .cache
                    .capacity()
                    .saturating_sub(self.cache.len() + 1)
                    .min(params.max_tokens.saturating_sub(reply.out.len()));
                if self.cache.len() + 1 > self.cache.capacity() {
                    break 'generation StopReason::ContextFull;
                }
                let drafted_at = Instant::now();
                let drafts = match speculator.as_deref_mut() {
                    Some(s) => s.draft(&history, room)?,
                    None => Vec::new(),
                };
                let draft_ms = drafted_at.elapsed().as_secs_f64() * 1000.0;
                let base = self.tokens.len();
                batch.clear();
                batch.push(token);
                batch.extend_from_slice(&drafts);
                let verify_at = Instant::now();
                let rows = self.append(&batch, !drafts.is_empty())?;
                let verify_ms = verify_at.elapsed().as_secs_f64() * 1000.0;
                let mut accepted = 0;
                let mut next = None;
                for (i, &draft) in drafts.iter().enumerate() {
                    let row = &mut rows[i * vocab..(i + 1) * vocab];
                    match sampler.verify(row, &history, draft) {
                        Verdict::Accept => {
                            accepted += 1;
                            if let Some(stop) = reply.take(draft, &mut on_text)? {
                                self.truncate(base + 1 + accepted);
                                stats.record(drafts.len(), accepted);
                                break 'generation stop;
                            }
                            history.push(draft);
                        }
                        Verdict::Reject(t) => {
                            next = Some(t);
                            break;
                        }
                    }
                }
                token = match next {
                    Some(t) => t,
                    None => {
                        let last = drafts.len();
                        sampler.sample(&mut rows[last * vocab..(last + 1) * vocab], &history)
                    }
                };
                // Rejected drafts leave the cache.
                self.truncate(base + 1 + accepted);
                stats.record(drafts.len(), accepted);
                if let Some(s) = speculator.as_deref_mut() {
                    s.observe(drafts.len(), accepted, draft_ms, verify_ms);
                }
            }
        };
        reply.finish(stop, &mut on_text);
        // The cache ends as plain decoding leaves it: the prompt and every generated token but
        // the last (drafts accepted past a stop are dropped).
        let keep = prompt.len() + reply.out.len().saturating_sub(1);
        if self.tokens.len() > keep {
            self.truncate(keep);
        }
        let decode_ms = if reply.out.is_empty() {
            0.0
        } else {
            first_at.elapsed().as_secs_f64() * 1000.0
        };
        Ok(Generation {
            text: reply.text,
            tokens: reply.out,
            stop,
            prompt_tokens: prompt.len(),
            prefill_tokens: computed,
            prefill_ms,
            ttft_ms,
            decode_ms,
            speculation: stats,
        })
    }
}

/// The reply being generated: its tokens and text, streamed as pieces complete.
struct Reply<'a> {
    tokenizer: Arc<Tokenizer>,
    params: &'a GenerationParams,
    out: Vec<u32>,
    text: String,
    /// How much of `text` has been handed to the caller.
    emitted: usize,
}

impl Reply<'_> {
    /// Takes the next generated token; returns why generation stops, if it does.
    fn take(
        &mut self,
        token: u32,
        on_text: &mut impl FnMut(&str) -> bool,
    ) -> Result<Option<StopReason>, LlmError> {
        let params = self.params;
        if self.tokenizer.stop_tokens.contains(&token) {
            return Ok(Some(StopReason::EndOfTurn));
        }
        self.out.push(token);
        self.text = self.tokenizer.decode(&self.out)?;
        let text = &mut self.text;
        if let Some(cut) = params
            .stop_strings
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
            if cut > self.emitted && !on_text(&text[self.emitted..]) {
                return Ok(Some(StopReason::Cancelled));
            }
            self.emitted = cut;
            return Ok(Some(StopReason::StopString));
        }
        // Hold back a piece that ends inside a multi-byte character, and any tail that could
        // still become a stop string.
        let hold = params
            .stop_strings
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && text.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let ready = text.len() - hold;
        if !text.ends_with('\u{FFFD}') && ready > self.emitted && text.is_char_boundary(ready) {
            if !on_text(&text[self.emitted..ready]) {
                return Ok(Some(StopReason::Cancelled));
            }
            self.emitted = ready;
        }
        if self.out.len() >= params.max_tokens {
            return Ok(Some(StopReason::MaxTokens));
        }
        Ok(None)
    }

    /// Hands over whatever is left, short of an unfinished character at the very end.
    fn finish(&mut self, stop: StopReason, on_text: &mut impl FnMut(&str) -> bool) {
        let complete = self.text.trim_end_matches('\u{FFFD}').len();
        if self.emitted < complete && stop != StopReason::Cancelled {
            on_text(&self.text[self.emitted..complete]);
        }
    }
}
