//! Hark's shared vocabulary: audio buffers and the sample clock, the per-turn latency record,
//! span names, word error rate, and the process-wide ONNX Runtime.
//!
//! Every stage crate depends on this one and on nothing else of Hark's.

pub mod audio;
pub mod onnx;
pub mod testing;
pub mod trace;
pub mod wer;

pub use audio::{AudioBuffer, ASR_SAMPLE_RATE};
pub use trace::{EngineFigures, Spans, TurnRecord, SCHEMA_VERSION};
