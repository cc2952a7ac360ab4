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
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        Sampler {
            config,
            rng: StdRng::seed_from_u64(config.seed),
            scratch: Vec::new(),
        }
    }

    /// Picks a token from `logits` (modified in place by the penalty); `history` is the
    /// context so far, for the repetition penalty.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
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
            return argmax(logits);
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
            return 0;
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
        let mut r = self.rng.random::<f32>() * total;
        for &(id, p) in &self.scratch {
            if r < p {
                return id;
            }
            r -= p;
        }
        self.scratch[self.scratch.len() - 1].0
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
