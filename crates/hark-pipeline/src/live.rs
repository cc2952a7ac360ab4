//! The live pipeline: every stage on its own thread, the input arriving in real time.
//!
//! ```text
//! input ─32 ms windows─▶ vad ─windows, p─▶ ear (listener, Whisper) ─heard─▶ brain (LLM) ─chunks─▶ voice (Piper) ─pieces─▶ player
//!                         └─ barge-in: cancels the reply (LLM, TTS) at once and stops the player ───────────────────────▲
//! ```
//!
//! Stages are joined by bounded channels. Control overtakes data: a barge-in sets the reply's
//! [`Cancel`] (the LLM checks it every token, ONNX Runtime between operators) and reaches the
//! player on its own channel, ahead of any queued audio; when the user falls silent or speaks
//! again, a Whisper decode in flight is abandoned (its abort check). Every time is taken on one
//! clock, the input's: milliseconds since its first sample was fed, so each span is a measured
//! wall-clock interval and they add up to the V2V latency.
//!
//! Preemptive replies: the reply starts on the transcript decoded when the user falls silent,
//! while the listener still waits to decide that the turn is over. Its audio is held in the
//! player (a `Held` reply); the decision releases it at once, and the user speaking again drops
//! it (and cancels what is still being generated). Only the work left after the decision counts in
//! the spans; `head_start_ms` says how much was done before.
//!
//! The ends are pluggable ([`LiveIo`]): a WAV file fed at real-time pace ([`PacedInput`]) or a
//! microphone ([`LiveInput`]); replies placed on a [`Timeline`] and, when there is one, played
//! on a speaker ([`LiveOutput`]). A front end (`hark talk`) watches [`LiveEvent`]s and steers
//! with a [`LiveControl`] (stop, mute, interrupt).

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use hark_asr::{Transcriber, Transcript};
use hark_audio::vad::WINDOW;
use hark_audio::TurnDetector;
use hark_core::audio::samples_to_ms;
use hark_core::{TurnRecord, ASR_SAMPLE_RATE, SCHEMA_VERSION};
use hark_llm::{ChatMessage, Role};
use hark_tts::text::Chunker;
use hark_tts::{Cancel, TtsError, Voice};

use crate::brain::{heard_part, Brain};
use crate::listen::{frames_to, Audio, Heard, Listener, WallClock};
use crate::timeline::Timeline;
use crate::{complete_sentences, PipelineError, CLAUSE_SILENCE};

/// What a live input hands over.
pub enum Captured {
    /// The samples asked for (16 kHz mono): a window ([`WINDOW`]) as a rule, or the frames
    /// ([`crate::listen::FRAME`], 8 ms) of one up to where a turn's end is due.
    Samples(Vec<f32>),
    /// Nothing yet (the device is late); ask again.
    Waiting,
    /// The input is over.
    Ended,
}

/// Where live audio comes from: a microphone, or a file fed at real-time pace.
pub trait LiveInput: Send {
    /// The next `len` samples (fewer only at the input's end), waiting for them a short while
    /// (tens of ms) at most.
    fn next_samples(&mut self, len: usize) -> Result<Captured, PipelineError>;
}

/// Where replies are heard: a speaker. (They are always placed on the run's [`Timeline`] too.)
pub trait LiveOutput: Send {
    /// Queues audio (the voice's rate, mono) after what is queued.
    fn play(&mut self, samples: &[f32]) -> Result<(), PipelineError>;
    /// The reply being played has no more audio coming.
    fn end_of_reply(&mut self);
    /// Stops at once, dropping what is queued (a barge-in).
    fn stop(&mut self);
    /// How long audio takes from being queued on an idle output to being heard, ms.
    fn latency_ms(&self) -> f64;
    /// How much audio is queued and not yet played, ms.
    fn queued_ms(&self) -> f64;
}

/// A microphone: samples as the sound card captures them.
impl LiveInput for hark_audio::device::MicrophoneReader {
    fn next_samples(&mut self, len: usize) -> Result<Captured, PipelineError> {
        Ok(match self.read(len, Duration::from_millis(50))? {
            Some(samples) => Captured::Samples(samples),
            None => Captured::Waiting,
        })
    }
}

/// A speaker.
impl LiveOutput for hark_audio::device::SpeakerWriter {
    fn play(&mut self, samples: &[f32]) -> Result<(), PipelineError> {
        Ok(self.write(samples)?)
    }
    fn end_of_reply(&mut self) {
        hark_audio::device::SpeakerWriter::end_of_reply(self);
    }
    fn stop(&mut self) {
        hark_audio::device::SpeakerWriter::stop(self);
    }
    fn latency_ms(&self) -> f64 {
        self.latency().as_secs_f64() * 1000.0
    }
    fn queued_ms(&self) -> f64 {
        self.queued().as_secs_f64() * 1000.0
    }
}

/// A whole recording handed on at real-time pace: a simulated microphone.
pub struct PacedInput<'a> {
    samples: &'a [f32],
    fed: usize,
    start: Option<Instant>,
}

impl<'a> PacedInput<'a> {
    /// `samples`: 16 kHz mono.
    pub fn new(samples: &'a [f32]) -> Self {
        Self {
            samples,
            fed: 0,
            start: None,
        }
    }
}

impl LiveInput for PacedInput<'_> {
    fn next_samples(&mut self, len: usize) -> Result<Captured, PipelineError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let end = (self.fed + len).min(self.samples.len());
        if self.fed >= end {
            return Ok(Captured::Ended);
        }
        let chunk = self.samples[self.fed..end].to_vec();
        self.fed = end;
        // Handed on once it has been "captured".
        let due = start + Duration::from_secs_f64(self.fed as f64 / ASR_SAMPLE_RATE as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        Ok(Captured::Samples(chunk))
    }
}

/// Steering a live run from outside (keys, Ctrl-C). Cheap to share.
#[derive(Debug, Default)]
pub struct LiveControl {
    stop: AtomicBool,
    finish: AtomicBool,
    mute: AtomicBool,
    interrupt: AtomicBool,
}

impl LiveControl {
    /// Ends the run: the reply in progress stops, the stages wind down.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// Ends the run gently: no more input is taken, the reply in progress is completed and
    /// played out.
    pub fn finish(&self) {
        self.finish.store(true, Ordering::SeqCst);
    }
    fn is_finishing(&self) -> bool {
        self.finish.load(Ordering::SeqCst) || self.is_stopped()
    }
    /// Mutes or unmutes the input (muted, it is heard as silence). Returns whether it is muted.
    pub fn toggle_mute(&self) -> bool {
        !self.mute.fetch_xor(true, Ordering::SeqCst)
    }
    /// Stops the reply being spoken, as if the user had spoken over it.
    pub fn interrupt(&self) {
        self.interrupt.store(true, Ordering::SeqCst);
    }
}

/// The microphone hears the speaker. While a reply plays, input no louder than its echo is
/// heard as silence; speech clearly louder than the echo (`margin` times it) gets through and
/// barges in. The echo's level is the playback's level times the echo path's gain, learned as
/// the reply plays: it follows the quietest the microphone gets relative to the playback
/// (quickly down, slowly back up, as the room or the volume changes). It starts at 1 (the
/// microphone as loud as the playback) until it has heard the echo path. Not an echo canceller:
/// the user must speak up to interrupt over loudspeakers.
pub struct EchoGate {
    level: hark_audio::device::PlaybackLevel,
    margin: f32,
    echo_gain: f32,
}

impl EchoGate {
    /// The quietest echo path assumed (-40 dB): nothing is heard as louder than silence.
    const MIN_GAIN: f32 = 0.01;
    /// How far a quieter window pulls the echo path's gain towards it.
    const FALL: f32 = 0.3;
    /// How much the gain creeps back up each window (about 0.5 dB a second).
    const RISE: f32 = 1.002;

    /// `margin_db`: how much louder than the echo speech must be to get through.
    pub fn new(level: hark_audio::device::PlaybackLevel, margin_db: f32) -> Self {
        Self {
            level,
            margin: 10f32.powf(margin_db / 20.0),
            echo_gain: 1.0,
        }
    }

    /// Whether `len` samples of the given RMS get through now (the gain moves as fast per
    /// second whatever their length).
    fn passes(&mut self, rms: f32, len: usize) -> bool {
        let playback = self.level.get();
        if playback < 1e-4 {
            return true;
        }
        let windows = len as f32 / WINDOW as f32;
        let ratio = rms / playback;
        self.echo_gain = if ratio < self.echo_gain {
            let fall = 1.0 - (1.0 - Self::FALL).powf(windows);
            ((1.0 - fall) * self.echo_gain + fall * ratio).max(Self::MIN_GAIN)
        } else {
            (self.echo_gain * Self::RISE.powf(windows)).min(1.0)
        };
        rms > self.margin * self.echo_gain * playback
    }
}

/// What a live run reports as it goes, for a front end to show.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// The user started speaking.
    SpeechStarted,
    /// What the user has said so far (a partial transcript).
    Partial(String),
    /// A turn ended and this is what was heard.
    Heard { turn: usize, text: String },
    /// More of the reply, as it goes to the voice.
    Reply { turn: usize, text: String },
    /// The reply was stopped (a barge-in or an interrupt).
    Interrupted { turn: usize },
    /// A turn's reply is complete (or failed): its record.
    TurnDone(Box<TurnRecord>),
    /// Something the user should know (no audio from the microphone, …).
    Warning(String),
}

/// A live run's ends and its front end's hooks.
pub struct LiveIo<'a> {
    pub input: Box<dyn LiveInput + 'a>,
    pub output: Option<Box<dyn LiveOutput + 'a>>,
    pub events: Option<Sender<LiveEvent>>,
    pub control: Arc<LiveControl>,
    pub echo_gate: Option<EchoGate>,
}

impl<'a> LiveIo<'a> {
    /// A recording fed at real-time pace, replies only on the timeline.
    pub fn paced(samples: &'a [f32]) -> Self {
        Self {
            input: Box::new(PacedInput::new(samples)),
            output: None,
            events: None,
            control: Arc::new(LiveControl::default()),
            echo_gate: None,
        }
    }
}

/// What a live run counts besides its turns.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveStats {
    /// Input windows (or frames) that waited because recognition was behind (none are lost).
    pub input_waits: u64,
    /// Input windows (or frames) taken for the speaker's echo and heard as silence.
    pub echo_gated: u64,
    /// Reply pieces that came too late to follow the audio before them: a gap was heard.
    pub late_pieces: u64,
}

/// What the stages share: the clock, the reply being spoken, and the turn records.
struct Shared {
    start: Instant,
    /// Until when the player has audio placed, ms (f64 bits): the user speaking before then is
    /// a barge-in.
    speaking_until: AtomicU64,
    /// What the voice activity detector has heard so far, and the counts the decode in flight
    /// started from: see [`VoiceCounts::moot`].
    voice: VoiceCounters,
    base: Mutex<VoiceCounts>,
    /// A reply's first audio is being made: recognition holds back meanwhile (see `hear`).
    first_audio_pending: AtomicBool,
    /// Where the listener's open turn will end if the silence lasts (a position in the input;
    /// `u64::MAX` for none): the input hands on the frames up to it early (see `feed`).
    end_due_at: AtomicU64,
    /// The reply in progress and its cancel switch.
    current: Mutex<Option<(usize, Cancel)>>,
    records: Mutex<BTreeMap<usize, TurnRecord>>,
    /// Windows the input had to wait for because the listener was behind (a full channel).
    overruns: AtomicU64,
    echo_gated: AtomicU64,
    late_pieces: AtomicU64,
    events: Option<Sender<LiveEvent>>,
    control: Arc<LiveControl>,
}

impl Shared {
    fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    fn emit(&self, event: LiveEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    fn record(&self, turn: usize, update: impl FnOnce(&mut TurnRecord)) {
        if let Ok(mut records) = self.records.lock() {
            if let Some(rec) = records.get_mut(&turn) {
                update(rec);
            }
        }
    }
}

/// What abandons a decode in flight, counted by the voice activity detector: windows heard as
/// voice, and changes that make a partial moot (the voice stopped or began to fade, so the final
/// decode is due).
#[derive(Debug, Default)]
struct VoiceCounters {
    voiced: AtomicU64,
    changes: AtomicU64,
}

/// The counters as they were at a window, and whether that window was full voice (a decode on
/// it is a partial; on any other, the final decode).
#[derive(Debug, Clone, Copy, Default)]
struct VoiceCounts {
    voiced: u64,
    changes: u64,
    full_voice: bool,
}

impl VoiceCounters {
    fn now(&self, full_voice: bool) -> VoiceCounts {
        VoiceCounts {
            voiced: self.voiced.load(Ordering::SeqCst),
            changes: self.changes.load(Ordering::SeqCst),
            full_voice,
        }
    }
}

impl VoiceCounts {
    /// A decode that started from these counts is moot now: a partial once the voice changed,
    /// a final decode (made as the voice faded, or at a pause) once voice was heard again.
    fn moot(&self, now: &VoiceCounters) -> bool {
        if self.full_voice {
            now.changes.load(Ordering::SeqCst) != self.changes
        } else {
            now.voiced.load(Ordering::SeqCst) != self.voiced
        }
    }
}

/// The voice activity detector's speech/silence state (with the turn's hysteresis) and whether
/// the voice is fading ([`crate::listen::ListenConfig::fading`]).
#[derive(Debug, Default)]
struct VoiceTracker {
    speech: bool,
    fading: bool,
}

impl VoiceTracker {
    /// The next window's speech probability, and whether the window ends in digital silence
    /// (`stopped`: the speech in it has ended, as the listener takes it): counts it, and
    /// returns whether speech began and the counts a decode on this window starts from.
    fn hear(
        &mut self,
        p: f32,
        stopped: bool,
        turn: &hark_audio::TurnConfig,
        listen: &crate::listen::ListenConfig,
        counters: &VoiceCounters,
    ) -> (bool, VoiceCounts) {
        let was = (self.speech, self.fading);
        if (self.speech && p < turn.neg_threshold) || (!self.speech && p >= turn.threshold) {
            self.speech = !self.speech;
        }
        self.fading = self.speech && listen.fading(p, stopped);
        if self.speech {
            counters.voiced.fetch_add(1, Ordering::SeqCst);
        }
        if (was.0 && !self.speech) || (self.fading && !was.1) {
            counters.changes.fetch_add(1, Ordering::SeqCst);
        }
        let began = self.speech && !was.0;
        (began, counters.now(self.speech && !self.fading))
    }
}

enum ToEar {
    /// The next samples of input (a window, or frames of one), and the voice activity of the
    /// window they complete, if they do.
    Input {
        samples: Vec<f32>,
        window: Option<WindowVoice>,
    },
    End,
}

/// A window's speech probability, and the voice counts a decode on it starts from.
struct WindowVoice {
    p: f32,
    counts: VoiceCounts,
}

enum ToBrain {
    /// What the listener heard, and when (ms on the input's clock).
    Heard(Heard, f64),
    /// The transcript decoded at a pause, at `at_ms`: a reply may start on it, held until the
    /// turn is decided.
    Paused {
        transcript: Transcript,
        held: Arc<Held>,
        at_ms: f64,
    },
    End,
}

/// A reply begun before its turn was decided. The listener settles it: released (the turn
/// ended; its audio plays at once) or dropped (the user went on; generation and synthesis are
/// cancelled, its audio thrown away).
struct Held {
    state: AtomicU8,
    cancel: Cancel,
}

const HOLDING: u8 = 0;
const RELEASED: u8 = 1;
const DROPPED: u8 = 2;

impl Held {
    fn new() -> Result<Arc<Self>, PipelineError> {
        Ok(Arc::new(Held {
            state: AtomicU8::new(HOLDING),
            cancel: Cancel::new()?,
        }))
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }

    fn release(&self) {
        self.state.store(RELEASED, Ordering::SeqCst);
    }

    fn drop_reply(&self) {
        self.state.store(DROPPED, Ordering::SeqCst);
        self.cancel.cancel();
    }
}

enum ToVoice {
    Chunk {
        turn: usize,
        text: String,
        text_at_ms: f64,
        first: bool,
        cancel: Cancel,
        held: Option<Arc<Held>>,
    },
    /// The reply of `turn` is complete.
    ReplyEnd(usize),
    End,
}

enum ToPlayer {
    Piece {
        turn: usize,
        samples: Vec<f32>,
        ready_ms: f64,
        /// Set on a chunk's first piece: its text and when the text was complete.
        chunk: Option<(String, f64)>,
        first_of_reply: bool,
        held: Option<Arc<Held>>,
    },
    ReplyEnd(usize),
    End,
}

impl ToPlayer {
    /// The hold this message is under, if its reply's turn is undecided.
    fn held(&self) -> Option<&Arc<Held>> {
        match self {
            ToPlayer::Piece { held, .. } => held.as_ref(),
            _ => None,
        }
    }
}

/// What overtakes the player's queued audio.
enum ToPlayerControl {
    /// The user spoke over the reply at `at_ms`.
    BargeIn { at_ms: f64 },
    /// A held reply was settled (released or dropped).
    Settled,
}

/// The stages a live run borrows from the pipeline.
pub(crate) struct Stages<'a> {
    pub brain: Brain<'a>,
    pub turns: &'a mut TurnDetector,
    pub asr: &'a mut Transcriber,
    pub voice: &'a mut Voice,
}

/// Runs the live input through the stages until it ends or is stopped. Returns the turn
/// records in order, the replies on the input's clock, and what was counted.
pub(crate) fn run(
    stages: Stages<'_>,
    io: LiveIo<'_>,
    input_name: &str,
) -> Result<(Vec<TurnRecord>, Timeline, LiveStats), PipelineError> {
    let LiveIo {
        mut input,
        mut output,
        events,
        control,
        echo_gate,
    } = io;
    let Stages {
        brain,
        turns,
        asr,
        voice,
    } = stages;
    let rate = voice.sample_rate();
    let sentence_silence = voice.sentence_silence;
    let turn_cfg = *turns.config();
    let listen_cfg = brain.config.listen.unwrap_or_default();
    let shared = Arc::new(Shared {
        start: Instant::now(),
        speaking_until: AtomicU64::new(0f64.to_bits()),
        voice: VoiceCounters::default(),
        base: Mutex::new(VoiceCounts::default()),
        first_audio_pending: AtomicBool::new(false),
        end_due_at: AtomicU64::new(u64::MAX),
        current: Mutex::new(None),
        records: Mutex::new(BTreeMap::new()),
        overruns: AtomicU64::new(0),
        echo_gated: AtomicU64::new(0),
        late_pieces: AtomicU64::new(0),
        events,
        control,
    });
    let (vad_tx, vad_rx) = bounded::<Option<Vec<f32>>>(16);
    // About a minute of windows: the listener falls behind while it decodes, then catches up.
    let (ear_tx, ear_rx) = bounded::<ToEar>(2048);
    let (brain_tx, brain_rx) = bounded::<ToBrain>(256);
    let (voice_tx, voice_rx) = bounded::<ToVoice>(64);
    let (player_tx, player_rx) = bounded::<ToPlayer>(256);
    let (control_tx, control_rx) = unbounded::<ToPlayerControl>();
    let settled_tx = control_tx.clone();
    let preemptive = brain.config.preemptive;
    let (heard_tx, heard_rx) = unbounded::<(usize, String)>();
    // The voice tells the brain a reply's first audio is out (see `reply`).
    let (first_audio_tx, first_audio_rx) = bounded::<usize>(16);

    let timeline = std::thread::scope(|s| {
        let sh = &shared;
        let feeder = s.spawn(move || feed(input.as_mut(), echo_gate, &vad_tx, sh));
        let vad = s.spawn(move || {
            listen_for_voice(
                turns,
                &vad_rx,
                &ear_tx,
                &control_tx,
                sh,
                &turn_cfg,
                &listen_cfg,
            )
        });
        let ear = s.spawn(move || {
            let ends = EarEnds {
                brain: &brain_tx,
                player: &settled_tx,
                preemptive,
            };
            let result = hear(asr, &ear_rx, &ends, sh, &turn_cfg, &listen_cfg);
            let _ = brain_tx.send(ToBrain::End);
            result
        });
        let thinker = s.spawn(move || {
            let result = think(
                brain,
                &brain_rx,
                &voice_tx,
                &heard_rx,
                &first_audio_rx,
                sh,
                input_name,
            );
            let _ = voice_tx.send(ToVoice::End);
            result
        });
        let speaker = s.spawn(move || {
            let result = speak(voice, &voice_rx, &player_tx, &first_audio_tx, sh);
            let _ = player_tx.send(ToPlayer::End);
            result
        });
        let player = s.spawn(move || {
            play(
                &player_rx,
                &control_rx,
                &heard_tx,
                sh,
                output.as_deref_mut(),
                (rate, sentence_silence),
            )
        });
        let mut first_error = None;
        for (name, handle) in [
            ("input", feeder),
            ("voice activity", vad),
            ("recognition", ear),
            ("language model", thinker),
            ("synthesis", speaker),
        ] {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error
                        .get_or_insert(PipelineError::Stage(format!("the {name} stage panicked")));
                }
            }
        }
        let timeline = player
            .join()
            .map_err(|_| PipelineError::Stage("the player panicked".into()))?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(timeline),
        }
    })?;
    let stats = LiveStats {
        input_waits: shared.overruns.load(Ordering::Relaxed),
        echo_gated: shared.echo_gated.load(Ordering::Relaxed),
        late_pieces: shared.late_pieces.load(Ordering::Relaxed),
    };
    if stats.input_waits > 0 {
        tracing::info!(stats.input_waits, "input windows waited for the listener");
    }
    let records = shared
        .records
        .lock()
        .map_err(|_| PipelineError::Stage("turn records poisoned".into()))?
        .values()
        .cloned()
        .collect();
    Ok((records, timeline, stats))
}

/// How long the input may deliver nothing before the user is told.
const INPUT_SILENT_WARNING: Duration = Duration::from_secs(3);

/// The input: each window handed on as it is captured, muted or echo-gated as asked. Where the
/// listener says a turn's end falls inside the next window ([`Shared::end_due_at`]), the frames
/// up to it go first, so the turn ends on the frame it is due rather than at the window's end.
/// (Every frame to every stage woke them four times as often: on the bundled questions, 289
/// against 266 ms a turn over three live rounds against the build before; this way, 269
/// against 270 over six.)
fn feed(
    input: &mut dyn LiveInput,
    mut echo_gate: Option<EchoGate>,
    out: &Sender<Option<Vec<f32>>>,
    sh: &Shared,
) -> Result<(), PipelineError> {
    let mut last_audio = Instant::now();
    let mut warned = false;
    let mut fed = 0usize;
    let result = loop {
        if sh.control.is_finishing() {
            break Ok(());
        }
        let due = usize::try_from(sh.end_due_at.load(Ordering::SeqCst)).unwrap_or(usize::MAX);
        let to = frames_to(fed, due).unwrap_or((fed / WINDOW + 1) * WINDOW);
        let len = to - fed;
        let mut chunk = match input.next_samples(len) {
            Ok(Captured::Samples(c)) => c,
            Ok(Captured::Waiting) => {
                if !warned && last_audio.elapsed() > INPUT_SILENT_WARNING {
                    warned = true;
                    sh.emit(LiveEvent::Warning(format!(
                        "no audio from the input for {} s",
                        INPUT_SILENT_WARNING.as_secs()
                    )));
                }
                continue;
            }
            Ok(Captured::Ended) => break Ok(()),
            Err(e) => break Err(e),
        };
        last_audio = Instant::now();
        warned = false;
        fed += chunk.len();
        if sh.control.mute.load(Ordering::Relaxed) {
            chunk.fill(0.0);
        } else if let Some(gate) = echo_gate.as_mut() {
            if !gate.passes(rms(&chunk), chunk.len()) {
                chunk.fill(0.0);
                sh.echo_gated.fetch_add(1, Ordering::Relaxed);
            }
        }
        if out.send(Some(chunk)).is_err() {
            break Ok(());
        }
    };
    if sh.control.is_stopped() {
        stop_reply(sh);
    }
    let _ = out.send(None);
    result
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// Cancels the reply in progress, if any. Returns its turn.
fn stop_reply(sh: &Shared) -> Option<usize> {
    let (turn, cancel) = sh.current.lock().ok().and_then(|mut c| c.take())?;
    cancel.cancel();
    Some(turn)
}

/// Voice activity for each window; counts voice and its changes for the listener's abort check
/// and raises a barge-in when the user speaks while a reply is audible. Frames handed on before
/// their window is complete go on to the listener as they come.
fn listen_for_voice(
    turns: &mut TurnDetector,
    input: &Receiver<Option<Vec<f32>>>,
    ear: &Sender<ToEar>,
    control: &Sender<ToPlayerControl>,
    sh: &Shared,
    cfg: &hark_audio::TurnConfig,
    listen_cfg: &crate::listen::ListenConfig,
) -> Result<(), PipelineError> {
    turns.start_stream();
    let mut voice = VoiceTracker::default();
    let mut window = Vec::with_capacity(WINDOW);
    while let Ok(Some(chunk)) = input.recv() {
        window.extend_from_slice(&chunk);
        if window.len() < WINDOW {
            let msg = ToEar::Input {
                samples: chunk,
                window: None,
            };
            if !to_ear(ear, msg, sh) {
                break;
            }
            continue;
        }
        let p = turns.next_probability(&window)?;
        let stopped = hark_audio::turns::ends_in_digital_silence(&window);
        window.clear();
        let mut barge_in = sh.control.interrupt.swap(false, Ordering::SeqCst);
        let (began, counts) = voice.hear(p, stopped, cfg, listen_cfg, &sh.voice);
        if began {
            let playing_until = f64::from_bits(sh.speaking_until.load(Ordering::SeqCst));
            barge_in |= sh.now_ms() < playing_until;
        }
        if barge_in {
            let now_ms = sh.now_ms();
            if let Some(turn) = stop_reply(sh) {
                tracing::info!(turn, at_ms = now_ms, "barge-in: the reply stops");
                sh.emit(LiveEvent::Interrupted { turn });
            }
            // The player cuts whatever is still audible, even a reply already complete.
            let _ = control.send(ToPlayerControl::BargeIn { at_ms: now_ms });
        }
        let msg = ToEar::Input {
            samples: chunk,
            window: Some(WindowVoice { p, counts }),
        };
        if !to_ear(ear, msg, sh) {
            break;
        }
    }
    let _ = ear.send(ToEar::End);
    Ok(())
}

/// Hands `msg` to the listener, waiting (and counting the wait) while it is behind. False once
/// the listener is gone.
fn to_ear(ear: &Sender<ToEar>, msg: ToEar, sh: &Shared) -> bool {
    match ear.try_send(msg) {
        Ok(()) => true,
        Err(crossbeam_channel::TrySendError::Full(msg)) => {
            sh.overruns.fetch_add(1, Ordering::Relaxed);
            ear.send(msg).is_ok()
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
    }
}

/// How much heard audio the ear keeps before it forgets what the listener no longer needs.
const FORGET_AFTER: usize = 60 * ASR_SAMPLE_RATE as usize;

/// The longest recognition holds back for a reply's first audio.
const MAX_HOLD: Duration = Duration::from_millis(500);

/// Where the listener's news goes: the brain, and the player (which holds a preemptive reply's
/// audio until the turn is decided).
struct EarEnds<'a> {
    brain: &'a Sender<ToBrain>,
    player: &'a Sender<ToPlayerControl>,
    /// Replies may start on the transcript decoded at a pause.
    preemptive: bool,
}

/// The listener on the input's clock: partials, the final decode at the pause, the turn end.
fn hear(
    asr: &mut Transcriber,
    input: &Receiver<ToEar>,
    ends: &EarEnds<'_>,
    sh: &Arc<Shared>,
    turn_cfg: &hark_audio::TurnConfig,
    listen_cfg: &crate::listen::ListenConfig,
) -> Result<(), PipelineError> {
    let watch = Arc::clone(sh);
    asr.set_abort(Some(Arc::new(move || {
        watch.base.lock().is_ok_and(|base| base.moot(&watch.voice))
    })));
    let clock = WallClock { start: sh.start };
    let mut listener = Listener::new(turn_cfg, listen_cfg, None);
    // What was heard, from sample `start` on: what the listener no longer needs is forgotten,
    // so an hour's conversation holds no more than a minute or so of audio.
    let mut samples = Vec::new();
    let mut start = 0usize;
    let mut heard = Vec::new();
    // The preemptive reply waiting for this turn's decision.
    let mut pending: Option<Arc<Held>> = None;
    let result = (|| {
        while let Ok(msg) = input.recv() {
            // While a reply's first audio is being made, a decode here would halve its speed
            // on two cores; the windows wait in the channel (the voice activity detector, which
            // raises barge-ins, runs on regardless). A paused turn needs no decode to be
            // decided, and its decision is what a preemptive reply waits for.
            let held = Instant::now();
            while sh.first_audio_pending.load(Ordering::SeqCst)
                && !listener.is_paused()
                && held.elapsed() < MAX_HOLD
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            match msg {
                ToEar::Input {
                    samples: chunk,
                    window,
                } => {
                    samples.extend_from_slice(&chunk);
                    let audio = Audio {
                        start,
                        samples: &samples,
                    };
                    match window {
                        // Part-way into a window: a turn whose end is due ends here.
                        None => listener.heard_to(audio.end(), audio, &mut heard),
                        Some(WindowVoice { p, counts }) => {
                            if let Ok(mut base) = sh.base.lock() {
                                *base = counts;
                            }
                            if let Err(e) = listener.push(p, audio, asr, &clock, &mut heard) {
                                tracing::warn!("recognition failed; the turn goes on: {e}");
                            }
                            let needed = listener.needs_audio_from();
                            if needed > start && samples.len() > FORGET_AFTER {
                                samples.drain(..(needed - start).min(samples.len()));
                                start = needed.max(start);
                            }
                        }
                    }
                    let due = listener.end_due_at().map_or(u64::MAX, |at| at as u64);
                    sh.end_due_at.store(due, Ordering::SeqCst);
                }
                ToEar::End => {
                    if let Ok(mut base) = sh.base.lock() {
                        *base = sh.voice.now(false);
                    }
                    let audio = Audio {
                        start,
                        samples: &samples,
                    };
                    listener.finish(audio, asr, &clock, &mut heard)?;
                }
            }
            for h in heard.drain(..) {
                let msg = match h {
                    Heard::Paused(transcript) => {
                        if !ends.preemptive || transcript.text.is_empty() {
                            continue;
                        }
                        let held = Held::new()?;
                        pending = Some(Arc::clone(&held));
                        ToBrain::Paused {
                            transcript,
                            held,
                            at_ms: sh.now_ms(),
                        }
                    }
                    Heard::Resumed => match pending.take() {
                        Some(held) => {
                            held.drop_reply();
                            let _ = ends.player.send(ToPlayerControl::Settled);
                            ToBrain::Heard(Heard::Resumed, sh.now_ms())
                        }
                        None => continue,
                    },
                    Heard::Turn(t) => {
                        tracing::debug!(
                            final_decode_start_ms = t.final_started_ms - t.turn.speech_end_ms(),
                            decode_ms = t.final_spent_ms,
                            endpoint_ms = t.endpoint_ms,
                            lag_ms = sh.now_ms() - t.turn.decided_ms(),
                            "turn decided"
                        );
                        if let Some(held) = pending.take() {
                            held.release();
                            let _ = ends.player.send(ToPlayerControl::Settled);
                        }
                        ToBrain::Heard(Heard::Turn(t), sh.now_ms())
                    }
                    other => ToBrain::Heard(other, sh.now_ms()),
                };
                if ends.brain.send(msg).is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    asr.set_abort(None);
    result
}

/// The LLM: partial prefills while the user speaks, a reply per turn streamed to the voice in
/// chunks (begun at the pause when replies are preemptive), the history kept to what was heard.
fn think(
    mut brain: Brain<'_>,
    input: &Receiver<ToBrain>,
    voice: &Sender<ToVoice>,
    heard_of_reply: &Receiver<(usize, String)>,
    first_audio: &Receiver<usize>,
    sh: &Shared,
    input_name: &str,
) -> Result<(), PipelineError> {
    let ends = Ends {
        voice,
        first_audio,
        sh,
    };
    let mut number = 0usize;
    let mut replied_turn = 0usize;
    // A reply begun at a pause, waiting for the listener to settle its turn.
    let mut tentative: Option<Tentative> = None;
    while let Ok(msg) = input.recv() {
        // A barge-in cut the last reply: the history keeps what was heard of it.
        for (turn, text) in heard_of_reply.try_iter() {
            if turn == replied_turn {
                if let Some(last) = brain
                    .history
                    .last_mut()
                    .filter(|m| m.role == Role::Assistant)
                {
                    last.content = text;
                }
            }
        }
        let (event, heard_at_ms) = match msg {
            ToBrain::Heard(event, at_ms) => (event, at_ms),
            ToBrain::Paused {
                transcript,
                held,
                at_ms,
            } => {
                number += 1;
                let rec = TurnRecord {
                    schema: SCHEMA_VERSION,
                    input: input_name.to_string(),
                    turn: number,
                    transcript: transcript.text.clone(),
                    ..TurnRecord::default()
                };
                let history_len = brain.history.len();
                let mut events = Vec::new();
                let answer = Answer {
                    turn: number,
                    text: transcript.text,
                    cancel: held.cancel.clone(),
                    held: Some(held),
                    heard_at_ms: at_ms,
                };
                answer.give(&mut brain, &ends, rec, Some(&mut events));
                tentative = Some(Tentative {
                    number,
                    history_len,
                    paused_at_ms: at_ms,
                    events,
                });
                continue;
            }
            ToBrain::End => break,
        };
        let turn = match event {
            Heard::SpeechStarted(_) => {
                sh.emit(LiveEvent::SpeechStarted);
                continue;
            }
            Heard::Partial(p) => {
                sh.emit(LiveEvent::Partial(p.text.clone()));
                // Only the newest partial is worth the compute.
                if brain.config.prefill_partials && input.is_empty() {
                    if let Err(e) = brain.prefill_partial(&p.stable) {
                        tracing::warn!("prefilling a partial transcript: {e}");
                    }
                }
                continue;
            }
            Heard::Paused(_) => continue,
            Heard::Resumed => {
                // The user went on: the reply begun at the pause never happened.
                if let Some(t) = tentative.take() {
                    brain.history.truncate(t.history_len);
                    if let Ok(mut records) = sh.records.lock() {
                        records.remove(&t.number);
                    }
                    number = t.number - 1;
                }
                continue;
            }
            Heard::Turn(t) => t,
        };
        if turn.transcript.text.is_empty() {
            continue;
        }
        let decided_ms = turn.turn.decided_ms();
        if let Some(t) = tentative.take() {
            // The turn the reply was begun for is decided: its audio is already playing.
            let (endpoint, speech_start, speech_end) = (
                turn.endpoint_ms,
                turn.turn.speech_start_ms(),
                turn.turn.speech_end_ms(),
            );
            sh.record(t.number, |r| {
                r.speech_start_ms = speech_start;
                r.speech_end_ms = speech_end;
                r.spans.endpoint = endpoint;
                r.spans.asr_final = (t.paused_at_ms - decided_ms).max(0.0);
                r.head_start_ms = (decided_ms - t.paused_at_ms).max(0.0);
                r.preemptive_dropped = turn.dropped_finals;
            });
            sh.emit(LiveEvent::Heard {
                turn: t.number,
                text: turn.transcript.text.clone(),
            });
            for event in t.events {
                sh.emit(event);
            }
            if brain.history.len() > t.history_len {
                replied_turn = t.number;
            }
        } else {
            number += 1;
            // A microphone's sample clock and the wall clock agree only to a few ms: a
            // transcript ready before the decision (on the sample clock) counts from the
            // decision, so the spans still add up.
            let heard_at_ms = heard_at_ms.max(decided_ms);
            let mut rec = TurnRecord {
                schema: SCHEMA_VERSION,
                input: input_name.to_string(),
                turn: number,
                transcript: turn.transcript.text.clone(),
                speech_start_ms: turn.turn.speech_start_ms(),
                speech_end_ms: turn.turn.speech_end_ms(),
                preemptive_dropped: turn.dropped_finals,
                ..TurnRecord::default()
            };
            rec.spans.endpoint = turn.endpoint_ms;
            rec.spans.asr_final = heard_at_ms - decided_ms;
            sh.emit(LiveEvent::Heard {
                turn: number,
                text: rec.transcript.clone(),
            });
            let history_len = brain.history.len();
            let answer = Answer {
                turn: number,
                text: turn.transcript.text.clone(),
                cancel: Cancel::new()?,
                held: None,
                heard_at_ms,
            };
            answer.give(&mut brain, &ends, rec, None);
            if brain.history.len() > history_len {
                replied_turn = number;
            }
        }
        let _ = voice.send(ToVoice::ReplyEnd(number));
        // While the reply plays, the conversation so far goes into the cache.
        if input.is_empty() {
            if let Err(e) = brain.prefill_next_turn() {
                tracing::warn!("prefilling the next turn: {e}");
            }
        }
    }
    Ok(())
}

/// A reply begun at a pause whose turn is not decided yet.
struct Tentative {
    number: usize,
    /// The history before the reply's user message, to go back to if it is dropped.
    history_len: usize,
    paused_at_ms: f64,
    /// What the front end is told once the turn is decided.
    events: Vec<LiveEvent>,
}

/// One turn's reply to give.
struct Answer {
    turn: usize,
    text: String,
    cancel: Cancel,
    held: Option<Arc<Held>>,
    /// When the transcript was in hand, ms on the input's clock.
    heard_at_ms: f64,
}

impl Answer {
    /// Generates the reply into the voice and keeps the exchange in the history (the user's
    /// message alone is taken back when the reply fails); `rec` becomes the turn's record.
    /// With `deferred`, the front end's events wait there instead of going out.
    fn give(
        self,
        brain: &mut Brain<'_>,
        ends: &Ends<'_>,
        mut rec: TurnRecord,
        deferred: Option<&mut Vec<LiveEvent>>,
    ) {
        let sh = ends.sh;
        if let Ok(mut records) = sh.records.lock() {
            records.insert(self.turn, rec.clone());
        }
        sh.first_audio_pending.store(true, Ordering::SeqCst);
        if let Ok(mut current) = sh.current.lock() {
            *current = Some((self.turn, self.cancel.clone()));
        }
        brain
            .history
            .push(ChatMessage::new(Role::User, self.text.clone()));
        let replied = reply(brain, &self, ends, &mut rec, deferred);
        sh.first_audio_pending.store(false, Ordering::SeqCst);
        match replied {
            Ok(text) => brain.history.push(ChatMessage::new(Role::Assistant, text)),
            Err(e) => {
                brain.history.pop();
                rec.error = Some(e.to_string());
            }
        }
        let (reply_text, spans, engine, error) = (rec.reply, rec.spans, rec.engine, rec.error);
        sh.record(self.turn, |r| {
            r.reply = reply_text;
            r.spans.llm_ttft = spans.llm_ttft;
            r.spans.first_clause = spans.first_clause;
            r.engine = engine;
            r.error = error;
        });
    }
}

/// Where the brain's reply goes, and the clock.
struct Ends<'a> {
    voice: &'a Sender<ToVoice>,
    first_audio: &'a Receiver<usize>,
    sh: &'a Shared,
}

/// On two cores the LLM decoding on and the first chunk's synthesis would halve each other's
/// speed, and the first audio is what the user waits for: generation pauses until it is out
/// (at most this long).
const FIRST_AUDIO_WAIT: Duration = Duration::from_millis(400);

/// Generates one reply, handing each chunk to the voice as the chunker completes it. Returns
/// the reply's text (as generated, or cut at a barge-in).
fn reply(
    brain: &mut Brain<'_>,
    answer: &Answer,
    ends: &Ends<'_>,
    rec: &mut TurnRecord,
    mut deferred: Option<&mut Vec<LiveEvent>>,
) -> Result<String, PipelineError> {
    let (voice, sh) = (ends.voice, ends.sh);
    let (turn, cancel, heard_at_ms) = (answer.turn, &answer.cancel, answer.heard_at_ms);
    let prompt = brain.fitted_prompt()?;
    let params = brain.generation_params();
    let max_sentences = brain.config.max_reply_sentences;
    let mut text = String::new();
    let mut chunker = Chunker::new();
    let mut first_token_ms = None;
    let mut chunks = 0usize;
    let mut send = |chunk: String, first_token: f64| {
        let now = sh.now_ms();
        let event = LiveEvent::Reply {
            turn,
            text: chunk.clone(),
        };
        match deferred.as_deref_mut() {
            Some(events) => events.push(event),
            None => sh.emit(event),
        }
        if chunks == 0 {
            rec.spans.llm_ttft = first_token - heard_at_ms;
            rec.spans.first_clause = now - first_token;
        }
        let _ = voice.send(ToVoice::Chunk {
            turn,
            text: chunk,
            text_at_ms: now,
            first: chunks == 0,
            cancel: cancel.clone(),
            held: answer.held.clone(),
        });
        if chunks == 0 {
            let deadline = Instant::now() + FIRST_AUDIO_WAIT;
            while let Ok(t) = ends.first_audio.recv_deadline(deadline) {
                if t == turn {
                    break;
                }
            }
        }
        chunks += 1;
    };
    let generation = {
        let _span = tracing::info_span!("llm", turn).entered();
        brain.session.generate(&prompt, &params, |piece| {
            let first = *first_token_ms.get_or_insert_with(|| sh.now_ms());
            text.push_str(piece);
            for chunk in chunker.push(piece) {
                send(chunk, first);
            }
            !cancel.is_cancelled()
                && (max_sentences == 0 || complete_sentences(&text).len() < max_sentences)
        })?
    };
    let reply_text = if cancel.is_cancelled() {
        generation.text.trim().to_string()
    } else if generation.stop == hark_llm::StopReason::Cancelled {
        // Stopped at the sentence limit.
        let sentences = complete_sentences(&generation.text);
        sentences[..max_sentences.min(sentences.len())].join(" ")
    } else {
        if let Some(rest) = chunker.finish() {
            send(rest, first_token_ms.unwrap_or_else(|| sh.now_ms()));
        }
        generation.text.trim().to_string()
    };
    if chunks == 0 && !cancel.is_cancelled() {
        return Err(
            TtsError::Synthesis(format!("nothing speakable in the reply {reply_text:?}")).into(),
        );
    }
    rec.reply = reply_text.clone();
    rec.engine = brain.figures(&generation);
    Ok(reply_text)
}

/// Synthesis: each chunk to audio, the reply's first chunk streamed piece by piece.
fn speak(
    voice: &mut Voice,
    input: &Receiver<ToVoice>,
    player: &Sender<ToPlayer>,
    first_audio: &Sender<usize>,
    sh: &Shared,
) -> Result<(), PipelineError> {
    loop {
        let (turn, text, text_at_ms, first, cancel, held) = match input.recv() {
            Ok(ToVoice::Chunk {
                turn,
                text,
                text_at_ms,
                first,
                cancel,
                held,
            }) => (turn, text, text_at_ms, first, cancel, held),
            Ok(ToVoice::ReplyEnd(turn)) => {
                let _ = player.send(ToPlayer::ReplyEnd(turn));
                continue;
            }
            Ok(ToVoice::End) | Err(_) => break,
        };
        if cancel.is_cancelled() {
            continue;
        }
        let mut chunk = Some((text.clone(), text_at_ms));
        let mut first_piece = first;
        let mut hand_on = |piece: &[f32]| {
            if piece.is_empty() {
                return;
            }
            if first_piece {
                sh.first_audio_pending.store(false, Ordering::SeqCst);
                let _ = first_audio.try_send(turn);
            }
            let _ = player.send(ToPlayer::Piece {
                turn,
                samples: piece.to_vec(),
                ready_ms: sh.now_ms(),
                chunk: chunk.take(),
                first_of_reply: std::mem::take(&mut first_piece),
                held: held.clone(),
            });
        };
        let _span = tracing::info_span!("tts_chunk", turn).entered();
        let result = if first {
            voice.stream_chunk(&text, &cancel, &mut hand_on)
        } else {
            voice.speak_chunk(&text, &cancel).inspect(|a| hand_on(a))
        };
        if first_piece {
            // Nothing came out (cancelled, or nothing speakable): nobody waits any longer.
            sh.first_audio_pending.store(false, Ordering::SeqCst);
            let _ = first_audio.try_send(turn);
        }
        match result {
            Ok(_) | Err(TtsError::Cancelled) => {}
            Err(e) => {
                tracing::warn!(turn, "synthesis failed: {e}");
                cancel.cancel();
                sh.record(turn, |r| r.error = Some(format!("speech synthesis: {e}")));
            }
        }
    }
    Ok(())
}

/// The speaker: each piece plays when it arrives, after what is already playing; a barge-in
/// cuts the reply at once (with a short fade) and reports what was heard of it. A preemptive
/// reply's pieces (and whatever follows them) wait until its turn is settled. Every piece goes
/// on the timeline and, when there is one, to the output device.
fn play(
    input: &Receiver<ToPlayer>,
    control: &Receiver<ToPlayerControl>,
    heard_of_reply: &Sender<(usize, String)>,
    sh: &Shared,
    mut output: Option<&mut (dyn LiveOutput + '_)>,
    (rate, sentence_silence): (u32, f32),
) -> Timeline {
    let mut timeline = Timeline::new(rate);
    let mut playing: Option<Playing> = None;
    let mut reply_of_turn: Vec<(usize, usize)> = Vec::new();
    let to_ms = |samples: usize| samples_to_ms(samples, rate);
    let to_samples = |ms: f64| (ms.max(0.0) * rate as f64 / 1000.0).ceil() as usize;
    // How much of the track the output has been given.
    let mut written = 0usize;
    let barge_in = |timeline: &mut Timeline,
                    playing: &mut Option<Playing>,
                    written: &mut usize,
                    output: &mut Option<&mut (dyn LiveOutput + '_)>,
                    c: ToPlayerControl| {
        let ToPlayerControl::BargeIn { at_ms } = c else {
            return; // a settled hold is looked at below
        };
        cut(timeline, playing, at_ms, heard_of_reply, sh);
        if let Some(out) = output.as_deref_mut() {
            out.stop();
        }
        *written = timeline.end();
    };
    // A preemptive reply's pieces and what came after them, waiting for its turn to be
    // settled; and what is settled, to be played before anything new.
    let mut held: VecDeque<ToPlayer> = VecDeque::new();
    let mut settled: VecDeque<ToPlayer> = VecDeque::new();
    let mut control_open = true;
    loop {
        if let Some(hold) = held.front().and_then(ToPlayer::held).cloned() {
            match hold.state() {
                HOLDING => {}
                RELEASED => settled.extend(held.drain(..)),
                _ => {
                    held.retain(|m| !m.held().is_some_and(|h| Arc::ptr_eq(h, &hold)));
                    settled.extend(held.drain(..));
                }
            }
        }
        let msg = match settled.pop_front() {
            Some(m) => Ok(m),
            // Control first: a barge-in overtakes queued audio.
            None if control_open => select! {
                recv(control) -> c => {
                    match c {
                        Ok(c) => barge_in(&mut timeline, &mut playing, &mut written, &mut output, c),
                        // The listener has ended; a closed channel would be ready forever.
                        Err(_) => control_open = false,
                    }
                    continue;
                }
                recv(input) -> m => m,
            },
            None => input.recv(),
        };
        if let Ok(c) = control.try_recv() {
            barge_in(&mut timeline, &mut playing, &mut written, &mut output, c);
        }
        let msg = match msg {
            Ok(m) if !held.is_empty() || m.held().is_some_and(|h| h.state() == HOLDING) => {
                held.push_back(m);
                continue;
            }
            Ok(m) if m.held().is_some_and(|h| h.state() == DROPPED) => continue,
            other => other,
        };
        let (turn, samples, ready_ms, chunk, first_of_reply) = match msg {
            Ok(ToPlayer::Piece {
                turn,
                samples,
                ready_ms,
                chunk,
                first_of_reply,
                ..
            }) => (turn, samples, ready_ms, chunk, first_of_reply),
            Ok(ToPlayer::ReplyEnd(turn)) => {
                if let Some(out) = output.as_deref_mut() {
                    out.end_of_reply();
                }
                sh.record(turn, count_from_decision);
                if let Some(rec) = sh.records.lock().ok().and_then(|r| r.get(&turn).cloned()) {
                    sh.emit(LiveEvent::TurnDone(Box::new(rec)));
                }
                continue;
            }
            Ok(ToPlayer::End) | Err(_) => break,
        };
        let now_ms = sh.now_ms();
        if first_of_reply {
            let start_ms = {
                let _span = tracing::info_span!("output", turn).entered();
                timeline.place(now_ms, &samples)
            };
            reply_of_turn.push((turn, timeline.replies().len() - 1));
            let (text, text_at_ms) = chunk.unwrap_or_default();
            playing = Some(Playing {
                turn,
                start: to_samples(start_ms),
                chunks: vec![(0, text)],
                cut: false,
            });
            // A sound card adds its own latency before the first sample is heard.
            let device_ms = output.as_deref().map_or(0.0, |o| o.latency_ms());
            sh.record(turn, |r| {
                r.spans.tts_first_audio = ready_ms - text_at_ms;
                r.spans.output = start_ms + device_ms - ready_ms;
                r.reply_start_ms = start_ms + device_ms;
                r.v2v_ms = r.reply_start_ms - r.speech_end_ms;
            });
        } else {
            let Some(p) = playing.as_mut().filter(|p| p.turn == turn && !p.cut) else {
                continue;
            };
            let mut at_ms = now_ms;
            if let Some((text, _)) = chunk {
                // A new chunk: the comma's or the sentence's pause first.
                let pause = match p.chunks.last() {
                    Some((_, prev)) if prev.trim_end().ends_with(['.', '!', '?']) => {
                        sentence_silence
                    }
                    _ => CLAUSE_SILENCE,
                };
                at_ms = at_ms.max(to_ms(timeline.end()) + pause as f64 * 1000.0);
                let at = to_samples(at_ms);
                p.chunks.push((at.max(timeline.end()) - p.start, text));
            } else if to_samples(now_ms) > timeline.end() {
                // The audio before it has already played out: a gap is heard.
                sh.late_pieces.fetch_add(1, Ordering::Relaxed);
            }
            timeline.extend_last(at_ms, &samples);
        }
        if let Some(out) = output.as_deref_mut() {
            // The piece ends the track; silence before it is written only where it is still
            // to come (time that has passed was silent on the device anyway).
            let end = timeline.end();
            let piece_start = end - samples.len();
            let from = written.max(to_samples(sh.now_ms()).min(piece_start));
            if let Err(e) = out.play(timeline.range(from, end)) {
                tracing::warn!(turn, "the speaker failed: {e}");
            }
            written = end;
            // What the speaker has been given is its own: a long conversation keeps only the
            // reply being played (a barge-in cuts it).
            if let Some(p) = &playing {
                timeline.forget_before(p.start);
            }
        }
        sh.speaking_until
            .store(to_ms(timeline.end()).to_bits(), Ordering::SeqCst);
    }
    if let Some(out) = output {
        // Finishing: what is queued plays out (unless stopped meanwhile).
        while !sh.control.is_stopped() && out.queued_ms() > 0.0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        out.stop();
    }
    for (turn, index) in reply_of_turn {
        if let Some(&(_, len)) = timeline.replies().get(index) {
            sh.record(turn, |r| r.reply_duration_ms = to_ms(len));
        }
    }
    timeline
}

/// A reply begun before its turn was decided counts only the work left after the decision:
/// each stage's interval (from the transcript at the pause on) is clipped to the decision, so
/// the spans still add up to V2V, and `head_start_ms` says how much was done before.
fn count_from_decision(r: &mut TurnRecord) {
    if r.head_start_ms > 0.0 {
        let decided = r.speech_end_ms + r.spans.endpoint;
        let mut at = decided - r.head_start_ms;
        tracing::debug!(
            turn = r.turn,
            transcript_ms = at - r.speech_end_ms,
            llm_ttft_ms = r.spans.llm_ttft,
            first_clause_ms = r.spans.first_clause,
            tts_first_audio_ms = r.spans.tts_first_audio,
            prefill_tokens = r.engine.prefill_tokens,
            reply = %r.reply,
            "a reply begun at the pause, from the speech's end"
        );
        let spans = &mut r.spans;
        for span in [
            &mut spans.llm_ttft,
            &mut spans.first_clause,
            &mut spans.tts_first_audio,
            &mut spans.output,
        ] {
            let end = at + *span;
            *span = (end - at.max(decided)).max(0.0);
            at = end;
        }
    }
    if r.reply_start_ms > 0.0 {
        r.v2v_ms = r.reply_start_ms - r.speech_end_ms;
    }
}

/// The reply the player is playing.
struct Playing {
    turn: usize,
    /// Where it starts on the track, samples.
    start: usize,
    /// Where each chunk starts in it (samples) and its text.
    chunks: Vec<(usize, String)>,
    /// A barge-in stopped it: later pieces are dropped.
    cut: bool,
}

/// A barge-in at `at_ms`: the playing reply stops there and the brain learns what was heard.
fn cut(
    timeline: &mut Timeline,
    playing: &mut Option<Playing>,
    at_ms: f64,
    heard_of_reply: &Sender<(usize, String)>,
    sh: &Shared,
) {
    let Some(p) = playing.as_mut().filter(|p| !p.cut) else {
        return;
    };
    if let Some(played_ms) = timeline.cut_last_at(at_ms) {
        p.cut = true;
        let played = (played_ms * timeline.sample_rate() as f64 / 1000.0) as usize;
        let _ = heard_of_reply.send((p.turn, heard_part(&p.chunks, played)));
        sh.speaking_until.store(at_ms.to_bits(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_audio::device::PlaybackLevel;

    #[test]
    fn a_partial_is_moot_once_the_voice_changes_a_final_decode_once_voice_returns() {
        let turn = hark_audio::TurnConfig::default();
        let listen = crate::listen::ListenConfig::default();
        let counters = VoiceCounters::default();
        let mut voice = VoiceTracker::default();
        let mut hear = |p: f32| voice.hear(p, false, &turn, &listen, &counters);
        assert!(hear(0.9).0, "speech begins");
        let (_, partial) = hear(0.95);
        assert!(partial.full_voice && !partial.moot(&counters));
        // The voice fades: the partial is moot; the final decode made now is not.
        let (began, fading) = hear(0.6);
        assert!(!began && !fading.full_voice);
        assert!(partial.moot(&counters) && !fading.moot(&counters));
        // Silence follows: it stands, and so does one made at the pause ...
        let (_, pause) = hear(0.1);
        assert!(!fading.moot(&counters) && !pause.moot(&counters));
        // ... until the user speaks again.
        assert!(hear(0.9).0);
        assert!(fading.moot(&counters) && pause.moot(&counters));
        // A fading decode followed by more voice is moot at once.
        let (_, fading) = hear(0.5);
        hear(0.4);
        assert!(fading.moot(&counters));
        // Full voice in a window that ends in digital silence: the partial is moot, and the
        // final decode made now stands while silence follows.
        let (_, partial) = hear(0.99);
        let (_, stopped) = voice.hear(0.99, true, &turn, &listen, &counters);
        assert!(!stopped.full_voice && partial.moot(&counters));
        voice.hear(0.0, false, &turn, &listen, &counters);
        assert!(!stopped.moot(&counters));
    }

    #[test]
    fn the_echo_gate_learns_the_echo_path_and_lets_louder_speech_through() {
        let level = PlaybackLevel::default();
        let mut gate = EchoGate::new(level.clone(), 10.0);
        // Nothing playing: everything gets through.
        assert!(gate.passes(0.001, WINDOW));
        // Playing at 0.2 with an echo path of -12 dB (0.25): the echo is learned and gated.
        level.set(0.2);
        let echo = 0.2 * 0.25;
        let gated = (0..50).filter(|_| !gate.passes(echo, WINDOW)).count();
        assert_eq!(gated, 50, "the echo itself never gets through");
        assert!((gate.echo_gain - 0.25).abs() < 0.05, "{}", gate.echo_gain);
        // Speech 6 dB above the echo is not enough; 14 dB above it is.
        assert!(!gate.passes(echo * 2.0, WINDOW));
        assert!(gate.passes(echo * 5.0, WINDOW));
        // Before it has heard the echo path, the gate holds back anything below the playback.
        let mut fresh = EchoGate::new(level, 10.0);
        assert!(!fresh.passes(0.15, WINDOW));
    }
}
