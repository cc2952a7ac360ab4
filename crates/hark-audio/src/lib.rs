//! Audio for Hark: WAV in and out, the sound card (microphone and speaker), resampling, noise
//! suppression, and voice activity / turn detection.

pub mod denoise;
pub mod device;
pub mod resample;
pub mod turns;
pub mod vad;
pub mod wav;

pub use denoise::denoise;
pub use resample::resample;
pub use turns::{Turn, TurnConfig, TurnDetector};
pub use vad::SileroVad;
pub use wav::{read_wav, read_wav_bytes, write_wav, write_wav_stereo, DecodedWav};

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a WAV file we can read: {detail}")]
    NotWav { path: String, detail: String },
    #[error("{path}: {detail}")]
    Unsupported { path: String, detail: String },
    #[error("{path}: the file holds no audio samples")]
    Empty { path: String },
    #[error("{path}: {minutes:.1} minutes of audio is more than the {limit} minute limit; split the file")]
    TooLong {
        path: String,
        minutes: f64,
        limit: u32,
    },
    #[error("resampling {from} Hz → {to} Hz failed: {detail}")]
    Resample { from: u32, to: u32, detail: String },
    #[error("sound device: {0}")]
    Device(String),
    #[error("voice activity detector: {0}")]
    Vad(String),
    #[error(transparent)]
    Onnx(#[from] hark_core::onnx::OnnxError),
}
