//! `hark bench asr`: streaming recognition against whole-utterance recognition (whisper.cpp
//! decoding each turn once it is over), on the same recordings in the same run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use hark_asr::{AsrConfig, EncoderWindow, StreamConfig, Transcriber};
use hark_audio::{resample, SileroVad, TurnConfig, TurnDetector};
use hark_core::wer::corpus_wer;
use hark_core::{AudioBuffer, ASR_SAMPLE_RATE};
use hark_models::{ids, ModelStore};
use hark_pipeline::listen::{listen, ListenConfig};
use serde_json::json;

use crate::bench_cmd::{median, percentile};

#[derive(Debug, Args)]
pub struct AsrBenchArgs {
    /// Threads for the final decode and the whole-utterance decode (partials use one).
    #[arg(long, default_value_t = hark_asr::default_threads())]
    threads: usize,
    /// Streaming hop between partial decodes, ms.
    #[arg(long, default_value_t = 250)]
    hop_ms: u32,
    /// The streaming final decode's window: seconds of margin after the audio, or `full`.
    #[arg(long, default_value = "0.5", value_parser = crate::run_cmd::parse_asr_window)]
    window: EncoderWindow,
    /// End-of-turn silence after a transcript that reads as a finished sentence, ms (as `hark
    /// run --finished-silence-ms`).
    #[arg(long, default_value_t = ListenConfig::default().finished_end_silence_ms)]
    finished_silence_ms: f64,
    /// Where the voice counts as fading, so the final decode starts (as `hark run
    /// --fading-below`).
    #[arg(long, default_value_t = ListenConfig::default().fading_below, value_name = "P")]
    fading_below: f32,
    /// Also measure streaming WER with white noise added at 10 dB and 0 dB SNR, with and
    /// without noise suppression (`hark run --denoise`).
    #[arg(long)]
    noise: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// White noise `snr_db` below the power of `speech`, added to `audio` (a fixed seed, so runs
/// compare).
fn add_noise(audio: &[f32], speech: &[f32], snr_db: f64) -> Vec<f32> {
    let noise = hark_core::audio::white_noise(audio.len(), 0.5, 0x9e37_79b9_7f4a_7c15);
    hark_core::audio::add_noise_at_snr(audio, speech, &noise, snr_db)
}

/// One recording and what was said in it.
struct Item {
    name: String,
    kind: &'static str,
    audio: Vec<f32>,
    reference: String,
}

/// Raw 16-bit little-endian mono at 16 kHz (pocketsphinx-testdata's `.raw` files).
pub fn read_raw(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect())
}

/// A WAV file as 16 kHz mono.
pub fn read_16k(path: &Path) -> Result<Vec<f32>> {
    let wav = hark_audio::read_wav(path)?;
    Ok(resample(&wav.audio, ASR_SAMPLE_RATE)?.samples)
}

/// `<s> words </s> (id)` lines, as pocketsphinx-testdata writes references.
fn references(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (words, id) = line.rsplit_once('(')?;
            let words = words.replace("<s>", "").replace("</s>", "");
            Some((
                id.trim_end_matches(')').to_string(),
                words.trim().to_string(),
            ))
        })
        .collect())
}

/// Real recordings from pocketsphinx-testdata and the bundled espeak-ng questions.
fn corpus(testdata: &Path, assets: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (id, reference) in references(&testdata.join("cards/cards.transcription"))? {
        items.push(Item {
            audio: read_16k(&testdata.join(format!("cards/{id}.wav")))?,
            name: format!("cards/{id}"),
            kind: "real",
            reference,
        });
    }
    for (raw, reference) in [
        ("goforward", "go forward ten meters"),
        ("something", "go somewhere and do something"),
    ] {
        items.push(Item {
            audio: read_raw(&testdata.join(format!("{raw}.raw")))?,
            name: raw.into(),
            kind: "real",
            reference: reference.into(),
        });
    }
    for (id, reference) in references(&testdata.join("librivox/transcription"))? {
        items.push(Item {
            audio: read_16k(&testdata.join(format!("librivox/{id}.wav")))?,
            name: format!("librivox/{}", id.rsplit('-').next().unwrap_or(&id)),
            kind: "real",
            reference,
        });
    }
    for (file, reference) in [
        ("question-capital", "what is the capital of france"),
        ("question-spider", "how many legs does a spider have"),
        (
            "question-moon",
            "tell me something interesting about the moon",
        ),
    ] {
        let path = assets.join(format!("{file}.wav"));
        if path.is_file() {
            items.push(Item {
                audio: read_16k(&path)?,
                name: file.into(),
                kind: "espeak",
                reference: reference.into(),
            });
        }
    }
    Ok(items)
}

/// Per-recording figures.
struct Row {
    name: String,
    kind: &'static str,
    reference: String,
    whole_text: String,
    whole_final_ms: f64,
    stream_text: String,
    stream_final_ms: f64,
    /// The streaming final decode's own compute time (longest turn), ms.
    stream_decode_ms: f64,
    /// Final transcripts whose decode was ended early (at a loop, or at a full stop where
    /// Whisper nearly ended the text), and those decoded more than once.
    cut_short: usize,
    decoded_again: usize,
    endpoint_ms: f64,
    /// Turns the streaming listener heard in this one-turn recording (more: it cut in a pause).
    turns: usize,
    partials: usize,
    partial_rtf: f64,
    /// Streaming transcripts in noise: (SNR dB, denoised, text).
    noisy: Vec<(f64, bool, String)>,
}

pub fn bench_asr(args: AsrBenchArgs, store: &ModelStore) -> Result<()> {
    if args.threads == 0 || args.hop_ms == 0 {
        bail!("--threads and --hop-ms must be at least 1");
    }
    let whisper = store.require(ids::WHISPER_TINY_EN)?;
    let testdata = store
        .require(ids::TESTDATA)
        .context("the real-speech corpus is not installed: run `hark models fetch --set test`")?;
    hark_core::onnx::init(&store.require(ids::ONNXRUNTIME)?)?;
    let mut detector = TurnDetector::new(
        SileroVad::load(&store.require(ids::SILERO_VAD)?)?,
        TurnConfig::default(),
    );
    let mut asr = Transcriber::load(
        &whisper,
        AsrConfig {
            threads: args.threads,
            window: EncoderWindow::Full,
            ..AsrConfig::default()
        },
    )?;
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let items = corpus(&testdata, &assets)?;
    let listen_cfg = ListenConfig {
        partials: true,
        stream: StreamConfig {
            hop_samples: args.hop_ms as usize * 16,
            ..StreamConfig::default()
        },
        window: args.window,
        final_threads: args.threads,
        finished_end_silence_ms: args.finished_silence_ms.max(32.0),
        fading_below: args.fading_below.clamp(0.0, 1.0),
        ..ListenConfig::default()
    };
    eprintln!(
        "hark bench asr: {} recordings, tiny.en, {} threads (partials 1), hop {} ms",
        items.len(),
        args.threads,
        args.hop_ms
    );
    asr.transcribe(&AudioBuffer::silence(1000.0, ASR_SAMPLE_RATE).samples)?; // warm-up

    let mut rows = Vec::new();
    let (mut silero_ran, mut windows) = (0, 0);
    for item in &items {
        // Quiet lead-in and a second of silence after, so the turn ends by silence.
        let mut audio = vec![0f32; 4_800];
        audio.extend(&item.audio);
        audio.extend(vec![0f32; 16_000]);
        let probs = detector.probabilities(&audio)?;
        let (ran, all) = detector.silero_windows();
        silero_ran += ran;
        windows += all;

        // Whole utterance: each turn decoded once it is over (the sequential baseline).
        let mut whole_text = Vec::new();
        let mut whole_final_ms = 0f64;
        for turn in hark_audio::turns::segment(&probs, &audio, detector.config()) {
            let t = Instant::now();
            let text = asr
                .transcribe(&audio[turn.audio_start..turn.decided_at])?
                .text;
            whole_final_ms = whole_final_ms.max(t.elapsed().as_secs_f64() * 1000.0);
            whole_text.push(text);
        }

        let heard = listen(&probs, &audio, &mut asr, detector.config(), &listen_cfg)?;
        let speech_ms: f64 = heard
            .iter()
            .map(|h| h.turn.speech_end_ms() - h.turn.speech_start_ms())
            .sum();
        let partial_ms: f64 = heard.iter().map(|h| h.decode_ms - h.final_spent_ms).sum();
        let mut noisy = Vec::new();
        if args.noise {
            let quick = ListenConfig {
                partials: false,
                ..listen_cfg
            };
            for snr_db in [10.0, 0.0] {
                let with_noise = add_noise(&audio, &item.audio, snr_db);
                for denoised in [false, true] {
                    let input = if denoised {
                        hark_audio::denoise(&with_noise)?
                    } else {
                        with_noise.clone()
                    };
                    let probs = detector.probabilities(&input)?;
                    let heard = listen(&probs, &input, &mut asr, detector.config(), &quick)?;
                    let text: Vec<&str> =
                        heard.iter().map(|h| h.transcript.text.as_str()).collect();
                    noisy.push((snr_db, denoised, text.join(" ")));
                }
            }
        }
        rows.push(Row {
            noisy,
            name: item.name.clone(),
            kind: item.kind,
            reference: item.reference.clone(),
            whole_text: whole_text.join(" "),
            whole_final_ms,
            stream_text: heard
                .iter()
                .map(|h| h.transcript.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            stream_final_ms: heard.iter().map(|h| h.asr_final_ms).fold(0.0, f64::max),
            stream_decode_ms: heard.iter().map(|h| h.final_spent_ms).fold(0.0, f64::max),
            cut_short: heard.iter().filter(|h| h.final_stats.cut_short > 0).count(),
            decoded_again: heard.iter().filter(|h| h.final_stats.decodes > 1).count(),
            endpoint_ms: heard.iter().map(|h| h.endpoint_ms).fold(0.0, f64::max),
            turns: heard.len(),
            partials: heard.iter().map(|h| h.partials.len()).sum(),
            partial_rtf: if speech_ms > 0.0 {
                partial_ms / speech_ms
            } else {
                0.0
            },
        });
    }
    report(&args, &rows, (silero_ran, windows))
}

fn report(args: &AsrBenchArgs, rows: &[Row], silero: (usize, usize)) -> Result<()> {
    // Streaming WER in each noise condition, in the order they were run.
    let conditions: Vec<(f64, bool)> = rows
        .first()
        .map(|r| r.noisy.iter().map(|(snr, d, _)| (*snr, *d)).collect())
        .unwrap_or_default();
    let noisy_wer: Vec<(f64, bool, f64)> = conditions
        .iter()
        .enumerate()
        .map(|(i, &(snr, d))| {
            let w = corpus_wer(
                rows.iter()
                    .map(|r| (r.reference.as_str(), r.noisy[i].2.as_str())),
            );
            (snr, d, w)
        })
        .collect();
    let silero_share = silero.0 as f64 / silero.1.max(1) as f64;
    let wer_of = |kind: Option<&str>, streaming: bool| {
        corpus_wer(
            rows.iter()
                .filter(|r| kind.is_none_or(|k| r.kind == k))
                .map(|r| {
                    let hyp = if streaming {
                        &r.stream_text
                    } else {
                        &r.whole_text
                    };
                    (r.reference.as_str(), hyp.as_str())
                }),
        )
    };
    let whole_final: Vec<f64> = rows.iter().map(|r| r.whole_final_ms).collect();
    let stream_final: Vec<f64> = rows.iter().map(|r| r.stream_final_ms).collect();
    let stream_decode: Vec<f64> = rows.iter().map(|r| r.stream_decode_ms).collect();
    let endpoint: Vec<f64> = rows.iter().map(|r| r.endpoint_ms).collect();
    let rtf: Vec<f64> = rows.iter().map(|r| r.partial_rtf).collect();
    let finals: usize = rows.iter().map(|r| r.turns).sum();
    let cut_short: usize = rows.iter().map(|r| r.cut_short).sum();
    let decoded_again: usize = rows.iter().map(|r| r.decoded_again).sum();
    if args.json {
        let out = json!({
            "threads": args.threads,
            "hop_ms": args.hop_ms,
            "recordings": rows.iter().map(|r| json!({
                "name": r.name, "kind": r.kind, "reference": r.reference,
                "whole": {"text": r.whole_text, "final_ms": r.whole_final_ms},
                "streaming": {"text": r.stream_text, "final_ms": r.stream_final_ms,
                              "final_decode_ms": r.stream_decode_ms,
                              "final_cut_short": r.cut_short, "final_decoded_again": r.decoded_again,
                              "endpoint_ms": r.endpoint_ms, "turns": r.turns, "partials": r.partials,
                              "partial_rtf": r.partial_rtf},
            })).collect::<Vec<_>>(),
            "wer": {"whole": wer_of(None, false), "streaming": wer_of(None, true),
                    "whole_real": wer_of(Some("real"), false), "streaming_real": wer_of(Some("real"), true)},
            "final_ms_p50": {"whole": median(whole_final.clone()), "streaming": median(stream_final.clone())},
            "final_ms_p90": {"whole": percentile(whole_final, 0.9), "streaming": percentile(stream_final, 0.9)},
            "final_decode_ms_p50": median(stream_decode.clone()),
            "final_transcripts": finals,
            "final_cut_short": cut_short,
            "final_decoded_again": decoded_again,
            "endpoint_ms_p50": median(endpoint),
            "partial_rtf_p50": median(rtf),
            "silero_window_share": silero_share,
            "noise": noisy_wer.iter().map(|(snr, d, w)| json!({"snr_db": snr, "denoise": d, "wer": w})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>6}  streaming transcript",
        "recording", "whole ms", "decode ms", "final ms", "endpoint", "RTF"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<18} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>6.2}  {}{:?}{}",
            r.name,
            r.whole_final_ms,
            r.stream_decode_ms,
            r.stream_final_ms,
            r.endpoint_ms,
            r.partial_rtf,
            if r.turns == 1 {
                String::new()
            } else {
                format!("[{} turns] ", r.turns)
            },
            r.stream_text,
            if r.stream_text == r.whole_text {
                String::new()
            } else {
                format!(" (whole: {:?})", r.whole_text)
            }
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "final decode at the pause: p50 {:.0} ms, p90 {:.0} ms (whole-utterance decode, full window: {:.0} ms, {:.0} ms)",
        median(stream_decode.clone()),
        percentile(stream_decode, 0.9),
        median(whole_final.clone()),
        percentile(whole_final.clone(), 0.9),
    )?;
    writeln!(
        out,
        "final decodes ended early (a loop, or a full stop where Whisper nearly ended): {cut_short} of {finals}; decoded again with a longer window: {decoded_again}"
    )?;
    writeln!(
        out,
        "final transcript after the turn end: p50 {:.0} ms (whole-utterance decode {:.0} ms), p90 {:.0} ms ({:.0} ms)",
        median(stream_final.clone()),
        median(whole_final.clone()),
        percentile(stream_final, 0.9),
        percentile(whole_final, 0.9),
    )?;
    writeln!(
        out,
        "WER: streaming {:.1} % vs whole-utterance {:.1} % (real speech {:.1} % vs {:.1} %)",
        100.0 * wer_of(None, true),
        100.0 * wer_of(None, false),
        100.0 * wer_of(Some("real"), true),
        100.0 * wer_of(Some("real"), false),
    )?;
    writeln!(
        out,
        "endpoint (speech end → turn decided) p50 {:.0} ms; partial decodes' real-time factor p50 {:.2} (1 thread)",
        median(endpoint),
        median(rtf),
    )?;
    writeln!(
        out,
        "recordings of one turn heard as several (cut in a pause): {} of {}",
        rows.iter().filter(|r| r.turns > 1).count(),
        rows.len()
    )?;
    writeln!(
        out,
        "Silero ran on {:.0} % of the 32 ms windows (the webrtc-vad gate skipped the rest)",
        100.0 * silero_share
    )?;
    for (snr, denoised, w) in &noisy_wer {
        writeln!(
            out,
            "white noise at {snr:>2} dB SNR{}: streaming WER {:.1} %",
            if *denoised {
                ", denoised"
            } else {
                "          "
            },
            100.0 * w
        )?;
    }
    Ok(())
}
