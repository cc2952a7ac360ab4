//! `hark talk` against a real audio stack: a PulseAudio server with a null sink and a
//! microphone fed from a FIFO (`scripts/audio-server`), reached through ALSA's pulse plugin as
//! on a desktop. Real speech goes in at real-time pace; what Hark plays is recorded from the
//! sink's monitor and transcribed by our own Whisper.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hark_core::wer::wer;

const MIC_RATE: usize = 16_000;
/// One test at a time talks through the audio server (there is one microphone).
static AUDIO: Mutex<()> = Mutex::new(());
const PLAYED_RATE: usize = 22_050;

/// The test's audio server: the one `scripts/test` started (`HARK_TEST_AUDIO_SERVER`), or one
/// of its own.
struct AudioServer {
    dir: PathBuf,
    own: Option<tempfile::TempDir>,
}

impl AudioServer {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/audio-server")
    }

    /// `None` (the test is skipped, saying why) where PulseAudio is not installed; in CI that
    /// is a failure.
    fn get() -> Option<Self> {
        if let Some(dir) = std::env::var_os("HARK_TEST_AUDIO_SERVER") {
            return Some(Self {
                dir: dir.into(),
                own: None,
            });
        }
        if Command::new("pulseaudio")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must test `hark talk` on a real audio stack: install pulseaudio, \
                 pulseaudio-utils and libasound2-plugins (scripts/setup --test does)"
            );
            eprintln!(
                "skipped: PulseAudio is not installed (Debian: pulseaudio pulseaudio-utils \
                 libasound2-plugins; scripts/setup --test installs them)"
            );
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pulse");
        let out = Command::new(Self::script())
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starting the audio server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Self {
            dir,
            own: Some(tmp),
        })
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("XDG_RUNTIME_DIR", &self.dir)
            .env("ALSA_CONFIG_PATH", self.dir.join("asound.conf"));
    }
}

impl Drop for AudioServer {
    fn drop(&mut self) {
        if self.own.is_some() {
            let _ = Command::new(Self::script())
                .arg("stop")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Kills a child process when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn to_pcm(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect()
}

/// Stretches of sound in `samples` (20 ms blocks above -40 dBFS, gaps up to `bridge` ms
/// joined): (start, end) in ms.
fn sounds(samples: &[f32], rate: usize, bridge: f64) -> Vec<(f64, f64)> {
    let block = rate / 50;
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (i, b) in samples.chunks(block).enumerate() {
        let rms = (b.iter().map(|s| s * s).sum::<f32>() / b.len() as f32).sqrt();
        if rms < 0.01 {
            continue;
        }
        let (start, end) = (i as f64 * 20.0, (i + 1) as f64 * 20.0);
        match out.last_mut() {
            Some(last) if start - last.1 <= bridge => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

#[test]
fn a_spoken_question_gets_a_spoken_answer_and_speaking_over_it_stops_it() {
    let _one_at_a_time = AUDIO.lock().unwrap_or_else(|e| e.into_inner());
    let Some(server) = AudioServer::get() else {
        return;
    };
    let dir = testdata();
    let tmp = tempfile::tempdir().unwrap();
    let question = read_raw(&dir.join("goforward.raw"));
    let barge_in = read_raw(&dir.join("something.raw"));
    let trace = tmp.path().join("talk.jsonl");
    let played_path = tmp.path().join("played.raw");

    // What Hark plays, as the sink's monitor hears it.
    let mut parec = Command::new("parec");
    server.env(&mut parec);
    parec
        .args(["-d", "spk.monitor", "--format=s16le", "--channels=1"])
        .arg(format!("--rate={PLAYED_RATE}"))
        .arg("--latency-msec=20")
        .stdout(std::fs::File::create(&played_path).unwrap());
    let parec = Reaped(parec.spawn().expect("start parec"));

    let mut talk = hark();
    server.env(&mut talk);
    talk.args(["talk", "--turns", "2", "--trace"])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut talk = Reaped(talk.spawn().expect("start hark talk"));

    // Hark's output, kept for the assertions and the log; "listening" starts the speech.
    let listening = Arc::new(AtomicBool::new(false));
    let stdout = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (listening, stdout) = (Arc::clone(&listening), Arc::clone(&stdout));
        let pipe = talk.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.starts_with("hark: listening") {
                    listening.store(true, Ordering::SeqCst);
                }
                stdout.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    let stderr = {
        let pipe = talk.0.stderr.take().unwrap();
        std::thread::spawn(move || std::io::read_to_string(pipe).unwrap_or_default())
    };

    // The microphone, at real-time pace: silence until Hark listens, the question, 1.8 s of
    // silence (its answer is playing by then), speech over the answer, then silence until Hark
    // has answered that too and quits (`--turns 2`).
    let fifo = server.dir.join("mic.fifo");
    let done = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (listening, done) = (Arc::clone(&listening), Arc::clone(&done));
        std::thread::spawn(move || -> Option<Instant> {
            let mut mic = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let block = MIC_RATE / 50;
            let silence = vec![0.0f32; block];
            let start = Instant::now();
            let mut written = 0usize;
            let mut write = |samples: &[f32]| -> bool {
                for piece in samples.chunks(block) {
                    if mic.write_all(&to_pcm(piece)).is_err() || done.load(Ordering::SeqCst) {
                        return false;
                    }
                    written += piece.len();
                    let due = start + Duration::from_secs_f64(written as f64 / MIC_RATE as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                true
            };
            while !listening.load(Ordering::SeqCst) {
                if !write(&silence) {
                    return None;
                }
            }
            write(&vec![0.0; MIC_RATE / 2]);
            write(&question);
            write(&vec![0.0; MIC_RATE * 18 / 10]);
            let barge_in_at = Instant::now();
            write(&barge_in);
            while write(&silence) {}
            Some(barge_in_at)
        })
    };

    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = talk.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "hark talk did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    done.store(true, Ordering::SeqCst);
    drop(parec);
    let barge_in_at = feeder.join().unwrap();
    reader.join().unwrap();
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.join().unwrap();
    eprintln!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(status.success(), "hark talk failed: {status}");
    assert!(barge_in_at.is_some(), "the question was spoken");

    // The latency records: one per turn, in order, each with its reply and its V2V.
    let records = read_trace(&trace);
    let heard: Vec<&str> = records.iter().map(|r| r.transcript.as_str()).collect();
    assert_eq!(records.len(), 2, "{heard:?}");
    assert!(
        wer("go forward ten meters", &records[0].transcript) <= 0.25,
        "{heard:?}"
    );
    assert!(
        wer("go somewhere and do something", &records[1].transcript) <= 0.4,
        "{heard:?}"
    );
    for rec in &records {
        assert!(rec.error.is_none(), "{rec:?}");
        assert!(!rec.reply.is_empty());
        assert!(
            rec.v2v_ms > 0.0 && (rec.v2v_ms - rec.spans.total()).abs() < 1.0,
            "{rec:?}"
        );
    }
    assert!(stdout.contains("[interrupted]"), "{stdout}");
    assert!(stdout.contains("you: "), "{stdout}");

    // What was played. The monitor records only while the sink runs, so its recording is put
    // on Hark's clock by the first answer's onset (`reply_start_ms`); the user spoke over it at
    // the second turn's `speech_start_ms`. The first answer stopped soon after; the second was
    // heard to its end.
    let played = read_raw(&played_path);
    let sounds = sounds(&played, PLAYED_RATE, 400.0);
    assert!(sounds.len() >= 2, "two answers were played: {sounds:?}");
    let (first, second) = (sounds[0], sounds[sounds.len() - 1]);
    let spoke_over_ms = first.0 + records[1].speech_start_ms - records[0].reply_start_ms;
    eprintln!(
        "sounds played (ms into the recording): {sounds:?}; the user spoke over the first at \
         {spoke_over_ms:.0} ms"
    );
    assert!(
        spoke_over_ms > first.0,
        "the first answer began before the user spoke over it"
    );
    // Generous: the pipeline stops within 100 ms of its voice activity decision
    // (tests/e2e_realtime.rs measures it on its clock); the decision needs some speech first.
    assert!(
        first.1 < spoke_over_ms + 600.0,
        "the first answer stopped when the user spoke over it: it played until {:.0} ms",
        first.1
    );
    let rate = PLAYED_RATE as f64 / 1000.0;
    let answer =
        &played[(second.0 * rate) as usize..((second.1 * rate) as usize).min(played.len())];
    let answer16 = hark_audio::resample(
        &hark_core::AudioBuffer::new(answer.to_vec(), PLAYED_RATE as u32),
        16_000,
    )
    .unwrap();
    let store = hark_models::ModelStore::open(models_dir()).unwrap();
    let mut asr = hark_asr::Transcriber::load(
        &store.require(hark_models::ids::WHISPER_TINY_EN).unwrap(),
        hark_asr::AsrConfig::default(),
    )
    .unwrap();
    let spoken = asr.transcribe(&answer16.samples).unwrap().text;
    let error = wer(&records[1].reply, &spoken);
    assert!(
        error <= 0.35,
        "the second answer, as played ({spoken:?}), says what the trace says ({:?}): WER {error:.2}",
        records[1].reply
    );
}

#[test]
fn no_sound_card_is_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    // No sound server to reach and an ALSA with no devices at all.
    let alsa = tmp.path().join("asound.conf");
    std::fs::write(&alsa, "").unwrap();
    let mut cmd = hark();
    cmd.arg("talk")
        .env("XDG_RUNTIME_DIR", tmp.path())
        .env_remove("PULSE_SERVER")
        .env("ALSA_CONFIG_PATH", &alsa);
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("hark: error: sound device:") && stderr.contains("no sound card"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Found before the models were loaded.
    assert!(!stderr.contains("loading the models"), "{stderr}");

    let mut list = hark();
    list.args(["talk", "--list-devices"])
        .env("XDG_RUNTIME_DIR", tmp.path())
        .env_remove("PULSE_SERVER")
        .env("ALSA_CONFIG_PATH", &alsa);
    let out = run(&mut list);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no sound devices"));
}

#[test]
fn ctrl_c_ends_the_conversation_cleanly() {
    let _one_at_a_time = AUDIO.lock().unwrap_or_else(|e| e.into_inner());
    let Some(server) = AudioServer::get() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("talk.jsonl");
    let mut talk = hark();
    server.env(&mut talk);
    talk.args(["talk", "--trace"])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut talk = Reaped(talk.spawn().expect("start hark talk"));
    // The microphone hears silence; once Hark listens, Ctrl-C.
    let fifo = server.dir.join("mic.fifo");
    let done = Arc::new(AtomicBool::new(false));
    let feeder = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut mic = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let silence = to_pcm(&vec![0.0f32; MIC_RATE / 50]);
            while !done.load(Ordering::SeqCst) && mic.write_all(&silence).is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut stdout = BufReader::new(talk.0.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 && !line.contains("hark: listening") {
        line.clear();
    }
    assert!(line.contains("hark: listening"), "{line}");
    let pid = talk.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = talk.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "hark talk did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    done.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    let rest = std::io::read_to_string(stdout).unwrap();
    let stderr = std::io::read_to_string(talk.0.stderr.take().unwrap()).unwrap();
    eprintln!("--- stdout\n{rest}\n--- stderr\n{stderr}");
    assert!(status.success(), "{status}");
    assert!(
        rest.contains("hark: 0 turn(s)"),
        "the summary is printed: {rest}"
    );
    assert!(!stderr.contains("panicked"));
}
