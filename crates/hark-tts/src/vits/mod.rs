//! Piper's VITS model on ONNX Runtime, run in three stages (see [`split`]) so that a sentence's
//! first fraction of a second can be decoded, and heard, before the rest.
//!
//! Flow and decoder are convolution stacks over the audio frames: a frame's output depends on
//! its neighbours up to a fixed distance (the receptive field) and on nothing further. A slice
//! of frames computed with that much context on each side equals the same frames of the whole
//! run (to float rounding: the test compares them), so a sentence can be decoded in pieces. The
//! context is recomputed for each piece, so only the first sentence of a reply is cut: the
//! first piece is short, the rest of the sentence is one piece.

mod proto;
mod split;

use std::collections::HashMap;

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
    decoder: Session,
    flow_inputs: Vec<String>,
    decoder_inputs: Vec<String>,
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
    /// Decode a short first piece ahead of the rest of the sentence.
    pub first_piece: bool,
}

impl Model {
    /// Loads `model_bytes` in stages when the graph can be cut, whole otherwise.
    pub fn load(
        model_bytes: &[u8],
        session: impl Fn(&[u8]) -> Result<Session, ort::Error>,
    ) -> Result<Model, ort::Error> {
        match split::split(model_bytes) {
            Ok(parts) => Ok(Model::Staged(Box::new(Stages {
                front: session(&parts.front)?,
                flow: session(&parts.flow)?,
                decoder: session(&parts.decoder)?,
                flow_inputs: parts.flow_inputs,
                decoder_inputs: parts.decoder_inputs,
            }))),
            Err(why) => {
                tracing::warn!("voice runs whole, without streaming its sentences: {why}");
                Ok(Model::Whole(session(model_bytes)?))
            }
        }
    }

    pub fn is_staged(&self) -> bool {
        matches!(self, Model::Staged(_))
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
                if req.first_piece && frames >= 2 * cut + DECODER_CONTEXT {
                    out(&stages.decode(&front, frames, 0, cut, req.run)?, false);
                    out(&stages.decode(&front, frames, cut, frames, req.run)?, true);
                } else {
                    out(&stages.decode(&front, frames, 0, frames, req.run)?, true);
                }
                Ok(())
            }
        }
    }
}

fn synthesis(e: ort::Error) -> TtsError {
    TtsError::Synthesis(e.to_string())
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
        run: &RunOptions,
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
        let inputs = self
            .decoder_inputs
            .iter()
            .map(|name| {
                let t = match flowed.get(name) {
                    Some(t) => t.clone(),
                    None => window(find(name)?, z_lo, z_hi),
                };
                Ok((name.clone(), t.value().map_err(err)?))
            })
            .collect::<Result<Vec<_>, TtsError>>()?;
        let outputs = self.decoder.run_with_options(inputs, run).map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
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
        let Model::Staged(mut stages) = Model::load(&joe(), session).unwrap() else {
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
            first_piece: true,
        };
        let front = stages.front(request_inputs(&req).unwrap(), &run).unwrap();
        let frames = front.values().map(Owned::frames).max().unwrap();
        assert!(frames > 100, "{frames} frames");
        let whole = stages.decode(&front, frames, 0, frames, &run).unwrap();
        for cuts in [vec![0, 16, frames], vec![0, 16, 40, 41, frames]] {
            let mut pieces = Vec::new();
            for w in cuts.windows(2) {
                pieces.extend(stages.decode(&front, frames, w[0], w[1], &run).unwrap());
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
}
