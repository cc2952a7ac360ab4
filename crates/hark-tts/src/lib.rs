//! Speech synthesis with Piper voices: espeak-ng phonemes, then the voice's VITS model on ONNX
//! Runtime. Synthesis goes sentence by sentence, as Piper does; the first sentence of a streamed
//! chunk is decoded in two pieces, a short one first ([`Voice::stream_chunk`]).

pub mod cache;
mod espeak;
pub mod normalize;
pub mod text;
mod vits;

pub use vits::DecoderChoice;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hark_core::AudioBuffer;
use ort::session::{RunOptions, Session};
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
/// A 2 ms fade over the quiet samples at each cut avoids clicks.
pub fn trim_silence(audio: &[f32], sample_rate: u32) -> Vec<f32> {
    let mut out = Vec::new();
    let mut trim = Trim::new(sample_rate);
    trim.push(audio, true, &mut |a| out.extend_from_slice(a));
    out
}

fn is_loud(s: &f32) -> bool {
    s.abs() > SILENCE_LEVEL
}

/// [`trim_silence`] for a sentence that arrives in pieces: nothing is passed on before the
/// first loud sample (less the fade), quiet samples are held back until more speech follows, and
/// the sentence ends a fade after its last loud sample. The output is the same however the
/// sentence is cut.
struct Trim {
    fade: usize,
    started: bool,
    /// Before the start: the quiet samples just before it, kept for the fade-in. After: the
    /// quiet samples since the last loud one.
    held: Vec<f32>,
}

impl Trim {
    fn new(sample_rate: u32) -> Self {
        Trim {
            fade: (sample_rate as usize / 500).max(1),
            started: false,
            held: Vec::new(),
        }
    }

    fn push(&mut self, piece: &[f32], last: bool, out: &mut dyn FnMut(&[f32])) {
        let mut piece = piece;
        if !self.started {
            let Some(first) = piece.iter().position(is_loud) else {
                self.held.extend_from_slice(piece);
                let excess = self.held.len().saturating_sub(self.fade);
                self.held.drain(..excess);
                return;
            };
            self.started = true;
            let mut lead = std::mem::take(&mut self.held);
            lead.extend_from_slice(&piece[..first]);
            let keep = lead.len().saturating_sub(self.fade);
            let lead = &mut lead[keep..];
            let n = lead.len();
            for (i, s) in lead.iter_mut().enumerate() {
                *s *= i as f32 / n as f32;
            }
            out(lead);
            piece = &piece[first..];
        }
        match piece.iter().rposition(is_loud) {
            Some(end) => {
                if !self.held.is_empty() {
                    out(&self.held);
                    self.held.clear();
                }
                out(&piece[..=end]);
                self.held.extend_from_slice(&piece[end + 1..]);
            }
            None => self.held.extend_from_slice(piece),
        }
        if last {
            let n = self.fade.min(self.held.len());
            let tail = &mut self.held[..n];
            for (i, s) in tail.iter_mut().enumerate() {
                *s *= (n - i) as f32 / (n + 1) as f32;
            }
            out(tail);
            self.held.clear();
        }
    }
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
    model: vits::Model,
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
        Self::load_with(
            model,
            config,
            espeak_data,
            threads,
            DecoderChoice::default(),
        )
    }

    /// [`Voice::load`], choosing who runs the decoder.
    pub fn load_with(
        model: &Path,
        config: &Path,
        espeak_data: &Path,
        threads: usize,
        decoder: DecoderChoice,
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
        let bytes = std::fs::read(model).map_err(|e| TtsError::Load {
            path: model.display().to_string(),
            detail: e.to_string(),
        })?;
        let session = |bytes: &[u8]| {
            Session::builder()?
                .with_intra_threads(threads.max(1))
                .map_err(ort::Error::<()>::from)?
                // Three sessions run one after the other, each with its own pool: a pool still
                // spinning after its run would take the cores from the next (2x slower on two
                // cores), and one not spinning within a run wakes its threads per operator.
                .with_config_entry("session.force_spinning_stop", "1")
                .map_err(ort::Error::<()>::from)?
                .commit_from_memory(bytes)
        };
        let model =
            vits::Model::load(&bytes, threads.max(1), decoder, session).map_err(load_err)?;
        let espeak_parent = espeak_data.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Voice {
            model,
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
        let mut audio = Vec::new();
        self.run(sentence, &Cancel::new()?, false, &mut |a| {
            audio.extend_from_slice(a)
        })?;
        Ok(audio)
    }

    /// Whether sentences can be decoded in pieces (the voice's graph was cut into its stages).
    pub fn streams_sentences(&self) -> bool {
        self.model.is_staged()
    }

    /// Whether the voice's decoder (HiFi-GAN) runs on Hark's own kernels rather than ONNX
    /// Runtime (it does where the graph is Piper's generator and the CPU has AVX-512).
    pub fn decodes_with_own_kernels(&self) -> bool {
        self.model.decodes_with_own_kernels()
    }

    /// One sentence through the model, stoppable by `cancel`, its silence trimmed, handed to
    /// `out` as it is decoded (with `first_piece`, a short first piece ahead of the rest).
    fn run(
        &mut self,
        sentence: &str,
        cancel: &Cancel,
        first_piece: bool,
        out: &mut dyn FnMut(&[f32]),
    ) -> Result<(), TtsError> {
        let phonemes = self.phonemes(sentence)?;
        if phonemes.trim().is_empty() {
            return Ok(());
        }
        let inf = self.config.inference;
        let request = vits::Request {
            ids: self.ids(&phonemes),
            scales: [inf.noise_scale, inf.length_scale, inf.noise_w],
            speaker: (self.config.num_speakers > 1).then_some(0),
            run: &cancel.run,
            stop: &cancel.flag,
            first_piece,
        };
        let mut trim = Trim::new(self.sample_rate());
        let mut clean = Vec::new();
        let result = self.model.synthesize(request, &mut |audio, last| {
            clean.clear();
            clean.extend(audio.iter().map(|s| {
                if s.is_finite() {
                    s.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }));
            trim.push(&clean, last, out);
        });
        if cancel.is_cancelled() {
            return Err(TtsError::Cancelled);
        }
        result
    }

    /// Audio of one chunk of a streamed reply (a clause or a few sentences, as
    /// [`text::Chunker`] cuts them): markdown dropped, numbers and symbols in words, Piper's pause
    /// between its sentences, silence trimmed at both ends so chunks join without gaps or clicks.
    /// From the phrase cache when the chunk was spoken before. `Err(Cancelled)` once `cancel`
    /// is set, within one model operator.
    pub fn speak_chunk(&mut self, chunk: &str, cancel: &Cancel) -> Result<Arc<Vec<f32>>, TtsError> {
        self.chunk(chunk, cancel, false, &mut |_| {})
    }

    /// [`Voice::speak_chunk`], handing the audio to `out` as soon as each piece is decoded: the
    /// chunk's first sentence comes in two pieces, the first about 190 ms long, so the first
    /// audio of a reply is ready in the time of the front stage and a short decode. (The cut
    /// costs a few frames of recomputed context, so later chunks, which only need to be ready
    /// before their turn to play, are better spoken with `speak_chunk`.)
    pub fn stream_chunk(
        &mut self,
        chunk: &str,
        cancel: &Cancel,
        out: &mut dyn FnMut(&[f32]),
    ) -> Result<Arc<Vec<f32>>, TtsError> {
        self.chunk(chunk, cancel, true, out)
    }

    fn chunk(
        &mut self,
        chunk: &str,
        cancel: &Cancel,
        first_piece: bool,
        out: &mut dyn FnMut(&[f32]),
    ) -> Result<Arc<Vec<f32>>, TtsError> {
        if cancel.is_cancelled() {
            return Err(TtsError::Cancelled);
        }
        if let Some(audio) = self.cache.get(chunk) {
            out(&audio);
            return Ok(audio);
        }
        let audio = Arc::new(self.speak_text(chunk, cancel, first_piece, out)?);
        self.cache.insert(chunk, Arc::clone(&audio));
        Ok(audio)
    }

    /// `text` made speakable (markdown dropped, numbers and symbols in words), then sentence by
    /// sentence with Piper's pause between sentences, each piece passed to `out` as it is ready.
    fn speak_text(
        &mut self,
        text: &str,
        cancel: &Cancel,
        first_piece: bool,
        out: &mut dyn FnMut(&[f32]),
    ) -> Result<Vec<f32>, TtsError> {
        let spoken = normalize::normalize(&text::speakable(text));
        let gap = vec![0.0; (self.sentence_silence * self.sample_rate() as f32) as usize];
        let mut samples: Vec<f32> = Vec::new();
        for sentence in text::sentences(&spoken) {
            let mut gap_due = !samples.is_empty();
            let split = first_piece && samples.is_empty();
            self.run(&sentence, cancel, split, &mut |audio| {
                if audio.is_empty() {
                    return;
                }
                if gap_due {
                    gap_due = false;
                    samples.extend_from_slice(&gap);
                    out(&gap);
                }
                samples.extend_from_slice(audio);
                out(audio);
            })?;
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
        let samples = self.speak_text(text, &Cancel::new()?, false, &mut |_| {})?;
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
        assert_eq!(out[2], 0.5, "speech itself is untouched");
        assert!(out[103] < 0.001, "fades out");
        assert!(trim_silence(&[0.0; 50], 1000).is_empty());
    }

    #[test]
    fn trimming_in_pieces_equals_trimming_whole() {
        let mut audio = vec![0.001; 300];
        audio.extend((0..700).map(|i| (i as f32 * 0.3).sin() * 0.5));
        audio.extend(vec![0.002; 300]);
        let whole = trim_silence(&audio, 1000);
        for cuts in [
            vec![0, 100, 1300],
            vec![0, 299, 301, 1000, 1299, 1300],
            vec![0, 1300],
        ] {
            let mut trim = super::Trim::new(1000);
            let mut pieces = Vec::new();
            for w in cuts.windows(2) {
                let last = w[1] == audio.len();
                trim.push(&audio[w[0]..w[1]], last, &mut |a| {
                    pieces.extend_from_slice(a)
                });
            }
            assert_eq!(pieces, whole, "cut at {cuts:?}");
        }
    }
}
