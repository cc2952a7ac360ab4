//! Streaming recognition on real recorded speech with the real tiny.en model: audio fed in 20 ms
//! pieces as a microphone would deliver it.

use std::path::PathBuf;

use hark_asr::{AsrConfig, AsrEvent, StreamConfig, StreamingRecognizer, Transcriber};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models() -> PathBuf {
    std::env::var_os("HARK_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"))
}

fn recognizer() -> StreamingRecognizer {
    let model = models().join("whisper-tiny.en/ggml-tiny.en.bin");
    assert!(
        model.is_file(),
        "{} is missing: run `hark models fetch`",
        model.display()
    );
    let transcriber = Transcriber::load(&model, AsrConfig::default()).expect("load Whisper");
    StreamingRecognizer::new(transcriber, StreamConfig::default())
}

/// Raw 16 kHz 16-bit mono from pocketsphinx-testdata.
fn raw_speech(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(models().join("testdata/pocketsphinx").join(name)).unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

/// Feeds `audio` in 20 ms pieces; returns the events and the final transcript.
fn stream(rec: &mut StreamingRecognizer, audio: &[f32]) -> (Vec<AsrEvent>, String) {
    let mut events = Vec::new();
    for piece in audio.chunks(320) {
        events.extend(rec.push(piece).unwrap());
    }
    (events, rec.finish().unwrap().text)
}

fn keys(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect()
        })
        .collect()
}

#[test]
fn the_stable_prefix_only_grows_and_leads_to_the_final_transcript() {
    let mut rec = recognizer();
    for name in ["goforward.raw", "something.raw"] {
        let (events, text) = stream(&mut rec, &raw_speech(name));
        let partials = events
            .iter()
            .filter(|e| matches!(e, AsrEvent::Partial(_)))
            .count();
        assert!(partials >= 3, "{name}: only {partials} partial hypotheses");
        let stables: Vec<&String> = events
            .iter()
            .filter_map(|e| match e {
                AsrEvent::Stable(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(
            !stables.is_empty(),
            "{name}: nothing was committed while speaking"
        );
        for pair in stables.windows(2) {
            let (a, b) = (keys(pair[0]), keys(pair[1]));
            assert!(
                b.len() > a.len() && b.starts_with(&a),
                "{name}: {pair:?} is not monotone"
            );
        }
        eprintln!(
            "{name}: committed {:?} before the end; final {text:?}",
            stables.last()
        );
        assert!(!text.is_empty(), "{name}: no final transcript");
    }
}

#[test]
fn the_final_transcript_equals_the_whole_utterance_decode() {
    let audio = raw_speech("goforward.raw");
    let (_, streamed) = stream(&mut recognizer(), &audio);
    assert_eq!(streamed, "Go forward 10 meters.");
}

/// Silence gives no words, partial or final (the VAD in front keeps noise out of turns; see
/// hark-audio's `white_noise_is_no_turn`).
#[test]
fn silence_gives_no_words() {
    let mut rec = recognizer();
    let (events, text) = stream(&mut rec, &vec![0f32; 48_000]);
    assert!(events.is_empty(), "silence: {events:?}");
    assert_eq!(text, "");
    // Near-silence (a -70 dBFS hum) too.
    let hum: Vec<f32> = (0..48_000)
        .map(|i| 3e-4 * (i as f32 * 0.05).sin())
        .collect();
    let (events, text) = stream(&mut rec, &hum);
    assert!(
        events.is_empty() && text.is_empty(),
        "hum: {events:?} {text:?}"
    );
}
