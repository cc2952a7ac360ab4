//! `hark`: the local voice assistant's command line.

mod bench_asr;
mod bench_cmd;
mod bench_spec;
mod bench_tts;
mod bench_v2v;
mod host_cpu;
mod models_cmd;
mod openmp;
mod report_cmd;
mod run_cmd;
mod talk_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Hark: a local voice assistant that answers before you notice it thinking.
#[derive(Debug, Parser)]
#[command(name = "hark", version, about)]
struct Cli {
    /// Models directory (default: $HARK_MODELS, else ./models in a checkout, else
    /// $XDG_DATA_HOME/hark/models or ~/.local/share/hark/models).
    #[arg(long, global = true, value_name = "DIR")]
    models: Option<std::path::PathBuf>,
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to Hark through the microphone and hear it answer; speak over it to interrupt.
    /// Shows what it heard, its reply as it streams, and each turn's latency. Keys: m mutes the
    /// microphone, space interrupts, q (or Ctrl-C) quits.
    Talk(talk_cmd::TalkArgs),
    /// Answer the questions spoken in WAV files: writes the spoken reply, prints the transcript,
    /// the reply and each turn's latency.
    Run(run_cmd::RunArgs),
    /// Read latency records (`hark run --trace`): per-stage tables, HTML/SVG/PNG charts,
    /// comparisons of two runs, Chrome traces.
    Report(report_cmd::ReportArgs),
    /// Fetch, list and verify models.
    Models(models_cmd::ModelsArgs),
    /// Measure Hark against peer engines side by side (`hark bench llm`).
    Bench(bench_cmd::BenchArgs),
}

fn main() -> std::process::ExitCode {
    openmp::set_spin_count();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hark: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // The PulseAudio client logs its own normal disconnection at exit as an error.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},pulseaudio::client::reactor=off"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let store = hark_models::ModelStore::open(
        cli.models
            .unwrap_or_else(hark_models::ModelStore::default_root),
    )?;
    match cli.command {
        Command::Talk(args) => talk_cmd::run(args, &store),
        Command::Run(args) => run_cmd::run(args, &store),
        Command::Report(args) => report_cmd::run(args),
        Command::Models(args) => models_cmd::run(args, &store),
        Command::Bench(args) => bench_cmd::run(args, &store),
    }
}
