//! A stage that fails ends its turn with a clear message, and the next turn still works: the
//! real LLM refuses a prompt longer than its context (a small one here), offline and live.

use hark_core::{AudioBuffer, ASR_SAMPLE_RATE};
mod common;

use hark_pipeline::{Pipeline, PipelineConfig};

fn pipeline() -> Pipeline {
    let paths = common::default_models();
    let mut config = PipelineConfig::new(paths);
    config.threads = 2;
    // Room for the system prompt and a short command, not for a long sentence.
    config.context = 64;
    config.max_reply_tokens = 12;
    Pipeline::load(config).unwrap()
}

/// A long LibriVox sentence, then "go forward ten meters".
fn two_turns() -> AudioBuffer {
    let dir = hark_core::testing::models_dir().join("testdata/pocketsphinx");
    let long =
        hark_audio::read_wav(&dir.join("librivox/sense_and_sensibility_01_austen_64kb-0870.wav"))
            .expect("run `hark models fetch --set test`");
    let long = hark_audio::resample(&long.audio, ASR_SAMPLE_RATE).unwrap();
    let short: Vec<f32> = std::fs::read(dir.join("goforward.raw"))
        .unwrap()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect();
    let mut samples = long.samples;
    samples.extend(vec![0.0; 2 * ASR_SAMPLE_RATE as usize]);
    samples.extend(short);
    samples.extend(vec![0.0; 3 * ASR_SAMPLE_RATE as usize]);
    AudioBuffer::new(samples, ASR_SAMPLE_RATE)
}

fn check(turns: &[hark_core::TurnRecord]) {
    assert_eq!(turns.len(), 2, "{turns:#?}");
    let error = turns[0].error.as_deref().expect("the long turn fails");
    assert!(
        error.contains("language model") && error.contains("context"),
        "{error}"
    );
    assert!(turns[1].error.is_none(), "{:?}", turns[1]);
    assert!(!turns[1].reply.is_empty());
    assert!(turns[1].transcript.to_lowercase().contains("forward"));
}

#[test]
fn a_failed_turn_reports_why_and_the_next_turn_is_answered() {
    let mut p = pipeline();
    let audio = two_turns();
    let offline = p.process(&audio, "two-turns", |_| {}).unwrap();
    check(&offline.turns);
    // The failed exchange is not in the history.
    assert_eq!(p.history().len(), 2);

    p.reset().expect("a new conversation");
    let live = p.process_realtime(&audio, "two-turns", |_| {}).unwrap();
    check(&live.turns);
    assert_eq!(p.history().len(), 2);
}
