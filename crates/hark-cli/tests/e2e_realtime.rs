//! `hark run --realtime`: the live pipeline (every stage on its own thread, the input fed at
//! real-time pace) on real recorded speech and the real default models.

mod common;

use common::*;
use hark_core::trace::span;
use hark_core::wer::wer;

#[test]
fn a_live_conversation_gets_one_reply_per_turn_and_a_barge_in_stops_the_reply() {
    let dir = testdata();
    let tmp = tempfile::tempdir().unwrap();
    let go = read_raw(&dir.join("goforward.raw"));
    let something = read_raw(&dir.join("something.raw"));
    let silence = |s: f64| vec![0.0f32; (s * 16_000.0) as usize];
    // A question; 1.6 s later (the answer is playing by then) the user speaks over it; after a
    // long pause, a last question whose answer is heard to its end.
    let mut audio = go.clone();
    audio.extend(silence(1.6));
    let second_at_ms = audio.len() as f64 / 16.0;
    audio.extend(&something);
    audio.extend(silence(5.0));
    audio.extend(&go);
    audio.extend(silence(4.0));
    let wav = tmp.path().join("live.wav");
    write_wav(&wav, &audio, 16_000, 1, 16, false);
    let trace = tmp.path().join("trace.jsonl");
    let conversation = tmp.path().join("conversation.wav");
    let mut cmd = hark();
    cmd.arg("run")
        .arg(&wav)
        .arg("--realtime")
        .arg("--out")
        .arg(tmp.path().join("reply.wav"))
        .arg("--trace")
        .arg(&trace)
        .arg("--conversation")
        .arg(&conversation);
    let out = run(&mut cmd);
    assert!(out.status.success());

    let records = read_trace(&trace);
    let heard: Vec<&str> = records.iter().map(|r| r.transcript.as_str()).collect();
    assert_eq!(records.len(), 3, "one reply per turn: {heard:?}");
    for (rec, reference) in records.iter().zip([
        "go forward ten meters",
        "go somewhere and do something",
        "go forward ten meters",
    ]) {
        assert!(wer(reference, &rec.transcript) <= 0.25, "{heard:?}");
        assert!(rec.error.is_none(), "{rec:?}");
        assert!(!rec.reply.is_empty());
        let v = serde_json::to_value(rec).unwrap();
        for key in span::ALL {
            let ms = v["spans"][key].as_f64().unwrap_or(-1.0);
            assert!(ms.is_finite() && ms >= 0.0, "span {key} = {ms}");
        }
        assert!(
            (rec.v2v_ms - rec.spans.total()).abs() < 1.0,
            "spans add up to V2V: {rec:?}"
        );
    }
    assert!(records.windows(2).all(|w| w[0].turn < w[1].turn));

    // The barge-in: the first answer stops soon after the second question starts (voice
    // activity detection, then a 10 ms fade), well before it would have ended.
    let first = &records[0];
    let stopped_ms = first.reply_start_ms + first.reply_duration_ms;
    assert!(
        first.reply_start_ms < second_at_ms,
        "the answer was playing: {first:?}"
    );
    assert!(
        stopped_ms < records[1].speech_start_ms + 150.0,
        "the answer stopped at {stopped_ms:.0} ms; the user spoke at {:.0} ms",
        records[1].speech_start_ms
    );

    // The conversation file shows the same reply start as the trace.
    let onset_ms = audible_reply_onset_ms(&conversation).expect("the reply is audible");
    assert!(
        (onset_ms - first.reply_start_ms).abs() < 20.0,
        "audible at {onset_ms:.0} ms, trace says {:.0} ms",
        first.reply_start_ms
    );
}
