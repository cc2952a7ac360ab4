//! Chrome trace events (the JSON that Perfetto and chrome://tracing open): one process per input,
//! one track per stage, every span a complete event on the input's clock.

use serde_json::{json, Value};

use hark_core::trace::span;
use hark_core::TurnRecord;

/// Track ids: the user's speech, each span, the reply's audio.
const USER_TRACK: u64 = 1;
const REPLY_TRACK: u64 = 100;

pub fn trace(turns: &[TurnRecord]) -> Value {
    let mut events = Vec::new();
    let mut inputs: Vec<&str> = Vec::new();
    for t in turns {
        if !inputs.contains(&t.input.as_str()) {
            inputs.push(&t.input);
        }
    }
    let us = |ms: f64| (ms * 1000.0).round();
    for (pid, input) in inputs.iter().enumerate() {
        let pid = pid as u64 + 1;
        events
            .push(json!({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": input}}));
        let mut tracks = vec![(USER_TRACK, "user speech".to_string())];
        tracks.extend(
            span::ALL
                .iter()
                .enumerate()
                .map(|(i, name)| (10 + i as u64, name.to_string())),
        );
        tracks.push((REPLY_TRACK, "reply audio".into()));
        for (order, (tid, name)) in tracks.iter().enumerate() {
            events.push(json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}));
            events.push(json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": order}}));
        }
        for t in turns.iter().filter(|t| t.input == **input) {
            let args = json!({"turn": t.turn, "transcript": t.transcript, "reply": t.reply, "v2v_ms": t.v2v_ms});
            events.push(json!({"ph": "X", "name": format!("turn {} speech", t.turn), "pid": pid, "tid": USER_TRACK,
                "ts": us(t.speech_start_ms), "dur": us(t.speech_end_ms - t.speech_start_ms), "args": args}));
            let mut at = t.speech_end_ms;
            for (i, (name, ms)) in t.spans.named().iter().enumerate() {
                events.push(json!({"ph": "X", "name": name, "cat": "latency", "pid": pid, "tid": 10 + i as u64,
                    "ts": us(at), "dur": us(*ms), "args": {"turn": t.turn, "ms": ms}}));
                at += ms;
            }
            if t.error.is_none() && t.reply_duration_ms > 0.0 {
                events.push(json!({"ph": "X", "name": format!("turn {} reply", t.turn), "pid": pid, "tid": REPLY_TRACK,
                    "ts": us(t.reply_start_ms), "dur": us(t.reply_duration_ms), "args": args}));
            }
        }
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_core::Spans;

    #[test]
    fn spans_follow_each_other_on_their_tracks() {
        let t = TurnRecord {
            input: "a.wav".into(),
            turn: 1,
            speech_start_ms: 100.0,
            speech_end_ms: 1100.0,
            spans: Spans {
                endpoint: 500.0,
                asr_final: 100.0,
                llm_ttft: 50.0,
                first_clause: 20.0,
                tts_first_audio: 30.0,
                output: 1.0,
            },
            reply_start_ms: 1801.0,
            reply_duration_ms: 2000.0,
            v2v_ms: 701.0,
            ..Default::default()
        };
        let v = trace(&[t]);
        let events = v["traceEvents"].as_array().unwrap();
        let x: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 8);
        let asr = x.iter().find(|e| e["name"] == "asr_final").unwrap();
        assert_eq!(
            (asr["ts"].as_f64(), asr["dur"].as_f64()),
            (Some(1_600_000.0), Some(100_000.0))
        );
        let reply = x.iter().find(|e| e["tid"] == REPLY_TRACK).unwrap();
        assert_eq!(reply["ts"].as_f64(), Some(1_801_000.0));
        assert!(events
            .iter()
            .any(|e| e["name"] == "thread_name" && e["args"]["name"] == "llm_ttft"));
    }
}
