//! The conversation: finds each spoken turn, recognises it, answers it with the LLM, speaks the
//! answer, and measures every part of the way (see `hark_core::trace`).
//!
//! An input runs one of two ways:
//! - live ([`Pipeline::run_live`], [`Pipeline::process_realtime`]; [`live`]): the audio arrives
//!   at real-time pace (a microphone, or a recording paced like one) and the stages run
//!   concurrently on their own threads, joined by bounded channels, every latency on the wall
//!   clock;
//! - on the input's sample clock ([`Pipeline::process`]), as fast as the machine allows: the
//!   listener ([`listen`]) decodes where the audio would have arrived, and each stage's measured
//!   compute time is added to the clock.

mod brain;
mod config;
pub mod listen;
pub mod live;
mod timeline;

use std::time::Instant;

use hark_asr::{AsrConfig, Transcriber};
use hark_audio::{resample, SileroVad, Turn, TurnDetector};
use hark_core::{AudioBuffer, TurnRecord, ASR_SAMPLE_RATE, SCHEMA_VERSION};
use hark_llm::{ChatMessage, Engine, Role, Session, StopReason};
use hark_tts::text::Chunker;
use hark_tts::Voice;

pub use config::{ModelPaths, PipelineConfig};
pub use hark_asr::{EncoderWindow, FITTED_WINDOW};
pub use timeline::Timeline;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Audio(#[from] hark_audio::AudioError),
    #[error("speech recognition: {0}")]
    Asr(#[from] hark_asr::AsrError),
    #[error("language model: {0}")]
    Llm(#[from] hark_llm::LlmError),
    #[error("speech synthesis: {0}")]
    Tts(#[from] hark_tts::TtsError),
    #[error(transparent)]
    Onnx(#[from] hark_core::onnx::OnnxError),
    /// A stage of the live pipeline failed as a whole.
    #[error("{0}")]
    Stage(String),
}

/// What one input produced.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub turns: Vec<TurnRecord>,
    /// The input as heard, 16 kHz mono.
    pub heard: AudioBuffer,
    /// Every reply on the input's clock, at the voice's rate (silence between replies).
    pub timeline: Timeline,
}

impl Conversation {
    /// The replies back to back with a short pause between them: what `--out` writes.
    pub fn replies(&self) -> AudioBuffer {
        self.timeline.replies_back_to_back(0.5)
    }
}

/// Every model loaded and warmed, and the conversation so far.
pub struct Pipeline {
    config: PipelineConfig,
    turns: TurnDetector,
    asr: Transcriber,
    engine: Engine,
    session: Session,
    voice: Voice,
    history: Vec<ChatMessage>,
    startup_ms: f64,
    /// The last reply's chunks: where each starts in its audio (samples) and its text, to know
    /// what was heard when the user interrupts.
    last_reply: Vec<(usize, String)>,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Pipeline {
    /// Loads every model and runs each once, so no turn pays for a cold start.
    pub fn load(config: PipelineConfig) -> Result<Self, PipelineError> {
        let started = Instant::now();
        let paths = &config.models;
        hark_core::onnx::init(&paths.onnxruntime)?;
        let vad = SileroVad::load(&paths.vad)?;
        let turns = TurnDetector::new(vad, config.turn);
        let asr = Transcriber::load(
            &paths.whisper,
            AsrConfig {
                threads: config.threads,
                window: config.asr_window,
                ..AsrConfig::default()
            },
        )?;
        let engine = Engine::load(&paths.llm, config.context, config.threads)?;
        let session = engine.new_session()?;
        let voice = Voice::load(
            &paths.voice,
            &paths.voice_config,
            &paths.espeak_data,
            config.threads,
        )?;
        let mut pipeline = Pipeline {
            config,
            turns,
            asr,
            engine,
            session,
            voice,
            history: Vec::new(),
            startup_ms: 0.0,
            last_reply: Vec::new(),
        };
        pipeline.warm_up()?;
        pipeline.startup_ms = ms_since(started);
        tracing::info!(startup_ms = pipeline.startup_ms, "pipeline ready");
        Ok(pipeline)
    }

    fn warm_up(&mut self) -> Result<(), PipelineError> {
        let second = AudioBuffer::silence(1000.0, ASR_SAMPLE_RATE);
        self.turns.probabilities(&second.samples)?;
        // The system prompt and the first user message's header stay in the cache: every turn
        // starts from them, so the first turn's prefill at the pause is its words alone, as
        // every later turn's is. (`sync` keeps the prefix the next prompt shares.)
        self.brain().prefill_next_turn()?;
        // Whisper is loaded but not run here. whisper.cpp's threads come from OpenMP, which
        // gives the thread that runs it a team of its own; a decode of speech on this thread
        // made every live decode (on the listener's thread) 2-3 times as long (the bundled
        // questions: 170-290 against 80-135 ms, measured). A fresh model's first decode costs
        // no more than the next ones anyway. (A silent second, which this once decoded, is not
        // run through Whisper at all: `hark_asr::is_silent`.)
        self.voice.synthesize("Hello.")?;
        self.reset_phrases()?;
        Ok(())
    }

    /// Empties the voice's phrase cache back to what start-up put there (the acknowledgements):
    /// a benchmark's next round then synthesises its replies as the first round did, instead of
    /// finding them spoken already.
    pub fn reset_phrases(&mut self) -> Result<(), PipelineError> {
        self.voice.set_cache_bytes(hark_tts::DEFAULT_CACHE_BYTES);
        self.voice.warm_phrases(&hark_tts::ACKNOWLEDGEMENTS)?;
        Ok(())
    }

    pub fn startup_ms(&self) -> f64 {
        self.startup_ms
    }

    /// Forgets the conversation; the cache keeps the system prompt and the next user message's
    /// header, as at start-up.
    pub fn reset(&mut self) -> Result<(), PipelineError> {
        self.history.clear();
        self.brain().prefill_next_turn()
    }

    fn brain(&mut self) -> brain::Brain<'_> {
        brain::Brain {
            config: &self.config,
            engine: &self.engine,
            session: &mut self.session,
            history: &mut self.history,
        }
    }

    /// Prefills the next user message as far as `stable`, the part of what the user is saying
    /// that streaming recognition has committed: the cache then holds the system prompt, the
    /// conversation so far and the start of the message, so at the turn's end only the rest is
    /// computed. A revised partial rolls the cache back to where the tokens differ
    /// (`Session::sync` keeps only the common prefix), so nothing stale is left for the reply.
    /// Returns how many tokens were computed.
    pub fn prefill_partial(&mut self, stable: &str) -> Result<usize, PipelineError> {
        self.brain().prefill_partial(stable)
    }

    /// Answers a typed turn: the reply's text, its audio and the turn's LLM and TTS figures
    /// (there is no speech, so no endpoint or recognition spans).
    pub fn respond(&mut self, text: &str) -> Result<(TurnRecord, AudioBuffer), PipelineError> {
        let mut rec = TurnRecord {
            schema: SCHEMA_VERSION,
            turn: self.history.len() / 2 + 1,
            transcript: text.to_string(),
            ..TurnRecord::default()
        };
        let audio = self.answer(text, &mut rec)?;
        Ok((rec, audio))
    }

    /// Runs a whole input: every turn in it gets a transcript, a reply and a latency record,
    /// passed to `on_turn` as soon as it is complete.
    pub fn process(
        &mut self,
        input: &AudioBuffer,
        input_name: &str,
        mut on_turn: impl FnMut(&TurnRecord),
    ) -> Result<Conversation, PipelineError> {
        let heard = resample(input, ASR_SAMPLE_RATE)?;
        // What the stages listen to; the conversation keeps the input as it was.
        let cleaned;
        let listened_to = if self.config.denoise {
            let _span = tracing::info_span!("denoise").entered();
            cleaned = hark_audio::denoise(&heard.samples)?;
            &cleaned
        } else {
            &heard.samples
        };
        let probs = {
            let _span = tracing::info_span!("vad").entered();
            self.turns.probabilities(listened_to)?
        };
        // Streaming: turns and transcripts come from the listener, which ran recognition on
        // the sample clock as the audio arrived. Sequential: turns first, recognition after.
        let listened = match &self.config.listen {
            Some(cfg) => {
                let _span = tracing::info_span!("listen").entered();
                Some(listen::listen(
                    &probs,
                    listened_to,
                    &mut self.asr,
                    &self.config.turn,
                    cfg,
                )?)
            }
            None => None,
        };
        let turns: Vec<(Turn, Option<listen::HeardTurn>)> = match listened {
            Some(heard_turns) => heard_turns.into_iter().map(|h| (h.turn, Some(h))).collect(),
            None => hark_audio::turns::segment(&probs, listened_to, self.turns.config())
                .into_iter()
                .map(|t| (t, None))
                .collect(),
        };
        let mut timeline = Timeline::new(self.voice.sample_rate());
        let mut records = Vec::new();
        let mut busy_until_ms = 0.0f64;
        for (turn, streamed) in turns {
            let number = records.len() + 1;
            let mut rec = TurnRecord {
                schema: SCHEMA_VERSION,
                input: input_name.to_string(),
                turn: number,
                speech_start_ms: turn.speech_start_ms(),
                speech_end_ms: turn.speech_end_ms(),
                ..TurnRecord::default()
            };
            rec.spans.endpoint = turn.decided_ms() - turn.speech_end_ms();
            // Barge-in: the user speaking while the last reply plays stops it as soon as the
            // voice activity detector hears them (one window), and the conversation keeps only
            // what was heard of it.
            if let Some(played_ms) =
                timeline.cut_last_at(turn.speech_start_ms() + BARGE_IN_DETECTION_MS)
            {
                tracing::info!(turn = number, played_ms, "barge-in: the last reply stopped");
                self.keep_heard_part_of_last_reply(played_ms, timeline.sample_rate());
            }
            let partials = streamed
                .as_ref()
                .map(|h| h.partials.clone())
                .unwrap_or_default();
            // The LLM is free for partial prefills once the last reply's work is done.
            let llm_free_ms = busy_until_ms;
            // When the transcript decoded at the pause was ready, if a preemptive reply may
            // start on it before the turn is decided.
            let mut candidate_ready_ms = None;
            let transcript = match streamed {
                Some(h) => {
                    // Recognition ran while the user spoke; a machine still busy with the last
                    // reply when the final decode began would have started it later.
                    let ready_ms = h.final_started_ms.max(busy_until_ms) + h.final_spent_ms;
                    rec.spans.asr_final = (ready_ms - turn.decided_ms()).max(0.0);
                    if self.config.preemptive {
                        candidate_ready_ms = Some(ready_ms);
                        rec.preemptive_dropped = h.dropped_finals;
                    }
                    busy_until_ms = busy_until_ms.max(ready_ms).max(turn.decided_ms());
                    Ok(h.transcript)
                }
                None => {
                    let begin_ms = turn.decided_ms().max(busy_until_ms);
                    let t = Instant::now();
                    let transcript = {
                        let _span = tracing::info_span!("asr_final", turn = number).entered();
                        self.asr
                            .transcribe(&listened_to[turn.audio_start..turn.decided_at])
                    };
                    rec.spans.asr_final = (begin_ms - turn.decided_ms()) + ms_since(t);
                    busy_until_ms = turn.decided_ms() + rec.spans.asr_final;
                    transcript
                }
            };
            let transcript = match transcript {
                Ok(t) => t,
                Err(e) => {
                    rec.error = Some(format!("speech recognition: {e}"));
                    on_turn(&rec);
                    records.push(rec);
                    continue;
                }
            };
            if transcript.text.is_empty() {
                // Sound that held no words (noise, a cough): not a turn.
                tracing::info!(turn = number, "no words heard; ignoring");
                continue;
            }
            rec.transcript = transcript.text.clone();
            // From the decision on, the listener has nothing left to do for this turn.
            let decided_ms = turn.decided_ms() + rec.spans.asr_final;
            let transcript_ready_ms = candidate_ready_ms.unwrap_or(decided_ms).min(decided_ms);
            let prefilled_ms = if self.config.prefill_partials {
                self.prefill_partials(&partials, llm_free_ms, transcript_ready_ms)
            } else {
                llm_free_ms
            };
            // The reply starts once the transcript is ready and any partial prefill is done.
            let start_ms = transcript_ready_ms.max(prefilled_ms);

            let t = Instant::now();
            let answer = self.answer(&transcript.text, &mut rec);
            let answer_ms = ms_since(t);
            busy_until_ms = busy_until_ms.max(start_ms + answer_ms);
            if answer.is_ok() {
                // Each stage on the input's clock, then only what lies after the decision
                // counts in the spans (a preemptive reply did the rest during the endpoint).
                let spans = &mut rec.spans;
                let lengths = [
                    start_ms - transcript_ready_ms + spans.llm_ttft,
                    spans.first_clause,
                    spans.tts_first_audio,
                ];
                let mut at = transcript_ready_ms;
                for (span, length) in [
                    &mut spans.llm_ttft,
                    &mut spans.first_clause,
                    &mut spans.tts_first_audio,
                ]
                .into_iter()
                .zip(lengths)
                {
                    let end = at + length;
                    *span = (end - at.max(decided_ms)).max(0.0);
                    at = end;
                }
                rec.head_start_ms = (decided_ms - transcript_ready_ms).max(0.0);
            }
            match answer {
                Ok(audio) => {
                    let ready_ms = turn.decided_ms()
                        + rec.spans.asr_final
                        + rec.spans.llm_ttft
                        + rec.spans.first_clause
                        + rec.spans.tts_first_audio;
                    // Output: handing the audio to the sink, plus any wait while the sink still
                    // plays the previous reply. The reply starts exactly where it is placed.
                    let t = Instant::now();
                    let samples = {
                        let _span = tracing::info_span!("output", turn = number).entered();
                        audio.samples
                    };
                    let handoff_ms = ms_since(t);
                    rec.reply_start_ms = timeline.place(ready_ms + handoff_ms, &samples);
                    rec.spans.output = rec.reply_start_ms - ready_ms;
                    rec.reply_duration_ms =
                        hark_core::audio::samples_to_ms(samples.len(), timeline.sample_rate());
                    rec.v2v_ms = rec.reply_start_ms - rec.speech_end_ms;
                    busy_until_ms = busy_until_ms.max(ready_ms + handoff_ms);
                    // While the reply plays, the conversation so far goes into the KV cache, so
                    // the next turn prefills only what the user says next.
                    let t = Instant::now();
                    if let Err(e) = self.brain().prefill_next_turn() {
                        tracing::warn!("prefilling the next turn: {e}");
                    }
                    busy_until_ms += ms_since(t);
                }
                Err(e) => rec.error = Some(e.to_string()),
            }
            on_turn(&rec);
            records.push(rec);
        }
        Ok(Conversation {
            turns: records,
            heard,
            timeline,
        })
    }

    /// Runs a whole input live: it is fed at real-time pace, like a microphone, through the
    /// stages running concurrently on their own threads ([`live`]); every latency is measured
    /// on the wall clock, which is the input's clock. Takes as long as the input lasts.
    pub fn process_realtime(
        &mut self,
        input: &AudioBuffer,
        input_name: &str,
        mut on_turn: impl FnMut(&TurnRecord),
    ) -> Result<Conversation, PipelineError> {
        let heard = resample(input, ASR_SAMPLE_RATE)?;
        if self.config.denoise {
            tracing::warn!("--denoise is not applied to a live input yet");
        }
        let (turns, timeline, _) =
            self.run_live(live::LiveIo::paced(&heard.samples), input_name)?;
        for rec in &turns {
            on_turn(rec);
        }
        Ok(Conversation {
            turns,
            heard,
            timeline,
        })
    }

    /// Runs a live conversation: `io.input` (a microphone, or a recording fed at real-time
    /// pace) through the stages on their own threads until the input ends or
    /// `io.control` stops it; replies go to `io.output` when there is one. Returns the turn
    /// records in order, the replies on the input's clock, and what was counted.
    pub fn run_live(
        &mut self,
        io: live::LiveIo<'_>,
        input_name: &str,
    ) -> Result<(Vec<TurnRecord>, Timeline, live::LiveStats), PipelineError> {
        let stages = live::Stages {
            brain: brain::Brain {
                config: &self.config,
                engine: &self.engine,
                session: &mut self.session,
                history: &mut self.history,
            },
            turns: &mut self.turns,
            asr: &mut self.asr,
            voice: &mut self.voice,
        };
        live::run(stages, io, input_name)
    }

    /// The voice's sample rate (what a speaker is opened for).
    pub fn voice_sample_rate(&self) -> u32 {
        self.voice.sample_rate()
    }

    /// The conversation so far (system prompt not included).
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// After a barge-in, the last assistant message becomes what was played of it: whole
    /// chunks, and of the chunk cut short the share of its words that had played.
    fn keep_heard_part_of_last_reply(&mut self, played_ms: f64, rate: u32) {
        let played = (played_ms * rate as f64 / 1000.0) as usize;
        let heard = brain::heard_part(&self.last_reply, played);
        if let Some(last) = self.history.last_mut() {
            if last.role == Role::Assistant {
                last.content = heard;
            }
        }
        self.last_reply.clear();
    }

    /// Prefills each newly committed partial of a turn as recognition produced it, on the
    /// input's clock: a prefill starts when its partial is ready and the LLM is free (from
    /// `free_ms`), and none starts once the final transcript is ready at `final_ms`. Returns
    /// when the last one finished. (The partial decodes run on one thread meanwhile; the two
    /// share the cores in a live run, which this clock does not model.)
    fn prefill_partials(
        &mut self,
        partials: &[listen::Partial],
        free_ms: f64,
        final_ms: f64,
    ) -> f64 {
        let mut free_ms = free_ms;
        let mut last = "";
        for p in partials {
            if p.stable.is_empty() || p.stable == last {
                continue;
            }
            let start = p.ready_ms.max(free_ms);
            if start >= final_ms {
                break;
            }
            let t = Instant::now();
            if let Err(e) = self.prefill_partial(&p.stable) {
                tracing::warn!("prefilling a partial transcript: {e}");
                break;
            }
            free_ms = start + ms_since(t);
            last = &p.stable;
        }
        free_ms
    }

    /// Replies to `text`, filling the LLM and TTS spans and engine figures of `rec`.
    fn answer(&mut self, text: &str, rec: &mut TurnRecord) -> Result<AudioBuffer, PipelineError> {
        self.history.push(ChatMessage::new(Role::User, text));
        let result = self.reply(rec);
        if result.is_err() {
            // The history keeps whole exchanges only.
            self.history.pop();
        }
        result
    }

    /// Generates the reply and speaks it as it is generated: each chunk the chunker completes
    /// (the first clause, then sentences) is synthesised at once, between tokens, so the first
    /// audio is ready long before the reply is finished. Compute stays sequential (generation
    /// waits while a chunk is synthesised), so every span is a measured time.
    fn reply(&mut self, rec: &mut TurnRecord) -> Result<AudioBuffer, PipelineError> {
        // The LLM's clock starts before the prompt is built and tokenised: that is its work too.
        let started = Instant::now();
        let prompt = self.brain().fitted_prompt()?;
        let params = self.brain().generation_params();
        let max_sentences = self.config.max_reply_sentences;
        let mut reply = String::new();
        let prompt_ms = ms_since(started);
        let cancel = hark_tts::Cancel::new()?;
        let mut chunker = Chunker::new();
        let mut spoken = SpokenReply {
            stream_first: self.config.stream_speech,
            ..SpokenReply::default()
        };
        let voice = &mut self.voice;
        let stream = self.config.stream_speech;
        let mut generation = {
            let _span = tracing::info_span!("llm", turn = rec.turn).entered();
            self.session.generate(&prompt, &params, |piece| {
                reply.push_str(piece);
                // A spoken answer stays short: stop once enough sentences are complete.
                let more = max_sentences == 0 || complete_sentences(&reply).len() < max_sentences;
                if stream {
                    for chunk in chunker.push(piece) {
                        spoken.speak(voice, &chunk, started, &cancel);
                    }
                }
                more
            })?
        };
        // The engine's figures are its own: take out the synthesis done between its tokens.
        generation.decode_ms = (generation.decode_ms - spoken.synthesis_ms()).max(0.0);
        let reply_text = match generation.stop {
            StopReason::Cancelled => {
                let sentences = complete_sentences(&generation.text);
                sentences[..max_sentences.min(sentences.len())].join(" ")
            }
            _ => {
                // The tail the chunker still holds is the reply's last words.
                if let Some(rest) = chunker.finish().filter(|_| stream) {
                    spoken.speak(voice, &rest, started, &cancel);
                }
                generation.text.trim().to_string()
            }
        };
        if !stream {
            // The sequential baseline: the whole reply, then its whole synthesis.
            spoken.speak(voice, &reply_text, started, &cancel);
        }
        if let Some(e) = spoken.error.take() {
            return Err(e.into());
        }
        let Some(first) = spoken.chunks.first() else {
            return Err(hark_tts::TtsError::Synthesis(format!(
                "nothing speakable in the reply {reply_text:?}"
            ))
            .into());
        };
        rec.spans.llm_ttft = prompt_ms + generation.ttft_ms;
        rec.spans.first_clause = (first.text_at_ms - rec.spans.llm_ttft).max(0.0);
        rec.spans.tts_first_audio = first.ready_ms - first.text_at_ms;
        rec.engine = self.brain().figures(&generation);
        self.history
            .push(ChatMessage::new(Role::Assistant, reply_text.clone()));
        rec.reply = reply_text;
        let (audio, chunks) =
            spoken.playback(self.voice.sample_rate(), self.voice.sentence_silence);
        self.last_reply = chunks;
        Ok(audio)
    }
}

/// A reply's audio as it was synthesised chunk by chunk.
#[derive(Default)]
struct SpokenReply {
    /// Stream the first chunk's first sentence in pieces (off: the sequential baseline, which
    /// synthesises the whole reply at once).
    stream_first: bool,
    chunks: Vec<SpokenChunk>,
    error: Option<hark_tts::TtsError>,
}

struct SpokenChunk {
    text: String,
    /// When the chunk's text was complete and when its first audio was ready, ms after the
    /// reply's clock started.
    text_at_ms: f64,
    ready_ms: f64,
    /// When synthesis of the chunk was over, ms after the reply's clock started.
    done_ms: f64,
    audio: std::sync::Arc<Vec<f32>>,
    /// Where each piece of `audio` starts (samples) and when it was ready (ms, reply clock):
    /// the first chunk streams its first sentence in two pieces.
    pieces: Vec<(usize, f64)>,
    /// Ends a sentence (a longer pause follows) rather than a clause.
    ends_sentence: bool,
}

impl SpokenReply {
    /// Synthesises `chunk`. The reply's first chunk streams: its first audio is ready after a
    /// short first piece, and the rest of it must only be ready before it is due to play.
    fn speak(
        &mut self,
        voice: &mut Voice,
        chunk: &str,
        started: Instant,
        cancel: &hark_tts::Cancel,
    ) {
        if self.error.is_some() {
            return;
        }
        let text_at_ms = ms_since(started);
        let _span = tracing::info_span!("tts_chunk").entered();
        let mut pieces = Vec::new();
        let mut samples = 0usize;
        let result = if self.chunks.is_empty() && self.stream_first {
            voice.stream_chunk(chunk, cancel, &mut |piece| {
                if !piece.is_empty() {
                    pieces.push((samples, ms_since(started)));
                    samples += piece.len();
                }
            })
        } else {
            voice.speak_chunk(chunk, cancel)
        };
        let done_ms = ms_since(started);
        match result {
            Ok(audio) if audio.is_empty() => {}
            Ok(audio) => {
                if pieces.is_empty() {
                    pieces.push((0, done_ms));
                }
                self.chunks.push(SpokenChunk {
                    text: chunk.trim().to_string(),
                    text_at_ms,
                    ready_ms: pieces[0].1,
                    done_ms,
                    audio,
                    pieces,
                    ends_sentence: chunk.trim_end().ends_with(['.', '!', '?']),
                })
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Time spent synthesising so far, ms.
    fn synthesis_ms(&self) -> f64 {
        self.chunks.iter().map(|c| c.done_ms - c.text_at_ms).sum()
    }

    /// The reply as it plays from its first audio's ready time: each chunk after the one before
    /// (with a pause after a clause or sentence), each piece when it is ready if that is later
    /// than its turn to play (the wait is silence in the output, as a listener would hear it).
    /// Also returns where each chunk starts in it (samples) with its text.
    fn playback(&self, rate: u32, sentence_silence: f32) -> (AudioBuffer, Vec<(usize, String)>) {
        let per_ms = rate as f64 / 1000.0;
        let mut out: Vec<f32> = Vec::new();
        let mut starts = Vec::new();
        let Some(first) = self.chunks.first() else {
            return (AudioBuffer::new(out, rate), starts);
        };
        for (i, c) in self.chunks.iter().enumerate() {
            if i > 0 {
                let pause = if self.chunks[i - 1].ends_sentence {
                    sentence_silence
                } else {
                    CLAUSE_SILENCE
                };
                out.extend(std::iter::repeat_n(0.0, (pause * rate as f32) as usize));
            }
            starts.push((out.len(), c.text.clone()));
            for (j, &(from, ready_ms)) in c.pieces.iter().enumerate() {
                // Not ready yet when its turn to play comes: the listener hears a wait.
                let due = ((ready_ms - first.ready_ms) * per_ms) as usize;
                if due > out.len() {
                    out.resize(due, 0.0);
                }
                let to = c.pieces.get(j + 1).map_or(c.audio.len(), |p| p.0);
                out.extend_from_slice(&c.audio[from..to]);
            }
        }
        (AudioBuffer::new(out, rate), starts)
    }
}

/// From the user's first sound to the voice activity detector's verdict: one Silero window.
const BARGE_IN_DETECTION_MS: f64 = 32.0;

/// Pause after a clause chunk ("Sure,"), seconds: the comma's pause, which trimming removed.
pub(crate) const CLAUSE_SILENCE: f32 = 0.12;

/// The sentences of `text` that are finished: followed by more text, so that "3." in "3.5" or
/// the "Dr." of "Dr. Smith" is not taken for an end (hark-tts's splitter knows abbreviations).
pub(crate) fn complete_sentences(text: &str) -> Vec<String> {
    let mut sentences = hark_tts::text::sentences(text);
    let ends_cleanly =
        text.ends_with(char::is_whitespace) && text.trim_end().ends_with(['.', '!', '?']);
    if !ends_cleanly {
        sentences.pop();
    }
    sentences
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_sentences_count() {
        assert_eq!(
            complete_sentences("Hi. How are you? Fine"),
            ["Hi.", "How are you?"]
        );
        assert_eq!(
            complete_sentences("It is 3.5 km. Dr. Smith"),
            ["It is 3.5 km."]
        );
        assert!(
            complete_sentences("It is 3.").is_empty(),
            "could still be 3.5"
        );
        assert_eq!(complete_sentences("One. Two. "), ["One.", "Two."]);
    }
}
