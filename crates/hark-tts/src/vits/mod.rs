//! Piper's VITS model on ONNX Runtime, run in three stages (see [`split`]) so that a sentence's
//! first fraction of a second can be decoded, and heard, before the rest.
//!
//! Flow and decoder are convolution stacks over the audio frames: a frame's output depends on
//! its neighbours up to a fixed distance (the receptive field) and on nothing further. A slice
//! of frames computed with that much context on each side equals the same frames of the whole
//! run (to float rounding: the test compares them), so a sentence can be decoded in pieces. The
//! context is recomputed for each piece, so only the first sentence of a reply is cut: the
//! first piece is short, the rest of the sentence is one piece.

mod hifigan;
mod kernels;
mod layers;
mod proto;
mod split;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::Tensor;

use crate::TtsError;

/// Frames the flow looks to each side: four coupling layers, each a WaveNet of four kernel-5
/// convolutions (4 × 4 × 2 = 32).
const FLOW_CONTEXT: usize = 32;
/// Frames HiFi-GAN's output depends on to each side, measured on the joe (medium) voice: with 12
/// a piece differs from the whole decode by 2e-7 at most, with 8 by 5e-4.
const DECODER_CONTEXT: usize = 12;
/// Length of the first piece of a sentence, in frames (256 samples at 22.05 kHz: about 190 ms).
pub const FIRST_PIECE_FRAMES: usize = 16;
/// A sentence shorter than this is decoded whole even when streamed: cut, its second piece
/// recomputes the flow over nearly the whole sentence again (about 15 ms of work), to hear its
/// first piece only a few milliseconds sooner ("Sure," is 44 frames: 22 ms to the first piece,
/// 25 ms whole).
const SPLIT_FRAMES: usize = 56;
const _: () = assert!(SPLIT_FRAMES >= 2 * FIRST_PIECE_FRAMES + DECODER_CONTEXT);

/// One f32 tensor held between stages.
#[derive(Clone)]
struct Owned {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Owned {
    fn from_output(value: &ort::value::DynValue) -> Result<Self, ort::Error> {
        let (shape, data) = value.try_extract_tensor::<f32>()?;
        Ok(Owned {
            shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
            data: data.to_vec(),
        })
    }

    fn frames(&self) -> usize {
        self.shape.last().copied().unwrap_or(0)
    }

    /// Frames `lo..hi` of the last axis.
    fn slice_frames(&self, lo: usize, hi: usize) -> Owned {
        let t = self.frames();
        let rows = self.data.len() / t.max(1);
        let mut data = Vec::with_capacity(rows * (hi - lo));
        for r in 0..rows {
            data.extend_from_slice(&self.data[r * t + lo..r * t + hi]);
        }
        let mut shape = self.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = hi - lo;
        }
        Owned { shape, data }
    }

    fn value(&self) -> Result<SessionInputValue<'static>, ort::Error> {
        Ok(Tensor::from_array((self.shape.clone(), self.data.clone()))?.into())
    }
}

/// The voice's three sessions and the names of what passes between them.
pub(crate) struct Stages {
    front: Session,
    flow: Session,
    decoder: Decoder,
    flow_inputs: Vec<String>,
    decoder_inputs: Vec<String>,
}

/// Who runs the decoder (HiFi-GAN, most of the time a sentence takes).
pub(crate) enum Decoder {
    /// Our own kernels ([`hifigan`]), where the graph is Piper's generator and the CPU has
    /// AVX-512; checked against ONNX Runtime when the voice loads.
    Ours(Box<hifigan::HifiGan>),
    Onnx(Session),
}

/// Which decoder a voice should use: ours where it can run (the default), or ONNX Runtime's
/// always (to compare the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderChoice {
    #[default]
    Ours,
    OnnxRuntime,
}

/// The model a voice runs.
pub(crate) enum Model {
    Staged(Box<Stages>),
    /// A graph [`split::split`] does not recognise runs as one session, a sentence at a time.
    Whole(Session),
}

/// What a sentence's model run needs besides its phoneme ids.
pub(crate) struct Request<'a> {
    pub ids: Vec<i64>,
    pub scales: [f32; 3],
    pub speaker: Option<i64>,
    pub run: &'a RunOptions,
    /// Set when the synthesis is cancelled (our decoder checks it; ONNX Runtime's `run`).
    pub stop: &'a AtomicBool,
    /// Decode a short first piece ahead of the rest of the sentence.
    pub first_piece: bool,
}

impl Model {
    /// Loads `model_bytes` in stages when the graph can be cut, whole otherwise; the decoder on
    /// our own kernels when `choice` allows and they agree with ONNX Runtime's.
    pub fn load(
        model_bytes: &[u8],
        threads: usize,
        choice: DecoderChoice,
        session: impl Fn(&[u8]) -> Result<Session, ort::Error>,
    ) -> Result<Model, ort::Error> {
        match split::split(model_bytes) {
            Ok(parts) => {
                let mut onnx = session(&parts.decoder)?;
                let decoder = match choice {
                    DecoderChoice::OnnxRuntime => Decoder::Onnx(onnx),
                    DecoderChoice::Ours => {
                        match ours(&parts.decoder, threads, &mut onnx, &parts.decoder_inputs) {
                            Ok(ours) => Decoder::Ours(Box::new(ours)),
                            Err(why) => {
                                tracing::info!("the voice's decoder runs on ONNX Runtime: {why}");
                                Decoder::Onnx(onnx)
                            }
                        }
                    }
                };
                Ok(Model::Staged(Box::new(Stages {
                    front: session(&parts.front)?,
                    flow: session(&parts.flow)?,
                    decoder,
                    flow_inputs: parts.flow_inputs,
                    decoder_inputs: parts.decoder_inputs,
                })))
            }
            Err(why) => {
                tracing::warn!("voice runs whole, without streaming its sentences: {why}");
                Ok(Model::Whole(session(model_bytes)?))
            }
        }
    }

    pub fn is_staged(&self) -> bool {
        matches!(self, Model::Staged(_))
    }

    /// Whether the decoder runs on our own kernels.
    pub fn decodes_with_own_kernels(&self) -> bool {
        matches!(self, Model::Staged(s) if matches!(s.decoder, Decoder::Ours(_)))
    }

    /// Runs one sentence, handing its audio to `out` in order: the whole sentence at once, or
    /// with `first_piece` a short first piece and then the rest. The flag says the piece is the
    /// sentence's last.
    pub fn synthesize(
        &mut self,
        req: Request<'_>,
        out: &mut dyn FnMut(&[f32], bool),
    ) -> Result<(), TtsError> {
        let inputs = request_inputs(&req).map_err(synthesis)?;
        match self {
            Model::Whole(session) => {
                let outputs = session
                    .run_with_options(inputs, req.run)
                    .map_err(synthesis)?;
                let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(synthesis)?;
                out(audio, true);
                Ok(())
            }
            Model::Staged(stages) => {
                let front = stages.front(inputs, req.run)?;
                let frames = front.values().map(Owned::frames).max().unwrap_or(0);
                if frames == 0 {
                    out(&[], true);
                    return Ok(());
                }
                let cut = FIRST_PIECE_FRAMES;
                let stop = (req.run, req.stop);
                if req.first_piece && frames >= SPLIT_FRAMES {
                    out(&stages.decode(&front, frames, 0, cut, stop)?, false);
                    out(&stages.decode(&front, frames, cut, frames, stop)?, true);
                } else {
                    out(&stages.decode(&front, frames, 0, frames, stop)?, true);
                }
                Ok(())
            }
        }
    }
}

fn synthesis(e: ort::Error) -> TtsError {
    TtsError::Synthesis(e.to_string())
}

/// Our decoder for the decoder part, if it reads this graph and, on a test latent, says what
/// ONNX Runtime says (to 1e-3 of full scale: rounding alone stays under 1e-5).
fn ours(
    part: &[u8],
    threads: usize,
    onnx: &mut Session,
    inputs: &[String],
) -> Result<hifigan::HifiGan, String> {
    let mut ours = hifigan::HifiGan::from_onnx(part, threads)?;
    let [input] = inputs else {
        return Err(format!("the decoder reads {} tensors", inputs.len()));
    };
    let (channels, frames) = (ours.in_channels(), 24);
    // A latent of a speech-like scale, the same on every load.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let z: Vec<f32> = (0..channels * frames)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect();
    let value =
        Tensor::from_array(([1usize, channels, frames], z.clone())).map_err(|e| e.to_string())?;
    let outputs = onnx
        .run(vec![(input.clone(), SessionInputValue::from(value))])
        .map_err(|e| e.to_string())?;
    let (_, expected) = outputs[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let got = ours
        .decode(&z, frames, &AtomicBool::new(false))
        .ok_or("stopped")?;
    if got.len() != expected.len() {
        return Err(format!(
            "{} samples where ONNX Runtime makes {}",
            got.len(),
            expected.len()
        ));
    }
    let worst = got
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if worst >= 1e-3 || !got.iter().all(|x| x.is_finite()) {
        return Err(format!("differs from ONNX Runtime by {worst}"));
    }
    Ok(ours)
}

type Inputs = Vec<(String, SessionInputValue<'static>)>;

/// The voice's graph inputs for one sentence.
fn request_inputs(req: &Request<'_>) -> Result<Inputs, ort::Error> {
    let n = req.ids.len();
    let mut inputs: Inputs = vec![
        (
            "input".into(),
            Tensor::from_array(([1usize, n], req.ids.clone()))?.into(),
        ),
        (
            "input_lengths".into(),
            Tensor::from_array(([1usize], vec![n as i64]))?.into(),
        ),
        (
            "scales".into(),
            Tensor::from_array(([3usize], req.scales.to_vec()))?.into(),
        ),
    ];
    if let Some(sid) = req.speaker {
        inputs.push((
            "sid".into(),
            Tensor::from_array(([1usize], vec![sid]))?.into(),
        ));
    }
    Ok(inputs)
}

impl Stages {
    /// Runs the front: what flow and decoder read, by name.
    fn front(
        &mut self,
        inputs: Inputs,
        run: &RunOptions,
    ) -> Result<HashMap<String, Owned>, TtsError> {
        let outputs = self
            .front
            .run_with_options(inputs, run)
            .map_err(synthesis)?;
        let mut front = HashMap::new();
        for (name, value) in outputs.iter() {
            front.insert(
                name.to_string(),
                Owned::from_output(&value).map_err(synthesis)?,
            );
        }
        Ok(front)
    }

    /// The audio of frames `lo..hi` of a sentence of `frames` frames, from the front's outputs.
    fn decode(
        &mut self,
        front: &HashMap<String, Owned>,
        frames: usize,
        lo: usize,
        hi: usize,
        (run, stop): (&RunOptions, &AtomicBool),
    ) -> Result<Vec<f32>, TtsError> {
        let err = synthesis;
        // The decoder needs latent frames around the piece; the flow, frames around those.
        let (z_lo, z_hi) = (
            lo.saturating_sub(DECODER_CONTEXT),
            (hi + DECODER_CONTEXT).min(frames),
        );
        let (f_lo, f_hi) = (
            z_lo.saturating_sub(FLOW_CONTEXT),
            (z_hi + FLOW_CONTEXT).min(frames),
        );
        let window = |t: &Owned, a: usize, b: usize| {
            if t.frames() == frames {
                t.slice_frames(a, b)
            } else {
                t.clone()
            }
        };
        let find = |name: &str| {
            front.get(name).ok_or_else(|| {
                TtsError::Synthesis(format!("the voice's front stage did not compute {name}"))
            })
        };
        let inputs = self
            .flow_inputs
            .iter()
            .map(|name| {
                Ok((
                    name.clone(),
                    window(find(name)?, f_lo, f_hi).value().map_err(err)?,
                ))
            })
            .collect::<Result<Vec<_>, TtsError>>()?;
        let flowed = {
            let outputs = self.flow.run_with_options(inputs, run).map_err(err)?;
            let mut flowed = HashMap::new();
            for (name, value) in outputs.iter() {
                let t = Owned::from_output(&value).map_err(err)?;
                // Back to the decoder's window.
                let t = if t.frames() == f_hi - f_lo {
                    t.slice_frames(z_lo - f_lo, z_hi - f_lo)
                } else {
                    t
                };
                flowed.insert(name.to_string(), t);
            }
            flowed
        };
        let latent = |name: &String| -> Result<Owned, TtsError> {
            Ok(match flowed.get(name) {
                Some(t) => t.clone(),
                None => window(find(name)?, z_lo, z_hi),
            })
        };
        let onnx_audio;
        let our_audio;
        let audio: &[f32] = match &mut self.decoder {
            Decoder::Ours(ours) => {
                // One input, checked when the voice loaded.
                let z = latent(&self.decoder_inputs[0])?;
                let frames = z.frames();
                if z.data.len() != ours.in_channels() * frames {
                    return Err(TtsError::Synthesis(format!(
                        "the decoder's latent has shape {:?}",
                        z.shape
                    )));
                }
                our_audio = ours
                    .decode(&z.data, frames, stop)
                    .ok_or(TtsError::Cancelled)?;
                &our_audio
            }
            Decoder::Onnx(session) => {
                let inputs = self
                    .decoder_inputs
                    .iter()
                    .map(|name| Ok((name.clone(), latent(name)?.value().map_err(err)?)))
                    .collect::<Result<Vec<_>, TtsError>>()?;
                onnx_audio = session.run_with_options(inputs, run).map_err(err)?;
                onnx_audio[0].try_extract_tensor::<f32>().map_err(err)?.1
            }
        };
        let hop = audio.len() / (z_hi - z_lo);
        if hop * (z_hi - z_lo) != audio.len() {
            return Err(TtsError::Synthesis(format!(
                "the decoder made {} samples from {} frames",
                audio.len(),
                z_hi - z_lo
            )));
        }
        Ok(audio[(lo - z_lo) * hop..(hi - z_lo) * hop].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joe() -> Vec<u8> {
        let m = hark_core::testing::init_onnx();
        std::fs::read(m.join("piper-joe/en_US-joe-medium.onnx")).unwrap()
    }

    fn session(bytes: &[u8]) -> Result<Session, ort::Error> {
        Session::builder()?
            .with_intra_threads(2)
            .map_err(ort::Error::<()>::from)?
            .commit_from_memory(bytes)
    }

    #[test]
    fn a_sentence_decoded_in_pieces_equals_it_decoded_whole() {
        let Model::Staged(mut stages) =
            Model::load(&joe(), 2, DecoderChoice::Ours, session).unwrap()
        else {
            panic!("the joe voice must split into stages");
        };
        let run = RunOptions::new().unwrap();
        // Phoneme ids of a sentence's length (about two seconds of speech).
        let mut ids = vec![1i64, 0];
        for i in 0..60 {
            ids.extend([3 + (i * 7) % 40, 0]);
        }
        ids.push(2);
        let req = Request {
            ids,
            scales: [0.667, 1.0, 0.8],
            speaker: None,
            run: &run,
            stop: &AtomicBool::new(false),
            first_piece: true,
        };
        let front = stages.front(request_inputs(&req).unwrap(), &run).unwrap();
        let frames = front.values().map(Owned::frames).max().unwrap();
        assert!(frames > 100, "{frames} frames");
        let whole = stages
            .decode(&front, frames, 0, frames, (&run, &AtomicBool::new(false)))
            .unwrap();
        for cuts in [vec![0, 16, frames], vec![0, 16, 40, 41, frames]] {
            let mut pieces = Vec::new();
            for w in cuts.windows(2) {
                pieces.extend(
                    stages
                        .decode(&front, frames, w[0], w[1], (&run, &AtomicBool::new(false)))
                        .unwrap(),
                );
            }
            assert_eq!(pieces.len(), whole.len());
            let worst = pieces
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-4,
                "pieces {cuts:?} differ from the whole by {worst}"
            );
        }
        // And the public path: a short first piece, then the rest, the same length in all.
        let mut got = Vec::new();
        let mut lasts = Vec::new();
        Model::Staged(stages)
            .synthesize(req, &mut |a, last| {
                got.push(a.len());
                lasts.push(last);
            })
            .unwrap();
        assert_eq!(lasts, [false, true]);
        assert_eq!(got[0], FIRST_PIECE_FRAMES * 256);
    }

    #[test]
    fn a_graph_that_is_not_a_vits_voice_is_not_cut() {
        let m = hark_core::testing::init_onnx();
        let vad = std::fs::read(m.join("silero-vad/silero_vad.onnx")).unwrap();
        let why = split::split(&vad)
            .err()
            .expect("Silero VAD is not a VITS voice");
        assert!(!why.is_empty());
        assert!(split::split(&[0x0a, 0xff]).is_err(), "garbage is an error");
    }

    /// Phoneme ids of a sentence's length (about two seconds of speech).
    fn sentence_ids() -> Vec<i64> {
        let mut ids = vec![1i64, 0];
        for i in 0..60 {
            ids.extend([3 + (i * 7) % 40, 0]);
        }
        ids.push(2);
        ids
    }

    #[test]
    fn our_decoder_says_what_onnx_runtime_says() {
        let joe = joe();
        let load = |choice| match Model::load(&joe, 2, choice, session).unwrap() {
            Model::Staged(s) => s,
            Model::Whole(_) => panic!("the joe voice must split into stages"),
        };
        let (mut ours, mut onnx) = (load(DecoderChoice::Ours), load(DecoderChoice::OnnxRuntime));
        if !kernels::supported() {
            eprintln!("skipped: this CPU has no AVX-512, so the decoder runs on ONNX Runtime");
            assert!(matches!(ours.decoder, Decoder::Onnx(_)));
            return;
        }
        assert!(matches!(ours.decoder, Decoder::Ours(_)));
        assert!(matches!(onnx.decoder, Decoder::Onnx(_)));
        let run = RunOptions::new().unwrap();
        let no = AtomicBool::new(false);
        let req = Request {
            ids: sentence_ids(),
            scales: [0.667, 1.0, 0.8],
            speaker: None,
            run: &run,
            stop: &no,
            first_piece: false,
        };
        // The same latent through both decoders (the front samples noise: run it once).
        let front = ours.front(request_inputs(&req).unwrap(), &run).unwrap();
        let frames = front.values().map(Owned::frames).max().unwrap();
        for (lo, hi) in [
            (0, frames),
            (0, FIRST_PIECE_FRAMES),
            (frames / 3, frames / 3 + 1),
        ] {
            let a = ours.decode(&front, frames, lo, hi, (&run, &no)).unwrap();
            let b = onnx.decode(&front, frames, lo, hi, (&run, &no)).unwrap();
            assert_eq!(a.len(), b.len());
            assert_eq!(a.len(), (hi - lo) * 256);
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            let loudest = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            if hi - lo == frames {
                assert!(loudest > 0.05, "speech, not silence: peak {loudest}");
            }
            assert!(worst < 1e-4, "frames {lo}..{hi} differ by {worst}");
        }
    }

    #[test]
    fn our_decoder_stops_when_told() {
        if !kernels::supported() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let parts = split::split(&joe()).unwrap();
        let mut ours = hifigan::HifiGan::from_onnx(&parts.decoder, 2).unwrap();
        let frames = 2000; // about 23 s of audio: several hundred milliseconds of work
        let z = vec![0.1f32; ours.in_channels() * frames];
        assert!(ours.decode(&z, frames, &AtomicBool::new(true)).is_none());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let remote = stop.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            remote.store(true, std::sync::atomic::Ordering::SeqCst);
            std::time::Instant::now()
        });
        let got = ours.decode(&z, frames, &stop);
        let returned = std::time::Instant::now();
        let told = stopper.join().unwrap();
        assert!(got.is_none(), "a 23 s decode finished within 30 ms?");
        // Generous for a shared machine; `hark bench tts` measures a barge-in.
        let late = returned.saturating_duration_since(told);
        assert!(
            late < std::time::Duration::from_millis(50),
            "stopped {late:?} late"
        );
        // And it still decodes afterwards.
        assert_eq!(
            ours.decode(&z[..ours.in_channels() * 20], 20, &AtomicBool::new(false))
                .map(|a| a.len()),
            Some(20 * 256)
        );
    }

    #[test]
    fn a_graph_that_is_not_piper_hifigan_stays_on_onnx_runtime() {
        let m = hark_core::testing::init_onnx();
        let vad = std::fs::read(m.join("silero-vad/silero_vad.onnx")).unwrap();
        assert!(hifigan::HifiGan::from_onnx(&vad, 2).is_err());
        assert!(hifigan::HifiGan::from_onnx(&[0x0a, 0xff], 2).is_err());
        // The whole voice is not the decoder part either (its /dec/ input is computed inside).
        let parts = split::split(&joe()).unwrap();
        assert!(hifigan::HifiGan::from_onnx(&parts.flow, 2).is_err());
    }
}
