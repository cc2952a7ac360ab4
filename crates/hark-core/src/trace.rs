//! The per-turn latency record, written one JSON object a line by `--trace FILE`.
//!
//! Definitions (see DESIGN.md): V2V runs from the last sample of the user's speech, found in the
//! input itself, to the first sample of the reply leaving the pipeline. Its parts are the spans
//! below, in order; they add up to V2V.

use serde::{Deserialize, Serialize};

/// Bumped whenever a field changes meaning; `hark report` refuses other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// Tracing span names, one per latency part; the same strings key [`Spans`] in the JSON.
pub mod span {
    pub const ENDPOINT: &str = "endpoint";
    pub const ASR_FINAL: &str = "asr_final";
    pub const LLM_TTFT: &str = "llm_ttft";
    pub const FIRST_CLAUSE: &str = "first_clause";
    pub const TTS_FIRST_AUDIO: &str = "tts_first_audio";
    pub const OUTPUT: &str = "output";
    pub const ALL: [&str; 6] = [
        ENDPOINT,
        ASR_FINAL,
        LLM_TTFT,
        FIRST_CLAUSE,
        TTS_FIRST_AUDIO,
        OUTPUT,
    ];
}

/// The parts of a turn's voice-to-voice latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spans {
    /// Speech end (from the input) → end of turn decided.
    pub endpoint: f64,
    /// End of turn → final transcript.
    pub asr_final: f64,
    /// Final transcript → first reply token.
    pub llm_ttft: f64,
    /// First token → first clause ready for synthesis.
    pub first_clause: f64,
    /// Clause → first audio chunk.
    pub tts_first_audio: f64,
    /// Audio chunk → written to the sink.
    pub output: f64,
}

impl Spans {
    pub fn total(&self) -> f64 {
        self.endpoint
            + self.asr_final
            + self.llm_ttft
            + self.first_clause
            + self.tts_first_audio
            + self.output
    }

    /// (name, ms) in pipeline order.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            (span::ENDPOINT, self.endpoint),
            (span::ASR_FINAL, self.asr_final),
            (span::LLM_TTFT, self.llm_ttft),
            (span::FIRST_CLAUSE, self.first_clause),
            (span::TTS_FIRST_AUDIO, self.tts_first_audio),
            (span::OUTPUT, self.output),
        ]
    }
}

/// What the LLM engine did for one reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineFigures {
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest came from the reused prefix cache).
    pub prefill_tokens: usize,
    pub reply_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Time per output token after the first, ms.
    pub tpot_ms: f64,
    /// The engine's memory: model weights as held, plus the KV cache at full capacity, MB.
    #[serde(default)]
    pub peak_memory_mb: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_count(v: &usize) -> bool {
    *v == 0
}

/// One turn of a conversation, as `--trace` writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    pub schema: u32,
    /// The input this turn came from (a path, or `-` for stdin).
    pub input: String,
    /// 1-based within its input.
    pub turn: usize,
    pub transcript: String,
    pub reply: String,
    /// When the user's speech began and ended, ms on the input's sample clock.
    pub speech_start_ms: f64,
    pub speech_end_ms: f64,
    /// When the reply's first sample leaves the pipeline, ms on the input's sample clock.
    pub reply_start_ms: f64,
    pub reply_duration_ms: f64,
    pub v2v_ms: f64,
    pub spans: Spans,
    /// How much of the reply's work was done before the turn was decided, ms: a preemptive
    /// reply starts on the transcript decoded at the pause, while the silence that ends the turn
    /// is still being waited for. The spans count only what remained after the decision, so they
    /// still add up to `v2v_ms`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub head_start_ms: f64,
    /// Transcripts decoded at a pause in this turn that the user then spoke past: preemptive
    /// replies started on them were thrown away.
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub preemptive_dropped: usize,
    #[serde(flatten)]
    pub engine: EngineFigures,
    /// Set when a stage failed and the turn ended without a (complete) reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_has_the_documented_keys() {
        let rec = TurnRecord {
            schema: SCHEMA_VERSION,
            turn: 1,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&rec).unwrap();
        for key in [
            "turn",
            "transcript",
            "reply",
            "speech_end_ms",
            "reply_start_ms",
            "v2v_ms",
            "spans",
            "prompt_tokens",
            "reply_tokens",
            "decode_tok_s",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in span::ALL {
            assert!(v["spans"].get(key).is_some(), "missing span {key}");
        }
        let back: TurnRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn spans_add_up() {
        let s = Spans {
            endpoint: 1.0,
            asr_final: 2.0,
            llm_ttft: 3.0,
            first_clause: 4.0,
            tts_first_audio: 5.0,
            output: 6.0,
        };
        assert_eq!(s.total(), 21.0);
        assert_eq!(s.named().iter().map(|(_, v)| v).sum::<f64>(), 21.0);
    }
}
