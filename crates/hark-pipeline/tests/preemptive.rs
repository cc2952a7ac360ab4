//! Live preemptive replies with the real default models, the input fed at real-time pace: a
//! reply begun at a pause plays the moment the turn is decided, and one begun at a pause the
//! user then speaks past is never heard and leaves nothing in the conversation.

use hark_core::{AudioBuffer, ASR_SAMPLE_RATE};
use hark_llm::Role;
use hark_pipeline::listen::ListenConfig;
use hark_pipeline::{Pipeline, PipelineConfig};
mod common;

/// One test at a time: each runs a live pipeline on all cores, and whether a reply is ready
/// before its turn is decided depends on it.
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A live pipeline whose turns end only after `end_silence_ms` of silence, whatever the
/// transcript says: long enough that the reply begun at the pause is ready well before.
fn pipeline(end_silence_ms: f64) -> Pipeline {
    let mut config = PipelineConfig::new(common::default_models());
    config.threads = 2;
    config.turn.end_silence_ms = end_silence_ms;
    config.listen = Some(ListenConfig {
        finished_end_silence_ms: end_silence_ms,
        unfinished_end_silence_ms: end_silence_ms,
        partials: false,
        ..ListenConfig::default()
    });
    assert!(config.preemptive);
    Pipeline::load(config).unwrap()
}

fn seconds(s: f64) -> Vec<f32> {
    vec![0.0; (s * ASR_SAMPLE_RATE as f64) as usize]
}

#[test]
fn a_reply_begun_at_the_pause_plays_at_the_decision() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut pipeline = pipeline(700.0);
    let input = [seconds(0.3), common::raw("goforward.raw"), seconds(2.5)].concat();
    let conv = pipeline
        .process_realtime(&AudioBuffer::new(input, ASR_SAMPLE_RATE), "held", |_| {})
        .unwrap();
    assert_eq!(conv.turns.len(), 1, "{:#?}", conv.turns);
    let rec = &conv.turns[0];
    assert!(rec.error.is_none() && !rec.reply.is_empty(), "{rec:?}");
    // The reply was begun on the transcript at the pause, hundreds of ms before the decision...
    let decided_ms = rec.speech_end_ms + rec.spans.endpoint;
    assert!(rec.head_start_ms > 100.0, "{rec:?}");
    // ...held until then (never before: the user might have gone on)...
    assert!(rec.reply_start_ms >= decided_ms - 5.0, "{rec:?}");
    // ...and played at once: what is left after the decision is handing its audio over, not
    // making it (generous bounds for a loaded machine; it is a few ms here).
    assert!(rec.reply_start_ms - decided_ms < 100.0, "{rec:?}");
    assert!(
        rec.spans.llm_ttft + rec.spans.first_clause < 50.0,
        "{rec:?}"
    );
    // Only the work after the decision counts, so the spans still add up to V2V.
    assert!((rec.v2v_ms - rec.spans.total()).abs() < 1.0, "{rec:?}");
    assert_eq!(conv.timeline.replies().len(), 1);
}

#[test]
fn a_reply_begun_at_a_pause_the_user_speaks_past_is_never_heard() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut pipeline = pipeline(1500.0);
    // "Go forward ten meters", a pause of about 700 ms (the recording ends in half a second of
    // quiet; its transcript is decoded and a reply begun), then "go somewhere and do
    // something": one turn.
    let input = [
        seconds(0.3),
        common::raw("goforward.raw"),
        seconds(0.2),
        common::raw("something.raw"),
        seconds(3.0),
    ]
    .concat();
    let conv = pipeline
        .process_realtime(&AudioBuffer::new(input, ASR_SAMPLE_RATE), "dropped", |_| {})
        .unwrap();
    assert_eq!(conv.turns.len(), 1, "{:#?}", conv.turns);
    let rec = &conv.turns[0];
    let text = rec.transcript.to_lowercase();
    assert!(
        text.contains("forward") && text.contains("something"),
        "{rec:?}"
    );
    assert!(rec.preemptive_dropped >= 1, "{rec:?}");
    assert_eq!(rec.turn, 1, "the dropped reply took no turn number");
    // One reply on the timeline, after the turn's real end: nothing of the dropped one played.
    assert_eq!(conv.timeline.replies().len(), 1);
    assert!(
        rec.reply_start_ms >= rec.speech_end_ms + rec.spans.endpoint - 5.0,
        "{rec:?}"
    );
    // The history holds the whole question and its answer, nothing of the dropped reply.
    let history = pipeline.history();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0].role, Role::User);
    assert_eq!(history[0].content, rec.transcript);
    assert_eq!(history[1].role, Role::Assistant);
    assert_eq!(history[1].content, rec.reply);
}
