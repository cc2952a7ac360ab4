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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use hark_asr::Transcriber;
use hark_audio::vad::WINDOW;
use hark_audio::TurnDetector;
use hark_core::audio::samples_to_ms;
use hark_core::{TurnRecord, ASR_SAMPLE_RATE, SCHEMA_VERSION};
use hark_llm::{ChatMessage, Role};
use hark_tts::text::Chunker;
use hark_tts::{Cancel, TtsError, Voice};

use crate::brain::{heard_part, Brain};
use crate::listen::{Heard, Listener, WallClock};
use crate::timeline::Timeline;
use crate::{complete_sentences, PipelineError, CLAUSE_SILENCE};

/// What the stages share: the clock, the reply being spoken, and the turn records.
struct Shared {
    start: Instant,
    /// Until when the player has audio placed, ms (f64 bits): the user speaking before then is
    /// a barge-in.
    speaking_until: AtomicU64,
    /// Flips of the voice activity detector's speech/silence state so far, and the count a
    /// decode started from: a flip since then abandons it.
    flips: AtomicU64,
    decode_base: AtomicU64,
    /// A reply's first audio is being made: recognition holds back meanwhile (see `hear`).
    first_audio_pending: AtomicBool,
    /// The reply in progress and its cancel switch.
    current: Mutex<Option<(usize, Cancel)>>,
    records: Mutex<BTreeMap<usize, TurnRecord>>,
    /// Windows the input had to wait for because the listener was behind (a full channel).
    overruns: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    fn record(&self, turn: usize, update: impl FnOnce(&mut TurnRecord)) {
        if let Ok(mut records) = self.records.lock() {
            if let Some(rec) = records.get_mut(&turn) {
                update(rec);
            }
        }
    }
}

enum ToEar {
    Window {
        samples: Vec<f32>,
        p: f32,
        flips: u64,
    },
    End,
}

enum ToBrain {
    /// What the listener heard, and when (ms on the input's clock).
    Heard(Heard, f64),
    End,
}

enum ToVoice {
    Chunk {
        turn: usize,
        text: String,
        text_at_ms: f64,
        first: bool,
        cancel: Cancel,
    },
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
    },
    End,
}

/// The user spoke over the reply at `at_ms`.
struct BargeIn {
    at_ms: f64,
}

/// The stages a live run borrows from the pipeline.
pub(crate) struct Stages<'a> {
    pub brain: Brain<'a>,
    pub turns: &'a mut TurnDetector,
    pub asr: &'a mut Transcriber,
    pub voice: &'a mut Voice,
}

/// Runs `heard` (16 kHz mono) through the stages, fed at real-time pace. Returns the turn
/// records in order and the replies on the input's clock.
pub(crate) fn run(
    stages: Stages<'_>,
    heard: &[f32],
    input_name: &str,
) -> Result<(Vec<TurnRecord>, Timeline), PipelineError> {
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
        flips: AtomicU64::new(0),
        decode_base: AtomicU64::new(0),
        first_audio_pending: AtomicBool::new(false),
        current: Mutex::new(None),
        records: Mutex::new(BTreeMap::new()),
        overruns: AtomicU64::new(0),
    });
    let (vad_tx, vad_rx) = bounded::<Option<Vec<f32>>>(16);
    // About a minute of windows: the listener falls behind while it decodes, then catches up.
    let (ear_tx, ear_rx) = bounded::<ToEar>(2048);
    let (brain_tx, brain_rx) = bounded::<ToBrain>(256);
    let (voice_tx, voice_rx) = bounded::<ToVoice>(64);
    let (player_tx, player_rx) = bounded::<ToPlayer>(256);
    let (control_tx, control_rx) = unbounded::<BargeIn>();
    let (heard_tx, heard_rx) = unbounded::<(usize, String)>();
    // The voice tells the brain a reply's first audio is out (see `reply`).
    let (first_audio_tx, first_audio_rx) = bounded::<usize>(16);

    let timeline = std::thread::scope(|s| {
        let sh = &shared;
        let feeder = s.spawn(move || feed(heard, &vad_tx, sh));
        let vad =
            s.spawn(move || listen_for_voice(turns, &vad_rx, &ear_tx, &control_tx, sh, &turn_cfg));
        let ear = s.spawn(move || {
            let result = hear(asr, &ear_rx, &brain_tx, sh, &turn_cfg, &listen_cfg);
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
                rate,
                sentence_silence,
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
    let overruns = shared.overruns.load(Ordering::Relaxed);
    if overruns > 0 {
        tracing::warn!(overruns, "input windows waited for the listener");
    }
    let records = shared
        .records
        .lock()
        .map_err(|_| PipelineError::Stage("turn records poisoned".into()))?
        .values()
        .cloned()
        .collect();
    Ok((records, timeline))
}

/// The simulated microphone: each window is handed on when it has been "captured".
fn feed(heard: &[f32], out: &Sender<Option<Vec<f32>>>, sh: &Shared) -> Result<(), PipelineError> {
    let mut fed = 0usize;
    for window in heard.chunks(WINDOW) {
        fed += window.len();
        let due = sh.start + Duration::from_secs_f64(fed as f64 / ASR_SAMPLE_RATE as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if out.send(Some(window.to_vec())).is_err() {
            break;
        }
    }
    let _ = out.send(None);
    Ok(())
}

/// Voice activity for each window; flips the speech state for the listener's abort check and
/// raises a barge-in when the user speaks while a reply is audible.
fn listen_for_voice(
    turns: &mut TurnDetector,
    input: &Receiver<Option<Vec<f32>>>,
    ear: &Sender<ToEar>,
    control: &Sender<BargeIn>,
    sh: &Shared,
    cfg: &hark_audio::TurnConfig,
) -> Result<(), PipelineError> {
    turns.start_stream();
    let mut speech = false;
    while let Ok(Some(window)) = input.recv() {
        let p = turns.next_probability(&window)?;
        if (speech && p < cfg.neg_threshold) || (!speech && p >= cfg.threshold) {
            speech = !speech;
            sh.flips.fetch_add(1, Ordering::SeqCst);
            let now_ms = sh.now_ms();
            let playing_until = f64::from_bits(sh.speaking_until.load(Ordering::SeqCst));
            if speech && now_ms < playing_until {
                if let Some((turn, cancel)) = sh.current.lock().ok().and_then(|mut c| c.take()) {
                    cancel.cancel();
                    tracing::info!(turn, at_ms = now_ms, "barge-in: the reply stops");
                    let _ = control.send(BargeIn { at_ms: now_ms });
                }
            }
        }
        let msg = ToEar::Window {
            samples: window,
            p,
            flips: sh.flips.load(Ordering::SeqCst),
        };
        match ear.try_send(msg) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(msg)) => {
                sh.overruns.fetch_add(1, Ordering::Relaxed);
                if ear.send(msg).is_err() {
                    break;
                }
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => break,
        }
    }
    let _ = ear.send(ToEar::End);
    Ok(())
}

/// The longest recognition holds back for a reply's first audio.
const MAX_HOLD: Duration = Duration::from_millis(500);

/// The listener on the input's clock: partials, the final decode at the pause, the turn end.
fn hear(
    asr: &mut Transcriber,
    input: &Receiver<ToEar>,
    brain: &Sender<ToBrain>,
    sh: &Arc<Shared>,
    turn_cfg: &hark_audio::TurnConfig,
    listen_cfg: &crate::listen::ListenConfig,
) -> Result<(), PipelineError> {
    let watch = Arc::clone(sh);
    asr.set_abort(Some(Arc::new(move || {
        watch.flips.load(Ordering::SeqCst) != watch.decode_base.load(Ordering::SeqCst)
    })));
    let clock = WallClock { start: sh.start };
    let mut listener = Listener::new(turn_cfg, listen_cfg, None);
    let mut samples = Vec::new();
    let mut heard = Vec::new();
    let result = (|| {
        while let Ok(msg) = input.recv() {
            // While a reply's first audio is being made, a decode here would halve its speed
            // on two cores; the windows wait in the channel (the voice activity detector, which
            // raises barge-ins, runs on regardless).
            let held = Instant::now();
            while sh.first_audio_pending.load(Ordering::SeqCst) && held.elapsed() < MAX_HOLD {
                std::thread::sleep(Duration::from_millis(2));
            }
            match msg {
                ToEar::Window {
                    samples: window,
                    p,
                    flips,
                } => {
                    samples.extend_from_slice(&window);
                    sh.decode_base.store(flips, Ordering::SeqCst);
                    if let Err(e) = listener.push(p, &samples, asr, &clock, &mut heard) {
                        tracing::warn!("recognition failed; the turn goes on: {e}");
                    }
                }
                ToEar::End => {
                    sh.decode_base
                        .store(sh.flips.load(Ordering::SeqCst), Ordering::SeqCst);
                    listener.finish(&samples, asr, &clock, &mut heard)?;
                }
            }
            for h in heard.drain(..) {
                if brain.send(ToBrain::Heard(h, sh.now_ms())).is_err() {
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
/// chunks, the history kept to what was heard.
fn think(
    mut brain: Brain<'_>,
    input: &Receiver<ToBrain>,
    voice: &Sender<ToVoice>,
    heard_of_reply: &Receiver<(usize, String)>,
    first_audio: &Receiver<usize>,
    sh: &Shared,
    input_name: &str,
) -> Result<(), PipelineError> {
    let mut number = 0usize;
    let mut replied_turn = 0usize;
    while let Ok(ToBrain::Heard(event, heard_at_ms)) = input.recv() {
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
        let turn = match event {
            Heard::SpeechStarted(_) => continue,
            Heard::Partial(p) => {
                // Only the newest partial is worth the compute.
                if brain.config.prefill_partials && input.is_empty() {
                    if let Err(e) = brain.prefill_partial(&p.stable) {
                        tracing::warn!("prefilling a partial transcript: {e}");
                    }
                }
                continue;
            }
            Heard::Turn(t) => t,
        };
        if turn.transcript.text.is_empty() {
            continue;
        }
        number += 1;
        let decided_ms = turn.turn.decided_ms();
        let mut rec = TurnRecord {
            schema: SCHEMA_VERSION,
            input: input_name.to_string(),
            turn: number,
            transcript: turn.transcript.text.clone(),
            speech_start_ms: turn.turn.speech_start_ms(),
            speech_end_ms: turn.turn.speech_end_ms(),
            ..TurnRecord::default()
        };
        rec.spans.endpoint = turn.endpoint_ms;
        rec.spans.asr_final = (heard_at_ms - decided_ms).max(0.0);
        if let Ok(mut records) = sh.records.lock() {
            records.insert(number, rec.clone());
        }
        let cancel = Cancel::new()?;
        sh.first_audio_pending.store(true, Ordering::SeqCst);
        if let Ok(mut current) = sh.current.lock() {
            *current = Some((number, cancel.clone()));
        }
        brain
            .history
            .push(ChatMessage::new(Role::User, turn.transcript.text.clone()));
        let ends = Ends {
            voice,
            first_audio,
            sh,
        };
        let replied = reply(&mut brain, number, &cancel, &ends, heard_at_ms, &mut rec);
        sh.first_audio_pending.store(false, Ordering::SeqCst);
        match replied {
            Ok(text) => {
                brain.history.push(ChatMessage::new(Role::Assistant, text));
                replied_turn = number;
            }
            Err(e) => {
                brain.history.pop();
                rec.error = Some(e.to_string());
            }
        }
        let (reply_text, spans, engine, error) = (
            rec.reply.clone(),
            rec.spans,
            rec.engine.clone(),
            rec.error.clone(),
        );
        sh.record(number, |r| {
            r.reply = reply_text;
            r.spans.llm_ttft = spans.llm_ttft;
            r.spans.first_clause = spans.first_clause;
            r.engine = engine;
            r.error = error;
        });
        // While the reply plays, the conversation so far goes into the cache.
        if input.is_empty() {
            if let Err(e) = brain.prefill_next_turn() {
                tracing::warn!("prefilling the next turn: {e}");
            }
        }
    }
    Ok(())
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
    turn: usize,
    cancel: &Cancel,
    ends: &Ends<'_>,
    heard_at_ms: f64,
    rec: &mut TurnRecord,
) -> Result<String, PipelineError> {
    let (voice, sh) = (ends.voice, ends.sh);
    let prompt = brain.fitted_prompt()?;
    let params = brain.generation_params();
    let max_sentences = brain.config.max_reply_sentences;
    let mut text = String::new();
    let mut chunker = Chunker::new();
    let mut first_token_ms = None;
    let mut chunks = 0usize;
    let mut send = |chunk: String, first_token: f64| {
        let now = sh.now_ms();
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
    while let Ok(ToVoice::Chunk {
        turn,
        text,
        text_at_ms,
        first,
        cancel,
    }) = input.recv()
    {
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
/// cuts the reply at once (with a short fade) and reports what was heard of it.
fn play(
    input: &Receiver<ToPlayer>,
    control: &Receiver<BargeIn>,
    heard_of_reply: &Sender<(usize, String)>,
    sh: &Shared,
    rate: u32,
    sentence_silence: f32,
) -> Timeline {
    let mut timeline = Timeline::new(rate);
    let mut playing: Option<Playing> = None;
    let mut reply_of_turn: Vec<(usize, usize)> = Vec::new();
    let to_ms = |samples: usize| samples_to_ms(samples, rate);
    loop {
        // Control first: a barge-in overtakes queued audio.
        let msg = select! {
            recv(control) -> c => { if let Ok(c) = c { cut(&mut timeline, &mut playing, c.at_ms, heard_of_reply, sh); } continue; }
            recv(input) -> m => m,
        };
        if let Ok(c) = control.try_recv() {
            cut(&mut timeline, &mut playing, c.at_ms, heard_of_reply, sh);
        }
        let Ok(ToPlayer::Piece {
            turn,
            samples,
            ready_ms,
            chunk,
            first_of_reply,
        }) = msg
        else {
            break;
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
                start: (start_ms * rate as f64 / 1000.0).round() as usize,
                chunks: vec![(0, text)],
                cut: false,
            });
            sh.record(turn, |r| {
                r.spans.tts_first_audio = ready_ms - text_at_ms;
                r.spans.output = start_ms - ready_ms;
                r.reply_start_ms = start_ms;
                r.v2v_ms = start_ms - r.speech_end_ms;
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
                at_ms = at_ms.max(to_ms(timeline.track().len()) + pause as f64 * 1000.0);
                let at = (at_ms * rate as f64 / 1000.0).ceil() as usize;
                p.chunks
                    .push((at.max(timeline.track().len()) - p.start, text));
            }
            timeline.extend_last(at_ms, &samples);
        }
        sh.speaking_until
            .store(to_ms(timeline.track().len()).to_bits(), Ordering::SeqCst);
    }
    for (turn, index) in reply_of_turn {
        if let Some(&(_, len)) = timeline.replies().get(index) {
            sh.record(turn, |r| r.reply_duration_ms = to_ms(len));
        }
    }
    timeline
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
