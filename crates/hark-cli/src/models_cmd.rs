//! `hark models`: fetch, list and verify the models.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hark_models::{ItemState, ModelStore, Progress};

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Download, unpack, convert and verify a set of models (a second run does no work).
    Fetch {
        /// `default` (what `hark run` needs, ~250 MB), `quality` (Whisper base, Qwen2.5-Coder
        /// 0.5B and 1.5B, ~1.8 GB) or `test` (real recorded speech for the tests).
        #[arg(long, default_value = "default")]
        set: String,
        /// Install again even what is present and verified.
        #[arg(long)]
        force: bool,
    },
    /// Show every model of a set, where it comes from, and whether it is installed.
    List {
        #[arg(long, default_value = "default")]
        set: String,
    },
    /// Hash every installed file of a set and compare with the manifest.
    Verify {
        #[arg(long, default_value = "default")]
        set: String,
    },
}

pub fn run(args: ModelsArgs, store: &ModelStore) -> Result<()> {
    match args.command {
        ModelsCommand::Fetch { set, force } => {
            let started = std::time::Instant::now();
            let n = store.fetch(&set, force, Progress::stderr())?;
            if n == 0 {
                eprintln!(
                    "models: set `{set}` is installed and verified in {}",
                    store.root().display()
                );
            } else {
                eprintln!(
                    "models: installed {n} file(s) of set `{set}` in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        ModelsCommand::List { set } => {
            println!("{:<28} {:<11} {:<54} from", "model", "state", "path");
            for (item, state) in store.states(&set)? {
                let state = match state {
                    ItemState::Installed => "installed",
                    ItemState::Unverified => "unverified",
                    ItemState::Missing => "missing",
                };
                let from = match item.source() {
                    hark_models::manifest::Source::Parts(parts) => parts
                        .iter()
                        .filter_map(|p| store.manifest().package(&p.package))
                        .map(|p| p.requirement())
                        .next()
                        .map(|r| {
                            if parts.len() > 1 {
                                format!("{r} (+{} parts)", parts.len() - 1)
                            } else {
                                r
                            }
                        })
                        .unwrap_or_default(),
                    hark_models::manifest::Source::Dir(m) => store
                        .manifest()
                        .package(&m.package)
                        .map(|p| format!("{} (Debian)", p.requirement()))
                        .unwrap_or_default(),
                    hark_models::manifest::Source::Convert(c) => {
                        format!("converted from {}", c.inputs().join(", "))
                    }
                };
                println!("{:<28} {:<11} {:<54} {from}", item.id, state, item.path);
            }
        }
        ModelsCommand::Verify { set } => {
            let mut failed = 0;
            for (id, result) in store.verify(&set, Progress::stderr())? {
                match result {
                    Ok(()) => println!("ok      {id}"),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {id}: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} model file(s) of set `{set}` failed verification");
            }
        }
    }
    Ok(())
}
