//! Turn detection: where each spoken turn starts, where its speech really ends, and when a
//! listener would decide that the turn is over.

use hark_core::audio::{ms_to_samples, samples_to_ms};
use hark_core::ASR_SAMPLE_RATE;

use crate::vad::{SileroVad, WebRtcGate, WINDOW};
use crate::AudioError;

/// Thresholds of the turn detector.
#[derive(Debug, Clone, Copy)]
pub struct TurnConfig {
    /// Speech probability above which a window counts as speech.
    pub threshold: f32,
    /// Below this (after speech started) a window counts as silence; the gap avoids flapping.
    pub neg_threshold: f32,
    /// Silence that ends a turn, ms.
    pub end_silence_ms: f64,
    /// Shorter bursts are not turns (coughs, clicks), ms.
    pub min_speech_ms: f64,
    /// Audio kept before the detected start so the first syllable is never cut, ms.
    pub pre_roll_ms: f64,
    /// webrtc-vad as a first gate in front of Silero: its aggressiveness (0-3; 0 hears voice in
    /// the most audio), or `None` to run Silero on every window.
    pub gate_mode: Option<u8>,
    /// How long the gate must hear no voice before Silero stops running, ms.
    pub gate_hangover_ms: f64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            threshold: 0.5,
            neg_threshold: 0.35,
            end_silence_ms: 500.0,
            min_speech_ms: 250.0,
            pre_roll_ms: 200.0,
            gate_mode: Some(0),
            gate_hangover_ms: 320.0,
        }
    }
}

/// Below this RMS (-90 dBFS, one step of 16-bit audio) a window is digital silence.
pub const DIGITAL_SILENCE_RMS: f32 = 3.16e-5;

/// How much digital silence at the end of a window says that what was heard in it stopped
/// there: 8 ms ([`ends_in_digital_silence`]).
pub const SILENT_TAIL: usize = WINDOW / 4;

/// Whether `window` holds a signal that stops in it: its last [`SILENT_TAIL`] samples are
/// digital silence and the window as a whole is not. No microphone is that quiet; a file or a
/// muted input is, and the speech in it has ended there, whatever the voice activity detector
/// still hears (Silero's probability stays high for a window or more after a voice).
pub fn ends_in_digital_silence(window: &[f32]) -> bool {
    use hark_core::audio::rms;
    window.len() > SILENT_TAIL
        && rms(&window[window.len() - SILENT_TAIL..]) < DIGITAL_SILENCE_RMS
        && rms(window) >= DIGITAL_SILENCE_RMS
}

/// One spoken turn, in samples at 16 kHz from the start of the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Turn {
    /// First sample handed to recognition (includes the pre-roll).
    pub audio_start: usize,
    /// Where the VAD heard speech begin.
    pub speech_start: usize,
    /// The last sample of speech, found in the signal itself (not the VAD's decision).
    pub speech_end: usize,
    /// The sample at which the detector decided the turn was over.
    pub decided_at: usize,
}

impl Turn {
    pub fn speech_start_ms(&self) -> f64 {
        samples_to_ms(self.speech_start, ASR_SAMPLE_RATE)
    }
    pub fn speech_end_ms(&self) -> f64 {
        samples_to_ms(self.speech_end, ASR_SAMPLE_RATE)
    }
    pub fn decided_ms(&self) -> f64 {
        samples_to_ms(self.decided_at, ASR_SAMPLE_RATE)
    }
}

/// Finds turns in 16 kHz audio, window by window, as a live listener would.
pub struct TurnDetector {
    vad: SileroVad,
    gate: Option<WebRtcGate>,
    config: TurnConfig,
    /// Windows Silero ran on, of all windows, since the input began.
    silero_windows: (usize, usize),
    /// The last few windows of the input, to warm Silero up when the gate opens again.
    recent: Vec<f32>,
    /// Windows since the gate last heard voice.
    quiet: usize,
}

impl TurnDetector {
    pub fn new(vad: SileroVad, config: TurnConfig) -> Self {
        TurnDetector {
            vad,
            gate: config.gate_mode.map(WebRtcGate::new),
            config,
            silero_windows: (0, 0),
            recent: Vec::new(),
            quiet: usize::MAX,
        }
    }

    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    /// Speech probability of each 32 ms window of `samples`: Silero's, or 0 where the webrtc
    /// gate has heard no voice for longer than its hangover (Silero then starts afresh when
    /// voice comes back).
    pub fn probabilities(&mut self, samples: &[f32]) -> Result<Vec<f32>, AudioError> {
        self.start_stream();
        samples
            .chunks(WINDOW)
            .map(|w| self.next_probability(w))
            .collect()
    }

    /// Starts a live input: the state of [`Self::next_probability`] is reset.
    pub fn start_stream(&mut self) {
        self.vad.reset();
        if let Some(gate) = self.gate.as_mut() {
            gate.reset();
        }
        self.silero_windows = (0, 0);
        self.recent.clear();
        self.quiet = usize::MAX;
    }

    /// The speech probability of the next [`WINDOW`] samples of a live input (as
    /// [`Self::probabilities`] gives it for the whole input).
    pub fn next_probability(&mut self, window: &[f32]) -> Result<f32, AudioError> {
        // Windows Silero hears before the first one the gate lets through again, so its state
        // is what it would have been had it run all along (near enough: its memory is short).
        const WARM_UP: usize = 4;
        let hangover =
            ms_to_samples(self.config.gate_hangover_ms, ASR_SAMPLE_RATE).div_ceil(WINDOW);
        self.silero_windows.1 += 1;
        let p = 'p: {
            if let Some(gate) = self.gate.as_mut() {
                let was_closed = self.quiet > hangover;
                self.quiet = if gate.hears_voice(window) {
                    0
                } else {
                    self.quiet.saturating_add(1)
                };
                if self.quiet > hangover {
                    break 'p 0.0;
                }
                if was_closed {
                    self.vad.reset();
                    for back in self.recent.chunks(WINDOW) {
                        self.vad.process(back)?;
                        self.silero_windows.0 += 1;
                    }
                }
            }
            self.silero_windows.0 += 1;
            self.vad.process(window)?
        };
        self.recent.extend_from_slice(window);
        let excess = self.recent.len().saturating_sub(WARM_UP * WINDOW);
        self.recent.drain(..excess);
        // Silero's probability stays high for up to three windows of digital silence after a
        // voice (measured on the bundled espeak-ng questions): a window with no signal at all
        // holds no voice, whatever it says. No microphone is that quiet, only a file or a
        // muted input.
        if hark_core::audio::rms(window) < DIGITAL_SILENCE_RMS {
            return Ok(0.0);
        }
        Ok(p)
    }

    /// Windows Silero ran on and all windows, in the last [`Self::probabilities`] (the webrtc
    /// gate's saving).
    pub fn silero_windows(&self) -> (usize, usize) {
        self.silero_windows
    }

    /// Every turn in `samples` (16 kHz mono). A turn still open at the end of the input ends
    /// there: the input's end is the decision.
    pub fn detect(&mut self, samples: &[f32]) -> Result<Vec<Turn>, AudioError> {
        let probs = self.probabilities(samples)?;
        Ok(segment(&probs, samples, &self.config))
    }
}

/// Turns from per-window probabilities (pure logic, so it is testable without the model).
pub fn segment(probs: &[f32], samples: &[f32], c: &TurnConfig) -> Vec<Turn> {
    let end_windows = ms_to_samples(c.end_silence_ms, ASR_SAMPLE_RATE)
        .div_ceil(WINDOW)
        .max(1);
    let min_speech = ms_to_samples(c.min_speech_ms, ASR_SAMPLE_RATE);
    let pre_roll = ms_to_samples(c.pre_roll_ms, ASR_SAMPLE_RATE);
    let floor_db = noise_floor_db(samples);
    let mut turns = Vec::new();
    let mut start: Option<usize> = None;
    let mut last_speech = 0usize;
    let mut silent = 0usize;
    let close =
        |start: usize, last_speech_window: usize, decided_at: usize, turns: &mut Vec<Turn>| {
            let vad_end = ((last_speech_window + 1) * WINDOW).min(samples.len());
            if vad_end.saturating_sub(start) < min_speech {
                return;
            }
            let floor_db = end_floor_db(floor_db, &samples[vad_end..decided_at.max(vad_end)]);
            let speech_end = precise_speech_end(samples, start, vad_end, floor_db);
            turns.push(Turn {
                audio_start: start.saturating_sub(pre_roll),
                speech_start: start,
                speech_end,
                decided_at,
            });
        };
    for (i, &p) in probs.iter().enumerate() {
        match start {
            None if p >= c.threshold => {
                start = Some(i * WINDOW);
                last_speech = i;
                silent = 0;
            }
            None => {}
            Some(s) => {
                if p >= c.neg_threshold {
                    last_speech = i;
                    silent = 0;
                } else {
                    silent += 1;
                    if silent >= end_windows {
                        close(
                            s,
                            last_speech,
                            ((i + 1) * WINDOW).min(samples.len()),
                            &mut turns,
                        );
                        start = None;
                    }
                }
            }
        }
    }
    if let Some(s) = start {
        close(s, last_speech, samples.len(), &mut turns);
    }
    turns
}

const FRAME: usize = 160; // 10 ms at 16 kHz

fn frame_db(frame: &[f32]) -> f32 {
    20.0 * hark_core::audio::rms(frame).max(1e-6).log10()
}

/// The level of the quiet parts of the input: the 10th percentile of 10 ms frame levels.
pub fn noise_floor_db(samples: &[f32]) -> f32 {
    let mut levels: Vec<f32> = samples.chunks(FRAME).map(frame_db).collect();
    if levels.is_empty() {
        return -120.0;
    }
    levels.sort_by(f32::total_cmp);
    levels[levels.len() / 10]
}

/// The level of the loudest 10 ms frame of `samples`.
pub fn peak_db(samples: &[f32]) -> f32 {
    samples.chunks(FRAME).map(frame_db).fold(f32::MIN, f32::max)
}

/// The noise floor a turn's speech end is found against: the input's (`floor_db`), unless that
/// is digital silence. That says the input was padded with zeros (a file; no microphone is that
/// quiet), not that its speech was recorded in silence: the speech's background is then what
/// follows it, heard as silence (`after`), at its quietest 10 ms frame that is not padding.
/// Against a floor of zeros, every frame of a padded recording's room noise read as speech, and
/// its end fell where the detector's hangover ended instead (160 ms after the last word, on a
/// LibriVox sentence).
pub fn end_floor_db(floor_db: f32, after: &[f32]) -> f32 {
    let digital_silence_db = 20.0 * DIGITAL_SILENCE_RMS.log10();
    if floor_db >= digital_silence_db {
        return floor_db;
    }
    after
        .chunks(FRAME)
        .map(frame_db)
        .filter(|&db| db >= digital_silence_db)
        .reduce(f32::min)
        .unwrap_or(floor_db)
}

/// The level above which a 10 ms frame of `speech` counts as part of it: a quarter of the way
/// from the noise floor (`floor_db`) to the speech's loudest frame, and at least 6 dB above the
/// floor.
pub fn speech_level_db(speech: &[f32], floor_db: f32) -> f32 {
    floor_db + ((peak_db(speech) - floor_db) * 0.25).max(6.0)
}

/// Whether every 10 ms frame of `samples` is at or below `level_db`.
pub fn is_quiet(samples: &[f32], level_db: f32) -> bool {
    samples.chunks(FRAME).all(|f| frame_db(f) <= level_db)
}

/// The end of the last 10 ms frame in `[start, vad_end)` clearly above the noise floor (above
/// [`speech_level_db`]): the speech's real end, independent of the detector's hangover.
pub fn precise_speech_end(samples: &[f32], start: usize, vad_end: usize, floor_db: f32) -> usize {
    let level_db = speech_level_db(&samples[start..vad_end], floor_db);
    speech_end_above(samples, start, vad_end, level_db)
}

/// The end of the last 10 ms frame in `[start, vad_end)` above `level_db` (`vad_end` if none
/// is): [`precise_speech_end`] for a speech level already known.
pub fn speech_end_above(samples: &[f32], start: usize, vad_end: usize, level_db: f32) -> usize {
    samples[start..vad_end]
        .chunks(FRAME)
        .enumerate()
        .rfind(|(_, f)| frame_db(f) > level_db)
        .map(|(i, f)| start + i * FRAME + f.len())
        .unwrap_or(vad_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probabilities and matching samples: speech (a tone) where `pattern` is true.
    fn fixture(pattern: &[(bool, usize)]) -> (Vec<f32>, Vec<f32>) {
        let (mut probs, mut samples) = (Vec::new(), Vec::new());
        for &(speech, windows) in pattern {
            for _ in 0..windows {
                probs.push(if speech { 0.9 } else { 0.05 });
                for j in 0..WINDOW {
                    samples.push(if speech {
                        (j as f32 * 0.3).sin() * 0.3
                    } else {
                        0.0005 * ((j * 7919) % 13) as f32 / 13.0
                    });
                }
            }
        }
        (probs, samples)
    }

    #[test]
    fn finds_turns_and_real_speech_ends() {
        // 0.5 s silence, 1 s speech, 1 s silence, 0.6 s speech, 1 s silence (31.25 windows/s).
        let (probs, samples) = fixture(&[
            (false, 16),
            (true, 31),
            (false, 31),
            (true, 19),
            (false, 31),
        ]);
        let turns = segment(&probs, &samples, &TurnConfig::default());
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0].speech_start, 16 * WINDOW);
        assert_eq!(turns[0].speech_end, 47 * WINDOW);
        assert!(turns[0].audio_start < turns[0].speech_start);
        // Decided after 500 ms of silence (15 windows of 32 ms → 16 with rounding up).
        let waited = turns[0].decided_ms() - turns[0].speech_end_ms();
        assert!((480.0..=560.0).contains(&waited), "{waited}");
        assert_eq!(turns[1].speech_end, (47 + 31 + 19) * WINDOW);
    }

    #[test]
    fn short_bursts_and_silence_are_not_turns() {
        let (probs, samples) = fixture(&[(false, 20), (true, 3), (false, 40)]);
        assert!(segment(&probs, &samples, &TurnConfig::default()).is_empty());
        let (probs, samples) = fixture(&[(false, 100)]);
        assert!(segment(&probs, &samples, &TurnConfig::default()).is_empty());
    }

    #[test]
    fn a_padded_recording_ends_at_its_last_loud_frame_not_the_detectors_hangover() {
        // Zeros, then a recording: room noise, 1 s of speech, 0.5 s of room noise, of which the
        // detector hears the first 5 windows as voice still; then zeros again.
        let noise = |j: usize| 0.003 * (((j * 7919) % 13) as f32 / 13.0 - 0.5);
        let (mut probs, mut samples) = (Vec::new(), Vec::new());
        for (speech, voiced, windows) in [
            (None, false, 16),
            (Some(false), false, 8),
            (Some(true), true, 31),
            (Some(false), true, 5),
            (Some(false), false, 11),
            (None, false, 31),
        ] {
            for _ in 0..windows {
                probs.push(if voiced { 0.9 } else { 0.05 });
                for j in 0..WINDOW {
                    samples.push(match speech {
                        None => 0.0,
                        Some(false) => noise(j),
                        Some(true) => (j as f32 * 0.3).sin() * 0.3 + noise(j),
                    });
                }
            }
        }
        let turns = segment(&probs, &samples, &TurnConfig::default());
        assert_eq!(turns.len(), 1, "{turns:?}");
        // To the 10 ms frame (counted from the speech's start) that holds its last sample.
        let spoken_end = (16 + 8 + 31) * WINDOW;
        assert!(
            (spoken_end..spoken_end + FRAME).contains(&turns[0].speech_end),
            "ends at {spoken_end}: {turns:?}"
        );
    }

    #[test]
    fn a_window_ends_in_digital_silence_only_after_a_signal() {
        let tone = |n: usize| (0..n).map(|j| (j as f32 * 0.3).sin() * 0.3);
        let stops: Vec<f32> = tone(WINDOW - SILENT_TAIL)
            .chain(std::iter::repeat_n(0.0, SILENT_TAIL))
            .collect();
        assert!(ends_in_digital_silence(&stops));
        // Too short a silent tail, no signal at all, or a signal to the end: no.
        let short: Vec<f32> = tone(WINDOW - SILENT_TAIL + 1)
            .chain(std::iter::repeat_n(0.0, SILENT_TAIL - 1))
            .collect();
        assert!(!ends_in_digital_silence(&short));
        assert!(!ends_in_digital_silence(&[0.0; WINDOW]));
        assert!(!ends_in_digital_silence(&tone(WINDOW).collect::<Vec<_>>()));
    }

    #[test]
    fn speech_running_to_the_end_closes_there() {
        let (probs, samples) = fixture(&[(false, 10), (true, 20)]);
        let turns = segment(&probs, &samples, &TurnConfig::default());
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].decided_at, samples.len());
    }
}
