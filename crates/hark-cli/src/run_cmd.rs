//! `hark run`: WAV in, spoken reply out, with transcript and latency records.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use hark_core::TurnRecord;
use hark_models::{ids, ModelStore, Progress};
use hark_pipeline::listen::ListenConfig;
use hark_pipeline::{ModelPaths, Pipeline, PipelineConfig};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Input WAV files (any common format; `-` reads one from standard input).
    #[arg(required = true, value_name = "IN.wav")]
    inputs: Vec<PathBuf>,
    /// Where the spoken reply goes: a WAV file for one input, a directory for several
    /// (`<name>.reply.wav` each), or `-` for standard output.
    #[arg(long, short, value_name = "REPLY.wav")]
    out: PathBuf,
    /// Append one JSON record per turn (transcript, reply, every latency span) to this file (its
    /// directory is made if need be).
    #[arg(long, value_name = "T.jsonl")]
    trace: Option<PathBuf>,
    /// Write the conversation as heard: a stereo WAV, you on the left, Hark on the right, on
    /// one clock (a directory when there are several inputs).
    #[arg(long, value_name = "C.wav")]
    conversation: Option<PathBuf>,
    /// Suppress background noise (RNNoise) before listening; helps in steady noise, costs a
    /// little on clean speech (see `hark bench asr --noise`).
    #[arg(long)]
    denoise: bool,
    /// Recognise each turn only after it has ended (the sequential baseline) instead of while
    /// it is spoken.
    #[arg(long)]
    sequential_asr: bool,
    /// Feed the input at real-time pace, like a live microphone, through the stages running
    /// concurrently on their own threads: the latencies are those a person would experience
    /// (takes as long as the input lasts). Live, partial transcripts are not decoded (see the
    /// README). Without it, the input is processed as fast as possible and each decode is
    /// placed on the input's clock.
    #[arg(long)]
    realtime: bool,
    /// Do not prefill what the user has said so far into the LLM while they speak (nor decode
    /// partial transcripts for it); the whole message is then prefilled at the turn's end.
    #[arg(long)]
    no_partial_prefill: bool,
    /// Synthesise the reply only once it is complete (the sequential baseline) instead of
    /// chunk by chunk as it is generated.
    #[arg(long)]
    sequential_speech: bool,
    /// Keep one conversation across all inputs instead of starting afresh for each.
    #[arg(long)]
    continue_conversation: bool,
    #[command(flatten)]
    conversation_args: ConversationArgs,
}

/// How Hark converses: the options `hark run` and `hark talk` share.
#[derive(Debug, Args)]
pub struct ConversationArgs {
    /// The assistant's instructions.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Longest reply, in tokens.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_reply_tokens: usize,
    /// A reply stops after this many sentences (0: no limit).
    #[arg(long, default_value_t = 2, value_name = "N")]
    max_reply_sentences: usize,
    /// Silence that ends a turn while its transcript does not tell how finished it is, ms (each
    /// of these silences is counted from where the speech ends in the signal).
    #[arg(long, default_value_t = 500.0, value_name = "MS")]
    end_silence_ms: f64,
    /// Silence that ends a turn whose transcript reads as a finished sentence, ms.
    #[arg(long, default_value_t = ListenConfig::default().finished_end_silence_ms, value_name = "MS")]
    finished_silence_ms: f64,
    /// Silence that ends a turn whose transcript stops mid-sentence ("to the", "and"), ms.
    #[arg(long, default_value_t = ListenConfig::default().unfinished_end_silence_ms, value_name = "MS")]
    unfinished_silence_ms: f64,
    /// A window of voice whose speech probability falls below this is the voice fading: the
    /// final decode starts there, a window before the silence is heard, and is dropped if you
    /// speak on. 0 waits for the silence.
    #[arg(long, default_value_t = ListenConfig::default().fading_below, value_name = "P")]
    fading_below: f32,
    /// Sampling temperature (0: greedy, reproducible).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Seed for sampling when the temperature is above 0.
    #[arg(long, default_value_t = 299_792_458)]
    seed: u64,
    /// Threads for recognition and synthesis (default: all cores, at most 4).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// What Whisper's encoder sees: the turn's audio plus this many seconds (default 0.5, about
    /// 7x faster than the full window) or `full` (Whisper's whole 30 s window; see the README).
    #[arg(long, value_name = "SECONDS|full", value_parser = parse_asr_window)]
    asr_window: Option<hark_pipeline::EncoderWindow>,
    /// Do not start the reply on the transcript decoded at the pause, its audio held until
    /// the turn is decided; wait until the silence has ended the turn (see the README).
    #[arg(long)]
    no_preemptive: bool,
    /// Fail instead of fetching missing models.
    #[arg(long)]
    no_fetch: bool,
}

impl ConversationArgs {
    /// The pipeline's configuration from these options (fetching the models unless
    /// `--no-fetch`), listening with partial decodes when `partials`.
    pub fn config(&self, store: &ModelStore, partials: bool) -> Result<PipelineConfig> {
        let paths = model_paths(store, !self.no_fetch)?;
        let mut config = PipelineConfig::new(paths);
        if let Some(system) = &self.system {
            config.system_prompt = system.clone();
        }
        if let Some(threads) = self.threads {
            config.threads = threads.max(1);
        }
        let window = self.asr_window.unwrap_or(hark_pipeline::FITTED_WINDOW);
        config.asr_window = window;
        config.listen = Some(ListenConfig {
            finished_end_silence_ms: self.finished_silence_ms.max(32.0),
            unfinished_end_silence_ms: self.unfinished_silence_ms.max(32.0),
            window,
            final_threads: config.threads,
            partials,
            fading_below: self.fading_below.clamp(0.0, 1.0),
            ..ListenConfig::default()
        });
        config.preemptive = !self.no_preemptive;
        config.max_reply_tokens = self.max_reply_tokens.max(1);
        config.max_reply_sentences = self.max_reply_sentences;
        config.turn.end_silence_ms = self.end_silence_ms.max(32.0);
        config.sampler.temperature = self.temperature.max(0.0);
        config.sampler.seed = self.seed;
        Ok(config)
    }
}

pub fn parse_asr_window(text: &str) -> Result<hark_pipeline::EncoderWindow, String> {
    if text == "full" {
        return Ok(hark_pipeline::EncoderWindow::Full);
    }
    match text.parse::<f64>() {
        Ok(s) if (0.0..=30.0).contains(&s) => Ok(hark_pipeline::EncoderWindow::Fit {
            margin_frames: (s * 50.0).round() as usize,
        }),
        _ => Err(format!(
            "`{text}` is not `full` or a number of seconds from 0 to 30"
        )),
    }
}

pub fn model_paths(store: &ModelStore, fetch: bool) -> Result<ModelPaths> {
    if !store.is_installed("default")? {
        if !fetch {
            let problems: Vec<String> = store
                .states("default")?
                .into_iter()
                .filter(|(_, state)| *state != hark_models::ItemState::Installed)
                .map(|(item, state)| {
                    format!(
                        "{} ({})",
                        item.id,
                        if state == hark_models::ItemState::Missing {
                            "missing"
                        } else {
                            "changed since verified"
                        }
                    )
                })
                .collect();
            bail!(
                "models in {} are not ready: {}\nfix: run `hark models fetch` (or drop --no-fetch)",
                store.root().display(),
                problems.join(", ")
            );
        }
        eprintln!(
            "hark: fetching the default models into {} (first use)…",
            store.root().display()
        );
        store
            .fetch("default", false, Progress::stderr())
            .context("fetching the default models")?;
    }
    Ok(ModelPaths {
        whisper: store.require(ids::WHISPER_TINY_EN)?,
        llm: store.require(ids::SMOLLM2)?,
        voice: store.require(ids::PIPER_JOE)?,
        voice_config: store.require(ids::PIPER_JOE_CONFIG)?,
        espeak_data: store.require(ids::ESPEAK_DATA)?,
        vad: store.require(ids::SILERO_VAD)?,
        onnxruntime: store.require(ids::ONNXRUNTIME)?,
    })
}

/// The trace file `--trace` names, opened for appending (its directory made if need be, as
/// `--out`'s is).
pub fn open_trace(path: Option<&Path>) -> Result<Option<BufWriter<File>>> {
    path.map(|p| {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory of {}", p.display()))?;
        }
        File::options()
            .create(true)
            .append(true)
            .open(p)
            .map(BufWriter::new)
            .with_context(|| format!("opening trace file {}", p.display()))
    })
    .transpose()
}

/// Where the reply (or conversation) of `input` goes.
fn output_for(target: &Path, input: &Path, several: bool, suffix: &str) -> Result<PathBuf> {
    if !several {
        return Ok(target.to_path_buf());
    }
    if target == Path::new("-") {
        bail!("with several inputs, --out must be a directory, not `-`");
    }
    std::fs::create_dir_all(target)
        .with_context(|| format!("creating directory {}", target.display()))?;
    Ok(target.join(format!("{}.{suffix}.wav", output_stem(input))))
}

fn output_stem(input: &Path) -> String {
    if input == Path::new("-") {
        "stdin".to_string()
    } else {
        input
            .file_stem()
            .map_or_else(|| "input".into(), |s| s.to_string_lossy().into_owned())
    }
}

pub fn run(args: RunArgs, store: &ModelStore) -> Result<()> {
    if args.inputs.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        bail!("standard input (`-`) can be read only once");
    }
    let several = args.inputs.len() > 1;
    if args.out.as_os_str() == "-"
        && args
            .conversation
            .as_ref()
            .is_some_and(|c| c.as_os_str() == "-")
    {
        bail!("--out and --conversation cannot both go to standard output");
    }
    if several {
        // Outputs are named after the inputs: two inputs of the same name would overwrite.
        let mut stems = std::collections::HashSet::new();
        for p in &args.inputs {
            let stem = output_stem(p);
            if !stems.insert(stem.clone()) {
                bail!("two inputs are named `{stem}`: their replies would overwrite each other; rename one");
            }
        }
    }
    if several && args.out.is_file() {
        bail!(
            "{} is a file; with several inputs --out must be a directory",
            args.out.display()
        );
    }
    // With the reply on stdout, everything for people goes to stderr.
    let to_stdout = args.out.as_os_str() == "-";
    let mut report: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };

    // Read every input first: a bad file is reported before minutes of model loading.
    let mut inputs = Vec::new();
    for path in &args.inputs {
        let decoded =
            hark_audio::read_wav(path).with_context(|| format!("reading {}", path.display()))?;
        if decoded.truncated {
            eprintln!(
                "hark: warning: {} is truncated; using the {:.2} s of audio it holds",
                path.display(),
                decoded.audio.duration_ms() / 1000.0
            );
        }
        inputs.push((path.clone(), decoded.audio));
    }

    // Live, a partial decode in flight when the user falls silent cannot be stopped inside
    // Whisper's encoder and delays the final decode by up to its own length (measured: +200-400
    // ms of endpoint on two cores), more than partial prefill saves (~12 ms).
    let partials = !args.no_partial_prefill && !args.realtime;
    let mut config = args.conversation_args.config(store, partials)?;
    if args.sequential_asr {
        config.listen = None;
    }
    config.denoise = args.denoise;
    config.stream_speech = !args.sequential_speech;
    config.prefill_partials = partials && !args.sequential_asr;
    config.preemptive &= !args.sequential_asr;
    let mut pipeline = Pipeline::load(config).context("loading the models")?;
    writeln!(
        report,
        "hark: models loaded and warmed in {:.0} ms",
        pipeline.startup_ms()
    )?;

    let mut trace = open_trace(args.trace.as_deref())?;
    let color = !to_stdout && std::io::stdout().is_terminal();
    let mut failures = 0;
    for (path, audio) in &inputs {
        if !args.continue_conversation {
            pipeline.reset().context("starting a new conversation")?;
        }
        let name = path.display().to_string();
        let mut trace_error = None;
        let on_turn = |rec: &hark_core::TurnRecord| {
            let _ = print_turn(&mut report, rec, color);
            if let Some(t) = trace.as_mut() {
                if let Err(e) = serde_json::to_writer(&mut *t, rec)
                    .map_err(std::io::Error::from)
                    .and_then(|()| t.write_all(b"\n"))
                {
                    trace_error.get_or_insert(e);
                }
            }
        };
        let conversation = if args.realtime {
            pipeline.process_realtime(audio, &name, on_turn)
        } else {
            pipeline.process(audio, &name, on_turn)
        }
        .with_context(|| format!("processing {name}"))?;
        if let Some(e) = trace_error {
            return Err(e).context("writing the trace");
        }
        if conversation.turns.is_empty() {
            writeln!(report, "[{name}] no speech heard: no reply")?;
        }
        failures += conversation
            .turns
            .iter()
            .filter(|t| t.error.is_some())
            .count();
        let out = output_for(&args.out, path, several, "reply")?;
        hark_audio::write_wav(&out, &conversation.replies())
            .with_context(|| format!("writing {}", out.display()))?;
        if let Some(target) = &args.conversation {
            let out = output_for(target, path, several, "conversation")?;
            let rate = conversation.timeline.sample_rate();
            let left = hark_audio::resample(&conversation.heard, rate)?;
            hark_audio::write_wav_stereo(&out, &left.samples, conversation.timeline.track(), rate)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        if let Some(t) = trace.as_mut() {
            t.flush().context("writing the trace")?;
        }
    }
    if failures > 0 {
        bail!("{failures} turn(s) failed (see above)");
    }
    Ok(())
}

fn print_turn(out: &mut dyn Write, rec: &TurnRecord, color: bool) -> std::io::Result<()> {
    let (bold, dim, reset) = if color {
        ("\x1b[1m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    writeln!(
        out,
        "{bold}[{}] turn {}{reset} {dim}(speech {:.2}–{:.2} s){reset}",
        rec.input,
        rec.turn,
        rec.speech_start_ms / 1000.0,
        rec.speech_end_ms / 1000.0
    )?;
    writeln!(out, "  heard: {}", rec.transcript)?;
    if let Some(e) = &rec.error {
        return writeln!(out, "  error: {e}");
    }
    writeln!(out, "  reply: {}", rec.reply)?;
    let s = &rec.spans;
    writeln!(
        out,
        "  {bold}v2v {:.0} ms{reset} = endpoint {:.0} + asr_final {:.0} + llm_ttft {:.0} + first_clause {:.0} + tts_first_audio {:.0} + output {:.0}",
        rec.v2v_ms, s.endpoint, s.asr_final, s.llm_ttft, s.first_clause, s.tts_first_audio, s.output
    )?;
    writeln!(
        out,
        "  {dim}llm: {} prompt tokens ({} computed, {:.0} tok/s), {} reply tokens at {:.1} tok/s, {:.0} MB (model + KV cache){reset}",
        rec.engine.prompt_tokens,
        rec.engine.prefill_tokens,
        rec.engine.prefill_tok_s,
        rec.engine.reply_tokens,
        rec.engine.decode_tok_s,
        rec.engine.peak_memory_mb
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn a_trace_in_a_directory_not_yet_made_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("out/traces/trace.jsonl");
        let mut trace = super::open_trace(Some(&path)).unwrap().unwrap();
        writeln!(trace, "{{}}").unwrap();
        drop(trace);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
        // A path that cannot be a directory is an error, not a panic.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(super::open_trace(Some(&file.join("trace.jsonl"))).is_err());
    }
}
