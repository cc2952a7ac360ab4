//! Noise suppression before voice activity detection and recognition: RNNoise (nnnoiseless, a
//! pure-Rust port), which works on 10 ms frames at 48 kHz.

use hark_core::{AudioBuffer, ASR_SAMPLE_RATE};
use nnnoiseless::DenoiseState;

use crate::{resample, AudioError};

/// RNNoise's rate.
const RATE: u32 = 48_000;

/// `samples` (16 kHz mono) with stationary noise suppressed, the same length and on the same
/// clock (RNNoise's one-frame delay is taken out).
pub fn denoise(samples: &[f32]) -> Result<Vec<f32>, AudioError> {
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let up = resample(&AudioBuffer::new(samples.to_vec(), ASR_SAMPLE_RATE), RATE)?;
    let frame = DenoiseState::FRAME_SIZE;
    let mut state = DenoiseState::new();
    // One extra frame flushes the delayed last one out.
    let frames = up.samples.len().div_ceil(frame) + 1;
    let mut input = vec![0f32; frame];
    let mut output = vec![0f32; frame];
    let mut clean = Vec::with_capacity(frames * frame);
    for f in 0..frames {
        input.fill(0.0);
        let from = (f * frame).min(up.samples.len());
        let to = ((f + 1) * frame).min(up.samples.len());
        // RNNoise expects 16-bit sample values.
        for (i, s) in up.samples[from..to].iter().enumerate() {
            input[i] = s * 32768.0;
        }
        state.process_frame(&mut output, &input);
        clean.extend(output.iter().map(|s| s / 32768.0));
    }
    // The output lags the input by one frame.
    let aligned = clean[frame..frame + up.samples.len()].to_vec();
    let mut down = resample(&AudioBuffer::new(aligned, RATE), ASR_SAMPLE_RATE)?.samples;
    down.resize(samples.len(), 0.0);
    Ok(down)
}

#[cfg(test)]
mod tests {
    use super::denoise;

    fn power(x: &[f32]) -> f32 {
        x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32
    }

    #[test]
    fn steady_noise_is_suppressed_and_the_length_kept() {
        let n = hark_core::audio::white_noise(32_000, 0.05, 0x853c_49e6_748f_ea9b);
        let out = denoise(&n).unwrap();
        assert_eq!(out.len(), n.len());
        // At least 6 dB less noise once RNNoise has settled (about 10 dB measured).
        let (before, after) = (power(&n[8_000..]), power(&out[8_000..]));
        assert!(after * 4.0 < before, "{before} → {after}");
        assert!(denoise(&[]).unwrap().is_empty());
    }
}
