//! `hark bench tts`: streaming synthesis against the Piper project's own engine (PyPI
//! `piper-tts`) on the same voice, the same texts and the same threads, in one run.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use hark_models::{ids, ModelStore};
use hark_tts::text::Chunker;
use hark_tts::{Cancel, DecoderChoice, TtsError, Voice};
use serde_json::json;

use crate::bench_cmd::{call_peer, median, peer_python};

/// The peer script, embedded so the bench works from any directory.
const PIPER_PEER: &str = include_str!("../../../scripts/peers/piper_peer.py");

#[derive(Debug, Args)]
pub struct TtsBenchArgs {
    /// ONNX Runtime threads for both engines.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Python with piper-tts (default: target/peers/venv/bin/python, as scripts/setup-peers
    /// installs it; or $HARK_PEER_PYTHON).
    #[arg(long, value_name = "PATH")]
    peer_python: Option<PathBuf>,
    /// Measure Hark only.
    #[arg(long)]
    no_peer: bool,
    /// Run the voice's decoder (HiFi-GAN) on ONNX Runtime, as Hark did before its own kernels,
    /// to compare the two.
    #[arg(long)]
    onnx_decoder: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Replies whose first clause has at most six words.
const SHORT: [&str; 4] = [
    "Sure, I can help with that.",
    "The capital of France is Paris.",
    "Yes, it is about 42 kilometers long.",
    "A spider has eight legs.",
];

/// Longer replies, several sentences each.
const LONG: [&str; 2] = [
    "Sure, here is the plan for tomorrow. We meet at 9:30 am at the station, take the train to \
     the coast, and walk for about two hours. Lunch is at a small cafe by the harbour. We should \
     be back by 6 pm.",
    "The moon is about 384,000 kilometers away from the Earth. It takes roughly 27 days to go \
     around us, and it always shows us the same face. Its gravity causes the tides. People \
     first walked on it in 1969.",
];

/// Our figures for one text: time to the first chunk's audio, total time, audio seconds.
fn ours(voice: &mut Voice, text: &str) -> Result<(f64, f64, f64)> {
    // A fresh cache each time: this measures synthesis, not memory.
    voice.set_cache_bytes(0);
    let cancel = Cancel::new()?;
    let t0 = Instant::now();
    let mut chunker = Chunker::new();
    let mut chunks = chunker.push(text);
    chunks.extend(chunker.finish());
    let mut first = None;
    let mut samples = 0usize;
    // The first chunk streams (its first piece is what the listener hears first); the later
    // ones only need to be ready before their turn to play.
    for (i, c) in chunks.iter().enumerate() {
        let audio = if i == 0 {
            voice.stream_chunk(c, &cancel, &mut |piece| {
                if !piece.is_empty() {
                    first.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1000.0);
                }
            })?
        } else {
            voice.speak_chunk(c, &cancel)?
        };
        samples += audio.len();
        first.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1000.0);
    }
    let total = t0.elapsed().as_secs_f64() * 1000.0;
    Ok((
        first.unwrap_or(total),
        total,
        samples as f64 / voice.sample_rate() as f64,
    ))
}

/// Time from a barge-in to synthesis stopping, with the cancel landing mid-sentence.
fn cancel_latency_ms(voice: &mut Voice) -> Result<f64> {
    voice.set_cache_bytes(0);
    let cancel = Cancel::new()?;
    let remote = cancel.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(15));
        let at = Instant::now();
        remote.cancel();
        at
    });
    let result = voice.speak_chunk(LONG[0], &cancel);
    let stopped = Instant::now();
    let at = stopper
        .join()
        .map_err(|_| anyhow::anyhow!("canceller thread panicked"))?;
    match result {
        Err(TtsError::Cancelled) => {
            Ok(stopped.saturating_duration_since(at).as_secs_f64() * 1000.0)
        }
        Ok(_) => bail!("synthesis finished before the cancel landed"),
        Err(e) => Err(e.into()),
    }
}

pub fn bench_tts(args: TtsBenchArgs, store: &ModelStore) -> Result<()> {
    if args.threads == 0 || args.runs == 0 {
        bail!("--threads and --runs must be at least 1");
    }
    hark_core::onnx::init(&store.require(ids::ONNXRUNTIME)?)?;
    let (model, config, espeak) = (
        store.require(ids::PIPER_JOE)?,
        store.require(ids::PIPER_JOE_CONFIG)?,
        store.require(ids::ESPEAK_DATA)?,
    );
    let choice = if args.onnx_decoder {
        DecoderChoice::OnnxRuntime
    } else {
        DecoderChoice::Ours
    };
    let mut voice = Voice::load_with(&model, &config, &espeak, args.threads, choice)?;
    eprintln!(
        "hark bench tts: joe-medium, {} threads, {} short and {} long replies, median of {}; decoder on {}",
        args.threads,
        SHORT.len(),
        LONG.len(),
        args.runs,
        if voice.decodes_with_own_kernels() {
            "Hark's kernels"
        } else {
            "ONNX Runtime"
        }
    );
    voice.synthesize("Hello.")?; // warm-up
    let texts: Vec<&str> = SHORT.iter().chain(LONG.iter()).copied().collect();
    let mut our_ttfa = vec![Vec::new(); texts.len()];
    // One pass of Hark, then one of the peer, and again: this machine's speed drifts over
    // seconds (it is shared), and alternating puts both engines under the same drift.
    let request = json!({
        "mode": "bench",
        "model": model.display().to_string(),
        "config": config.display().to_string(),
        "espeak_data": espeak.display().to_string(),
        "threads": args.threads,
        "texts": texts,
        "runs": 1,
    });
    let python = if args.no_peer {
        None
    } else {
        match peer_python(args.peer_python.as_deref()) {
            Ok(py) => Some(py),
            Err(e) => {
                eprintln!("hark bench tts: piper-tts not measured: {e:#}");
                None
            }
        }
    };
    let mut peer_passes: Vec<serde_json::Value> = Vec::new();
    let mut peer_failed = python.is_none();
    // Each pass's compute and audio, to pair it with the peer's pass that follows.
    let mut our_passes: Vec<(f64, f64)> = Vec::new();
    for _ in 0..args.runs {
        let (mut pass_ms, mut pass_audio) = (0.0, 0.0);
        for (i, t) in texts.iter().enumerate() {
            let (ttfa, total, audio) = ours(&mut voice, t)?;
            our_ttfa[i].push(ttfa);
            pass_ms += total;
            pass_audio += audio;
        }
        our_passes.push((pass_ms, pass_audio));
        if let (Some(py), false) = (&python, peer_failed) {
            match call_peer(py, PIPER_PEER, &request) {
                Ok(answer) => peer_passes.push(answer),
                Err(e) => {
                    eprintln!("hark bench tts: piper-tts not measured: {e:#}");
                    peer_failed = true;
                }
            }
        }
    }
    let cancels: Vec<f64> = (0..args.runs)
        .map(|_| cancel_latency_ms(&mut voice))
        .collect::<Result<_>>()?;
    voice.set_cache_bytes(hark_tts::DEFAULT_CACHE_BYTES);
    voice.warm_phrases(&hark_tts::ACKNOWLEDGEMENTS)?;
    let cached: Vec<f64> = (0..args.runs)
        .map(|_| {
            let t = Instant::now();
            voice.speak_chunk("Sure.", &Cancel::new()?)?;
            Ok(t.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<Result<_>>()?;

    // The peer's passes as one answer: each text's runs, one per pass.
    let peer = (!peer_failed && !peer_passes.is_empty()).then(|| {
        let mut merged = peer_passes[0].clone();
        for (i, text) in texts.iter().enumerate() {
            let runs: Vec<serde_json::Value> = peer_passes
                .iter()
                .filter_map(|p| p["texts"][i]["runs"].as_array())
                .flatten()
                .cloned()
                .collect();
            merged["texts"][i] = json!({ "text": text, "runs": runs });
        }
        merged
    });
    let peer_runs = |i: usize, key: &str| -> Option<Vec<f64>> {
        let runs = peer.as_ref()?["texts"][i]["runs"].as_array()?;
        runs.iter().map(|r| r[key].as_f64()).collect()
    };
    let group = |range: std::ops::Range<usize>, ours: bool| -> Option<f64> {
        let mut all = Vec::new();
        for i in range {
            if ours {
                all.extend(&our_ttfa[i]);
            } else {
                all.extend(peer_runs(i, "ttfa_ms")?);
            }
        }
        Some(median(all))
    };
    let short = 0..SHORT.len();
    let long = SHORT.len()..texts.len();
    let our_total: f64 = our_passes.iter().map(|p| p.0).sum();
    let our_audio: f64 = our_passes.iter().map(|p| p.1).sum();
    let our_rtf = our_total / 1000.0 / our_audio;
    // Time for the same texts: the fair comparison of compute, since the two engines' audio
    // lengths differ (Hark trims each chunk's leading and trailing silence).
    let runs = args.runs as f64;
    let our_per_pass = our_total / runs;
    let peer_per_pass = peer.as_ref().and_then(|_| {
        let mut total = 0.0;
        for i in 0..texts.len() {
            total += peer_runs(i, "total_ms")?.iter().sum::<f64>();
        }
        Some(total / runs)
    });
    let peer_rtf = peer.as_ref().and_then(|_| {
        let (mut total, mut audio) = (0.0, 0.0);
        for i in 0..texts.len() {
            total += peer_runs(i, "total_ms")?.iter().sum::<f64>();
            audio += peer_runs(i, "audio_s")?.iter().sum::<f64>();
        }
        Some(total / 1000.0 / audio)
    });
    // Pass by pass (each Hark pass against the peer's pass right after it): the ratios' spread
    // shows how much of a ratio is this machine's drift.
    let paired: Vec<(f64, f64)> = our_passes
        .iter()
        .zip(&peer_passes)
        .filter_map(|(&(ms, audio), answer)| {
            let runs = answer["texts"].as_array()?;
            let field = |key: &str| -> Option<f64> {
                runs.iter().map(|t| t["runs"][0][key].as_f64()).sum()
            };
            let (peer_ms, peer_audio) = (field("total_ms")?, field("audio_s")?);
            Some((peer_ms / ms, (peer_ms / peer_audio) / (ms / audio)))
        })
        .collect();
    let spread = |values: Vec<f64>| -> Option<(f64, f64, f64)> {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!values.is_empty()).then(|| (median(values), min, max))
    };
    let paired_compute = spread(paired.iter().map(|p| p.0).collect());
    let paired_rtf = spread(paired.iter().map(|p| p.1).collect());
    let engine = peer
        .as_ref()
        .and_then(|p| p["engine"].as_str())
        .unwrap_or("piper-tts")
        .to_string();
    let figures = [
        (
            "first audio, short replies (ms)",
            group(short.clone(), true),
            group(short, false),
        ),
        (
            "first audio, long replies (ms)",
            group(long.clone(), true),
            group(long, false),
        ),
        (
            "all six texts synthesised (ms)",
            Some(our_per_pass),
            peer_per_pass,
        ),
        ("real-time factor", Some(our_rtf), peer_rtf),
    ];
    if args.json {
        let mut out = json!({
            "threads": args.threads,
            "runs": args.runs,
            "texts": texts,
            "hark": {
                "decoder": if voice.decodes_with_own_kernels() { "hark" } else { "onnxruntime" },
                "ttfa_ms_short_p50": figures[0].1, "ttfa_ms_long_p50": figures[1].1,
                "rtf": our_rtf, "all_texts_ms": our_per_pass, "cancel_ms_p50": median(cancels.clone()),
                "cached_phrase_ms_p50": median(cached.clone()),
            },
        });
        if let Some(p) = &peer {
            out["peer"] = json!({
                "engine": engine,
                "ttfa_ms_short_p50": figures[0].2, "ttfa_ms_long_p50": figures[1].2,
                "rtf": peer_rtf, "all_texts_ms": peer_per_pass, "load_s": p["load_s"], "peak_rss_bytes": p["peak_rss_bytes"],
            });
            out["paired_by_pass"] = json!({
                "all_texts_ratio": paired_compute.map(|(m, lo, hi)| json!({"median": m, "min": lo, "max": hi})),
                "rtf_ratio": paired_rtf.map(|(m, lo, hi)| json!({"median": m, "min": lo, "max": hi})),
            });
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<34} {:>9} {:>11} {:>8}",
        "", "hark", "piper-tts", "ratio"
    )?;
    for (name, a, b) in figures {
        let a = a.unwrap_or(f64::NAN);
        let (b_s, r_s) = match b {
            Some(b) => (format!("{b:.3}"), format!("{:.2}×", b / a)),
            None => ("-".into(), "-".into()),
        };
        writeln!(out, "{name:<34} {a:>9.3} {b_s:>11} {r_s:>8}")?;
    }
    if let (Some(c), Some(r)) = (paired_compute, paired_rtf) {
        writeln!(
            out,
            "pass by pass: all six texts {:.2}× ({:.2}-{:.2}), real-time factor {:.2}× ({:.2}-{:.2}) (medians, min-max)",
            c.0, c.1, c.2, r.0, r.1, r.2
        )?;
    }
    writeln!(
        out,
        "barge-in → synthesis stopped: p50 {:.1} ms, max {:.1} ms; a cached phrase: p50 {:.2} ms",
        median(cancels.clone()),
        cancels.iter().copied().fold(0.0, f64::max),
        median(cached),
    )?;
    writeln!(
        out,
        "ratio: {engine} ÷ hark (above 1: hark is faster); hark's first audio is the first piece of its first chunk (a clause), piper-tts's its first sentence;\nreal-time factors divide by each engine's own audio, and Hark trims the silence piper-tts keeps around each sentence"
    )?;
    Ok(())
}
