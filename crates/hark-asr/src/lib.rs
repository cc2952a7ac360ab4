//! Speech recognition with Whisper (whisper.cpp through whisper-rs).
//!
//! [`Transcriber`] decodes a whole utterance, with the encoder's window fitted to the turn's audio
//! or Whisper's full 30 s ([`EncoderWindow`]); [`StreamingRecognizer`] decodes the growing
//! utterance while the user speaks and commits words by local agreement. The model and its
//! decoder state are loaded once and reused for every turn. The log-mel spectrogram is ours
//! ([`mel`]: only the frames the encoder reads, a few milliseconds sooner than whisper.cpp's,
//! the same transcripts); whisper.cpp encodes and decodes it.

mod ggml_check;
mod mel;
mod raw;
mod stream;

pub use stream::{AsrEvent, LocalAgreement, StreamConfig, StreamingRecognizer};

use std::ffi::CString;
use std::path::Path;

use whisper_rs::whisper_rs_sys as sys;

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("Whisper model not found at {0}; run `hark models fetch`")]
    ModelMissing(String),
    #[error("Whisper model {path} could not be loaded ({detail}); it may be damaged: run `hark models verify`")]
    Load { path: String, detail: String },
    #[error("recognition failed: {0}")]
    Decode(String),
    /// The abort check ([`Transcriber::set_abort`]) stopped the decode.
    #[error("recognition aborted")]
    Aborted,
}

/// Asked between graph nodes during a decode: `true` stops it ([`AsrError::Aborted`]).
pub type AbortCheck = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// Recognition settings.
#[derive(Debug, Clone)]
pub struct AsrConfig {
    pub threads: usize,
    /// Language code for multilingual models; English-only models ignore it.
    pub language: String,
    /// Segments whose no-speech probability is above this are dropped.
    pub no_speech_threshold: f32,
    /// How much audio the encoder looks at.
    pub window: EncoderWindow,
}

/// The encoder's window. Whisper was trained on 30 s windows; encoding only the audio there is
/// (whisper.cpp's `audio_ctx`) costs a fraction of the time for a short turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderWindow {
    /// Always the full 30 s (1500 encoder frames).
    Full,
    /// The audio plus `margin_frames` frames (50 a second). A decode that runs away (repeating
    /// itself or exceeding a plausible token count for the audio's length, a known failure of
    /// short windows) keeps the words of a loop once, or is redone with a longer window.
    Fit { margin_frames: usize },
}

/// Default window: the audio plus 0.5 s ([`FITTED_WINDOW`]). Measured by `hark bench asr` (15
/// recordings: 12 real from pocketsphinx-testdata, 3 espeak-ng questions; 2 threads): the final
/// decode at the pause takes p50 about 86 ms against 201 ms with 8 s of margin and ~580 ms with
/// the full 30 s window, at WER 6.6 % against 7.4 % and 9.9 %. Short margins make tiny.en loop
/// on short turns (the utterance, then the same words again): the decode is ended as soon as
/// its words come round again, the words once are kept, and a loop that cannot be read that way
/// is decoded again with 8 s of margin, then in full.
pub const DEFAULT_WINDOW: EncoderWindow = FITTED_WINDOW;

/// The fitted window measured above: the audio plus 0.5 s.
pub const FITTED_WINDOW: EncoderWindow = EncoderWindow::Fit { margin_frames: 25 };

/// The margin a short window's runaway decode is retried with before the full window: 8 s.
const LONG_MARGIN_FRAMES: usize = 400;

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            threads: default_threads(),
            language: "en".into(),
            no_speech_threshold: 0.6,
            window: DEFAULT_WINDOW,
        }
    }
}

/// Encoder frames per second of audio.
const FRAMES_PER_SECOND: f64 = 50.0;
/// Encoder frames in Whisper's full 30 s window.
const FULL_FRAMES: usize = 1500;

pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4)
}

/// A final transcript.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// Highest no-speech probability among the segments kept.
    pub no_speech_prob: f32,
}

pub struct Transcriber {
    whisper: raw::Whisper,
    /// The spectrogram, made here rather than by whisper.cpp ([`mel`]).
    mel: mel::LogMel,
    config: AsrConfig,
    /// The language whisper.cpp is told: the configured one for a multilingual model.
    language: CString,
    abort: Option<AbortCheck>,
    stats: DecodeStats,
}

/// What the Whisper decodes behind the last transcript did ([`Transcriber::last_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// whisper.cpp decodes run (a runaway is decoded again with a longer window).
    pub decodes: usize,
    /// Text tokens they produced.
    pub tokens: usize,
    /// Decodes ended as soon as their words read as a loop or a runaway, or at a sentence's
    /// end where Whisper nearly ended the text itself.
    pub cut_short: usize,
}

/// Whisper pads everything to at least this much audio; we pad short turns ourselves with
/// silence so very short words are still recognised (samples at 16 kHz).
const MIN_SAMPLES: usize = 16_000;

impl Transcriber {
    pub fn load(model: &Path, config: AsrConfig) -> Result<Self, AsrError> {
        if !model.is_file() {
            return Err(AsrError::ModelMissing(model.display().to_string()));
        }
        let load_err = |detail: String| AsrError::Load {
            path: model.display().to_string(),
            detail,
        };
        let filters = ggml_check::check(model).map_err(load_err)?;
        let mel = mel::LogMel::new(filters)
            .ok_or_else(|| load_err("its mel filters are not for 400-sample windows".into()))?;
        // Route whisper.cpp's own logging away from stderr.
        whisper_rs::install_logging_hooks();
        let whisper = raw::Whisper::load(model).map_err(load_err)?;
        let language = if whisper.is_multilingual() {
            CString::new(config.language.as_str())
                .map_err(|_| load_err(format!("language {:?}", config.language)))?
        } else {
            c"en".to_owned()
        };
        Ok(Transcriber {
            whisper,
            mel,
            config,
            language,
            abort: None,
            stats: DecodeStats::default(),
        })
    }

    /// Makes every later decode stop as soon as `check` returns true (whisper.cpp asks between
    /// graph nodes): a live listener abandons a partial decode the moment the user falls silent.
    pub fn set_abort(&mut self, check: Option<AbortCheck>) {
        self.abort = check;
    }

    /// What the decodes behind the last transcript (or partial) did.
    pub fn last_stats(&self) -> DecodeStats {
        self.stats
    }

    /// Transcribes 16 kHz mono speech with the configured window and threads. Silence and noise
    /// give an empty transcript.
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript, AsrError> {
        self.transcribe_with(samples, self.config.window, self.config.threads)
    }

    /// [`Self::transcribe`] with this call's own window and thread count.
    pub fn transcribe_with(
        &mut self,
        samples: &[f32],
        window: EncoderWindow,
        threads: usize,
    ) -> Result<Transcript, AsrError> {
        self.stats = DecodeStats::default();
        self.transcribe_pieces(samples, window, threads)
    }

    fn transcribe_pieces(
        &mut self,
        samples: &[f32],
        window: EncoderWindow,
        threads: usize,
    ) -> Result<Transcript, AsrError> {
        if is_silent(samples) {
            return Ok(Transcript::default());
        }
        if samples.len() > MAX_PIECE {
            // Longer than Whisper's window: decode it piece by piece, cut at pauses.
            let mut text = Vec::new();
            let mut no_speech_prob = 0f32;
            for piece in pieces(samples) {
                let t = self.transcribe_pieces(&samples[piece], window, threads)?;
                no_speech_prob = no_speech_prob.max(t.no_speech_prob);
                if !t.text.is_empty() {
                    text.push(t.text);
                }
            }
            return Ok(Transcript {
                text: text.join(" "),
                no_speech_prob,
            });
        }
        let audio = padded(samples);
        let transcript = match window {
            EncoderWindow::Fit { margin_frames } => {
                // A short window's usual failure is a loop: the utterance, then the same words
                // again instead of the end of text. The words once are the transcript; any
                // other runaway is decoded again with the long margin, then the full window.
                let mut margins = vec![margin_frames];
                if margin_frames < LONG_MARGIN_FRAMES {
                    margins.push(LONG_MARGIN_FRAMES);
                }
                for margin in margins {
                    let (frames, max_tokens) = fitted_budget(audio.len(), margin);
                    if frames >= FULL_FRAMES {
                        break;
                    }
                    let (t, tokens) =
                        self.decode(&audio, threads, Some(frames), Some(max_tokens))?;
                    if let Some(text) = looped(&t.text) {
                        return Ok(Transcript { text, ..t });
                    }
                    if tokens < max_tokens && !repeats_itself(&t.text) {
                        return Ok(t);
                    }
                    tracing::debug!(text = %t.text, margin, "fitted encoder window ran away");
                }
                self.decode(&audio, threads, None, None)?.0
            }
            EncoderWindow::Full => self.decode(&audio, threads, None, None)?.0,
        };
        Ok(transcript)
    }

    /// A quick hypothesis for audio that is still growing: a window fitted to the audio
    /// ([`FITTED_WINDOW`]'s margin whatever the configured window). `None` when there are no
    /// words, only one of Whisper's stock phrases, or a decode that ran away (no second,
    /// full-window decode: the next hop will do).
    pub fn transcribe_partial(
        &mut self,
        samples: &[f32],
        threads: usize,
    ) -> Result<Option<String>, AsrError> {
        self.stats = DecodeStats::default();
        if is_silent(samples) {
            return Ok(None);
        }
        let audio = padded(samples);
        let EncoderWindow::Fit { margin_frames } = FITTED_WINDOW else {
            unreachable!("FITTED_WINDOW is a fitted window")
        };
        let (frames, max_tokens) = fitted_budget(audio.len(), margin_frames);
        let (t, tokens) = self.decode(
            &audio,
            threads,
            Some(frames.min(FULL_FRAMES)),
            Some(max_tokens),
        )?;
        // Whisper's stock phrases are never committed from a partial, whatever its no-speech
        // estimate: a user who really says "thank you" gets it from the final decode.
        let text = match looped(&t.text) {
            Some(once) => Some(once),
            None if tokens < max_tokens && !repeats_itself(&t.text) => Some(t.text),
            None => None,
        };
        Ok(text.filter(|text| !text.is_empty() && !is_invented(text)))
    }

    /// One Whisper decode; returns the transcript and the number of text tokens it produced.
    fn decode(
        &mut self,
        audio: &[f32],
        threads: usize,
        audio_ctx: Option<usize>,
        max_tokens: Option<usize>,
    ) -> Result<(Transcript, usize), AsrError> {
        // The encoder reads twice its window in spectrogram frames (the full 30 s without one).
        let window = audio_ctx.unwrap_or(FULL_FRAMES);
        let n_mel = self.mel.n_mel();
        self.whisper
            .set_mel(self.mel.compute(audio, 2 * window), n_mel, 2 * window)
            .map_err(AsrError::Decode)?;
        let mut params = decode_params(&self.language, threads, audio_ctx, max_tokens);
        // What whisper.cpp's own spectrogram would call the audio's length (10 ms frames), so
        // the silent frames after it are not taken for more audio to decode.
        params.duration_ms = mel::audio_duration_ms(audio.len());
        // The abort check goes through our own trampoline; it points at `abort`, which
        // outlives the decode below.
        let abort = self.abort.clone();
        if let Some(check) = &abort {
            params.abort_callback = Some(abort_trampoline);
            params.abort_callback_user_data = check as *const AbortCheck as *mut std::ffi::c_void;
        }
        // Ends the decode the moment its words read as a loop or a runaway: what the rest of
        // the token budget would add is thrown away anyway (a third of a short turn's decode).
        let mut watch = RunawayWatch {
            audio_seconds: audio.len() as f32 / 16_000.0,
            ..RunawayWatch::default()
        };
        params.logits_filter_callback = Some(runaway_trampoline);
        params.logits_filter_callback_user_data =
            &mut watch as *mut RunawayWatch as *mut std::ffi::c_void;
        // SAFETY: the language, `abort` and `watch` outlive the call; the callbacks only read
        // `abort` through a shared reference, and read token text from the context and write
        // only the logits row they are handed.
        unsafe { self.whisper.full(params, &[]) }.map_err(|rc| match &abort {
            Some(check) if check() => AsrError::Aborted,
            _ => AsrError::Decode(format!("whisper.cpp failed ({rc})")),
        })?;
        let mut text = String::new();
        let mut no_speech_prob = 0.0f32;
        let mut tokens = 0usize;
        for segment in self.whisper.segments() {
            tokens += segment.tokens;
            if segment.no_speech_prob > self.config.no_speech_threshold {
                continue;
            }
            no_speech_prob = no_speech_prob.max(segment.no_speech_prob);
            text.push_str(&segment.text);
        }
        self.stats.decodes += 1;
        self.stats.tokens += tokens;
        self.stats.cut_short += usize::from(watch.stopped);
        let mut text = strip_annotations(&text);
        if watch.restarted {
            if let Some((once, _)) = restarted(&text) {
                text = once;
            }
        }
        // Whisper's stock phrases on near-silence; a person who really says them is heard clearly.
        if no_speech_prob > INVENTED_MIN_NO_SPEECH && is_invented(&text) {
            text.clear();
        }
        Ok((
            Transcript {
                text,
                no_speech_prob,
            },
            tokens,
        ))
    }
}

/// whisper.cpp's settings for one greedy decode of a turn: one segment, no timestamps, no
/// context from earlier decodes, no temperature fallback, nothing printed.
fn decode_params(
    language: &std::ffi::CStr,
    threads: usize,
    audio_ctx: Option<usize>,
    max_tokens: Option<usize>,
) -> sys::whisper_full_params {
    // SAFETY: whisper.cpp's defaults, plain values.
    let mut params = unsafe {
        sys::whisper_full_default_params(sys::whisper_sampling_strategy_WHISPER_SAMPLING_GREEDY)
    };
    params.greedy.best_of = 1;
    params.n_threads = threads.max(1) as i32;
    params.language = language.as_ptr();
    params.no_context = true;
    params.single_segment = true;
    params.no_timestamps = true;
    params.suppress_blank = true;
    params.suppress_nst = true;
    params.temperature = 0.0;
    params.temperature_inc = 0.0;
    params.print_special = false;
    params.print_progress = false;
    params.print_realtime = false;
    params.print_timestamps = false;
    if let Some(frames) = audio_ctx {
        params.audio_ctx = frames as i32;
    }
    if let Some(n) = max_tokens {
        params.max_tokens = n as i32;
    }
    params
}

/// whisper.cpp's abort callback: asks the [`AbortCheck`] that `data` points at.
unsafe extern "C" fn abort_trampoline(data: *mut std::ffi::c_void) -> bool {
    // SAFETY: `data` is the `&AbortCheck` that `Transcriber::decode` set, alive for the decode.
    let check = unsafe { &*(data as *const AbortCheck) };
    check()
}

/// What [`runaway_trampoline`] keeps between the tokens of one decode.
#[derive(Default)]
struct RunawayWatch {
    /// The decode's text so far (every token before the newest).
    text: Vec<u8>,
    /// Tokens already in `text`.
    tokens: usize,
    /// The decode was ended here.
    stopped: bool,
    /// It was ended where it began its words again ([`restarted`]).
    restarted: bool,
    /// Seconds of audio decoded.
    audio_seconds: f32,
}

/// whisper.cpp's logits filter, called before each token is chosen with the tokens chosen so
/// far: once the completed words read as a loop ([`looped`]) or a runaway ([`repeats_itself`]),
/// begin the text again where the audio can hold no more ([`restarted`]), or a sentence has
/// ended where Whisper nearly ended the text ([`ends_here`]), only the end of text may follow.
/// Only words followed by a new one count as complete, so a word being spelled ("go f…" of "go
/// fast") never reads as a repeat ("go forward").
unsafe extern "C" fn runaway_trampoline(
    ctx: *mut whisper_rs::whisper_rs_sys::whisper_context,
    _state: *mut whisper_rs::whisper_rs_sys::whisper_state,
    tokens: *const whisper_rs::whisper_rs_sys::whisper_token_data,
    n_tokens: std::os::raw::c_int,
    logits: *mut f32,
    data: *mut std::ffi::c_void,
) {
    use whisper_rs::whisper_rs_sys as sys;
    // SAFETY: `data` is the `RunawayWatch` `Transcriber::decode` set, alive and used by this
    // decode only; `tokens` holds `n_tokens` entries and `logits` one per vocabulary entry, as
    // whisper.cpp documents; the context is only read.
    let watch = unsafe { &mut *(data as *mut RunawayWatch) };
    let n = n_tokens.max(0) as usize;
    if n == 0 || tokens.is_null() || logits.is_null() {
        return;
    }
    let tokens = unsafe { std::slice::from_raw_parts(tokens, n) };
    let eot = unsafe { sys::whisper_token_eot(ctx) };
    let piece = |id: sys::whisper_token| -> &[u8] {
        if id >= eot {
            return &[];
        }
        let s = unsafe { sys::whisper_token_to_str(ctx, id) };
        if s.is_null() {
            &[]
        } else {
            unsafe { std::ffi::CStr::from_ptr(s) }.to_bytes()
        }
    };
    if n < watch.tokens {
        // A new decode on the same watch (whisper.cpp's fallback): start over.
        *watch = RunawayWatch::default();
    }
    let newest = piece(tokens[n - 1].id);
    for t in &tokens[watch.tokens..n - 1] {
        watch.text.extend_from_slice(piece(t.id));
    }
    watch.tokens = n - 1;
    let n_vocab = unsafe { sys::whisper_n_vocab(ctx) }.max(0) as usize;
    let logits = unsafe { std::slice::from_raw_parts_mut(logits, n_vocab) };
    // Judge only when the newest token starts a word: the words before it are complete.
    if !watch.stopped && newest.first() == Some(&b' ') {
        let text = String::from_utf8_lossy(&watch.text);
        watch.stopped = looped(&text).is_some() || repeats_itself(&text);
        if !watch.stopped {
            watch.restarted = restarted(&text).is_some_and(|(_, words)| {
                words as f32 >= RESTART_MIN_WORDS_PER_SECOND * watch.audio_seconds
            });
            watch.stopped = watch.restarted;
        }
    }
    if !watch.stopped && newest.last().is_some_and(|c| b".?!".contains(c)) {
        watch.stopped = ends_here(logits, eot as usize);
    }
    if watch.stopped {
        for (id, l) in logits.iter_mut().enumerate() {
            if id != eot as usize {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// How likely, against its best choice, the end of text must be after a sentence's last token
/// for the decode to end there. Where tiny.en went on to say the sentence again, the end of text
/// had 0.53-0.98 of its choice's probability at the first full stop (LibriVox and command
/// recordings, measured); where more speech really followed, 0.00-0.13 (a 35 s LibriVox
/// reading, two commands joined by a pause). A loop is otherwise found only once the sentence
/// has come round again: 5-11 tokens, 20-45 ms of a final decode, later.
const SENTENCE_END_RATIO: f32 = 0.3;

/// How many words a second of the decoded audio the words before a restart ([`restarted`]) must
/// hold for the decode to end there: as many as the audio can hold, so no second sentence
/// beginning like the first can be in it. People say 2-4 words a second, and the audio holds
/// some silence before and after the speech. Where tiny.en began "What is the capital and
/// France?" again, the words before held 3.0 a second; "Go forward 10 meters," 2.0.
const RESTART_MIN_WORDS_PER_SECOND: f32 = 2.0;

/// Where `text` begins its words again after a full stop, question mark, comma or semicolon: at
/// least two words that are its first words (the last may be cut short), as a loop begins. The
/// words before, as a sentence, and how many. None if it does not.
pub fn restarted(text: &str) -> Option<(String, usize)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|w| word_key(w)).collect();
    let last = words.len().saturating_sub(1);
    (1..words.len().saturating_sub(1))
        .find(|&at| {
            words[at - 1].ends_with(['.', '?', '!', ',', ';'])
                && (at..words.len()).all(|i| {
                    let first = &keys[i - at];
                    !keys[i].is_empty()
                        && (keys[i] == *first || (i == last && first.starts_with(&keys[i])))
                })
        })
        .map(|at| (sentence(&words[..at].join(" ")), at))
}

/// Whether a decode whose newest token ends a sentence should be ended there: the end of text is
/// not the likeliest token (`logits` over the vocabulary), but at least [`SENTENCE_END_RATIO`]
/// as likely.
fn ends_here(logits: &[f32], eot: usize) -> bool {
    let best = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    logits
        .get(eot)
        .is_some_and(|&l| l < best && l - best >= SENTENCE_END_RATIO.ln())
}

/// `samples`, padded with silence to Whisper's shortest useful length so very short words are
/// still recognised.
fn padded(samples: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    if samples.len() < MIN_SAMPLES {
        let mut v = samples.to_vec();
        v.resize(MIN_SAMPLES, 0.0);
        std::borrow::Cow::Owned(v)
    } else {
        std::borrow::Cow::Borrowed(samples)
    }
}

/// Encoder frames for `samples` of audio plus `margin_frames`, and a token budget generous for
/// speech (people say 2-4 words a second) yet small enough to stop a runaway decode early.
fn fitted_budget(samples: usize, margin_frames: usize) -> (usize, usize) {
    let seconds = samples as f64 / 16_000.0;
    let frames = (seconds * FRAMES_PER_SECOND).ceil() as usize + margin_frames;
    (frames, (seconds * 8.0) as usize + 12)
}

/// The longest piece decoded at once (Whisper's window is 30 s), and the shortest a long
/// utterance is cut into, in samples at 16 kHz.
const MAX_PIECE: usize = 28 * 16_000;
const MIN_PIECE: usize = 18 * 16_000;

/// Ranges of at most [`MAX_PIECE`] covering `samples`, each cut in the quietest 100 ms between
/// [`MIN_PIECE`] and [`MAX_PIECE`] after its start: a pause between words, where one is.
fn pieces(samples: &[f32]) -> Vec<std::ops::Range<usize>> {
    const FRAME: usize = 1_600;
    const STEP: usize = 160;
    let mut out = Vec::new();
    let mut start = 0;
    while samples.len() - start > MAX_PIECE {
        let (lo, hi) = (start + MIN_PIECE, start + MAX_PIECE - FRAME);
        let energy = |at: usize| samples[at..at + FRAME].iter().map(|v| v * v).sum::<f32>();
        let quietest = (lo..hi)
            .step_by(STEP)
            .min_by(|&a, &b| energy(a).total_cmp(&energy(b)))
            .unwrap_or(lo);
        let cut = quietest + FRAME / 2;
        out.push(start..cut);
        start = cut;
    }
    out.push(start..samples.len());
    out
}

/// Below this RMS (-60 dBFS) there is nothing to hear; Whisper would only invent ("you").
const SILENCE_RMS: f64 = 1e-3;

/// Whether `samples` are too quiet to hold speech.
pub fn is_silent(samples: &[f32]) -> bool {
    let energy: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    energy <= SILENCE_RMS * SILENCE_RMS * samples.len() as f64
}

/// Whether a phrase of one to four words occurs three times in a row: the signature of a
/// runaway decode ("5 5 5 5 …", "10 of close 10 of close 10 of close …").
pub fn repeats_itself(text: &str) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .map(word_key)
        .filter(|w| !w.is_empty())
        .collect();
    (1..=4).any(|n| {
        words.len() >= 3 * n
            && (0..=words.len() - 3 * n).any(|i| {
                words[i..i + n] == words[i + n..i + 2 * n]
                    && words[i..i + n] == words[i + 2 * n..i + 3 * n]
            })
    })
}

/// A word as loops are compared: its letters and digits, lower case ("Meters," = "meters").
fn word_key(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words before a loop: `text` is some words, then a unit of two or more words (or one
/// ending a sentence) at least twice over, repeated to its end (the last repeat may be cut
/// short); the words and the unit once are returned, as a sentence. `None` for any other text.
pub fn looped(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|w| word_key(w)).collect();
    let last = words.len().saturating_sub(1);
    // The loop starts as early as possible; its unit is as short as possible.
    for start in 0..words.len() {
        for unit in 1..=(words.len() - start) / 2 {
            let whole = unit >= 2 || words[start + unit - 1].ends_with(['.', '?', '!']);
            // The budget may cut the last repeat inside a word ("… shop. It costs $4.").
            let loops_to_end = (start + unit..words.len()).all(|i| {
                keys[i] == keys[i - unit] || (i == last && keys[i - unit].starts_with(&keys[i]))
            });
            match (loops_to_end, whole) {
                (true, true) => {
                    let once = words[..start + unit].join(" ");
                    // A loop that drifted ("21 June 21 June June 21 June June 21 June") is
                    // found at its end, with the repeats before it left in: not a reading.
                    return (!repeats_itself(&once)).then(|| sentence(&once));
                }
                // One word stuck ("5 5 5 5"): how many times it was said is unknown.
                (true, false) => return None,
                _ => {}
            }
        }
    }
    None
}

/// A loop's words as the sentence they are: the separator Whisper put before the next repeat
/// (",", ";") becomes a full stop, and the first letter a capital.
fn sentence(words: &str) -> String {
    let body = words.trim_end_matches([',', ';', ':', '-']);
    let mut out = String::with_capacity(body.len() + 1);
    let mut chars = body.chars();
    out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
    out.push_str(chars.as_str());
    if !out.ends_with(['.', '?', '!']) {
        out.push('.');
    }
    out
}

/// Above this no-speech probability, a transcript that is only a stock phrase is dropped.
const INVENTED_MIN_NO_SPEECH: f32 = 0.2;

/// Removes Whisper's non-speech annotations ("[BLANK_AUDIO]", "(music)", "*sigh*") and tidies
/// spaces; a transcript with no words left is empty.
pub fn strip_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' | '<' => depth += 1,
            ']' | ')' | '>' => depth = depth.saturating_sub(1),
            '*' | '♪' => {}
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().any(char::is_alphanumeric) {
        out
    } else {
        String::new()
    }
}

/// Whether `text` is one of the phrases Whisper is known to invent on silence or noise.
pub fn is_invented(text: &str) -> bool {
    const INVENTED: [&str; 6] = [
        "thank you",
        "thanks for watching",
        "thank you for watching",
        "you",
        "bye",
        "thank you very much",
    ];
    let bare: String = text
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    INVENTED.contains(&bare.trim())
}

#[cfg(test)]
mod tests {
    use super::{is_invented, looped, repeats_itself, strip_annotations};

    /// Our spectrogram against whisper.cpp's own, decoded the same way (the fitted window and
    /// the full one) by the real tiny.en model on real recorded speech: the same words.
    #[test]
    fn our_spectrogram_decodes_as_whisper_cpp_s_own() {
        use super::*;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let models = std::env::var_os("HARK_MODELS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("models"));
        let model = models.join("whisper-tiny.en/ggml-tiny.en.bin");
        assert!(
            model.is_file(),
            "{} is missing: run `hark models fetch`",
            model.display()
        );
        let mut mel = mel::LogMel::new(ggml_check::check(&model).unwrap()).unwrap();
        let mut whisper = raw::Whisper::load(&model).unwrap();
        let mut reader = hound::WavReader::open(root.join("assets/goforward.wav")).unwrap();
        let speech: Vec<f32> = reader
            .samples::<i16>()
            .map(|s| s.unwrap() as f32 / 32768.0)
            .collect();
        // The whole recording, its first second and a half, and its last word padded to 1 s.
        let tail = padded(&speech[speech.len() - 12_000..]).into_owned();
        for audio in [&speech[..], &speech[..24_000], &tail[..]] {
            let (fitted, max_tokens) = fitted_budget(audio.len(), 25);
            for audio_ctx in [Some(fitted), None] {
                let params = decode_params(c"en", 2, audio_ctx, Some(max_tokens));
                let text =
                    |w: &raw::Whisper| w.segments().into_iter().map(|s| s.text).collect::<String>();
                // SAFETY: the language is static; no callbacks.
                unsafe { whisper.full(params, audio) }.unwrap();
                let theirs = text(&whisper);
                let frames = 2 * audio_ctx.unwrap_or(FULL_FRAMES);
                whisper
                    .set_mel(mel.compute(audio, frames), 80, frames)
                    .unwrap();
                let mut params = params;
                params.duration_ms = mel::audio_duration_ms(audio.len());
                // SAFETY: as above.
                unsafe { whisper.full(params, &[]) }.unwrap();
                let ours = text(&whisper);
                assert!(
                    !ours.trim().is_empty(),
                    "nothing heard in {} samples",
                    audio.len()
                );
                assert_eq!(
                    ours,
                    theirs,
                    "{} samples, window {audio_ctx:?}",
                    audio.len()
                );
            }
        }
    }

    #[test]
    fn a_loop_is_kept_once() {
        let runaway =
            "go forward 10 meters, go forward 10 meters, go forward 10 meters, go forward";
        assert_eq!(looped(runaway).as_deref(), Some("Go forward 10 meters."));
        assert_eq!(
            looped("Well, hello. Is it you? Is it you?").as_deref(),
            Some("Well, hello. Is it you?")
        );
        assert_eq!(looped("Yes. Yes.").as_deref(), Some("Yes."));
        // The token budget cut the last repeat inside a word.
        assert_eq!(
            looped("It costs $4.99 at the shop. It costs $4.99 at the shop. It costs $4.")
                .as_deref(),
            Some("It costs $4.99 at the shop.")
        );
        // A loop that drifted: repeats are left before the regular part at its end.
        assert_eq!(
            looped("arrived on 21 June 21 June 21 June 21 June June 21 June June 21 June"),
            None
        );
        // A single word stuck says nothing of how often it was said; a repeat that stops
        // before the end is speech.
        assert_eq!(looped("5 5 5 5 5 5"), None);
        assert_eq!(looped("four, four, four, four"), None);
        assert_eq!(looped("Go on. Go on. Stop here."), None);
        assert_eq!(looped("Go forward 10 meters."), None);
        assert_eq!(looped(""), None);
    }

    #[test]
    fn a_text_that_begins_its_words_again_is_found_at_the_restart() {
        assert_eq!(
            crate::restarted("What is the capital and France? What is"),
            Some(("What is the capital and France?".to_string(), 6))
        );
        assert_eq!(
            crate::restarted("go forward 10 meters, go forward 1"),
            Some(("Go forward 10 meters.".to_string(), 4))
        );
        // The last word may be cut short; the words before it may not differ.
        assert_eq!(
            crate::restarted("Yes, I can. Yes, I c"),
            Some(("Yes, I can.".to_string(), 3))
        );
        // A second sentence beginning with the same word only, or no stop before the repeat.
        assert_eq!(crate::restarted("Go forward 10 meters. Go somewhere"), None);
        assert_eq!(
            crate::restarted("What is the capital and France? What"),
            None
        );
        assert_eq!(crate::restarted("eight of spades eight of hearts"), None);
        assert_eq!(crate::restarted("Eight of spades, four of clubs."), None);
        assert_eq!(crate::restarted(""), None);
    }

    #[test]
    fn long_audio_is_cut_at_its_quietest_moments_into_whole_windows() {
        // 70 s of tone with a short pause every 5 s.
        let audio: Vec<f32> = (0..70 * 16_000)
            .map(|i| {
                if i % 80_000 < 1_600 {
                    0.0
                } else {
                    (i as f32 * 0.1).sin() * 0.3
                }
            })
            .collect();
        let ps = super::pieces(&audio);
        assert!(ps.len() >= 3);
        assert_eq!(ps[0].start, 0);
        assert_eq!(ps.last().unwrap().end, audio.len());
        for pair in ps.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for p in &ps {
            assert!(p.len() <= super::MAX_PIECE);
            // Every cut falls in a pause.
            if p.end < audio.len() {
                assert!(p.end % 80_000 < 1_600, "cut at {}", p.end);
            }
        }
        assert_eq!(super::pieces(&audio[..16_000]), vec![0..16_000]);
    }

    #[test]
    fn runaway_decodes_are_recognised() {
        assert!(repeats_itself("10 of close 10 of close 10 of close 10"));
        assert!(repeats_itself("5 5 5 5 5"));
        assert!(repeats_itself("Go forward. Go forward. Go forward."));
        assert!(!repeats_itself("five five"));
        assert!(!repeats_itself(
            "eight of spades, four of clubs, seven of hearts"
        ));
        assert!(!repeats_itself(""));
    }

    #[test]
    fn annotations_are_dropped_and_stock_phrases_recognised() {
        assert_eq!(strip_annotations(" [BLANK_AUDIO]"), "");
        assert_eq!(strip_annotations("(upbeat music) ♪ ..."), "");
        assert_eq!(
            strip_annotations("  Go forward ten meters. "),
            "Go forward ten meters."
        );
        assert!(is_invented(" Thank you."));
        assert!(!is_invented("Thank you for the help."));
    }
}
