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
