//! Shared by the end-to-end tests: the real binary, the real models, real recorded speech.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hark_core::TurnRecord;

pub fn models_dir() -> PathBuf {
    std::env::var_os("HARK_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

/// Debian's pocketsphinx-testdata, installed by `hark models fetch --set test`.
pub fn testdata() -> PathBuf {
    let dir = models_dir().join("testdata/pocketsphinx");
    assert!(
        dir.join("goforward.raw").is_file(),
        "{} is missing: run `hark models fetch --set test` (scripts/test does)",
        dir.display()
    );
    dir
}

/// Headerless 16 kHz 16-bit mono PCM → samples.
pub fn read_raw(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

pub fn write_wav(path: &Path, samples: &[f32], rate: u32, channels: u16, bits: u16, float: bool) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        for _ in 0..channels {
            match (float, bits) {
                (true, _) => w.write_sample(s).unwrap(),
                (false, 8) => w.write_sample((s * 127.0) as i8).unwrap(),
                (false, 16) => w.write_sample((s * 32767.0) as i16).unwrap(),
                (false, 24) => w.write_sample((s * 8_388_607.0) as i32).unwrap(),
                (false, _) => w.write_sample((s as f64 * 2_147_483_647.0) as i32).unwrap(),
            }
        }
    }
    w.finalize().unwrap();
}

pub fn hark() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hark"));
    cmd.arg("--models").arg(models_dir());
    cmd
}

/// Runs `hark` and returns its output, printing it for the test log.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run hark");
    eprintln!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn read_trace(path: &Path) -> Vec<TurnRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad trace line {l}: {e}")))
        .collect()
}

/// Transcripts of `cards.transcription`: `<s> ten of clubs </s> (001)`.
pub fn cards_references(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("cards/cards.transcription"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let id = l.rsplit_once('(')?.1.trim_end_matches(')').to_string();
            let text = l
                .split("<s>")
                .nth(1)?
                .split("</s>")
                .next()?
                .trim()
                .to_string();
            Some((id, text))
        })
        .collect()
}

/// Where Hark's reply first becomes audible in a conversation file (right channel), ms: the first
/// sample above -46 dBFS (0.005 of full scale), the level at which synthesis trims silence.
pub fn audible_reply_onset_ms(conversation: &Path) -> Option<f64> {
    let mut reader = hound::WavReader::open(conversation).ok()?;
    assert_eq!(reader.spec().channels, 2, "a conversation file is stereo");
    let rate = reader.spec().sample_rate as f64;
    let right: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.unwrap())
        .skip(1)
        .step_by(2)
        .collect();
    let onset = right.iter().position(|s| s.unsigned_abs() > 164)?;
    Some(onset as f64 * 1000.0 / rate)
}
