//! The real joe voice: synthesis, phonemes, and broken voice files.

use std::path::PathBuf;

use hark_tts::Voice;

fn init() -> PathBuf {
    hark_core::testing::init_onnx()
}

fn voice() -> Voice {
    let m = init();
    Voice::load(
        &m.join("piper-joe/en_US-joe-medium.onnx"),
        &m.join("piper-joe/en_US-joe-medium.onnx.json"),
        &m.join("espeak/espeak-ng-data"),
        2,
    )
    .unwrap()
}

#[test]
fn speaks_a_sentence_at_the_voice_rate() {
    let mut v = voice();
    assert_eq!(v.sample_rate(), 22_050);
    assert_eq!(v.phonemes("Hello world.").unwrap(), "həlˈoʊ wˈɜːld.");
    let audio = v.synthesize("**Hello** there. How are you today?").unwrap();
    let secs = audio.duration_ms() / 1000.0;
    assert!((1.0..4.0).contains(&secs), "{secs} s");
    assert!(audio.rms() > 0.02, "audible: rms {}", audio.rms());
    assert!(
        audio.samples[0].abs() < 0.01,
        "starts on the first phoneme after a fade, not a click"
    );
    assert!(
        v.synthesize("  ** ").unwrap().is_empty(),
        "nothing speakable, no audio"
    );
}

#[test]
fn broken_voice_files_are_clear_errors() {
    let m = init();
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("v.onnx");
    std::fs::write(&onnx, b"not onnx").unwrap();
    let json = m.join("piper-joe/en_US-joe-medium.onnx.json");
    let espeak = m.join("espeak/espeak-ng-data");
    let err = Voice::load(&onnx, &json, &espeak, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("could not be loaded"), "{err}");
    let bad_json = dir.path().join("v.onnx.json");
    std::fs::write(&bad_json, b"{\"audio\": 3}").unwrap();
    let err = Voice::load(
        &m.join("piper-joe/en_US-joe-medium.onnx"),
        &bad_json,
        &espeak,
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("voice configuration"), "{err}");
}

#[test]
fn a_voice_says_a_text_the_same_way_in_every_run() {
    // VITS samples its durations and its prior: seeded, two fresh voices make the same audio
    // for the same calls; within a run the noise still varies from call to call.
    let text = "The meeting is at three thirty on Tuesday.";
    let (mut a, mut b) = (voice(), voice());
    let first = a.synthesize(text).unwrap();
    assert_eq!(first.samples, b.synthesize(text).unwrap().samples);
    assert_eq!(
        a.synthesize(text).unwrap().samples,
        b.synthesize(text).unwrap().samples
    );
    assert_ne!(first.samples, a.synthesize(text).unwrap().samples);
}
