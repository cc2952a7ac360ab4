//! Silero VAD v6 on the project's ONNX Runtime: speech probability per 32 ms of 16 kHz audio.

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use crate::AudioError;

/// Samples per Silero window at 16 kHz (32 ms).
pub const WINDOW: usize = 512;
/// Samples of the previous window the model sees before each new one.
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

/// A stateful Silero VAD: feed consecutive 512-sample windows, get one probability each.
pub struct SileroVad {
    session: Session,
    state: Vec<f32>,
    /// `CONTEXT` samples carried over, then the current window.
    input: Vec<f32>,
}

impl SileroVad {
    pub fn load(model: &Path) -> Result<Self, AudioError> {
        hark_core::onnx::ensure_ready()?;
        if !model.is_file() {
            return Err(AudioError::Vad(format!(
                "model not found at {}; run `hark models fetch`",
                model.display()
            )));
        }
        let err = |e: ort::Error| AudioError::Vad(format!("{}: {e}", model.display()));
        let session = Session::builder()
            .map_err(err)?
            .with_intra_threads(1)
            .map_err(|e| err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.into()))?
            .commit_from_file(model)
            .map_err(err)?;
        Ok(SileroVad {
            session,
            state: vec![0.0; STATE_LEN],
            input: vec![0.0; CONTEXT + WINDOW],
        })
    }

    /// Forgets everything heard so far.
    pub fn reset(&mut self) {
        self.state.fill(0.0);
        self.input.fill(0.0);
    }

    /// Speech probability of the next window (shorter windows are zero-padded).
    pub fn process(&mut self, window: &[f32]) -> Result<f32, AudioError> {
        let n = window.len().min(WINDOW);
        self.input[CONTEXT..CONTEXT + n].copy_from_slice(&window[..n]);
        self.input[CONTEXT + n..].fill(0.0);
        let err = |e: ort::Error| AudioError::Vad(e.to_string());
        let input =
            Tensor::from_array(([1usize, CONTEXT + WINDOW], self.input.clone())).map_err(err)?;
        let state = Tensor::from_array(([2usize, 1, 128], self.state.clone())).map_err(err)?;
        let sr = Tensor::from_array(([0usize; 0], vec![hark_core::ASR_SAMPLE_RATE as i64]))
            .map_err(err)?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => input, "state" => state, "sr" => sr])
            .map_err(err)?;
        let (_, prob) = outputs["output"].try_extract_tensor::<f32>().map_err(err)?;
        let (_, new_state) = outputs["stateN"].try_extract_tensor::<f32>().map_err(err)?;
        if new_state.len() != STATE_LEN || prob.is_empty() {
            return Err(AudioError::Vad(
                "unexpected output shapes from the Silero model".into(),
            ));
        }
        self.state.copy_from_slice(new_state);
        let p = prob[0];
        // The last CONTEXT samples of this window precede the next one.
        self.input.copy_within(WINDOW.., 0);
        Ok(if p.is_finite() { p } else { 0.0 })
    }
}

/// webrtc-vad (the WebRTC GMM detector, microseconds per frame) as a cheap first gate in front
/// of Silero: after the gate has heard no voice for a while, Silero is not run at all.
pub struct WebRtcGate {
    vad: webrtc_vad::Vad,
    mode: u8,
    frame: Vec<i16>,
}

// SAFETY: the detector is plain C state owned by this value alone (no thread-local or shared
// state in libfvad), so it may move between threads.
unsafe impl Send for WebRtcGate {}

/// Samples webrtc-vad looks at per Silero window: 30 ms of its 32.
const GATE_FRAME: usize = 480;

impl WebRtcGate {
    /// `mode` 0 (least aggressive: hears voice in the most audio, the safest gate) to 3.
    pub fn new(mode: u8) -> Self {
        let vad_mode = match mode {
            0 => webrtc_vad::VadMode::Quality,
            1 => webrtc_vad::VadMode::LowBitrate,
            2 => webrtc_vad::VadMode::Aggressive,
            _ => webrtc_vad::VadMode::VeryAggressive,
        };
        WebRtcGate {
            vad: webrtc_vad::Vad::new_with_rate_and_mode(
                webrtc_vad::SampleRate::Rate16kHz,
                vad_mode,
            ),
            mode,
            frame: vec![0; GATE_FRAME],
        }
    }

    pub fn reset(&mut self) {
        *self = WebRtcGate::new(self.mode);
    }

    /// Whether the first 30 ms of a Silero window may hold voice.
    pub fn hears_voice(&mut self, window: &[f32]) -> bool {
        for (i, f) in self.frame.iter_mut().enumerate() {
            *f = window
                .get(i)
                .map_or(0, |s| (s * 32767.0).clamp(-32768.0, 32767.0) as i16);
        }
        // An error (impossible for a 30 ms frame at 16 kHz) lets the audio through.
        self.vad.is_voice_segment(&self.frame).unwrap_or(true)
    }
}
