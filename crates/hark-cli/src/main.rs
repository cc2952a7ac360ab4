mod models_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Hark: a local voice assistant that answers before you notice it thinking.
#[derive(Debug, Parser)]
#[command(name = "hark", version, about)]
struct Cli {
    /// Models directory (default: $HARK_MODELS, ./models in a checkout, else ~/.local/share/hark/models).
    #[arg(long, global = true, value_name = "DIR")]
    models: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch, list and verify models.
    Models(models_cmd::ModelsArgs),
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hark: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let store = hark_models::ModelStore::open(
        cli.models
            .unwrap_or_else(hark_models::ModelStore::default_root),
    )?;
    match cli.command {
        Command::Models(args) => models_cmd::run(args, &store),
    }
}
