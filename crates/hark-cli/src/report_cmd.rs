//! `hark report`: latency records as tables and pictures.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use hark_report::{chrome, html, load_files, svg, table};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Trace files written by `hark run --trace` (JSON lines); several are read as one run.
    #[arg(value_name = "T.jsonl")]
    traces: Vec<PathBuf>,
    /// Compare two runs side by side, with B/A ratios per span (before/after a change).
    #[arg(long, num_args = 2, value_names = ["A.jsonl", "B.jsonl"], conflicts_with = "traces")]
    compare: Option<Vec<PathBuf>>,
    /// Write a self-contained HTML page: waterfall per turn, distributions, slowest turns first.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
    /// Write the same charts as one SVG image.
    #[arg(long, value_name = "OUT.svg")]
    svg: Option<PathBuf>,
    /// Write the same charts as one PNG image.
    #[arg(long, value_name = "OUT.png")]
    png: Option<PathBuf>,
    /// Write Chrome trace events (open in Perfetto or chrome://tracing), one track per stage.
    #[arg(long, value_name = "OUT.json")]
    chrome_trace: Option<PathBuf>,
    /// How many of the slowest turns the table lists.
    #[arg(long, default_value_t = 5, value_name = "N")]
    slowest: usize,
}

const CHART_WIDTH: f64 = 960.0;

pub fn run(args: ReportArgs) -> Result<()> {
    if let Some(pair) = &args.compare {
        let a = load_files(&pair[..1])?;
        let b = load_files(&pair[1..])?;
        print!("{}", table::compare_table(&a, &b));
        return Ok(());
    }
    if args.traces.is_empty() {
        bail!("give one or more trace files (from `hark run --trace T.jsonl`), or --compare A.jsonl B.jsonl");
    }
    let run = load_files(&args.traces)?;
    print!("{}", table::summary_table(&run, args.slowest));
    if let Some(path) = &args.html {
        std::fs::write(path, html::page(&run))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report: wrote {}", path.display());
    }
    if args.svg.is_some() || args.png.is_some() {
        let image = svg::combined(&run.turns, CHART_WIDTH);
        if let Some(path) = &args.svg {
            std::fs::write(path, &image).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("report: wrote {}", path.display());
        }
        if let Some(path) = &args.png {
            std::fs::write(path, svg::to_png(&image)?)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("report: wrote {}", path.display());
        }
    }
    if let Some(path) = &args.chrome_trace {
        let text = serde_json::to_string(&chrome::trace(&run.turns))?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "report: wrote {} (open it in Perfetto: ui.perfetto.dev)",
            path.display()
        );
    }
    Ok(())
}
