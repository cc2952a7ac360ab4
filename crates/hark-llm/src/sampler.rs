//! Choosing the next token: greedy, or temperature with top-k / top-p, with a repetition penalty,
//! reproducible from a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// 0 is greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1: all).
    pub top_p: f32,
    /// > 1 discourages tokens seen in the last `repeat_window` tokens.
    pub repetition_penalty: f32,
    pub repeat_window: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            repeat_window: 64,
            seed: 299_792_458,
        }
    }
}

pub struct Sampler {
    config: SamplerConfig,
    rng: StdRng,
    /// The kept tokens of the last distribution and their weights (not normalised), most
    /// likely first, and the weights' sum.
    scratch: Vec<(u32, f32)>,
    total: f32,
}

/// A proposed token, checked against the target's distribution (speculative decoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Rejected: this token takes its place.
    Reject(u32),
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        Sampler {
            config,
            rng: StdRng::seed_from_u64(config.seed),
            scratch: Vec::new(),
            total: 0.0,
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Picks a token from `logits` (modified in place by the penalty); `history` is the
    /// context so far, for the repetition penalty.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        match self.weigh(logits, history) {
            Some(greedy) => greedy,
            None => self.draw(None),
        }
    }

    /// Checks a drafted `token` against the distribution `sample` would draw from, keeping that
    /// distribution exactly: greedy, it is accepted when it is the token `sample` picks;
    /// sampling, it is accepted with its probability p, and otherwise a token is drawn from the
    /// distribution without it (so each token comes out with its own probability: p for the
    /// draft, (1 - p) · q / (1 - p) = q for any other). Drafts are point proposals.
    pub fn verify(&mut self, logits: &mut [f32], history: &[u32], token: u32) -> Verdict {
        let pick = match self.weigh(logits, history) {
            Some(greedy) => greedy,
            None => {
                let weight = self
                    .scratch
                    .iter()
                    .find(|(id, _)| *id == token)
                    .map_or(0.0, |(_, w)| *w);
                if self.rng.random::<f32>() * self.total < weight {
                    return Verdict::Accept;
                }
                self.draw(Some(token))
            }
        };
        if pick == token {
            Verdict::Accept
        } else {
            Verdict::Reject(pick)
        }
    }

    /// Applies the repetition penalty; greedy, returns the pick; otherwise keeps the weighted
    /// candidates (temperature, top-k, top-p) for a draw and returns `None`.
    fn weigh(&mut self, logits: &mut [f32], history: &[u32]) -> Option<u32> {
        let c = self.config;
        if c.repetition_penalty != 1.0 {
            let start = history.len().saturating_sub(c.repeat_window);
            // Each distinct token once, however often it appeared (as llama.cpp does).
            let mut seen: Vec<u32> = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / c.repetition_penalty
                    } else {
                        *l * c.repetition_penalty
                    };
                }
            }
        }
        if c.temperature <= 0.0 {
            return Some(argmax(logits));
        }
        self.scratch.clear();
        self.scratch.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l / c.temperature)),
        );
        if self.scratch.is_empty() {
            return Some(0);
        }
        if c.top_k > 0 && c.top_k < self.scratch.len() {
            self.scratch
                .select_nth_unstable_by(c.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            self.scratch.truncate(c.top_k);
        }
        self.scratch.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let max = self.scratch[0].1;
        let mut total = 0.0f32;
        for (_, l) in self.scratch.iter_mut() {
            *l = (*l - max).exp();
            total += *l;
        }
        if c.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = self.scratch.len();
            for (i, (_, p)) in self.scratch.iter().enumerate() {
                cum += p / total;
                if cum >= c.top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.scratch.truncate(keep);
            total = self.scratch.iter().map(|(_, p)| p).sum();
        }
        self.total = total;
        None
    }

    /// Draws from the kept candidates, leaving out `excluded`.
    fn draw(&mut self, excluded: Option<u32>) -> u32 {
        let excluded_weight = excluded
            .and_then(|x| self.scratch.iter().find(|(id, _)| *id == x))
            .map_or(0.0, |(_, w)| *w);
        let candidates = || self.scratch.iter().filter(|(id, _)| Some(*id) != excluded);
        let mut r = self.rng.random::<f32>() * (self.total - excluded_weight);
        for &(id, p) in candidates() {
            if r < p {
                return id;
            }
            r -= p;
        }
        // Rounding: the last candidate (or the excluded one when it was the only one).
        candidates()
            .next_back()
            .or(self.scratch.last())
            .map_or(0, |(id, _)| *id)
    }
}

/// Index of the largest logit (the first one on ties, as llama.cpp does).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(SamplerConfig::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn penalty_discourages_repeats() {
        let mut s = Sampler::new(SamplerConfig {
            repetition_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.0], &[1]), 2);
        // Seen three times, penalised once: 3.0 / 2 = 1.5 still beats 1.4.
        assert_eq!(s.sample(&mut [0.0, 3.0, 1.4], &[1, 1, 1]), 1);
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            ..Default::default()
        };
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let mut s = Sampler::new(cfg);
        let ones = (0..4000)
            .filter(|_| s.sample(&mut logits.clone(), &[]) == 1)
            .count();
        assert!((2800..3200).contains(&ones), "{ones}");
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig { seed, ..cfg });
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
    }

    #[test]
    fn verifying_a_draft_keeps_the_distribution() {
        // A small vocabulary: p = 0.1, 0.2, 0.3, 0.4. Whatever the (point) draft, the tokens that
        // come out of verification follow p (chi-square at 3 degrees of freedom, p < 0.001
        // would need > 16.3).
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            ..Default::default()
        };
        let p = [0.1f32, 0.2, 0.3, 0.4];
        let logits: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        for draft in 0..4u32 {
            let mut s = Sampler::new(SamplerConfig {
                seed: 11 + draft as u64,
                ..cfg
            });
            let n = 20_000;
            let mut counts = [0usize; 4];
            let mut accepted = 0;
            for _ in 0..n {
                let token = match s.verify(&mut logits.clone(), &[], draft) {
                    Verdict::Accept => {
                        accepted += 1;
                        draft
                    }
                    Verdict::Reject(t) => {
                        assert_ne!(t, draft, "a rejected draft is never drawn again");
                        t
                    }
                };
                counts[token as usize] += 1;
            }
            let chi2: f32 = counts
                .iter()
                .zip(p)
                .map(|(&c, p)| (c as f32 - n as f32 * p).powi(2) / (n as f32 * p))
                .sum();
            assert!(chi2 < 16.3, "draft {draft}: {counts:?} (chi2 {chi2})");
            // The draft is accepted as often as its probability.
            let rate = accepted as f32 / n as f32;
            assert!((rate - p[draft as usize]).abs() < 0.02, "{rate}");
        }
        // Greedy: accepted exactly when it is the pick.
        let mut greedy = Sampler::new(SamplerConfig::default());
        assert_eq!(greedy.verify(&mut logits.clone(), &[], 3), Verdict::Accept);
        assert_eq!(
            greedy.verify(&mut logits.clone(), &[], 1),
            Verdict::Reject(3)
        );
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.1, 0.3, 0.2], &[]), 1);
        }
    }
}
