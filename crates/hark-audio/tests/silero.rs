//! Silero VAD and the turn detector on real recorded speech.

use hark_audio::{SileroVad, TurnConfig, TurnDetector};

use hark_core::testing::models_dir as models;

fn detector() -> TurnDetector {
    let m = hark_core::testing::init_onnx();
    TurnDetector::new(
        SileroVad::load(&m.join("silero-vad/silero_vad.onnx")).unwrap(),
        TurnConfig::default(),
    )
}

fn raw(name: &str) -> Vec<f32> {
    let path = models().join("testdata/pocketsphinx").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `hark models fetch --set test`",
            path.display()
        )
    });
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

#[test]
fn two_utterances_with_a_pause_are_two_turns() {
    let mut d = detector();
    let (a, b) = (raw("goforward.raw"), raw("something.raw"));
    let mut input = a.clone();
    input.extend(vec![0.0; 16_000]); // a second of silence
    input.extend(&b);
    input.extend(vec![0.0; 16_000]);
    let turns = d.detect(&input).unwrap();
    assert_eq!(turns.len(), 2, "{turns:?}");
    // Each turn ends after its speech and is decided after the configured silence.
    assert!(turns[0].speech_end <= a.len() && turns[0].speech_end > a.len() / 2);
    assert!(turns[1].speech_start > a.len() + 16_000 - 4_000);
    for t in &turns {
        let waited = t.decided_ms() - t.speech_end_ms();
        assert!((400.0..800.0).contains(&waited), "{waited} ms");
        assert!(t.audio_start < t.speech_start, "pre-roll kept");
    }
}

#[test]
fn silence_is_no_turn() {
    let mut d = detector();
    assert!(d.detect(&vec![0.0; 16_000 * 5]).unwrap().is_empty());
    assert!(d.detect(&[]).unwrap().is_empty());
}

/// White noise is where Whisper invents whole sentences ("I'm not going to be too close."): the
/// VAD in front of it must not let it through as a turn.
#[test]
fn white_noise_is_no_turn() {
    let mut d = detector();
    let noise = hark_core::audio::white_noise(16_000 * 5, 0.1, 0x2545_f491_4f6c_dd1d);
    let turns = d.detect(&noise).unwrap();
    assert!(turns.is_empty(), "white noise made turns: {turns:?}");
}

#[test]
fn a_damaged_model_is_an_error() {
    detector();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("vad.onnx");
    std::fs::write(&bad, b"\x08\x07garbage").unwrap();
    assert!(SileroVad::load(&bad)
        .err()
        .unwrap()
        .to_string()
        .contains("vad.onnx"));
}

/// The webrtc gate spares Silero the silence and changes no turn.
#[test]
fn the_webrtc_gate_skips_silence_and_keeps_the_turns() {
    let (a, b) = (raw("goforward.raw"), raw("something.raw"));
    let input = [
        vec![0.0; 32_000],
        a,
        vec![0.0; 24_000],
        b,
        vec![0.0; 32_000],
    ]
    .concat();
    let mut gated = detector();
    let mut ungated = {
        let m = models();
        TurnDetector::new(
            SileroVad::load(&m.join("silero-vad/silero_vad.onnx")).unwrap(),
            TurnConfig {
                gate_mode: None,
                ..TurnConfig::default()
            },
        )
    };
    let with_gate = gated.detect(&input).unwrap();
    let without = ungated.detect(&input).unwrap();
    assert_eq!(with_gate.len(), 2);
    for (g, u) in with_gate.iter().zip(&without) {
        assert!(
            g.speech_start.abs_diff(u.speech_start) <= 2 * 512,
            "{g:?} vs {u:?}"
        );
        assert!(
            g.speech_end.abs_diff(u.speech_end) <= 2 * 512,
            "{g:?} vs {u:?}"
        );
    }
    let (ran, all) = gated.silero_windows();
    assert_eq!(ungated.silero_windows(), (all, all));
    // Over half the input is silence; Silero must have been spared most of it.
    assert!(ran * 10 < all * 7, "Silero ran on {ran} of {all} windows");
}

#[test]
fn digital_silence_after_a_voice_is_heard_as_silence_at_once() {
    // The bundled espeak-ng question ends in digital silence, in which Silero's probability
    // stays above the silence threshold for a window or more (measured: 0.78 after the last
    // word); a window with no signal is silence whatever Silero says.
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let question = hark_audio::read_wav(&assets.join("question-capital.wav"))
        .unwrap()
        .audio;
    let question = hark_audio::resample(&question, 16_000).unwrap().samples;
    let voiced = question
        .iter()
        .rposition(|s| s.abs() > 1e-4)
        .expect("a voice");
    let mut input = vec![0.0; 8_000];
    input.extend(&question[..=voiced]);
    let tail_start = input.len();
    input.extend(vec![0.0; 16_000]);
    let mut d = detector();
    let probs = d.probabilities(&input).unwrap();
    let w = hark_audio::vad::WINDOW;
    // Every window wholly after the voice is silence; the one it ends in is still voice.
    let first_silent = tail_start.div_ceil(w);
    assert!(probs[first_silent..].iter().all(|&p| p == 0.0), "{probs:?}");
    assert!(probs[first_silent - 2] >= 0.5, "{probs:?}");
}
