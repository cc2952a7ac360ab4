//! The listener: where turns end and what was said, from voice activity and streaming
//! recognition together, on the input's sample clock.
//!
//! The recogniser does not wait for the turn to be over. While the user speaks it decodes the
//! growing utterance every hop (partials, committed word by word by local agreement). The moment
//! the voice activity detector hears silence begin, it decodes the utterance as it stands: if
//! the silence lasts, that is the final transcript, ready before or soon after the turn is
//! decided; if the user speaks again, it is dropped. That transcript also sets how long a silence
//! ends the turn: short after a finished sentence, long after "I'd like to go to the", the
//! default when it says neither; until it is known, only the long silence ends a turn (the reply
//! could not start without it anyway).
//!
//! Offline, every decode really runs and its measured time is placed on the sample clock: a
//! decode starts when its audio has arrived and the recogniser is free, and ends its measured
//! time later. A decode still running when silence begins is abandoned (whisper.cpp's abort
//! callback stops one within a graph node), so the final decode starts at once.

use std::time::Instant;

use hark_asr::{EncoderWindow, LocalAgreement, StreamConfig, Transcriber, Transcript};
use hark_audio::turns::{noise_floor_db, precise_speech_end};
use hark_audio::vad::WINDOW;
use hark_audio::{Turn, TurnConfig};
use hark_core::audio::samples_to_ms;
use hark_core::ASR_SAMPLE_RATE;

/// How the listener decides turns and runs recognition.
#[derive(Debug, Clone, Copy)]
pub struct ListenConfig {
    /// End-of-turn silence after a transcript that reads as a finished sentence, ms.
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
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            finished_end_silence_ms: 300.0,
            unfinished_end_silence_ms: 1000.0,
            partials: false,
            stream: StreamConfig::default(),
            window: hark_asr::FITTED_WINDOW,
            final_threads: hark_asr::default_threads(),
        }
    }
}

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

/// A decode on the sample clock: its result and when it is ready.
struct Candidate {
    transcript: Transcript,
    started_ms: f64,
    ready_ms: f64,
}

/// The turn being heard.
struct Open {
    start: usize,
    last_speech: usize,
    silent: usize,
    next_hop: usize,
    agreement: LocalAgreement,
    partials: Vec<Partial>,
    decode_ms: f64,
    candidate: Option<Candidate>,
    dropped_finals: usize,
}

fn ms(samples: usize) -> f64 {
    samples_to_ms(samples, ASR_SAMPLE_RATE)
}

/// Turns and transcripts of `samples` (16 kHz mono), given the VAD's speech probability for
/// each [`WINDOW`] of them. `turn` holds the voice-activity thresholds, the end-of-turn silence
/// used while the transcript does not say otherwise, the shortest turn and the pre-roll.
pub fn listen(
    probs: &[f32],
    samples: &[f32],
    asr: &mut Transcriber,
    turn: &TurnConfig,
    cfg: &ListenConfig,
) -> Result<Vec<HeardTurn>, hark_asr::AsrError> {
    let c = turn;
    let pre_roll = hark_core::audio::ms_to_samples(c.pre_roll_ms, ASR_SAMPLE_RATE);
    let min_speech = hark_core::audio::ms_to_samples(c.min_speech_ms, ASR_SAMPLE_RATE);
    let floor_db = noise_floor_db(samples);
    let mut heard = Vec::new();
    // When the recogniser is next free, ms on the input's clock.
    let mut free_ms = 0f64;
    let mut open: Option<Open> = None;

    for (i, &p) in probs.iter().enumerate() {
        // This window's probability is known once the window has arrived.
        let now = ((i + 1) * WINDOW).min(samples.len());
        let now_ms = ms(now);
        let Some(o) = open.as_mut() else {
            if p >= c.threshold {
                open = Some(Open {
                    start: i * WINDOW,
                    last_speech: i,
                    silent: 0,
                    next_hop: i * WINDOW + cfg.stream.min_samples,
                    agreement: LocalAgreement::default(),
                    partials: Vec::new(),
                    decode_ms: 0.0,
                    candidate: None,
                    dropped_finals: 0,
                });
            }
            continue;
        };
        let audio_start = o.start.saturating_sub(pre_roll);
        if p >= c.neg_threshold {
            // Speech (again): a final decode made at the pause no longer applies.
            if o.candidate.take().is_some_and(|c| c.ready_ms <= now_ms) {
                o.dropped_finals += 1;
            }
            o.last_speech = i;
            o.silent = 0;
            if cfg.partials && now >= o.next_hop && free_ms <= now_ms {
                let t = Instant::now();
                let text =
                    asr.transcribe_partial(&samples[audio_start..now], cfg.stream.threads)?;
                let spent = t.elapsed().as_secs_f64() * 1000.0;
                o.decode_ms += spent;
                free_ms = now_ms + spent;
                o.next_hop = now + cfg.stream.hop_samples;
                if let Some(text) = text {
                    o.agreement.update(&text);
                    o.partials.push(Partial {
                        ready_ms: free_ms,
                        audio_ms: now_ms,
                        text,
                        stable: o.agreement.stable(),
                    });
                }
            }
            continue;
        }
        o.silent += 1;
        // A burst shorter than a turn (a cough, a click) is never decoded: it will be dropped.
        let long_enough = ((o.last_speech + 1) * WINDOW).min(samples.len()) - o.start >= min_speech;
        if o.silent == 1 && long_enough {
            // Silence begins: abandon whatever is decoding and decode the utterance as it is.
            o.partials.retain(|p| p.ready_ms <= now_ms);
            let t = Instant::now();
            let transcript =
                asr.transcribe_with(&samples[audio_start..now], cfg.window, cfg.final_threads)?;
            let spent = t.elapsed().as_secs_f64() * 1000.0;
            o.decode_ms += spent;
            free_ms = now_ms + spent;
            o.candidate = Some(Candidate {
                transcript,
                started_ms: now_ms,
                ready_ms: free_ms,
            });
        }
        // The transcript decides how long a silence ends the turn; until it is known only the
        // longest silence does. Waiting for it costs nothing: the reply needs it anyway.
        let required_ms = match &o.candidate {
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
        };
        if ms(o.silent * WINDOW) < required_ms && i + 1 < probs.len() {
            continue;
        }
        // The turn is over (or the input is).
        let o = open.take().expect("open turn");
        let vad_end = ((o.last_speech + 1) * WINDOW).min(samples.len());
        // No final decode ran for a burst too short to be a turn.
        let Some(cand) = o.candidate else {
            continue;
        };
        let turn = Turn {
            audio_start,
            speech_start: o.start,
            speech_end: precise_speech_end(samples, o.start, vad_end, floor_db),
            decided_at: now,
        };
        heard.push(HeardTurn {
            endpoint_ms: turn.decided_ms() - turn.speech_end_ms(),
            asr_final_ms: (cand.ready_ms - now_ms).max(0.0),
            final_started_ms: cand.started_ms,
            final_spent_ms: cand.ready_ms - cand.started_ms,
            transcript: cand.transcript,
            partials: o.partials,
            decode_ms: o.decode_ms,
            dropped_finals: o.dropped_finals,
            turn,
        });
    }
    // Speech running to the end of the input: the input's end decides the turn.
    if let Some(o) = open {
        let end = samples.len();
        let vad_end = ((o.last_speech + 1) * WINDOW).min(end);
        if vad_end.saturating_sub(o.start) >= min_speech {
            let audio_start = o.start.saturating_sub(pre_roll);
            let begin_ms = free_ms.max(ms(end));
            let t = Instant::now();
            let transcript =
                asr.transcribe_with(&samples[audio_start..end], cfg.window, cfg.final_threads)?;
            let spent = t.elapsed().as_secs_f64() * 1000.0;
            let turn = Turn {
                audio_start,
                speech_start: o.start,
                speech_end: precise_speech_end(samples, o.start, vad_end, floor_db),
                decided_at: end,
            };
            heard.push(HeardTurn {
                endpoint_ms: turn.decided_ms() - turn.speech_end_ms(),
                asr_final_ms: begin_ms + spent - ms(end),
                transcript,
                partials: o.partials,
                decode_ms: o.decode_ms + spent,
                final_started_ms: begin_ms,
                final_spent_ms: spent,
                dropped_finals: o.dropped_finals,
                turn,
            });
        }
    }
    Ok(heard)
}

#[cfg(test)]
mod tests {
    use super::{completion, Completion};

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
