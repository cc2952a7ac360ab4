//! Whisper's log-mel spectrogram, computed as whisper.cpp computes it, for only the frames the
//! encoder will read.
//!
//! whisper.cpp's own computation pads every input with 30 s of silence, allocates and zeroes
//! that much (about 3 MB, fresh pages each time) and starts a thread per call: some 8 ms for a
//! two-second turn, most of it not the arithmetic. Here the buffers are kept between calls and
//! only the frames the encoder's window covers are made: well under a millisecond.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Samples per analysis window (25 ms at 16 kHz) and between windows (10 ms).
const FRAME: usize = 400;
const HOP: usize = 160;
/// Frequency bins of a window's spectrum.
const BINS: usize = FRAME / 2 + 1;

/// The model's mel filter bank, as its ggml file holds it: `n_mel` rows of [`BINS`] weights.
#[derive(Debug, Clone)]
pub struct MelFilters {
    pub n_mel: usize,
    pub weights: Vec<f32>,
}

pub struct LogMel {
    filters: MelFilters,
    hann: [f32; FRAME],
    fft: Arc<dyn RealToComplex<f32>>,
    frame: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
    power: [f32; BINS],
    padded: Vec<f32>,
    /// The last spectrogram made.
    mel: Vec<f32>,
}

impl LogMel {
    /// `None` when the filter bank is not one for 400-sample windows.
    pub fn new(filters: MelFilters) -> Option<Self> {
        if filters.n_mel == 0 || filters.weights.len() != filters.n_mel * BINS {
            return None;
        }
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FRAME);
        // Periodic Hann window, rounded as whisper.cpp rounds it.
        let mut hann = [0f32; FRAME];
        for (i, w) in hann.iter_mut().enumerate() {
            let angle = (2.0 * std::f64::consts::PI * i as f64 / FRAME as f64) as f32;
            *w = (0.5 * (1.0 - f64::from(angle.cos()))) as f32;
        }
        Some(LogMel {
            frame: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            filters,
            hann,
            power: [0.0; BINS],
            padded: Vec::new(),
            mel: Vec::new(),
        })
    }

    pub fn n_mel(&self) -> usize {
        self.filters.n_mel
    }

    /// The spectrogram of 16 kHz `samples` (at least 201 of them), `frames` frames long, band by
    /// band (`n_mel` rows of `frames` values), normalised as whisper.cpp does. Frames past the
    /// audio are those of silence, as whisper.cpp's padding makes them.
    pub fn compute(&mut self, samples: &[f32], frames: usize) -> &[f32] {
        let half = FRAME / 2;
        // whisper.cpp: the audio after a reflection of its first 200 samples (not counting the
        // first), then silence.
        let n = samples.len();
        self.padded.clear();
        self.padded.extend(
            (1..=half)
                .rev()
                .map(|i| samples.get(i).copied().unwrap_or(0.0)),
        );
        self.padded.extend_from_slice(samples);
        let audio_end = n + half;
        let spoken = (audio_end / HOP + 1).min(frames);
        self.padded
            .resize((spoken * HOP + FRAME).max(audio_end), 0.0);

        let n_mel = self.filters.n_mel;
        let mel = &mut self.mel;
        mel.clear();
        mel.resize(n_mel * frames, -10.0); // log10(1e-10): a silent frame
        for i in 0..spoken {
            let offset = i * HOP;
            for (j, x) in self.frame.iter_mut().enumerate() {
                *x = if offset + j < audio_end {
                    self.hann[j] * self.padded[offset + j]
                } else {
                    0.0
                };
            }
            // Only fails on buffers of the wrong length, which `new` made right.
            let _ = self.fft.process_with_scratch(
                &mut self.frame,
                &mut self.spectrum,
                &mut self.scratch,
            );
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (band, weights) in self.filters.weights.chunks_exact(BINS).enumerate() {
                // Summed as whisper.cpp sums: four products in f32, their sums in f64.
                let (power, weights) = (&self.power[..], &weights[..BINS]);
                let quads = power.chunks_exact(4).zip(weights.chunks_exact(4));
                let mut sum: f64 = quads
                    .map(|(p, w)| f64::from(p[0] * w[0] + p[1] * w[1] + p[2] * w[2] + p[3] * w[3]))
                    .sum();
                let rest = BINS / 4 * 4;
                for (p, w) in power[rest..].iter().zip(&weights[rest..]) {
                    sum += f64::from(p * w);
                }
                mel[band * frames + i] = sum.max(1e-10).log10() as f32;
            }
        }
        // At most 8 (80 dB) below the loudest, then scaled to about -1..1.
        let floor = mel.iter().fold(-1e20f64, |m, &v| m.max(f64::from(v))) - 8.0;
        for v in mel.iter_mut() {
            let clamped = if f64::from(*v) < floor {
                floor as f32
            } else {
                *v
            };
            *v = ((f64::from(clamped) + 4.0) / 4.0) as f32;
        }
        mel
    }
}

/// The length whisper.cpp gives `samples` of 16 kHz audio, ms: its spectrogram's frames over
/// the audio (10 ms each), counted as it counts them.
pub fn audio_duration_ms(samples: usize) -> i32 {
    (1 + (samples + FRAME / 2).saturating_sub(FRAME) / HOP) as i32 * 10
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter bank of triangles over the bins, like Whisper's in shape.
    fn filters(n_mel: usize) -> MelFilters {
        let mut weights = vec![0f32; n_mel * BINS];
        for band in 0..n_mel {
            let centre = (band + 1) as f32 * BINS as f32 / (n_mel + 1) as f32;
            let width = BINS as f32 / (n_mel + 1) as f32;
            for bin in 0..BINS {
                weights[band * BINS + bin] = (1.0 - (bin as f32 - centre).abs() / width).max(0.0);
            }
        }
        MelFilters { n_mel, weights }
    }

    /// The same spectrogram the slow way: a direct DFT of each padded, windowed frame.
    fn reference(samples: &[f32], frames: usize, f: &MelFilters) -> Vec<f32> {
        let mut padded: Vec<f64> = (1..=200).rev().map(|i| f64::from(samples[i])).collect();
        padded.extend(samples.iter().map(|&s| f64::from(s)));
        padded.resize(frames * HOP + FRAME, 0.0);
        let mut mel = vec![0f64; f.n_mel * frames];
        for i in 0..frames {
            let power: Vec<f64> = (0..BINS)
                .map(|k| {
                    let (mut re, mut im) = (0f64, 0f64);
                    for (j, x) in padded[i * HOP..i * HOP + FRAME].iter().enumerate() {
                        let w = 0.5
                            * (1.0 - (2.0 * std::f64::consts::PI * j as f64 / FRAME as f64).cos());
                        let a = -2.0 * std::f64::consts::PI * (k * j) as f64 / FRAME as f64;
                        re += w * x * a.cos();
                        im += w * x * a.sin();
                    }
                    re * re + im * im
                })
                .collect();
            for band in 0..f.n_mel {
                let sum: f64 = (0..BINS)
                    .map(|k| power[k] * f64::from(f.weights[band * BINS + k]))
                    .sum();
                mel[band * frames + i] = sum.max(1e-10).log10();
            }
        }
        let floor = mel.iter().cloned().fold(f64::MIN, f64::max) - 8.0;
        mel.iter()
            .map(|v| ((v.max(floor) + 4.0) / 4.0) as f32)
            .collect()
    }

    #[test]
    fn the_spectrogram_is_the_direct_dft_s_and_silence_after_the_audio() {
        let f = filters(20);
        let mut mel = LogMel::new(f.clone()).unwrap();
        // A rising tone over noise-like wiggles, 0.3 s.
        let samples: Vec<f32> = (0..4_800)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                0.3 * (2.0 * std::f32::consts::PI * (300.0 + 2_000.0 * t) * t).sin()
                    + 0.01 * ((i * 7919 % 101) as f32 / 50.0 - 1.0)
            })
            .collect();
        let frames = 60; // past the audio's 32 frames: the rest is silence
        let ours = mel.compute(&samples, frames).to_vec();
        let want = reference(&samples, frames, &f);
        let worst = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "differs from the direct DFT by {worst}");
        // The frames after the audio are the floor, 2 (80 dB) under the loudest value.
        let loudest = ours.iter().cloned().fold(f32::MIN, f32::max);
        assert!((ours[frames - 1] - (loudest - 2.0)).abs() < 1e-5);
        // The same buffers serve again.
        assert_eq!(mel.compute(&samples, frames), ours);
    }

    #[test]
    fn a_bank_for_other_windows_is_refused() {
        let mut f = filters(4);
        f.weights.pop();
        assert!(LogMel::new(f).is_none());
    }
}
