//! `hark run` end to end on real recorded speech and the real default models.

mod common;

use common::*;
use hark_core::trace::span;
use hark_core::wer::{corpus_wer, wer};

/// Every real recording with its reference: the CMU "cards" set and two commands.
fn real_speech(dir: &std::path::Path, tmp: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut items: Vec<_> = cards_references(dir)
        .into_iter()
        .map(|(id, text)| (dir.join(format!("cards/{id}.wav")), text))
        .collect();
    for (raw, text) in [
        ("goforward", "go forward ten meters"),
        ("something", "go somewhere and do something"),
    ] {
        let wav = tmp.join(format!("{raw}.wav"));
        write_wav(
            &wav,
            &read_raw(&dir.join(format!("{raw}.raw"))),
            16_000,
            1,
            16,
            false,
        );
        items.push((wav, text.to_string()));
    }
    items
}

#[test]
fn answers_real_speech_and_the_reply_is_intelligible() {
    let dir = testdata();
    let tmp = tempfile::tempdir().unwrap();
    let items = real_speech(&dir, tmp.path());
    assert_eq!(items.len(), 7);
    let trace = tmp.path().join("trace.jsonl");
    let replies = tmp.path().join("replies");
    let conversations = tmp.path().join("conversations");
    let mut cmd = hark();
    cmd.arg("run")
        .args(items.iter().map(|(p, _)| p))
        .arg("--out")
        .arg(&replies)
        .arg("--trace")
        .arg(&trace)
        .arg("--conversation")
        .arg(&conversations);
    let out = run(&mut cmd);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("heard: ") && stdout.contains("v2v "),
        "prints transcript and latency"
    );

    let records = read_trace(&trace);
    // One turn per recording, in input order.
    assert_eq!(records.len(), items.len(), "{records:#?}");
    let pairs: Vec<(&str, &str)> = items
        .iter()
        .zip(&records)
        .map(|((_, r), rec)| (r.as_str(), rec.transcript.as_str()))
        .collect();
    for ((path, reference), rec) in items.iter().zip(&records) {
        assert_eq!(rec.input, path.display().to_string());
        eprintln!(
            "{reference:?} → {:?} (WER {:.2})",
            rec.transcript,
            wer(reference, &rec.transcript)
        );
    }
    let asr_wer = corpus_wer(pairs);
    eprintln!("corpus WER on real speech: {:.1}%", asr_wer * 100.0);
    assert!(asr_wer < 0.20, "WER {asr_wer}");

    for rec in &records {
        assert!(rec.error.is_none(), "{rec:?}");
        assert!(
            !rec.reply.trim().is_empty(),
            "empty reply for {:?}",
            rec.transcript
        );
        let v = serde_json::to_value(rec).unwrap();
        for key in span::ALL {
            let ms = v["spans"][key].as_f64().unwrap_or(-1.0);
            assert!(ms.is_finite() && ms >= 0.0, "span {key} = {ms}");
        }
        // (`asr_final` is often 0: the transcript was ready before the turn was decided.) The
        // reply's work counts after the decision, or was done before it (a preemptive reply).
        assert!(
            rec.head_start_ms > 0.0
                || (rec.spans.llm_ttft > 0.0 && rec.spans.tts_first_audio > 0.0),
            "{rec:?}"
        );
        assert!(
            (rec.v2v_ms - rec.spans.total()).abs() < 1.0,
            "spans add up to V2V: {rec:?}"
        );
        assert!((rec.reply_start_ms - rec.speech_end_ms - rec.v2v_ms).abs() < 1e-6);
        assert!(
            rec.speech_end_ms > rec.speech_start_ms
                && rec.engine.reply_tokens > 0
                && rec.engine.decode_tok_s > 0.0
        );
    }

    // The conversation file alone shows the same V2V as the trace: Hark's first audible sample on
    // the right channel sits at reply_start_ms.
    for ((path, _), rec) in items.iter().zip(&records) {
        let stem = path.file_stem().unwrap().to_string_lossy();
        let onset_ms =
            audible_reply_onset_ms(&conversations.join(format!("{stem}.conversation.wav")))
                .expect("the reply is audible");
        assert!(
            (onset_ms - rec.reply_start_ms).abs() < 20.0,
            "{stem}: audible at {onset_ms:.0} ms, trace says {:.0} ms",
            rec.reply_start_ms
        );
    }

    // Our own recogniser hears the spoken replies as the reply text.
    let reply_wavs: Vec<_> = items
        .iter()
        .map(|(p, _)| {
            replies.join(format!(
                "{}.reply.wav",
                p.file_stem().unwrap().to_string_lossy()
            ))
        })
        .collect();
    let trace2 = tmp.path().join("trace2.jsonl");
    let mut cmd = hark();
    cmd.arg("run")
        .args(&reply_wavs)
        .arg("--out")
        .arg(tmp.path().join("again"))
        .arg("--trace")
        .arg(&trace2)
        .arg("--end-silence-ms")
        .arg("1500");
    assert!(run(&mut cmd).status.success());
    let heard = read_trace(&trace2);
    // The reference is what the voice was given to say: the reply as its text normaliser spells
    // it out ("2018-04-30" is said "April thirtieth, twenty eighteen"). Whisper writes what it
    // hears in digits ("April 30th. 2018 at 9.56 a.m."), so its transcript is spelled out by the
    // same normaliser before the two are compared. Whisper tiny mishears some numbers, so one
    // short reply full of them may score badly; the replies together must be heard well, and
    // none may be lost.
    let mut pairs = Vec::new();
    for (wav, rec) in reply_wavs.iter().zip(&records) {
        let text: String = heard
            .iter()
            .filter(|h| h.input == wav.display().to_string())
            .map(|h| h.transcript.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let spoken = hark_tts::normalize::normalize(&rec.reply);
        let text = hark_tts::normalize::normalize(&text);
        let w = wer(&spoken, &text);
        eprintln!("spoken reply {spoken:?} heard as {text:?}: WER {w:.2}");
        assert!(w < 0.5, "reply {spoken:?} heard as {text:?} (WER {w})");
        pairs.push((spoken, text));
    }
    let all = corpus_wer(pairs.iter().map(|(s, t)| (s.as_str(), t.as_str())));
    assert!(all < 0.15, "the spoken replies heard at WER {all:.2}");
}

#[test]
fn reads_stdin_and_writes_the_reply_to_stdout() {
    let dir = testdata();
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("in.wav");
    write_wav(
        &wav,
        &read_raw(&dir.join("goforward.raw")),
        16_000,
        1,
        16,
        false,
    );
    let out = run(hark()
        .args(["run", "-", "--out", "-"])
        .stdin(std::fs::File::open(&wav).unwrap()));
    assert!(out.status.success());
    let reply = hark_audio::read_wav_bytes(&out.stdout, "stdout").expect("a WAV on stdout");
    assert!(reply.audio.duration_ms() > 500.0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("heard: Go forward"),
        "the report goes to stderr"
    );
}
