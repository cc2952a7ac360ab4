//! Speech synthesis with Piper voices: espeak-ng phonemes, then the voice's VITS model on ONNX
//! Runtime. Synthesis goes sentence by sentence, as Piper does.

pub mod cache;
mod espeak;
pub mod normalize;
pub mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hark_core::AudioBuffer;
use ort::session::{RunOptions, Session};
use ort::value::Tensor;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("voice file not found at {0}; run `hark models fetch`")]
    Missing(String),
    #[error("voice configuration {path}: {detail}")]
    Config { path: String, detail: String },
    #[error("voice model {path} could not be loaded ({detail}); it may be damaged: run `hark models verify`")]
    Load { path: String, detail: String },
    #[error("phonemes: {0}")]
    Phonemes(String),
    #[error("synthesis failed: {0}")]
    Synthesis(String),
    #[error("synthesis cancelled")]
    Cancelled,
    #[error(transparent)]
    Onnx(#[from] hark_core::onnx::OnnxError),
}

/// The parts of a Piper voice's `.onnx.json` that synthesis needs.
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    pub audio: AudioConfig,
    pub espeak: EspeakConfig,
    pub inference: InferenceConfig,
    #[serde(default)]
    pub num_speakers: u32,
    pub phoneme_id_map: HashMap<char, Vec<i64>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AudioConfig {
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EspeakConfig {
    pub voice: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InferenceConfig {
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
}

const PAD: char = '_';
const BOS: char = '^';
const EOS: char = '$';

/// Level under which the start and end of a sentence count as silence (about -46 dBFS).
const SILENCE_LEVEL: f32 = 0.005;

/// Cuts the silence VITS puts before and after speech, so a reply starts on its first phoneme.
/// A 2 ms fade at each cut avoids clicks.
pub fn trim_silence(audio: &[f32], sample_rate: u32) -> Vec<f32> {
    let (Some(first), Some(last)) = (
        audio.iter().position(|s| s.abs() > SILENCE_LEVEL),
        audio.iter().rposition(|s| s.abs() > SILENCE_LEVEL),
    ) else {
        return Vec::new();
    };
    let fade = (sample_rate as usize / 500).max(1);
    let start = first.saturating_sub(fade);
    let end = (last + fade).min(audio.len() - 1);
    let mut out = audio[start..=end].to_vec();
    let n = out.len();
    for i in 0..fade.min(n) {
        let g = i as f32 / fade as f32;
        out[i] *= g;
        out[n - 1 - i] *= g;
    }
    out
}

/// Stops a reply's synthesis from another thread (a barge-in): the model run in progress is
/// terminated (ONNX Runtime checks between operators, so within milliseconds) and no further
/// chunk starts.
#[derive(Clone)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    run: Arc<RunOptions>,
}

impl Cancel {
    pub fn new() -> Result<Self, TtsError> {
        Ok(Cancel {
            flag: Arc::new(AtomicBool::new(false)),
            run: Arc::new(RunOptions::new().map_err(|e| TtsError::Synthesis(e.to_string()))?),
        })
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.run.terminate();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// A loaded Piper voice.
pub struct Voice {
    session: Session,
    config: VoiceConfig,
    espeak_data: PathBuf,
    /// Silence between sentences, seconds (Piper's default is 0.2).
    pub sentence_silence: f32,
    cache: cache::PhraseCache,
}

/// Acknowledgements synthesised at start-up ([`Voice::warm_phrases`]).
pub const ACKNOWLEDGEMENTS: [&str; 6] = [
    "Sure.",
    "Okay.",
    "Yes.",
    "No.",
    "Let me think.",
    "Sorry, I didn't catch that.",
];

/// Default bound of the phrase cache: about a minute of 22 kHz audio.
pub const DEFAULT_CACHE_BYTES: usize = 6 << 20;

impl Voice {
    /// Loads `model` (`.onnx`) with its `config` (`.onnx.json`); `espeak_data` is the
    /// `espeak-ng-data` directory.
    pub fn load(
        model: &Path,
        config: &Path,
        espeak_data: &Path,
        threads: usize,
    ) -> Result<Self, TtsError> {
        hark_core::onnx::ensure_ready()?;
        for p in [model, config] {
            if !p.is_file() {
                return Err(TtsError::Missing(p.display().to_string()));
            }
        }
        let cfg_err = |detail: String| TtsError::Config {
            path: config.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(config).map_err(|e| cfg_err(e.to_string()))?;
        let config: VoiceConfig =
            serde_json::from_str(&text).map_err(|e| cfg_err(e.to_string()))?;
        for c in [PAD, BOS, EOS] {
            if !config.phoneme_id_map.contains_key(&c) {
                return Err(cfg_err(format!("phoneme_id_map lacks `{c}`")));
            }
        }
        let load_err = |e: ort::Error| TtsError::Load {
            path: model.display().to_string(),
            detail: e.to_string(),
        };
        let session = Session::builder()
            .map_err(load_err)?
            .with_intra_threads(threads.max(1))
            .map_err(|e| load_err(e.into()))?
            .commit_from_file(model)
            .map_err(load_err)?;
        let espeak_parent = espeak_data.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Voice {
            session,
            config,
            espeak_data: espeak_parent,
            sentence_silence: 0.2,
            cache: cache::PhraseCache::new(DEFAULT_CACHE_BYTES),
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.audio.sample_rate
    }

    /// IPA phonemes of `text`, with clause punctuation kept as Piper's phonemizer does.
    pub fn phonemes(&self, text: &str) -> Result<String, TtsError> {
        let mut out = String::new();
        for (clause, punct) in text::clauses(text) {
            let ph =
                espeak::phonemize_clause(&clause, &self.config.espeak.voice, &self.espeak_data)?;
            if ph.trim().is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(ph.trim());
            if let Some(p) = punct {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Phoneme ids as the voice expects: BOS, each phoneme followed by PAD, EOS.
    fn ids(&self, phonemes: &str) -> Vec<i64> {
        let map = &self.config.phoneme_id_map;
        let first = |c: char| map.get(&c).and_then(|v| v.first()).copied().unwrap_or(0);
        let pad = first(PAD);
        let mut ids = Vec::with_capacity(phonemes.len() * 2 + 2);
        ids.push(first(BOS));
        ids.push(pad);
        for c in phonemes.chars() {
            if let Some(v) = map.get(&c) {
                ids.extend_from_slice(v);
                ids.push(pad);
            }
        }
        ids.push(first(EOS));
        ids
    }

    /// Audio of one sentence (no silence added).
    pub fn synthesize_sentence(&mut self, sentence: &str) -> Result<Vec<f32>, TtsError> {
        self.run(sentence, &Cancel::new()?)
    }

    /// One sentence through the model, stoppable by `cancel`.
    fn run(&mut self, sentence: &str, cancel: &Cancel) -> Result<Vec<f32>, TtsError> {
        let phonemes = self.phonemes(sentence)?;
        if phonemes.trim().is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.ids(&phonemes);
        let inf = self.config.inference;
        let rate = self.sample_rate();
        let err = |e: ort::Error| TtsError::Synthesis(e.to_string());
        let n = ids.len();
        let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
        let scales = Tensor::from_array((
            [3usize],
            vec![inf.noise_scale, inf.length_scale, inf.noise_w],
        ))
        .map_err(err)?;
        let outputs = if self.config.num_speakers > 1 {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(err)?;
            self.session.run_with_options(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid], &*cancel.run)
        } else {
            self.session.run_with_options(
                ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales],
                &*cancel.run,
            )
        };
        if cancel.is_cancelled() {
            return Err(TtsError::Cancelled);
        }
        let outputs = outputs.map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        let audio: Vec<f32> = audio
            .iter()
            .map(|s| {
                if s.is_finite() {
                    s.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect();
        Ok(trim_silence(&audio, rate))
    }

    /// Audio of one chunk of a streamed reply (a clause or a few sentences, as
    /// [`text::Chunker`] cuts them): markdown dropped, numbers and symbols in words, Piper's pause
    /// between its sentences, silence trimmed at both ends so chunks join without gaps or clicks.
    /// From the phrase cache when the chunk was spoken before. `Err(Cancelled)` once `cancel`
    /// is set, within one model operator.
    pub fn speak_chunk(&mut self, chunk: &str, cancel: &Cancel) -> Result<Arc<Vec<f32>>, TtsError> {
        if cancel.is_cancelled() {
            return Err(TtsError::Cancelled);
        }
        if let Some(audio) = self.cache.get(chunk) {
            return Ok(audio);
        }
        let audio = Arc::new(self.speak_text(chunk, cancel)?);
        self.cache.insert(chunk, Arc::clone(&audio));
        Ok(audio)
    }

    /// `text` made speakable (markdown dropped, numbers and symbols in words), then sentence by
    /// sentence with Piper's pause between sentences.
    fn speak_text(&mut self, text: &str, cancel: &Cancel) -> Result<Vec<f32>, TtsError> {
        let spoken = normalize::normalize(&text::speakable(text));
        let gap = (self.sentence_silence * self.sample_rate() as f32) as usize;
        let mut samples = Vec::new();
        for sentence in text::sentences(&spoken) {
            let audio = self.run(&sentence, cancel)?;
            if audio.is_empty() {
                continue;
            }
            if !samples.is_empty() {
                samples.extend(std::iter::repeat_n(0.0, gap));
            }
            samples.extend(audio);
        }
        Ok(samples)
    }

    /// Synthesises `phrases` into the phrase cache (start-up acknowledgements).
    pub fn warm_phrases(&mut self, phrases: &[&str]) -> Result<(), TtsError> {
        let cancel = Cancel::new()?;
        for p in phrases {
            self.speak_chunk(p, &cancel)?;
        }
        Ok(())
    }

    /// The phrase cache (to size it, or see what it holds).
    pub fn cache(&mut self) -> &mut cache::PhraseCache {
        &mut self.cache
    }

    /// Replaces the phrase cache with an empty one bounded by `max_bytes`.
    pub fn set_cache_bytes(&mut self, max_bytes: usize) {
        self.cache = cache::PhraseCache::new(max_bytes);
    }

    /// Audio of a whole reply, sentence by sentence with Piper's pause between sentences; markdown
    /// dropped and numbers, money, times, units and symbols spoken in words first.
    pub fn synthesize(&mut self, text: &str) -> Result<AudioBuffer, TtsError> {
        let samples = self.speak_text(text, &Cancel::new()?)?;
        Ok(AudioBuffer::new(samples, self.sample_rate()))
    }
}

#[cfg(test)]
mod tests {
    use super::trim_silence;

    #[test]
    fn silence_is_trimmed_at_both_ends() {
        let mut audio = vec![0.0; 1000];
        audio.extend(std::iter::repeat_n(0.5, 100));
        audio.extend(vec![0.001; 1000]);
        let out = trim_silence(&audio, 1000);
        assert_eq!(out.len(), 104);
        assert_eq!(out[0], 0.0, "fades in");
        assert!(out[3] > 0.4);
        assert!(trim_silence(&[0.0; 50], 1000).is_empty());
    }
}
