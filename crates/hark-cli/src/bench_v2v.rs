//! `hark bench v2v`: voice-to-voice latency of whole conversations, streaming pipeline against
//! the sequential baseline (whole-turn recognition after the turn ends, then the whole reply,
//! then its whole synthesis), same inputs, same models, one run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use hark_core::trace::{span, TurnRecord};
use hark_core::{AudioBuffer, ASR_SAMPLE_RATE};
use hark_models::{ids, ModelStore};
use hark_pipeline::{Pipeline, PipelineConfig};
use serde_json::json;

use crate::bench_asr::{read_16k, read_raw};
use crate::bench_cmd::{median, percentile};
use crate::host_cpu::{CpuShares, CpuTimes};

#[derive(Debug, Args)]
pub struct V2vBenchArgs {
    /// Threads for recognition and synthesis.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Run the streaming pipeline live: the conversations fed at real-time pace through the
    /// stages on their own threads (takes as long as the audio, about two minutes). The
    /// sequential baseline has no concurrency, so its clock is the same either way.
    #[arg(long)]
    realtime: bool,
    /// Where the voice counts as fading, so the final decode starts (as `hark run
    /// --fading-below`).
    #[arg(long, default_value_t = hark_pipeline::listen::ListenConfig::default().fading_below, value_name = "P")]
    fading_below: f32,
    /// Run the streaming pipeline over the conversations this many times and pool the turns:
    /// on a shared machine one round's p50 (8 turns) moves by tens of milliseconds from run to
    /// run; the per-round p50s are printed too. Each round starts with the voice's phrase cache as
    /// start-up left it (the replies repeat from round to round). The sequential baseline runs
    /// once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    rounds: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Silence between a user's turns: room for the reply to play before the next question.
const GAP_MS: f64 = 6_000.0;

/// Multi-turn conversations: real recorded speech (pocketsphinx-testdata) and the bundled
/// espeak-ng questions, each turn followed by a pause.
fn conversations(testdata: &Path, assets: &Path) -> Result<Vec<(String, AudioBuffer)>> {
    let gap = vec![0f32; (GAP_MS * 16.0) as usize];
    let join = |parts: Vec<Vec<f32>>| -> AudioBuffer {
        let mut out = vec![0f32; 8_000];
        for p in parts {
            out.extend(p);
            out.extend(&gap);
        }
        AudioBuffer::new(out, ASR_SAMPLE_RATE)
    };
    let mut convs = vec![(
        "commands".to_string(),
        join(vec![
            read_raw(&testdata.join("goforward.raw"))?,
            read_raw(&testdata.join("something.raw"))?,
            read_16k(&testdata.join("cards/005.wav"))?,
        ]),
    )];
    let questions: Vec<PathBuf> = ["question-spider", "question-moon", "question-capital"]
        .iter()
        .map(|q| assets.join(format!("{q}.wav")))
        .filter(|p| p.is_file())
        .collect();
    if !questions.is_empty() {
        convs.push((
            "questions".to_string(),
            join(
                questions
                    .iter()
                    .map(|p| read_16k(p))
                    .collect::<Result<_>>()?,
            ),
        ));
    }
    convs.push((
        "reading".to_string(),
        join(vec![
            read_16k(&testdata.join("librivox/sense_and_sensibility_01_austen_64kb-0880.wav"))?,
            read_16k(&testdata.join("librivox/sense_and_sensibility_01_austen_64kb-0930.wav"))?,
        ]),
    ));
    Ok(convs)
}

fn run_all(
    pipeline: &mut Pipeline,
    convs: &[(String, AudioBuffer)],
    realtime: bool,
) -> Result<Vec<TurnRecord>> {
    let mut records = Vec::new();
    for (name, audio) in convs {
        pipeline.reset().context("starting a new conversation")?;
        let conv = if realtime {
            pipeline.process_realtime(audio, name, |_| {})
        } else {
            pipeline.process(audio, name, |_| {})
        }
        .with_context(|| format!("conversation {name}"))?;
        records.extend(conv.turns.into_iter().filter(|r| r.error.is_none()));
    }
    Ok(records)
}

pub fn bench_v2v(args: V2vBenchArgs, store: &ModelStore) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let testdata = store
        .require(ids::TESTDATA)
        .context("the real-speech corpus is not installed: run `hark models fetch --set test`")?;
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let convs = conversations(&testdata, &assets)?;
    let paths = crate::run_cmd::model_paths(store, true)?;

    let mut streaming_cfg = PipelineConfig::new(paths.clone());
    streaming_cfg.threads = args.threads;
    if let Some(l) = streaming_cfg.listen.as_mut() {
        l.final_threads = args.threads;
        l.fading_below = args.fading_below.clamp(0.0, 1.0);
    }
    let mut sequential_cfg = streaming_cfg.clone();
    if args.realtime {
        // As `hark run --realtime`: live, partial decodes cost more than they save.
        if let Some(l) = streaming_cfg.listen.as_mut() {
            l.partials = false;
        }
        streaming_cfg.prefill_partials = false;
    }
    sequential_cfg.listen = None;
    sequential_cfg.stream_speech = false;
    sequential_cfg.asr_window = hark_pipeline::EncoderWindow::Full;

    eprintln!(
        "hark bench v2v: {} conversations, {} threads: streaming ({}), then the sequential baseline",
        convs.len(),
        args.threads,
        if args.realtime { "live, in real time" } else { "on the input's clock" }
    );
    let mut pipeline = Pipeline::load(streaming_cfg)?;
    let mut rounds = Vec::with_capacity(args.rounds);
    // Where the machine's CPU went in each round: a round the host disrupted shows here.
    let mut round_cpu = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            eprintln!("round {round} of {}", args.rounds);
        }
        if round > 1 {
            // Each round as the first: no reply found already spoken by a round before.
            pipeline.reset_phrases()?;
        }
        let before = CpuTimes::now();
        rounds.push(run_all(&mut pipeline, &convs, args.realtime)?);
        round_cpu.push(CpuTimes::shares_since(before));
    }
    drop(pipeline);
    let sequential = run_all(&mut Pipeline::load(sequential_cfg)?, &convs, false)?;
    let streaming: Vec<TurnRecord> = rounds.iter().flatten().cloned().collect();
    if streaming.is_empty() || sequential.is_empty() {
        bail!("no turn was answered");
    }

    let v2v = |r: &[TurnRecord]| r.iter().map(|t| t.v2v_ms).collect::<Vec<_>>();
    let span_of = |r: &[TurnRecord], key: &str| {
        median(
            r.iter()
                .map(|t| {
                    serde_json::to_value(t.spans)
                        .map_or(f64::NAN, |v| v[key].as_f64().unwrap_or(f64::NAN))
                })
                .collect(),
        )
    };
    let (s50, s95) = (median(v2v(&streaming)), percentile(v2v(&streaming), 0.95));
    let (q50, q95) = (median(v2v(&sequential)), percentile(v2v(&sequential), 0.95));
    let round_p50: Vec<f64> = rounds.iter().map(|r| median(v2v(r))).collect();
    // Each turn of the conversations, its V2V in every round.
    let mut per_turn: Vec<(&TurnRecord, Vec<f64>)> = Vec::new();
    for t in &streaming {
        match per_turn
            .iter_mut()
            .find(|(first, _)| first.input == t.input && first.turn == t.turn)
        {
            Some((_, v2vs)) => v2vs.push(t.v2v_ms),
            None => per_turn.push((t, vec![t.v2v_ms])),
        }
    }
    if args.json {
        let spans = |r: &[TurnRecord]| {
            span::ALL
                .iter()
                .map(|k| (k.to_string(), json!(span_of(r, k))))
                .collect::<serde_json::Map<_, _>>()
        };
        let out = json!({
            "threads": args.threads,
            "realtime": args.realtime,
            "rounds": args.rounds,
            "round_v2v_ms_p50": round_p50,
            "round_cpu_steal_share": round_cpu.iter().map(|c| c.map(|c| c.steal)).collect::<Vec<_>>(),
            "round_cpu_others_share": round_cpu.iter().map(|c| c.map(|c| c.others)).collect::<Vec<_>>(),
            "streaming": {"turns": streaming.len(), "v2v_ms_p50": s50, "v2v_ms_p95": s95, "spans_ms_p50": spans(&streaming)},
            "sequential": {"turns": sequential.len(), "v2v_ms_p50": q50, "v2v_ms_p95": q95, "spans_ms_p50": spans(&sequential)},
            "speedup_p50": q50 / s50,
            "preemptive": {"started_before_decision": streaming.iter().filter(|t| t.head_start_ms > 0.0).count(),
                           "head_start_ms": streaming.iter().map(|t| t.head_start_ms).collect::<Vec<_>>(),
                           "dropped": streaming.iter().map(|t| t.preemptive_dropped).sum::<usize>()},
            "turns": per_turn.iter().map(|(t, v2vs)| json!({"input": t.input, "turn": t.turn, "transcript": t.transcript, "v2v_ms": median(v2vs.clone()), "v2v_ms_rounds": v2vs})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<22} {:>10} {:>11} {:>8}",
        "", "streaming", "sequential", "ratio"
    )?;
    let row = |out: &mut dyn Write, name: &str, a: f64, b: f64| {
        writeln!(
            out,
            "{name:<22} {a:>10.0} {b:>11.0} {:>7.1}×",
            b / a.max(1e-9)
        )
    };
    row(&mut out, "V2V p50 ms", s50, q50)?;
    row(&mut out, "V2V p95 ms", s95, q95)?;
    for key in span::ALL {
        writeln!(
            out,
            "  {key:<20} {:>10.0} {:>11.0}",
            span_of(&streaming, key),
            span_of(&sequential, key)
        )?;
    }
    if args.rounds > 1 {
        let list: Vec<String> = round_p50.iter().map(|p| format!("{p:.0}")).collect();
        writeln!(
            out,
            "{} rounds, {} turns pooled; V2V p50 of each round: {} ms",
            args.rounds,
            streaming.len(),
            list.join(", ")
        )?;
    }
    if round_cpu.iter().all(Option::is_some) {
        let percent = |share: fn(&CpuShares) -> f64| {
            round_cpu
                .iter()
                .flatten()
                .map(|c| format!("{:.0}", 100.0 * share(c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            out,
            "the machine's CPU time in each round: {} % taken by the host (steal), {} % used \
             outside Hark (other programs, the kernel); a round with either above a few % is \
             not comparable",
            percent(|c| c.steal),
            percent(|c| c.others)
        )?;
    }
    writeln!(
        out,
        "per turn, streaming V2V ms (median of the rounds, lowest-highest):"
    )?;
    for (t, v2vs) in &per_turn {
        let lo = v2vs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v2vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let text: String = t.transcript.chars().take(44).collect();
        writeln!(
            out,
            "  {:<10} {:>2} {:>6.0} ({lo:.0}-{hi:.0})  {text:?}",
            t.input,
            t.turn,
            median(v2vs.clone())
        )?;
    }
    let ahead: Vec<f64> = streaming
        .iter()
        .map(|t| t.head_start_ms)
        .filter(|&h| h > 0.0)
        .collect();
    writeln!(
        out,
        "preemptive replies: {} of {} started before the turn was decided (head start p50 {:.0} ms); \
         {} transcripts decoded at a pause were spoken past (their replies thrown away)",
        ahead.len(),
        streaming.len(),
        if ahead.is_empty() { 0.0 } else { median(ahead.clone()) },
        streaming.iter().map(|t| t.preemptive_dropped).sum::<usize>()
    )?;
    writeln!(
        out,
        "turns answered: {} streaming, {} sequential (spans are medians; ratio: sequential ÷ streaming)",
        streaming.len(),
        sequential.len()
    )?;
    Ok(())
}
