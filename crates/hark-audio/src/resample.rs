//! Sample-rate conversion (rubato's windowed-sinc resampler), delay-compensated so that sample
//! times survive: output sample `j` sits at the same instant as input sample `j * from / to`.

use hark_core::AudioBuffer;
use rubato::{
    Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
};

use crate::AudioError;

const CHUNK: usize = 1024;

/// The windowed-sinc filter every resampler here uses.
pub(crate) fn sinc_params() -> SincInterpolationParameters {
    SincInterpolationParameters {
        sinc_len: 128,
        f_cutoff: 0.95,
        oversampling_factor: 128,
        interpolation: SincInterpolationType::Linear,
        window: WindowFunction::BlackmanHarris2,
    }
}

/// Resamples mono audio to `rate` (a copy when it already is at that rate).
pub fn resample(audio: &AudioBuffer, rate: u32) -> Result<AudioBuffer, AudioError> {
    if audio.sample_rate == rate || audio.samples.is_empty() {
        return Ok(AudioBuffer::new(audio.samples.clone(), rate));
    }
    let err = |detail: String| AudioError::Resample {
        from: audio.sample_rate,
        to: rate,
        detail,
    };
    let ratio = rate as f64 / audio.sample_rate as f64;
    let mut r = SincFixedIn::<f32>::new(ratio, 1.0, sinc_params(), CHUNK, 1)
        .map_err(|e| err(e.to_string()))?;
    let expected = (audio.samples.len() as f64 * ratio).round() as usize;
    // rubato 0.16's SincFixedIn already returns output aligned with its input (checked by
    // the click test below), so nothing is trimmed from the front.
    let delay = 0;
    let mut out: Vec<f32> = Vec::with_capacity(expected + delay + CHUNK);
    let mut chunks = audio.samples.chunks(CHUNK).peekable();
    while let Some(chunk) = chunks.next() {
        let produced = if chunk.len() == CHUNK && chunks.peek().is_some() {
            r.process(&[chunk], None)
        } else {
            r.process_partial(Some(&[chunk]), None)
        }
        .map_err(|e| err(e.to_string()))?;
        out.extend_from_slice(&produced[0]);
    }
    // Flush the filter's tail until the delayed output covers the whole input.
    while out.len() < expected + delay {
        let produced = r
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| err(e.to_string()))?;
        if produced[0].is_empty() {
            break;
        }
        out.extend_from_slice(&produced[0]);
    }
    let mut samples: Vec<f32> = out.into_iter().skip(delay).take(expected).collect();
    samples.resize(expected, 0.0);
    Ok(AudioBuffer::new(samples, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, secs: f32) -> AudioBuffer {
        let n = (rate as f32 * secs) as usize;
        AudioBuffer::new(
            (0..n)
                .map(|i| (i as f32 * freq * std::f32::consts::TAU / rate as f32).sin() * 0.5)
                .collect(),
            rate,
        )
    }

    #[test]
    fn keeps_length_level_and_timing() {
        let src = tone(440.0, 44_100, 1.0);
        let out = resample(&src, 16_000).unwrap();
        assert_eq!(out.samples.len(), 16_000);
        assert!(
            (out.rms() - src.rms()).abs() < 0.02,
            "{} vs {}",
            out.rms(),
            src.rms()
        );
        // A click at 0.5 s stays at 0.5 s (no filter delay left in).
        for (from, to) in [
            (48_000, 16_000),
            (44_100, 16_000),
            (8_000, 16_000),
            (16_000, 22_050),
        ] {
            let mut click = vec![0.0; from as usize];
            click[from as usize / 2] = 1.0;
            let out = resample(&AudioBuffer::new(click, from), to).unwrap();
            let peak = out
                .samples
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap()
                .0;
            assert!(
                (peak as i64 - to as i64 / 2).abs() <= 2,
                "{from}→{to}: peak at {peak}"
            );
        }
    }

    #[test]
    fn odd_rates_and_tiny_inputs_work() {
        let out = resample(&tone(300.0, 44_101, 0.3), 16_000).unwrap();
        assert_eq!(
            out.samples.len(),
            (44_101.0f64 * 0.3)
                .floor()
                .mul_add(16_000.0 / 44_101.0, 0.0)
                .round() as usize
        );
        let out = resample(&AudioBuffer::new(vec![0.1; 3], 8_000), 16_000).unwrap();
        assert_eq!(out.samples.len(), 6);
    }
}
