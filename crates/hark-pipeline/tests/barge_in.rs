//! Barge-in with the real default models: the user speaking while Hark answers stops the
//! answer, and the conversation keeps only what was heard of it.

use hark_core::{AudioBuffer, ASR_SAMPLE_RATE};
use hark_llm::Role;
mod common;

use hark_pipeline::{Pipeline, PipelineConfig};

#[test]
fn speaking_over_a_reply_stops_it_and_the_history_keeps_what_was_heard() {
    let paths = common::default_models();
    let mut config = PipelineConfig::new(paths);
    config.threads = 2;
    let mut pipeline = Pipeline::load(config).unwrap();
    // "Go forward ten meters", then, a second or two into the answer, "go somewhere and do
    // something" (the answer starts about 0.6 s after the first question and lasts seconds).
    let input = [
        vec![0.0; 4_800],
        common::raw("goforward.raw"),
        vec![0.0; 24_000],
        common::raw("something.raw"),
        vec![0.0; 64_000],
    ]
    .concat();
    let conv = pipeline
        .process(
            &AudioBuffer::new(input, ASR_SAMPLE_RATE),
            "barge-in",
            |_| {},
        )
        .unwrap();
    assert_eq!(conv.turns.len(), 2, "{:#?}", conv.turns);
    let (first, second) = (&conv.turns[0], &conv.turns[1]);
    assert!(
        first.reply_start_ms < second.speech_start_ms,
        "the first reply had started when the user spoke again: {first:?} {second:?}"
    );
    // The first reply stops within 100 ms of the user's voice.
    let rate = conv.timeline.sample_rate() as f64;
    let (start, len) = conv.timeline.replies()[0];
    let stopped_ms = (start + len) as f64 * 1000.0 / rate;
    assert!(
        stopped_ms <= second.speech_start_ms + 100.0 && stopped_ms > second.speech_start_ms,
        "stopped at {stopped_ms} ms, user spoke at {} ms",
        second.speech_start_ms
    );
    // The history keeps only what was heard of the first reply.
    let history = pipeline.history();
    assert_eq!(history.len(), 4);
    assert_eq!(history[1].role, Role::Assistant);
    let heard = history[1].content.split_whitespace().count();
    let said = first.reply.split_whitespace().count();
    assert!(
        heard < said,
        "{:?} vs the whole {:?}",
        history[1].content,
        first.reply
    );
    assert!(first
        .reply
        .starts_with(history[1].content.trim_end_matches(['.', ','])));
    // And the second turn was answered.
    assert!(
        !second.reply.is_empty() && second.error.is_none(),
        "{second:?}"
    );
}
