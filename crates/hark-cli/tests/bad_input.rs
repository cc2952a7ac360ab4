//! Odd and broken inputs: each is read correctly or refused with a clear message, never a panic.

mod common;

use std::path::Path;

use common::*;
use hark_core::wer::wer;

fn assert_clear_failure(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "should fail");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clean error exit, not a crash"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hark: error:") && stderr.contains(needle),
        "expected `{needle}` in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_common_wav_format_is_understood() {
    let speech = read_raw(&testdata().join("goforward.raw"));
    let audio = hark_core::AudioBuffer::new(speech, 16_000);
    let tmp = tempfile::tempdir().unwrap();
    // (name, rate, channels, bits, float)
    let formats = [
        ("u8", 16_000, 1, 8, false),
        ("float", 22_050, 1, 32, true),
        ("s24", 48_000, 1, 24, false),
        ("s32", 16_000, 1, 32, false),
        ("stereo44k", 44_100, 2, 16, false),
        ("low8k", 8_000, 1, 16, false),
    ];
    let mut inputs = Vec::new();
    for (name, rate, channels, bits, float) in formats {
        let resampled = hark_audio::resample(&audio, rate).unwrap();
        let path = tmp.path().join(format!("{name}.wav"));
        write_wav(&path, &resampled.samples, rate, channels, bits, float);
        inputs.push(path);
    }
    let trace = tmp.path().join("t.jsonl");
    let out = run(hark()
        .arg("run")
        .args(&inputs)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .arg("--trace")
        .arg(&trace)
        .args(["--max-reply-tokens", "8"]));
    assert!(out.status.success());
    let records = read_trace(&trace);
    for input in &inputs {
        let rec = records
            .iter()
            .find(|r| r.input == input.display().to_string())
            .unwrap_or_else(|| panic!("no turn for {}", input.display()));
        let w = wer("go forward ten meters", &rec.transcript);
        assert!(w < 0.2, "{}: heard {:?}", input.display(), rec.transcript);
    }
}

#[test]
fn broken_files_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    assert_clear_failure(
        &run(hark().arg("run").arg(&empty).args(["--out", "/dev/null"])),
        "empty",
    );

    let text = tmp.path().join("notes.wav");
    std::fs::write(&text, b"these are not the samples you are looking for").unwrap();
    assert_clear_failure(
        &run(hark().arg("run").arg(&text).args(["--out", "/dev/null"])),
        "RIFF/WAVE",
    );

    let header_only = tmp.path().join("header.wav");
    write_wav(&header_only, &[0.1; 100], 16_000, 1, 16, false);
    let bytes = std::fs::read(&header_only).unwrap();
    std::fs::write(&header_only, &bytes[..20]).unwrap();
    assert_clear_failure(
        &run(hark()
            .arg("run")
            .arg(&header_only)
            .args(["--out", "/dev/null"])),
        "header.wav",
    );

    let missing = tmp.path().join("nope.wav");
    assert_clear_failure(
        &run(hark().arg("run").arg(&missing).args(["--out", "/dev/null"])),
        "nope.wav",
    );
}

#[test]
fn a_truncated_recording_is_answered_from_what_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cut.wav");
    write_wav(
        &path,
        &read_raw(&testdata().join("goforward.raw")),
        16_000,
        1,
        16,
        false,
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 9_001]).unwrap(); // odd: cuts a sample in half
    let trace = tmp.path().join("t.jsonl");
    let out = run(hark()
        .arg("run")
        .arg(&path)
        .arg("--out")
        .arg(tmp.path().join("r.wav"))
        .arg("--trace")
        .arg(&trace)
        .args(["--max-reply-tokens", "8"]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    assert!(wer("go forward ten meters", &read_trace(&trace)[0].transcript) < 0.3);
}

#[test]
fn silence_and_noise_get_no_words_and_no_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let silence = tmp.path().join("silence.wav");
    write_wav(&silence, &vec![0.0; 16_000 * 600], 16_000, 1, 16, false);
    let noise = tmp.path().join("noise.wav");
    let white = hark_core::audio::white_noise(16_000 * 10, 0.1, 0x2545_f491_4f6c_dd1d);
    write_wav(&noise, &white, 16_000, 1, 16, false);
    let trace = tmp.path().join("t.jsonl");
    let out = run(hark()
        .arg("run")
        .arg(&silence)
        .arg(&noise)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .arg("--trace")
        .arg(&trace));
    assert!(out.status.success());
    assert!(read_trace(&trace).is_empty(), "no transcript, no reply");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("no speech heard")
            .count(),
        2
    );
    // The reply file exists and holds no sound.
    let reply = std::fs::read(tmp.path().join("out/silence.reply.wav")).unwrap();
    assert_eq!(reply.len(), 44);
}

fn link_models_except(dst: &Path, skip: &str) {
    for entry in std::fs::read_dir(models_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name != skip && !name.to_string_lossy().starts_with(".fetch") {
            let src = entry.path().canonicalize().unwrap();
            if name == ".verified.json" {
                std::fs::copy(&src, dst.join(&name)).unwrap();
            } else {
                std::os::unix::fs::symlink(&src, dst.join(&name)).unwrap();
            }
        }
    }
}

#[test]
fn missing_and_damaged_models_are_named_with_the_fix() {
    let speech = tempfile::tempdir().unwrap();
    let input = speech.path().join("in.wav");
    write_wav(
        &input,
        &read_raw(&testdata().join("goforward.raw")),
        16_000,
        1,
        16,
        false,
    );

    let empty = tempfile::tempdir().unwrap();
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("--models")
        .arg(empty.path())
        .arg("run")
        .arg(&input)
        .args(["--out", "/dev/null", "--no-fetch"]));
    assert_clear_failure(&out, "hark models fetch");
    assert!(String::from_utf8_lossy(&out.stderr).contains("smollm2-135m (missing)"));

    // A damaged LLM file: same place, wrong bytes.
    let damaged = tempfile::tempdir().unwrap();
    link_models_except(damaged.path(), "smollm2");
    std::fs::create_dir(damaged.path().join("smollm2")).unwrap();
    std::fs::write(
        damaged
            .path()
            .join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        b"GGUF but not really",
    )
    .unwrap();
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("--models")
        .arg(damaged.path())
        .arg("run")
        .arg(&input)
        .args(["--out", "/dev/null", "--no-fetch"]));
    assert_clear_failure(&out, "smollm2-135m (changed since verified)");
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("--models")
        .arg(damaged.path())
        .args(["models", "verify"]));
    assert_clear_failure(&out, "failed verification");
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED  smollm2-135m"));
}
