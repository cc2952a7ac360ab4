//! What the pipeline loads, and how it behaves.

use std::path::PathBuf;

use hark_asr::EncoderWindow;
use hark_audio::TurnConfig;
use hark_llm::SamplerConfig;

use crate::listen::ListenConfig;

/// Where each model file is.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    /// whisper.cpp ggml file.
    pub whisper: PathBuf,
    /// GGUF chat model.
    pub llm: PathBuf,
    /// Piper voice `.onnx` and its `.onnx.json`.
    pub voice: PathBuf,
    pub voice_config: PathBuf,
    /// The `espeak-ng-data` directory.
    pub espeak_data: PathBuf,
    /// Silero VAD `.onnx`.
    pub vad: PathBuf,
    /// `libonnxruntime.so`.
    pub onnxruntime: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub models: ModelPaths,
    /// Threads for recognition and synthesis.
    pub threads: usize,
    pub system_prompt: String,
    /// Hard cap on a reply's length in tokens.
    pub max_reply_tokens: usize,
    /// A reply stops after this many sentences (0: no limit).
    pub max_reply_sentences: usize,
    pub sampler: SamplerConfig,
    /// KV cache positions per conversation.
    pub context: usize,
    pub turn: TurnConfig,
    /// The speech recogniser's encoder window.
    pub asr_window: EncoderWindow,
    /// Streaming recognition and transcript-aware turn ends ([`crate::listen`]); `None`: the
    /// sequential baseline, which waits for the turn end and then decodes the whole turn.
    pub listen: Option<ListenConfig>,
    /// Prefill committed partial transcripts into the LLM's cache while the user speaks (needs
    /// the listener's partials).
    pub prefill_partials: bool,
    /// Start the reply on the transcript decoded at the pause, before the silence that ends the
    /// turn is over; it plays once the turn is decided (if the user speaks again, the listener
    /// drops that transcript and the turn goes on).
    pub preemptive: bool,
    /// Suppress noise (RNNoise) before voice activity detection and recognition.
    pub denoise: bool,
    /// Speak each chunk of the reply as soon as it is generated; `false`: the sequential
    /// baseline, which synthesises the whole reply once it is complete.
    pub stream_speech: bool,
}

/// Short answers in a speaking style: a voice reply is listened to, not read.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Hark, a friendly voice assistant. Answer in one or two short spoken sentences. No lists, no markdown.";

impl PipelineConfig {
    pub fn new(models: ModelPaths) -> Self {
        PipelineConfig {
            models,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(4),
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_string(),
            max_reply_tokens: 64,
            max_reply_sentences: 2,
            sampler: SamplerConfig {
                repetition_penalty: 1.1,
                ..SamplerConfig::default()
            },
            context: 2048,
            turn: TurnConfig::default(),
            asr_window: hark_asr::DEFAULT_WINDOW,
            listen: Some(ListenConfig {
                partials: true,
                ..ListenConfig::default()
            }),
            prefill_partials: true,
            preemptive: true,
            denoise: false,
            stream_speech: true,
        }
    }
}
