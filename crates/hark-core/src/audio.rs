//! Mono audio in memory and the sample clock.

/// The rate Hark listens at: VAD and ASR take 16 kHz mono.
pub const ASR_SAMPLE_RATE: u32 = 16_000;

/// Mono samples in [-1, 1] at a known rate. Sample `i` was captured (or is to be played) at
/// `i / sample_rate` seconds from the start of the stream: the sample clock every latency uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioBuffer {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl AudioBuffer {
    pub fn new(samples: Vec<f32>, sample_rate: u32) -> Self {
        AudioBuffer {
            samples,
            sample_rate,
        }
    }

    pub fn silence(duration_ms: f64, sample_rate: u32) -> Self {
        AudioBuffer {
            samples: vec![0.0; ms_to_samples(duration_ms, sample_rate)],
            sample_rate,
        }
    }

    pub fn duration_ms(&self) -> f64 {
        samples_to_ms(self.samples.len(), self.sample_rate)
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Root mean square level of the samples (0 for none).
    pub fn rms(&self) -> f32 {
        rms(&self.samples)
    }
}

pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

pub fn samples_to_ms(samples: usize, sample_rate: u32) -> f64 {
    if sample_rate == 0 {
        return 0.0;
    }
    samples as f64 * 1000.0 / sample_rate as f64
}

pub fn ms_to_samples(ms: f64, sample_rate: u32) -> usize {
    (ms.max(0.0) * sample_rate as f64 / 1000.0).round() as usize
}

/// `len` samples of white noise, uniform in `[-peak, peak]`, from a fixed-seed xorshift
/// generator: the same noise for the same `seed`, so runs and tests compare.
pub fn white_noise(len: usize, peak: f32, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * peak
        })
        .collect()
}

/// `noise` scaled so that `speech` is `snr_db` above it, added to `audio`.
pub fn add_noise_at_snr(audio: &[f32], speech: &[f32], noise: &[f32], snr_db: f64) -> Vec<f32> {
    let power = |x: &[f32]| x.iter().map(|v| (v * v) as f64).sum::<f64>() / x.len().max(1) as f64;
    let gain = (power(speech) / power(noise).max(1e-30) / 10f64.powf(snr_db / 10.0)).sqrt() as f32;
    audio
        .iter()
        .zip(noise.iter().chain(std::iter::repeat(&0.0)))
        .map(|(a, n)| a + gain * n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_round_trips() {
        assert_eq!(ms_to_samples(20.0, 16_000), 320);
        assert_eq!(samples_to_ms(320, 16_000), 20.0);
        assert_eq!(AudioBuffer::silence(1000.0, 22_050).samples.len(), 22_050);
        assert_eq!(samples_to_ms(5, 0), 0.0);
    }
}
