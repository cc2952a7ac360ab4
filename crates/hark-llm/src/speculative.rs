//! Speculative decoding: a cheap drafter proposes the next few tokens, one forward pass of the
//! target checks them all ([`crate::Session::generate_with`]), and accepted tokens cost a
//! fraction of a step each.
//!
//! On a CPU, checking k tokens is not free: a forward pass over k+1 tokens is compute-bound and
//! costs more than one step (less than k+1 steps: each weight block is unpacked once for four
//! tokens). So a [`Controller`] measures, per request, what drafting and verifying cost on this
//! machine and how often drafts are accepted, and drafts only as many tokens as pay — none when
//! nothing does.
//!
//! Drafters:
//! - [`PromptLookup`]: the continuation of the latest earlier occurrence of the last few
//!   tokens, anywhere in the conversation (free to draft; pays on replies that quote).
//! - [`DraftModel`]: a small model of the same family (same tokenizer) decoding greedily in its
//!   own session; its cache rolls back to what was accepted.

use crate::engine::{Engine, Session};
use crate::sampler::{Sampler, SamplerConfig};
use crate::LlmError;

/// The assistant-style prompts speculation is measured and tested on (`hark bench llm
/// --speculative`, `tests/speculative.rs`): questions a voice assistant gets, some answered
/// in the user's own words, lists, code and rewrites (where drafting from the prompt pays), some
/// free (where it does not).
pub const ASSISTANT_PROMPTS: [&str; 20] = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Repeat this sentence exactly: The quick brown fox jumps over the lazy dog near the river bank.",
    "List the days of the week, one per line.",
    "Correct the spelling in this sentence: I recieved the pakage yesterday and it was damadged.",
    "Write a Python function that returns the square of a number.",
    "What is the difference between weather and climate?",
    "Translate to French: Good morning, how are you today?",
    "Summarise in one sentence: The meeting on Monday was moved to Tuesday at ten because the room was booked.",
    "Give me three tips for sleeping better.",
    "Rewrite this more politely: Send me the report now.",
    "What does a spider eat?",
    "Count from one to ten in words.",
    "Convert this list to a comma-separated line: apples
bananas
cherries
dates",
    "Write a short haiku about autumn rain.",
    "How many minutes are there in three hours?",
    "Fix the bug in this code: def add(a, b): return a - b",
    "Tell me a fun fact about octopuses.",
    "Put these words in alphabetical order: zebra, apple, mango, kiwi, banana.",
    "What should I pack for a weekend trip to the mountains?",
];

/// Proposes tokens likely to follow a context.
pub trait Drafter: Send {
    fn name(&self) -> &str;
    /// Up to `k` tokens likely to follow `context` (the whole sequence so far). Fewer, or none,
    /// when it has no good guess.
    fn draft(&mut self, context: &[u32], k: usize) -> Result<Vec<u32>, LlmError>;

    /// Whether the last [`Drafter::draft`] first caught up on context that arrived while it
    /// was not drafting (a draft model prefilling it): a cost paid once when drafting resumes,
    /// not by each draft, so that call's time is no measure of what a draft costs.
    fn caught_up(&self) -> bool {
        false
    }
}

/// Prompt lookup: finds the latest earlier occurrence of the context's last `n` tokens (the
/// longest `n` from `max_ngram` down to `min_ngram` that occurs) and proposes what followed it.
pub struct PromptLookup {
    pub max_ngram: usize,
    pub min_ngram: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        Self {
            max_ngram: 4,
            min_ngram: 2,
        }
    }
}

impl Drafter for PromptLookup {
    fn name(&self) -> &str {
        "prompt lookup"
    }

    fn draft(&mut self, context: &[u32], k: usize) -> Result<Vec<u32>, LlmError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let len = context.len();
        for n in (self.min_ngram.max(1)..=self.max_ngram).rev() {
            if len <= n {
                continue;
            }
            let tail = &context[len - n..];
            // The latest occurrence that has something after it.
            if let Some(start) = (0..len - n).rev().find(|&i| &context[i..i + n] == tail) {
                let from = start + n;
                return Ok(context[from..(from + k).min(len)].to_vec());
            }
        }
        Ok(Vec::new())
    }
}

/// A small model drafting greedily for a bigger one with the same tokenizer.
pub struct DraftModel {
    session: Session,
    sampler: Sampler,
    name: String,
    caught_up: bool,
}

impl DraftModel {
    /// `sampler`: the target's, so the draft applies the same repetition penalty (it always
    /// drafts greedily).
    pub fn new(engine: &Engine, sampler: SamplerConfig) -> Result<Self, LlmError> {
        Ok(Self {
            session: engine.new_session()?,
            sampler: Sampler::new(SamplerConfig {
                temperature: 0.0,
                ..sampler
            }),
            name: format!(
                "draft model ({}, {} layers, {})",
                engine.model().config.arch_name,
                engine.model().config.n_layer,
                match engine.model().head_subset() {
                    Some(n) => format!("head of {n} tokens"),
                    None => "whole head".to_string(),
                }
            ),
            caught_up: false,
        })
    }

    /// The draft's own session (its cache holds the context and its last drafts).
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Drafter for DraftModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn caught_up(&self) -> bool {
        self.caught_up
    }

    fn draft(&mut self, context: &[u32], k: usize) -> Result<Vec<u32>, LlmError> {
        self.caught_up = false;
        if k == 0 || context.is_empty() {
            return Ok(Vec::new());
        }
        let k = k.min(self.session.capacity().saturating_sub(context.len()));
        if k == 0 {
            return Ok(Vec::new());
        }
        // Keeps what is still right of the last drafts (the accepted ones) and computes the rest:
        // while drafting goes on, the last draft and the token decided after the accepted ones
        // (at most two); more is context that arrived while the controller kept drafting off.
        let (mut logits, computed) = self.session.sync(context)?;
        self.caught_up = computed > 2;
        let mut history = context.to_vec();
        let mut drafts = Vec::with_capacity(k);
        loop {
            let token = self.sampler.sample(&mut logits, &history);
            drafts.push(token);
            history.push(token);
            if drafts.len() == k {
                return Ok(drafts);
            }
            let next = self.session.append(&[token], false)?;
            logits.copy_from_slice(next);
        }
    }
}

/// What speculation did in one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpeculationStats {
    /// Forward passes that carried drafts, and the drafts they carried and kept.
    pub verify_steps: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Forward passes without drafts.
    pub plain_steps: usize,
}

impl SpeculationStats {
    pub(crate) fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            self.plain_steps += 1;
        } else {
            self.verify_steps += 1;
            self.drafted += drafted;
            self.accepted += accepted;
        }
    }

    /// Accepted drafts / drafts.
    pub fn acceptance(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Tokens each drafted forward pass yielded on average (accepted + the one it decides).
    pub fn mean_accepted_length(&self) -> f64 {
        if self.verify_steps == 0 {
            0.0
        } else {
            (self.accepted + self.verify_steps) as f64 / self.verify_steps as f64
        }
    }

    pub fn add(&mut self, other: &SpeculationStats) {
        self.verify_steps += other.verify_steps;
        self.drafted += other.drafted;
        self.accepted += other.accepted;
        self.plain_steps += other.plain_steps;
    }
}

/// Chooses how many tokens to draft from what it measured: the cost of a plain step, of a
/// forward pass over n tokens, of drafting a token, and the acceptance rate. Drafting k tokens
/// accepted with rate a each yields (1 - a^(k+1)) / (1 - a) tokens for one draft of k and one
/// forward pass of k + 1: k is chosen to maximise tokens per millisecond, and 0 (plain decoding)
/// unless that beats a plain step by `margin`.
#[derive(Debug, Clone)]
pub struct Controller {
    pub max_draft: usize,
    /// Speculation must promise this much more speed than a plain step (1.05: 5 %).
    pub margin: f64,
    /// Exponential averages, ms: a forward pass over n tokens (index n - 1), drafting a token.
    pass_ms: Vec<Option<f64>>,
    draft_token_ms: Option<f64>,
    /// Acceptance rate (average) and how many drafts it rests on.
    acceptance: f64,
    drafts_seen: usize,
    /// Plain steps since speculation was last tried, and how many it waits before trying again:
    /// doubled after each try that did not pay (a draft model catching up on the context is
    /// expensive), back to the start when drafting pays.
    since_probe: usize,
    probe_every: usize,
    probing: bool,
    /// Plain steps' time since the last draft, ms, and what drafting after such a gap cost
    /// against it (a draft model prefilling what it missed; see [`Drafter::caught_up`]).
    plain_ms_since_draft: f64,
    catch_up_share: Option<f64>,
    /// How often each draft length was chosen (index k).
    pub choices: Vec<usize>,
}

/// Weight of a new measurement in the averages.
const EMA: f64 = 0.2;
/// After this many plain steps, the controller drafts again to re-measure (at first; see
/// `probe_every`).
const PROBE_EVERY: usize = 16;
/// The longest it waits between tries.
const PROBE_EVERY_MAX: usize = 512;
/// A try may cost at most this share of the plain decoding since the last one: a draft model
/// that must first prefill what it missed (about a tenth of that time for a 0.5B draft of a 1.5B
/// target) is not tried again.
const PROBE_BUDGET: f64 = 0.03;

impl Controller {
    pub fn new(max_draft: usize) -> Self {
        Self {
            max_draft,
            margin: 1.05,
            pass_ms: vec![None; max_draft + 1],
            draft_token_ms: None,
            // Until measured: optimistic enough to try.
            acceptance: 0.6,
            drafts_seen: 0,
            since_probe: 0,
            probe_every: PROBE_EVERY,
            probing: false,
            plain_ms_since_draft: 0.0,
            catch_up_share: None,
            choices: vec![0; max_draft + 1],
        }
    }

    /// A forward pass over n tokens, ms: measured, or modelled from the plain step (a pass
    /// over n tokens costs at least a step and less than n steps).
    fn pass(&self, n: usize) -> Option<f64> {
        if let Some(ms) = self.pass_ms.get(n - 1).copied().flatten() {
            return Some(ms);
        }
        let step = self.pass_ms[0]?;
        Some(step * (1.0 + 0.5 * (n - 1) as f64))
    }

    /// How many tokens to draft now, at most `room`.
    pub fn choose(&mut self, room: usize, draft_is_free: bool) -> usize {
        let max = self.max_draft.min(room);
        let k = match self.pass(1) {
            // The first step measures a plain step.
            None => 0,
            Some(step) => {
                let a = self.acceptance.clamp(0.0, 0.99);
                let draft_ms = if draft_is_free {
                    0.0
                } else {
                    self.draft_token_ms.unwrap_or(step * 0.5)
                };
                let plain_rate = 1.0 / step;
                // The best draft length at acceptance `a`, and its tokens per ms.
                let best_at = |a: f64| {
                    let mut best = (0, plain_rate * self.margin);
                    for k in 1..=max {
                        let Some(pass) = self.pass(k + 1) else {
                            continue;
                        };
                        let tokens = (1.0 - a.powi(k as i32 + 1)) / (1.0 - a);
                        let rate = tokens / (pass + draft_ms * k as f64);
                        if rate > best.1 {
                            best = (k, rate);
                        }
                    }
                    best
                };
                let best = best_at(a);
                // Trying again is worth it only if drafting could pay at all: at (nearly)
                // perfect acceptance, with what drafting and verifying cost here.
                let could_pay = best_at(0.99).0 > 0;
                // And only if catching up on the context costs little (prompt lookup: nothing).
                let affordable = self.catch_up_share.is_none_or(|c| c <= PROBE_BUDGET);
                if best.0 == 0 && could_pay && affordable && self.since_probe >= self.probe_every {
                    // Re-measure now and then: the text may have become easier to draft. A try
                    // that does not pay makes the next one wait twice as long.
                    if self.probing {
                        self.probe_every = (self.probe_every * 2).min(PROBE_EVERY_MAX);
                    }
                    self.probing = true;
                    1.min(max)
                } else {
                    if best.0 > 0 {
                        self.probing = false;
                        self.probe_every = PROBE_EVERY;
                    }
                    best.0
                }
            }
        };
        if k == 0 {
            self.since_probe += 1;
        } else {
            self.since_probe = 0;
        }
        if let Some(c) = self.choices.get_mut(k) {
            *c += 1;
        }
        k
    }

    /// What a step cost and kept: `drafted` tokens taking `draft_ms` (`caught_up`: the drafter
    /// first caught up on context it missed, so that time measures the catch-up, not drafting;
    /// see [`Drafter::caught_up`]), `accepted` of them, one forward pass over `drafted + 1` tokens
    /// taking `pass_ms`.
    pub fn observe(
        &mut self,
        drafted: usize,
        accepted: usize,
        draft_ms: f64,
        caught_up: bool,
        pass_ms: f64,
    ) {
        let ema = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| o + EMA * (new - o)));
        if let Some(slot) = self.pass_ms.get_mut(drafted) {
            *slot = ema(*slot, pass_ms);
        }
        if drafted == 0 {
            self.plain_ms_since_draft += pass_ms;
        }
        if drafted > 0 {
            if caught_up {
                let share = draft_ms / self.plain_ms_since_draft.max(pass_ms);
                self.catch_up_share = ema(self.catch_up_share, share);
            } else {
                self.draft_token_ms = ema(self.draft_token_ms, draft_ms / drafted as f64);
            }
            self.plain_ms_since_draft = 0.0;
            let rate = accepted as f64 / drafted as f64;
            // The first drafts replace the prior; later ones move the average.
            self.acceptance = if self.drafts_seen == 0 {
                rate
            } else {
                self.acceptance + EMA * (rate - self.acceptance)
            };
            self.drafts_seen += drafted;
        }
    }

    /// Starts from measured pass costs (index n - 1, ms; [`crate::Session::measure_passes`]):
    /// every draft length is then weighed on what it really costs, not a model of it.
    pub fn calibrate(&mut self, pass_ms: &[f64]) {
        for (slot, &ms) in self.pass_ms.iter_mut().zip(pass_ms) {
            *slot = Some(ms);
        }
    }

    /// What a forward pass over n tokens costs (index n - 1), ms, as measured so far.
    pub fn pass_costs(&self) -> &[Option<f64>] {
        &self.pass_ms
    }

    /// What drafting a token costs, ms, as measured so far.
    pub fn draft_token_cost(&self) -> Option<f64> {
        self.draft_token_ms
    }

    /// The measured acceptance rate (the prior until drafts were seen).
    pub fn acceptance(&self) -> f64 {
        self.acceptance
    }
}

/// A drafter and the controller that decides how much to draft.
pub struct Speculator {
    pub drafter: Box<dyn Drafter>,
    pub controller: Controller,
    /// Whether the controller decides (off: always draft `controller.max_draft`).
    pub adaptive: bool,
    draft_is_free: bool,
}

impl Speculator {
    /// `draft_is_free`: drafting costs next to nothing (prompt lookup), so only the verifying
    /// pass is weighed.
    pub fn new(drafter: Box<dyn Drafter>, max_draft: usize, draft_is_free: bool) -> Self {
        Self {
            drafter,
            controller: Controller::new(max_draft),
            adaptive: true,
            draft_is_free,
        }
    }

    pub fn prompt_lookup(max_draft: usize) -> Self {
        Self::new(Box::new(PromptLookup::default()), max_draft, true)
    }

    pub fn draft_model(
        engine: &Engine,
        sampler: SamplerConfig,
        max_draft: usize,
    ) -> Result<Self, LlmError> {
        Ok(Self::new(
            Box::new(DraftModel::new(engine, sampler)?),
            max_draft,
            false,
        ))
    }

    /// Drafts for the next step: as many tokens as the controller chooses (at most `room`).
    pub(crate) fn draft(&mut self, context: &[u32], room: usize) -> Result<Vec<u32>, LlmError> {
        let k = if self.adaptive {
            self.controller.choose(room, self.draft_is_free)
        } else {
            self.controller.max_draft.min(room)
        };
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut drafts = self.drafter.draft(context, k)?;
        drafts.truncate(k);
        Ok(drafts)
    }

    pub(crate) fn observe(&mut self, drafted: usize, accepted: usize, draft_ms: f64, pass_ms: f64) {
        let caught_up = self.drafter.caught_up();
        self.controller
            .observe(drafted, accepted, draft_ms, caught_up, pass_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lookup_proposes_what_followed_the_latest_match() {
        let mut d = PromptLookup::default();
        // "1 2 3 4 5 … 1 2 3" → "4 5".
        assert_eq!(
            d.draft(&[1, 2, 3, 4, 5, 9, 1, 2, 3], 2).unwrap(),
            vec![4, 5]
        );
        // The latest occurrence wins; the draft stops at the context's end.
        assert_eq!(
            d.draft(&[7, 8, 1, 7, 8, 2, 6, 7, 8], 5).unwrap(),
            vec![2, 6, 7, 8]
        );
        // No repeated n-gram: nothing.
        assert!(d.draft(&[1, 2, 3, 4], 3).unwrap().is_empty());
        assert!(d.draft(&[1, 2, 1, 2], 0).unwrap().is_empty());
    }

    #[test]
    fn the_controller_drafts_only_where_it_pays() {
        // A pass over n tokens costs as much as n steps (no batching gain): never worth it.
        let mut c = Controller::new(4);
        assert_eq!(
            c.choose(10, true),
            0,
            "the first step measures a plain step"
        );
        c.observe(0, 0, 0.0, false, 10.0);
        for n in 2..=5 {
            c.observe(n - 1, 0, 0.0, false, 10.0 * n as f64);
        }
        for _ in 0..20 {
            c.observe(4, 4, 0.0, false, 50.0);
        }
        assert_eq!(c.choose(10, true), 0, "perfect acceptance, no gain");

        // Cheap verification (a pass over 5 tokens costs 1.4 steps) and good acceptance: draft.
        let mut c = Controller::new(4);
        c.observe(0, 0, 0.0, false, 10.0);
        for n in 2..=5 {
            c.observe(n - 1, n - 1, 0.0, false, 10.0 + 1.0 * (n - 1) as f64);
        }
        assert_eq!(c.choose(10, true), 4);
        // Acceptance collapses: back to plain decoding, with an occasional probe.
        for _ in 0..30 {
            c.observe(4, 0, 0.0, false, 14.0);
        }
        let choices: Vec<usize> = (0..40).map(|_| c.choose(10, true)).collect();
        assert_eq!(choices.iter().filter(|&&k| k > 0).count(), 2, "{choices:?}");
        // Tries that keep not paying come ever more rarely: 16, 32, 64, 128 plain steps apart.
        let probes = (0..400).filter(|_| c.choose(10, true) > 0).count();
        assert_eq!(probes, 3);
        // Drafting that could not pay even if every draft were accepted (a draft token costing
        // as much as a step) is never tried again once measured.
        let mut c = Controller::new(4);
        c.calibrate(&[10.0, 12.0, 14.0, 16.0, 18.0]);
        c.observe(1, 0, 10.0, false, 12.0);
        assert!((0..300).all(|_| c.choose(10, false) == 0));
        // A draft whose time includes catching up on the context is no measure of drafting.
        let mut c = Controller::new(4);
        c.calibrate(&[10.0, 12.0, 14.0, 16.0, 18.0]);
        c.observe(1, 1, 1.0, false, 12.0);
        c.observe(1, 1, 50.0, true, 12.0);
        assert_eq!(c.draft_token_cost(), Some(1.0));
        // A drafter is tried again after plain steps only if catching up on them costs little:
        // 10 ms after 100 ms of plain decoding (10 %) is over the probing budget, 1 ms is not.
        for (catch_up_ms, tried_again) in [(10.0, false), (1.0, true)] {
            let mut c = Controller::new(4);
            c.calibrate(&[10.0, 12.0, 14.0, 16.0, 18.0]);
            c.observe(1, 0, 1.0, false, 12.0);
            for _ in 0..10 {
                c.observe(0, 0, 0.0, false, 10.0);
            }
            c.observe(1, 0, catch_up_ms, true, 12.0);
            let probes = (0..2000).filter(|_| c.choose(10, false) > 0).count();
            match tried_again {
                true => assert!(probes >= 3, "{probes} probes"),
                false => assert_eq!(probes, 0),
            }
        }
        // No room: no draft.
        let mut c = Controller::new(4);
        c.observe(0, 0, 0.0, false, 10.0);
        assert_eq!(c.choose(0, true), 0);
    }
}
