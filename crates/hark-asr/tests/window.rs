//! The fitted encoder window on real recorded speech and the real tiny.en model.

use std::path::PathBuf;

use hark_asr::{AsrConfig, EncoderWindow, Transcriber};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn transcriber(window: EncoderWindow) -> Transcriber {
    let models = std::env::var_os("HARK_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    let model = models.join("whisper-tiny.en/ggml-tiny.en.bin");
    assert!(
        model.is_file(),
        "{} is missing: run `hark models fetch`",
        model.display()
    );
    let config = AsrConfig {
        window,
        ..AsrConfig::default()
    };
    Transcriber::load(&model, config).expect("load Whisper")
}

/// "go forward ten meters", 16 kHz mono, from pocketsphinx-testdata.
fn speech() -> Vec<f32> {
    let mut reader = hound::WavReader::open(root().join("assets/goforward.wav")).unwrap();
    reader
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect()
}

#[test]
fn the_fitted_window_hears_what_the_full_window_hears() {
    let audio = speech();
    let full = transcriber(EncoderWindow::Full).transcribe(&audio).unwrap();
    let fitted = transcriber(hark_asr::FITTED_WINDOW)
        .transcribe(&audio)
        .unwrap();
    assert_eq!(full.text, "Go forward 10 meters.");
    assert_eq!(fitted.text, full.text);
}

#[test]
fn a_runaway_short_window_falls_back_to_the_full_window() {
    // 64 frames of margin make tiny.en loop on this recording ("Go forward 10 meters. Go
    // forward 10 meters. …", measured); the guard must notice and decode again in full.
    let audio = speech();
    let text = transcriber(EncoderWindow::Fit { margin_frames: 64 })
        .transcribe(&audio)
        .unwrap()
        .text;
    assert!(!hark_asr::repeats_itself(&text), "{text:?}");
    assert_eq!(text, "Go forward 10 meters.");
}
