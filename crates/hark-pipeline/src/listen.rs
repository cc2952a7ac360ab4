//! The listener: where turns end and what was said, from voice activity and streaming
//! recognition together, on the input's sample clock.
//!
//! The recogniser does not wait for the turn to be over. While the user speaks it decodes the
//! growing utterance every hop (partials, committed word by word by local agreement). The moment
//! the voice fades (the voice activity detector's probability falls from full voice into the band
//! above its silence threshold, as it does in the window where speech ends), the signal stops
//! dead inside a window (a file's speech followed by digital silence) or silence begins, it
//! decodes the utterance as it stands: if the silence follows and lasts, that is the final
//! transcript, ready before or soon after the turn is decided; if the user speaks on, it is
//! dropped. That transcript also sets how long a silence ends the turn: short after a finished
//! sentence, long after "I'd like to go to the", the default when it says neither; until it is
//! known, only the long silence ends a turn (the reply could not start without it anyway).
//!
//! Offline, every decode really runs and its measured time is placed on the sample clock: a
//! decode starts when its audio has arrived and the recogniser is free, and ends its measured
//! time later. A decode still running when silence begins is abandoned (whisper.cpp's abort
//! callback stops one within a graph node), so the final decode starts at once.

use std::time::Instant;

use hark_asr::{DecodeStats, EncoderWindow, LocalAgreement, StreamConfig, Transcriber, Transcript};
use hark_audio::turns::{
    end_floor_db, ends_in_digital_silence, is_quiet, noise_floor_db, peak_db, speech_end_above,
    speech_level_db,
};
use hark_audio::vad::WINDOW;
use hark_audio::{Turn, TurnConfig};
use hark_core::audio::samples_to_ms;
use hark_core::ASR_SAMPLE_RATE;

/// How the listener decides turns and runs recognition.
#[derive(Debug, Clone, Copy)]
pub struct ListenConfig {
    /// End-of-turn silence after a transcript that reads as a finished sentence, ms. Every
    /// end-of-turn silence is counted from where the speech ends in the signal (not from where
    /// the voice activity detector hears the silence begin, a window or three later).
    pub finished_end_silence_ms: f64,
    /// End-of-turn silence after a transcript that stops mid-sentence, ms.
    pub unfinished_end_silence_ms: f64,
    /// Decode partial hypotheses while the user speaks (for incremental prefill and display).
    pub partials: bool,
    /// Hop, minimum audio and threads of the partial decodes.
    pub stream: StreamConfig,
    /// The final decode's encoder window and threads.
    pub window: EncoderWindow,
    pub final_threads: usize,
    /// A window heard as voice whose speech probability is below this and below the window
    /// before's is the voice fading: the final decode starts there, a window or two before the
    /// silence is heard (Silero's probability falls over a window or two where speech ends).
    /// It is kept if the next window is silent, and dropped if the voice goes on (a window
    /// still falling starts the next one). Only where the speech stands clear of the noise
    /// ([`FADING_MIN_RANGE_DB`]); at or below the turn's `neg_threshold`, the final decode
    /// always waits for the silence.
    pub fading_below: f32,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            finished_end_silence_ms: 200.0,
            unfinished_end_silence_ms: 1000.0,
            partials: false,
            stream: StreamConfig::default(),
            window: hark_asr::FITTED_WINDOW,
            final_threads: hark_asr::default_threads(),
            fading_below: 0.8,
        }
    }
}

impl ListenConfig {
    /// Whether a window of voice with speech probability `p` is the voice fading, so a final
    /// decode may start on it: below [`Self::fading_below`], or `stopped` (the window ends in
    /// digital silence: [`hark_audio::turns::ends_in_digital_silence`]). The listener and the
    /// live voice tracker, which aborts decodes that turn moot, decide it alike.
    pub fn fading(&self, p: f32, stopped: bool) -> bool {
        p < self.fading_below || stopped
    }
}

/// How far the loudest speech of a turn must stand above the noise floor for its final decode to
/// start as the voice fades ([`ListenConfig::fading_below`]), dB. In noise, where Silero's
/// probability falls less cleanly, a decode one window short heard worse: white noise at 10 dB
/// SNR (16-22 dB here) cost 2-4 words of 121 on `hark bench asr`, against none on the clean
/// recordings (25-40 dB above their own noise).
pub const FADING_MIN_RANGE_DB: f32 = 25.0;

/// How often the listener hears the input, samples: 8 ms, a quarter of a voice-activity window.
/// Speech is told from silence a window at a time, but once a turn's end silence has been heard
/// window by window, its last few milliseconds need only be quiet: the turn ends on the frame
/// it is due ([`Listener::heard_to`]), not up to a window (32 ms) later.
pub const FRAME: usize = WINDOW / 4;

/// Where the frames handed on ahead of the rest of their window end, for input heard up to
/// `from`: the first frame boundary at or past `due` (where a turn's end silence will have
/// lasted, [`Listener::end_due_at`]), if `due` falls before the window's end. None: the window
/// goes whole.
pub fn frames_to(from: usize, due: usize) -> Option<usize> {
    let window_end = (from / WINDOW + 1) * WINDOW;
    (due > from && due < window_end).then(|| from + (due - from).div_ceil(FRAME) * FRAME)
}

/// How much audio before a turn's end its noise floor is measured on: 30 s.
const NOISE_FLOOR_SPAN: usize = 30 * hark_core::ASR_SAMPLE_RATE as usize;

/// A partial hypothesis as the listener produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// When it was ready, ms on the input's clock.
    pub ready_ms: f64,
    /// How much of the input it heard, ms.
    pub audio_ms: f64,
    pub text: String,
    /// The committed prefix after it.
    pub stable: String,
}

/// One turn as heard.
#[derive(Debug, Clone)]
pub struct HeardTurn {
    pub turn: Turn,
    pub transcript: Transcript,
    /// Speech end → turn decided, ms.
    pub endpoint_ms: f64,
    /// Turn decided → final transcript ready, ms (0 when it was ready first).
    pub asr_final_ms: f64,
    pub partials: Vec<Partial>,
    /// Recognition compute spent on this turn, ms (partials, final decodes, dropped ones).
    pub decode_ms: f64,
    /// When the final decode started (silence onset, or the input's end) and how long it took,
    /// ms: a pipeline whose machine was still busy then can place it later.
    pub final_started_ms: f64,
    pub final_spent_ms: f64,
    /// What the final transcript's Whisper decodes did (a loop cut short, a second decode).
    pub final_stats: DecodeStats,
    /// Transcripts decoded at a pause that were ready before the user spoke again: a preemptive
    /// reply started on each would have been thrown away.
    pub dropped_finals: usize,
}

/// How finished a transcript reads, for choosing the end-of-turn silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// A full stop, question or exclamation mark after a word that can end a sentence.
    Finished,
    /// Ends on a word that needs a continuation ("to the", "and", "um") or trails off ("...").
    Unfinished,
    /// Neither: no final punctuation after a word that could end it ("seven of clubs").
    Unclear,
}

/// Words after which a sentence goes on: articles, prepositions, conjunctions, possessives,
/// hesitations.
const CONTINUES: [&str; 32] = [
    "a", "an", "the", "and", "or", "but", "so", "because", "if", "to", "of", "for", "with", "in",
    "on", "at", "from", "by", "about", "into", "my", "your", "our", "their", "his", "her", "its",
    "than", "um", "uh", "er", "hmm",
];

/// How finished `text` reads (Whisper punctuates what it hears as complete).
pub fn completion(text: &str) -> Completion {
    let t = text.trim_end().trim_end_matches(['"', '\'', ')']);
    let last: String = t
        .split_whitespace()
        .last()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if last.is_empty()
        || t.ends_with("...")
        || t.ends_with('…')
        || CONTINUES.contains(&last.as_str())
    {
        Completion::Unfinished
    } else if t.ends_with(['.', '?', '!']) {
        Completion::Finished
    } else {
        Completion::Unclear
    }
}

/// Where a turn's speech ended (a position in the input), and the level above which a 10 ms
/// frame after it would be speech again.
#[derive(Debug, Clone, Copy)]
struct SpeechEnd {
    at: usize,
    level_db: f32,
}

/// A decode on the sample clock: its result and when it is ready.
struct Candidate {
    transcript: Transcript,
    stats: DecodeStats,
    started_ms: f64,
    ready_ms: f64,
}

/// The turn being heard.
struct Open {
    start: usize,
    last_speech: usize,
    silent: usize,
    /// Where the speech really ended, found when the silence after it began: the end-of-turn
    /// silence is counted from here.
    speech_end: Option<SpeechEnd>,
    next_hop: usize,
    /// The last window's speech probability: a voice that falls further is fading.
    last_p: f32,
    agreement: LocalAgreement,
    partials: Vec<Partial>,
    decode_ms: f64,
    candidate: Option<Candidate>,
    dropped_finals: usize,
}

fn ms(samples: usize) -> f64 {
    samples_to_ms(samples, ASR_SAMPLE_RATE)
}

/// Where a decode's end falls on the input's clock.
pub trait DecodeClock {
    /// A decode that began when the input reached `now_ms` and computed for `spent_ms` ends
    /// at the returned time, ms on the input's clock.
    fn finished(&self, now_ms: f64, spent_ms: f64) -> f64;
}

/// Offline: the input is all there, and each decode is placed where a live listener would have
/// run it: from the moment its audio arrived, for its measured time.
pub struct SampleClock;

impl DecodeClock for SampleClock {
    fn finished(&self, now_ms: f64, spent_ms: f64) -> f64 {
        now_ms + spent_ms
    }
}

/// Live: the input arrives in real time from `start`, so a decode ends when it ends.
pub struct WallClock {
    pub start: Instant,
}

impl DecodeClock for WallClock {
    fn finished(&self, _now_ms: f64, _spent_ms: f64) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }
}

/// What the listener reports as it hears.
#[derive(Debug, Clone)]
pub enum Heard {
    /// The voice activity detector heard a turn begin, ms on the input's clock.
    SpeechStarted(f64),
    /// A partial hypothesis of the turn being spoken.
    Partial(Partial),
    /// The voice faded or silence began, and the utterance so far was decoded: the turn's
    /// transcript if the silence follows and lasts (a reply may start on it before the turn is
    /// decided).
    Paused(Transcript),
    /// The user spoke on after [`Heard::Paused`]: that transcript no longer applies.
    Resumed,
    /// A turn, ended and transcribed.
    Turn(HeardTurn),
}

/// The input heard so far, of which a live listener keeps only the recent part: `samples`
/// starts at sample `start` of the input (16 kHz mono). Positions are always counted from the
/// input's beginning.
#[derive(Debug, Clone, Copy)]
pub struct Audio<'a> {
    pub start: usize,
    pub samples: &'a [f32],
}

impl<'a> Audio<'a> {
    /// A whole input.
    pub fn whole(samples: &'a [f32]) -> Self {
        Self { start: 0, samples }
    }

    /// Where the audio heard so far ends.
    pub fn end(&self) -> usize {
        self.start + self.samples.len()
    }

    /// Samples `from..to` (positions in the input); what was forgotten before `start` is left
    /// out.
    pub fn range(&self, from: usize, to: usize) -> &'a [f32] {
        let to = to.clamp(self.start, self.end()) - self.start;
        &self.samples[(from.max(self.start) - self.start).min(to)..to]
    }
}

/// The listener's state, fed one VAD window at a time ([`Listener::push`]) and closed at the
/// input's end ([`Listener::finish`]). [`listen`] runs it over a whole input.
pub struct Listener {
    turn: TurnConfig,
    cfg: ListenConfig,
    pre_roll: usize,
    min_speech: usize,
    /// The input's noise floor, when the whole input is known; live, it is measured on what
    /// has arrived when a turn ends.
    floor_db: Option<f32>,
    /// When the recogniser is next free, ms on the input's clock.
    free_ms: f64,
    /// Windows pushed so far.
    windows: usize,
    open: Option<Open>,
}

impl Listener {
    pub fn new(turn: &TurnConfig, cfg: &ListenConfig, floor_db: Option<f32>) -> Self {
        Listener {
            turn: *turn,
            cfg: *cfg,
            pre_roll: hark_core::audio::ms_to_samples(turn.pre_roll_ms, ASR_SAMPLE_RATE),
            min_speech: hark_core::audio::ms_to_samples(turn.min_speech_ms, ASR_SAMPLE_RATE),
            floor_db,
            free_ms: 0.0,
            windows: 0,
            open: None,
        }
    }

    /// Whether a turn is being heard (speech started and not yet ended).
    pub fn in_turn(&self) -> bool {
        self.open.is_some()
    }

    /// Whether the open turn is in silence with its transcript decoded ([`Heard::Paused`]):
    /// what comes next is its end or more speech, neither of which needs a decode.
    pub fn is_paused(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.candidate.is_some())
    }

    /// The earliest sample (position in the input) the listener may still read: audio before it
    /// can be forgotten.
    pub fn needs_audio_from(&self) -> usize {
        let end = self.windows * WINDOW;
        let noise = end.saturating_sub(NOISE_FLOOR_SPAN);
        match &self.open {
            Some(o) => o.start.saturating_sub(self.pre_roll).min(noise),
            None => end.saturating_sub(self.pre_roll + WINDOW).min(noise),
        }
    }

    /// The next window's speech probability `p`; `audio` is the input so far (through at least
    /// this window, from at least [`Listener::needs_audio_from`]). Decodes run on `asr` and are
    /// placed by `clock`.
    pub fn push(
        &mut self,
        p: f32,
        audio: Audio<'_>,
        asr: &mut Transcriber,
        clock: &dyn DecodeClock,
        heard: &mut Vec<Heard>,
    ) -> Result<(), hark_asr::AsrError> {
        let (c, cfg) = (self.turn, self.cfg);
        let i = self.windows;
        self.windows += 1;
        // This window's probability is known once the window has arrived.
        let now = ((i + 1) * WINDOW).min(audio.end());
        let now_ms = ms(now);
        let Some(o) = self.open.as_mut() else {
            if p >= c.threshold {
                self.open = Some(Open {
                    start: i * WINDOW,
                    last_speech: i,
                    silent: 0,
                    speech_end: None,
                    next_hop: i * WINDOW + cfg.stream.min_samples,
                    last_p: p,
                    agreement: LocalAgreement::default(),
                    partials: Vec::new(),
                    decode_ms: 0.0,
                    candidate: None,
                    dropped_finals: 0,
                });
                heard.push(Heard::SpeechStarted(ms(i * WINDOW)));
            }
            return Ok(());
        };
        let audio_start = o.start.saturating_sub(self.pre_roll);
        if p >= c.neg_threshold {
            // Voice (still or again): a final decode made at a pause or as the voice faded no
            // longer applies.
            if let Some(cand) = o.candidate.take() {
                if cand.ready_ms <= now_ms {
                    o.dropped_finals += 1;
                } else {
                    // A live listener abandons it now (`hark_asr::Transcriber::set_abort`; an
                    // encoder already running runs to its end).
                    self.free_ms = now_ms;
                }
                heard.push(Heard::Resumed);
            }
            let falling = p < std::mem::replace(&mut o.last_p, p);
            // A window that ends in digital silence ends the speech in it (a file, a muted
            // input): the final decode need not wait a window for the detector to agree.
            let stopped = ends_in_digital_silence(audio.range(i * WINDOW, now));
            let fading = cfg.fading(p, stopped);
            let fades_now = fading && (falling || stopped);
            o.last_speech = i;
            o.silent = 0;
            o.speech_end = None;
            if fades_now
                && now - o.start >= self.min_speech
                && clear_of_noise(self.floor_db, audio, o.start, now)
            {
                let decoded = self.decode_final(audio.range(audio_start, now), now_ms, asr, clock);
                return self.paused(decoded, heard);
            }
            if cfg.partials && !fading && now >= o.next_hop && self.free_ms <= now_ms {
                let t = Instant::now();
                let text = match asr
                    .transcribe_partial(audio.range(audio_start, now), cfg.stream.threads)
                {
                    Err(hark_asr::AsrError::Aborted) => None,
                    other => other?,
                };
                let spent = t.elapsed().as_secs_f64() * 1000.0;
                o.decode_ms += spent;
                self.free_ms = clock.finished(now_ms, spent);
                o.next_hop = now + cfg.stream.hop_samples;
                if let Some(text) = text {
                    o.agreement.update(&text);
                    let partial = Partial {
                        ready_ms: self.free_ms,
                        audio_ms: now_ms,
                        text,
                        stable: o.agreement.stable(),
                    };
                    heard.push(Heard::Partial(partial.clone()));
                    o.partials.push(partial);
                }
            }
            return Ok(());
        }
        o.silent += 1;
        let vad_end = ((o.last_speech + 1) * WINDOW).min(audio.end());
        // The detector hears silence a window or three after the voice stops (Silero's
        // probability falls slowly): the silence that ends the turn is counted from the end
        // of the speech in the signal, the same point V2V is measured from.
        let speech_end = o
            .speech_end
            .get_or_insert_with(|| speech_end(self.floor_db, audio, o.start, vad_end, now))
            .at;
        // A burst shorter than a turn (a cough, a click) is never decoded: it will be dropped.
        let long_enough = vad_end - o.start >= self.min_speech;
        o.last_p = p;
        if o.silent == 1 && long_enough && o.candidate.is_none() {
            // Silence begins (the voice did not fade first, or its decode was dropped): decode
            // the utterance as it is.
            let decoded = self.decode_final(audio.range(audio_start, now), now_ms, asr, clock);
            self.paused(decoded, heard)?;
        }
        let Some(o) = self.open.as_mut() else {
            return Ok(());
        };
        if ms(now.saturating_sub(speech_end)) < end_silence_ms(o, long_enough, now_ms, &c, &cfg) {
            return Ok(());
        }
        if let Some(t) = self.close(now, audio) {
            heard.push(Heard::Turn(t));
        }
        Ok(())
    }

    /// Where the open turn's end silence will have lasted, as things stand (a position in the
    /// input): once its silence is being counted. A live input hands on the frames up to it
    /// before the rest of their window, so [`Listener::heard_to`] can end the turn there.
    pub fn end_due_at(&self) -> Option<usize> {
        let o = self.open.as_ref()?;
        let end = o.speech_end?;
        let long_enough = (o.last_speech + 1) * WINDOW - o.start >= self.min_speech;
        let now_ms = ms(self.windows * WINDOW);
        let required_ms = end_silence_ms(o, long_enough, now_ms, &self.turn, &self.cfg);
        Some(end.at + hark_core::audio::ms_to_samples(required_ms, ASR_SAMPLE_RATE))
    }

    /// The input has reached `to` (samples), part-way into the window after the last one
    /// pushed; `audio` holds it through `to`. A turn in its end silence ends here if that
    /// silence has lasted as long as its transcript asks and the audio since the last window
    /// is quiet (no 10 ms frame at the turn's speech level): the turn is decided on the frame
    /// it is due. Speech is still only told from silence a window at a time: what comes back
    /// with voice after the turn's end opens the next turn.
    pub fn heard_to(&mut self, to: usize, audio: Audio<'_>, heard: &mut Vec<Heard>) {
        let heard_windows = self.windows * WINDOW;
        let Some(o) = self.open.as_ref() else {
            return;
        };
        let Some(end) = o.speech_end else {
            return;
        };
        if to <= heard_windows || to > audio.end() {
            return;
        }
        let vad_end = ((o.last_speech + 1) * WINDOW).min(audio.end());
        let long_enough = vad_end - o.start >= self.min_speech;
        let required_ms = end_silence_ms(o, long_enough, ms(to), &self.turn, &self.cfg);
        if ms(to.saturating_sub(end.at)) < required_ms
            || !is_quiet(audio.range(heard_windows, to), end.level_db)
        {
            return;
        }
        if let Some(t) = self.close(to, audio) {
            heard.push(Heard::Turn(t));
        }
    }

    /// Decodes `samples`, the open turn's utterance as it stands at `now_ms`, abandoning
    /// whatever is decoding: the transcript the turn ends with if silence follows.
    fn decode_final(
        &mut self,
        samples: &[f32],
        now_ms: f64,
        asr: &mut Transcriber,
        clock: &dyn DecodeClock,
    ) -> Result<Candidate, hark_asr::AsrError> {
        let t = Instant::now();
        let decoded = asr.transcribe_with(samples, self.cfg.window, self.cfg.final_threads);
        let spent = t.elapsed().as_secs_f64() * 1000.0;
        let stats = asr.last_stats();
        tracing::debug!(
            spent_ms = spent,
            audio_ms = ms(samples.len()),
            decodes = stats.decodes,
            tokens = stats.tokens,
            cut_short = stats.cut_short,
            "decoded at a pause"
        );
        self.free_ms = clock.finished(now_ms, spent);
        if let Some(o) = self.open.as_mut() {
            o.decode_ms += spent;
            o.partials.retain(|p| p.ready_ms <= now_ms);
        }
        Ok(Candidate {
            transcript: decoded?,
            stats,
            started_ms: now_ms,
            ready_ms: self.free_ms,
        })
    }

    /// The open turn's final decode is done: its transcript is the turn's if the silence lasts.
    /// A decode stopped because the user spoke on leaves the turn going on.
    fn paused(
        &mut self,
        decoded: Result<Candidate, hark_asr::AsrError>,
        heard: &mut Vec<Heard>,
    ) -> Result<(), hark_asr::AsrError> {
        let cand = match decoded {
            Err(hark_asr::AsrError::Aborted) => return Ok(()),
            other => other?,
        };
        heard.push(Heard::Paused(cand.transcript.clone()));
        if let Some(o) = self.open.as_mut() {
            o.candidate = Some(cand);
        }
        Ok(())
    }

    /// The turn ends at `now` (samples): the one in silence with its transcript, or nothing for
    /// a burst too short to be a turn (no final decode ran for it).
    fn close(&mut self, now: usize, audio: Audio<'_>) -> Option<HeardTurn> {
        let o = self.open.take()?;
        let cand = o.candidate?;
        let audio_start = o.start.saturating_sub(self.pre_roll);
        let vad_end = ((o.last_speech + 1) * WINDOW).min(audio.end());
        let turn = Turn {
            audio_start,
            speech_start: o.start,
            speech_end: o
                .speech_end
                .unwrap_or_else(|| speech_end(self.floor_db, audio, o.start, vad_end, now))
                .at,
            decided_at: now,
        };
        Some(HeardTurn {
            endpoint_ms: turn.decided_ms() - turn.speech_end_ms(),
            asr_final_ms: (cand.ready_ms - ms(now)).max(0.0),
            final_started_ms: cand.started_ms,
            final_spent_ms: cand.ready_ms - cand.started_ms,
            final_stats: cand.stats,
            transcript: cand.transcript,
            partials: o.partials,
            decode_ms: o.decode_ms,
            dropped_finals: o.dropped_finals,
            turn,
        })
    }

    /// The input has ended after `audio`: a turn in silence ends there; speech running to the
    /// end is decoded now, and the input's end decides the turn.
    pub fn finish(
        &mut self,
        audio: Audio<'_>,
        asr: &mut Transcriber,
        clock: &dyn DecodeClock,
        heard: &mut Vec<Heard>,
    ) -> Result<(), hark_asr::AsrError> {
        let end = audio.end();
        let Some(o) = self.open.as_ref() else {
            return Ok(());
        };
        if o.silent > 0 {
            if let Some(t) = self.close(end, audio) {
                heard.push(Heard::Turn(t));
            }
            return Ok(());
        }
        let Some(o) = self.open.take() else {
            return Ok(());
        };
        let vad_end = ((o.last_speech + 1) * WINDOW).min(end);
        if vad_end.saturating_sub(o.start) < self.min_speech {
            return Ok(());
        }
        let audio_start = o.start.saturating_sub(self.pre_roll);
        let begin_ms = self.free_ms.max(ms(end));
        let t = Instant::now();
        let transcript = asr.transcribe_with(
            audio.range(audio_start, end),
            self.cfg.window,
            self.cfg.final_threads,
        )?;
        let spent = t.elapsed().as_secs_f64() * 1000.0;
        let ready_ms = clock.finished(begin_ms, spent);
        let turn = Turn {
            audio_start,
            speech_start: o.start,
            speech_end: speech_end(self.floor_db, audio, o.start, vad_end, end).at,
            decided_at: end,
        };
        heard.push(Heard::Turn(HeardTurn {
            endpoint_ms: turn.decided_ms() - turn.speech_end_ms(),
            asr_final_ms: ready_ms - ms(end),
            transcript,
            partials: o.partials,
            decode_ms: o.decode_ms + spent,
            final_started_ms: ready_ms - spent,
            final_spent_ms: spent,
            final_stats: asr.last_stats(),
            dropped_finals: o.dropped_finals,
            turn,
        }));
        Ok(())
    }
}

/// Whether the speech of the turn begun at `start` stands [`FADING_MIN_RANGE_DB`] above the
/// noise floor (the input's, else measured on the last 30 s heard).
fn clear_of_noise(floor_db: Option<f32>, audio: Audio<'_>, start: usize, now: usize) -> bool {
    peak_db(audio.range(start, now)) - floor_or_recent(floor_db, audio, now) >= FADING_MIN_RANGE_DB
}

/// The input's noise floor (`floor_db`), else that of the last 30 s heard before `now`: as local
/// as the noise, and as cheap an hour into a conversation as at its start.
fn floor_or_recent(floor_db: Option<f32>, audio: Audio<'_>, now: usize) -> f32 {
    floor_db
        .unwrap_or_else(|| noise_floor_db(audio.range(now.saturating_sub(NOISE_FLOOR_SPAN), now)))
}

/// How long a silence after the open turn's speech ends it, at `now_ms`. The transcript decides;
/// until it is known only the longest silence does (waiting for it costs nothing: the reply
/// needs it anyway). A burst too short to be a turn (`!long_enough`) is never decoded, and is
/// dropped after the detector's own end-of-turn silence.
fn end_silence_ms(
    o: &Open,
    long_enough: bool,
    now_ms: f64,
    c: &TurnConfig,
    cfg: &ListenConfig,
) -> f64 {
    match &o.candidate {
        Some(cand) if cand.ready_ms <= now_ms => {
            if cand.transcript.text.is_empty() {
                c.end_silence_ms
            } else {
                match completion(&cand.transcript.text) {
                    Completion::Finished => cfg.finished_end_silence_ms,
                    Completion::Unfinished => cfg.unfinished_end_silence_ms,
                    Completion::Unclear => c.end_silence_ms,
                }
            }
        }
        _ if !long_enough => c.end_silence_ms,
        _ => cfg.unfinished_end_silence_ms.max(c.end_silence_ms),
    }
}

/// Where the speech of a turn (`start..vad_end`, heard up to `now`) really ended: the last frame
/// clearly above the noise floor ([`floor_or_recent`]; in a padded file, the background after the
/// speech: [`end_floor_db`]).
fn speech_end(
    floor_db: Option<f32>,
    audio: Audio<'_>,
    start: usize,
    vad_end: usize,
    now: usize,
) -> SpeechEnd {
    let floor_db = end_floor_db(
        floor_or_recent(floor_db, audio, now),
        audio.range(vad_end, now),
    );
    let start = start.max(audio.start);
    let region = audio.range(start, vad_end);
    let level_db = speech_level_db(region, floor_db);
    SpeechEnd {
        at: start + speech_end_above(region, 0, region.len(), level_db),
        level_db,
    }
}

/// Turns and transcripts of `samples` (16 kHz mono), given the VAD's speech probability for
/// each [`WINDOW`] of them, on the sample clock. `turn` holds the voice-activity thresholds, the
/// end-of-turn silence used while the transcript does not say otherwise, the shortest turn and
/// the pre-roll.
pub fn listen(
    probs: &[f32],
    samples: &[f32],
    asr: &mut Transcriber,
    turn: &TurnConfig,
    cfg: &ListenConfig,
) -> Result<Vec<HeardTurn>, hark_asr::AsrError> {
    Ok(hear_all(probs, samples, asr, turn, cfg)?
        .into_iter()
        .filter_map(|h| match h {
            Heard::Turn(t) => Some(t),
            _ => None,
        })
        .collect())
}

/// Everything [`listen`] hears, in order: speech starts, partials, transcripts decoded as the
/// voice faded or at a pause (and dropped when the voice went on), and the turns.
pub fn hear_all(
    probs: &[f32],
    samples: &[f32],
    asr: &mut Transcriber,
    turn: &TurnConfig,
    cfg: &ListenConfig,
) -> Result<Vec<Heard>, hark_asr::AsrError> {
    let mut listener = Listener::new(turn, cfg, Some(noise_floor_db(samples)));
    let mut heard = Vec::new();
    let audio = Audio::whole(samples);
    for (i, &p) in probs.iter().enumerate() {
        listener.push(p, audio, asr, &SampleClock, &mut heard)?;
        // Where the turn's end is due inside the next window, the frames up to it, as a live
        // input hands them on.
        let window_end = (i + 1) * WINDOW;
        let to = listener
            .end_due_at()
            .and_then(|due| frames_to(window_end, due));
        if let Some(to) = to.filter(|&to| to <= samples.len()) {
            listener.heard_to(to, audio, &mut heard);
        }
    }
    listener.finish(audio, asr, &SampleClock, &mut heard)?;
    Ok(heard)
}

#[cfg(test)]
mod tests {
    use super::{completion, frames_to, Completion, FRAME, WINDOW};

    #[test]
    fn only_the_frames_up_to_a_due_end_inside_the_next_window_go_ahead() {
        let w = 10 * WINDOW;
        // Due inside the next window: up to the frame boundary at or past it.
        assert_eq!(frames_to(w, w + 1), Some(w + FRAME));
        assert_eq!(frames_to(w, w + FRAME), Some(w + FRAME));
        assert_eq!(frames_to(w, w + 3 * FRAME + 1), Some(w + WINDOW));
        // Not inside it (already past, or at or after its end): the window goes whole.
        assert_eq!(frames_to(w, w), None);
        assert_eq!(frames_to(w, w + WINDOW), None);
        // After those frames, the rest of the window goes whole.
        assert_eq!(frames_to(w + FRAME, w + FRAME), None);
    }

    #[test]
    fn finished_sentences_are_told_from_unfinished_ones() {
        use Completion::*;
        assert_eq!(completion("Go forward 10 meters."), Finished);
        assert_eq!(completion("What is the capital of France?"), Finished);
        assert_eq!(completion("Stop!\""), Finished);
        assert_eq!(
            completion("He might have been more respectable than he was."),
            Finished
        );
        assert_eq!(completion("I would like to go to the."), Unfinished);
        assert_eq!(completion("Go forward and"), Unfinished);
        assert_eq!(completion("Well..."), Unfinished);
        assert_eq!(completion(""), Unfinished);
        assert_eq!(completion("7 of clubs"), Unclear);
    }
}
