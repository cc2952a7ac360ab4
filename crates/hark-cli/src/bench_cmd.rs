//! `hark bench`: Hark measured against peer engines side by side, in one run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hark_llm::sampler::argmax;
use hark_llm::Engine;
use hark_models::{ids, ModelStore};
use serde_json::{json, Value};

use crate::host_cpu::CpuTimes;

/// The peer script, embedded so the bench works from any directory.
pub(crate) const LLAMA_CPP_PEER: &str = include_str!("../../../scripts/peers/llama_cpp_peer.py");

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// The LLM engine: prefill and decode speed, time to first token for a 200-token prompt,
    /// memory; and llama.cpp (llama-cpp-python, installed by scripts/setup-peers) on the same
    /// GGUF, the same tokens and the same thread count, with ratios.
    Llm(LlmBenchArgs),
    /// Speech recognition: streaming (partials while the user speaks, the final decoded when
    /// silence begins) against whole-utterance decoding after the turn end, on real recordings
    /// (pocketsphinx-testdata: `hark models fetch --set test`) and espeak-ng questions: WER,
    /// final-transcript delay after the turn end, endpoint delay, partials' real-time factor.
    Asr(crate::bench_asr::AsrBenchArgs),
    /// Speech synthesis: time to first audio for short and long replies, real-time factor,
    /// barge-in latency and a cached phrase; and the PyPI `piper-tts` engine (installed by
    /// scripts/setup-peers) on the same voice, texts and threads, with ratios.
    Tts(crate::bench_tts::TtsBenchArgs),
    /// Voice-to-voice latency of multi-turn conversations (real recorded speech and the bundled
    /// questions): the streaming pipeline against the sequential baseline (recognition after
    /// the turn ends, the whole reply, then its whole synthesis), p50/p95 and each span.
    V2v(crate::bench_v2v::V2vBenchArgs),
}

#[derive(Debug, Args)]
pub struct LlmBenchArgs {
    /// Model: `smollm2` (default set), `qwen0.5b` or `qwen1.5b` (`--set quality`), or a path to
    /// a GGUF file.
    #[arg(long, default_value = "smollm2")]
    pub(crate) model: String,
    /// Compute threads for both engines.
    #[arg(long, default_value_t = default_threads())]
    pub(crate) threads: usize,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 200)]
    prompt_tokens: usize,
    /// Tokens decoded after the prompt (greedy, end-of-turn ignored; with --speculative, at most
    /// this many per reply).
    #[arg(long, default_value_t = 128)]
    pub(crate) decode_tokens: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Memory read bandwidth in GB/s, for the decode speed limit it implies (default: measured
    /// in this run with the same number of threads).
    #[arg(long)]
    bandwidth_gbs: Option<f64>,
    /// Python with llama-cpp-python (default: target/peers/venv/bin/python, as
    /// scripts/setup-peers installs it; or $HARK_PEER_PYTHON).
    #[arg(long, value_name = "PATH")]
    pub(crate) peer_python: Option<PathBuf>,
    /// Measure Hark only.
    #[arg(long)]
    pub(crate) no_peer: bool,
    /// Measure speculative decoding instead: plain decoding against prompt lookup and, with a
    /// draft model, draft-model speculation (each with its controller and always drafting
    /// --max-draft), greedy, on 20 assistant-style prompts, with the speed-up, acceptance rate,
    /// mean accepted length, the controller's choices, and whether the output is plain decoding's;
    /// with a draft model, llama.cpp's speculative decoding on the same pair and prompts too.
    #[arg(long)]
    pub(crate) speculative: bool,
    /// The draft model for --speculative (`qwen0.5b`, …; default: qwen0.5b for qwen1.5b, none
    /// otherwise).
    #[arg(long, value_name = "MODEL")]
    pub(crate) draft_model: Option<String>,
    /// Most tokens drafted per step with --speculative.
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub(crate) max_draft: usize,
    /// With --speculative and a draft model, also run the draft model with an output head that
    /// scores only the first N token ids and the special tokens (Qwen2.5-0.5B's whole head is
    /// 37 % of what it reads per token); 0: only the whole head.
    #[arg(long, default_value_t = 32768, value_name = "N")]
    pub(crate) draft_head: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

pub fn run(args: BenchArgs, store: &ModelStore) -> Result<()> {
    match args.what {
        BenchWhat::Llm(a) if a.speculative => crate::bench_spec::bench_speculative(&a, store),
        BenchWhat::Llm(a) => bench_llm(a, store),
        BenchWhat::Asr(a) => crate::bench_asr::bench_asr(a, store),
        BenchWhat::Tts(a) => crate::bench_tts::bench_tts(a, store),
        BenchWhat::V2v(a) => crate::bench_v2v::bench_v2v(a, store),
    }
}

/// Resolves `--model` to a GGUF path.
pub fn llm_path(store: &ModelStore, model: &str) -> Result<PathBuf> {
    let id = match model {
        "smollm2" => ids::SMOLLM2,
        "qwen0.5b" => "qwen2.5-coder-0.5b",
        "qwen1.5b" => "qwen2.5-coder-1.5b",
        path => {
            let p = PathBuf::from(path);
            if p.is_file() {
                return Ok(p);
            }
            bail!("`{path}` is neither a known model (smollm2, qwen0.5b, qwen1.5b) nor a file");
        }
    };
    store.require(id).with_context(|| {
        format!("model `{model}` is not installed: run `hark models fetch` (qwen models: `--set quality`)")
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    prefill_tok_s: f64,
    ttft_ms: f64,
    decode_tok_s: f64,
}

/// The middle value (the upper middle of an even count); NaN for none.
pub fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

/// The value at fraction `p` of the sorted values (nearest rank); NaN for none.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn median_figures(runs: &[Figures]) -> Figures {
    Figures {
        prefill_tok_s: median(runs.iter().map(|r| r.prefill_tok_s).collect()),
        ttft_ms: median(runs.iter().map(|r| r.ttft_ms).collect()),
        decode_tok_s: median(runs.iter().map(|r| r.decode_tok_s).collect()),
    }
}

/// A fixed prompt of exactly `n` tokens (ordinary English text, repeated as needed).
fn bench_prompt(engine: &Engine, n: usize) -> Result<Vec<u32>> {
    const TEXT: &str = "The history of timekeeping begins with shadows. People noticed that the \
        shadow of a stick moved across the ground as the sun crossed the sky, and they marked its \
        positions to divide the day. Water clocks followed, letting a vessel drain at a steady \
        rate so that hours could be counted at night. Mechanical clocks appeared in European \
        monasteries in the thirteenth century, driven by falling weights and regulated by an \
        escapement. The pendulum, studied by Galileo and built into a clock by Huygens, made \
        them accurate to within a minute a day. ";
    let once = engine.tokenizer().encode(TEXT)?;
    if once.is_empty() {
        bail!("the tokenizer produced no tokens");
    }
    Ok(once.iter().cycle().take(n).copied().collect())
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn bench_llm(args: LlmBenchArgs, store: &ModelStore) -> Result<()> {
    if args.prompt_tokens == 0 || args.runs == 0 || args.threads == 0 {
        bail!("--prompt-tokens, --runs and --threads must be at least 1");
    }
    let path = llm_path(store, &args.model)?;
    let context = (args.prompt_tokens + args.decode_tokens + 16).max(512);
    let loaded = Instant::now();
    let engine = Engine::load(&path, context, args.threads)
        .with_context(|| format!("loading {}", path.display()))?;
    let load_s = loaded.elapsed().as_secs_f64();
    let prompt = bench_prompt(&engine, args.prompt_tokens)?;
    let mut session = engine.new_session()?;
    eprintln!(
        "hark bench llm: {} ({}), {} threads, {}-token prompt, {} decoded tokens, median of {}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        engine.model().config.arch_name,
        args.threads,
        prompt.len(),
        args.decode_tokens,
        args.runs
    );

    session.append(&prompt[..prompt.len().min(8)], false)?; // warm-up
    let before_ours = CpuTimes::now();
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        session.truncate(0);
        let t0 = Instant::now();
        let logits = session.append(&prompt, false)?;
        let t1 = Instant::now();
        let mut tok = argmax(logits);
        let t2 = Instant::now();
        for _ in 0..args.decode_tokens {
            tok = argmax(session.append(&[tok], false)?);
        }
        let t3 = Instant::now();
        runs.push(Figures {
            prefill_tok_s: prompt.len() as f64 / (t1 - t0).as_secs_f64(),
            ttft_ms: (t2 - t0).as_secs_f64() * 1000.0,
            decode_tok_s: args.decode_tokens as f64 / (t3 - t2).as_secs_f64(),
        });
    }
    let ours = median_figures(&runs);
    let cpu_ours = CpuTimes::shares_since(before_ours);
    let weights = engine.model().weight_bytes as f64;
    let read_per_token = engine.model().decode_read_bytes as f64;
    let kv = session.cache_bytes() as f64;
    let our_rss = peak_rss_bytes().map(|b| b as f64);
    // Measured after our peak memory was read, so the probe's buffer does not count.
    let bandwidth_gbs = args
        .bandwidth_gbs
        .unwrap_or_else(|| read_bandwidth_gbs(args.threads));
    let bandwidth_limit = bandwidth_gbs * 1e9 / read_per_token;

    let before_peer = CpuTimes::now();
    let peer = if args.no_peer {
        None
    } else {
        match run_peer(&args, &path, &prompt) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("hark bench llm: llama.cpp not measured: {e:#}");
                None
            }
        }
    };
    // The peer runs in another process: only the host's share says anything of its run.
    let steal_peer = CpuTimes::shares_since(before_peer)
        .filter(|_| peer.is_some())
        .map(|c| c.steal);

    if args.json {
        let figures = |f: &Figures| json!({"prefill_tok_s": f.prefill_tok_s, "ttft_ms": f.ttft_ms, "decode_tok_s": f.decode_tok_s});
        let mut out = json!({
            "model": path.display().to_string(),
            "threads": args.threads,
            "prompt_tokens": prompt.len(),
            "decode_tokens": args.decode_tokens,
            "runs": args.runs,
            "hark": {
                "figures": figures(&ours),
                "load_s": load_s,
                "weights_bytes": weights,
                "kv_cache_bytes": kv,
                "peak_rss_bytes": our_rss,
                "decode_read_bytes": read_per_token,
                "read_bandwidth_gbs": bandwidth_gbs,
                "decode_bandwidth_limit_tok_s": bandwidth_limit,
                "cpu_steal_share": cpu_ours.map(|c| c.steal),
                "cpu_others_share": cpu_ours.map(|c| c.others),
            },
        });
        if let Some(p) = &peer {
            out["llama_cpp"] = json!({
                "engine": p.engine,
                "figures": figures(&p.figures),
                "load_s": p.load_s,
                "peak_rss_bytes": p.peak_rss,
                "cpu_steal_share": steal_peer,
            });
            out["ratios"] = json!({
                "prefill": ours.prefill_tok_s / p.figures.prefill_tok_s,
                "decode": ours.decode_tok_s / p.figures.decode_tok_s,
                "ttft_speedup": p.figures.ttft_ms / ours.ttft_ms,
            });
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    let mb = |b: f64| b / 1e6;
    let mut out = std::io::stdout().lock();
    let peer_name = peer.as_ref().map_or("llama.cpp", |p| p.engine.as_str());
    writeln!(
        out,
        "{:<28} {:>10} {:>12} {:>10}",
        "", "hark", "llama.cpp", "ratio"
    )?;
    let row = |out: &mut dyn Write, name: &str, a: f64, b: Option<f64>, higher_better: bool| {
        let (b_s, r_s) = match b {
            Some(b) => (
                format!("{b:.1}"),
                format!("{:.2}×", if higher_better { a / b } else { b / a }),
            ),
            None => ("-".into(), "-".into()),
        };
        writeln!(out, "{name:<28} {a:>10.1} {b_s:>12} {r_s:>10}")
    };
    let pf = peer.as_ref().map(|p| p.figures);
    row(
        &mut out,
        "prefill tok/s",
        ours.prefill_tok_s,
        pf.map(|f| f.prefill_tok_s),
        true,
    )?;
    row(
        &mut out,
        "decode tok/s",
        ours.decode_tok_s,
        pf.map(|f| f.decode_tok_s),
        true,
    )?;
    row(
        &mut out,
        &format!("TTFT ms ({}-token prompt)", prompt.len()),
        ours.ttft_ms,
        pf.map(|f| f.ttft_ms),
        false,
    )?;
    row(
        &mut out,
        "peak RSS MB",
        our_rss.map_or(f64::NAN, mb),
        peer.as_ref().and_then(|p| p.peak_rss).map(mb),
        false,
    )?;
    writeln!(
        out,
        "hark memory: {:.1} MB weights + {:.1} MB KV cache ({} positions)",
        mb(weights),
        mb(kv),
        session.capacity()
    )?;
    writeln!(
        out,
        "decode at {:.0}% of the memory-bandwidth limit ({:.0} tok/s = {:.1} GB/s {} / {:.1} MB read per token)",
        100.0 * ours.decode_tok_s / bandwidth_limit,
        bandwidth_limit,
        bandwidth_gbs,
        if args.bandwidth_gbs.is_some() { "as given" } else { "measured now" },
        mb(read_per_token)
    )?;
    if let Some(c) = cpu_ours {
        let peer_steal = steal_peer.map_or(String::new(), |s| {
            format!("; while {peer_name} ran, the host took {:.0} %", 100.0 * s)
        });
        writeln!(
            out,
            "the machine's CPU time while hark ran: {:.0} % taken by the host (steal), {:.0} % used \
             outside Hark{peer_steal}; above a few % the figures are the host's",
            100.0 * c.steal,
            100.0 * c.others,
        )?;
    }
    writeln!(
        out,
        "ratio: hark ÷ {peer_name} for speeds, {peer_name} ÷ hark for times and memory (above 1: hark is better)"
    )?;
    Ok(())
}

/// Memory read bandwidth in GB/s with `threads` threads streaming through a buffer far larger
/// than any cache; the best of three passes.
fn read_bandwidth_gbs(threads: usize) -> f64 {
    const BYTES: usize = 256 << 20;
    let buf = vec![1u64; BYTES / 8];
    let share = buf.len().div_ceil(threads.max(1));
    let mut best = 0f64;
    for _ in 0..3 {
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for part in buf.chunks(share) {
                scope.spawn(move || {
                    // Four independent chains so the loop is bound by loads, not by the adds.
                    let mut acc = [0u64; 4];
                    for quad in part.chunks_exact(4) {
                        for (a, v) in acc.iter_mut().zip(quad) {
                            *a = a.wrapping_add(*v);
                        }
                    }
                    std::hint::black_box(acc);
                });
            }
        });
        best = best.max(BYTES as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    best
}

struct PeerFigures {
    engine: String,
    figures: Figures,
    load_s: f64,
    peak_rss: Option<f64>,
}

/// The Python that has llama-cpp-python.
pub fn peer_python(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("HARK_PEER_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = PathBuf::from("target/peers/venv/bin/python");
    if venv.is_file() {
        return Ok(venv);
    }
    bail!("the peer engines are not installed: run scripts/setup-peers (or pass --peer-python)")
}

/// Runs an embedded peer script (`source`) with `request`, returning its JSON answer.
pub fn call_peer(python: &Path, source: &str, request: &Value) -> Result<Value> {
    let script = std::env::temp_dir().join(format!(
        "hark-peer-{}-{:x}.py",
        std::process::id(),
        source.len()
    ));
    std::fs::write(&script, source).context("writing the peer script")?;
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(request.to_string().as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let _ = std::fs::remove_file(&script);
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        bail!(
            "the peer failed ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    serde_json::from_slice(&output.stdout).context("reading the peer's answer")
}

fn run_peer(args: &LlmBenchArgs, model: &Path, prompt: &[u32]) -> Result<PeerFigures> {
    let python = peer_python(args.peer_python.as_deref())?;
    let answer = call_peer(
        &python,
        LLAMA_CPP_PEER,
        &json!({
            "mode": "bench",
            "model": model.display().to_string(),
            "threads": args.threads,
            "ctx": (args.prompt_tokens + args.decode_tokens + 16).max(512),
            "prompt": prompt,
            "decode": args.decode_tokens,
            "runs": args.runs,
        }),
    )?;
    let runs: Vec<Figures> = answer["runs"]
        .as_array()
        .context("the peer's answer has no runs")?
        .iter()
        .map(|r| Figures {
            prefill_tok_s: r["prefill_tok_s"].as_f64().unwrap_or(f64::NAN),
            ttft_ms: r["ttft_ms"].as_f64().unwrap_or(f64::NAN),
            decode_tok_s: r["decode_tok_s"].as_f64().unwrap_or(f64::NAN),
        })
        .collect();
    Ok(PeerFigures {
        engine: answer["engine"].as_str().unwrap_or("llama.cpp").to_string(),
        figures: median_figures(&runs),
        load_s: answer["load_s"].as_f64().unwrap_or(f64::NAN),
        peak_rss: answer["peak_rss_bytes"].as_f64(),
    })
}
