//! `hark report`: latency records (`--trace` files) as tables and pictures.
//!
//! - [`load`]: reads JSON-lines trace files, refusing empty, truncated, foreign and other-version
//!   files with a message that says which.
//! - [`stats`]: percentiles per span, V2V and engine figure.
//! - [`table`]: the terminal table, and the side-by-side comparison of two runs.
//! - [`svg`]: waterfalls and distributions as SVG, shared by the HTML page and `--svg`/`--png`.
//! - [`html`]: one self-contained page.
//! - [`chrome`]: Chrome trace events (Perfetto), one track per stage.

pub mod chrome;
pub mod html;
pub mod load;
pub mod stats;
pub mod svg;
pub mod table;

pub use load::{load_files, Run};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: holds no turn records (an empty trace: did the run hear any speech?)")]
    Empty { path: String },
    #[error("{path}: line {line} is cut short (the file is truncated): {detail}")]
    Truncated {
        path: String,
        line: usize,
        detail: String,
    },
    #[error("{path}: line {line} is not a Hark latency record: {detail}")]
    Foreign {
        path: String,
        line: usize,
        detail: String,
    },
    #[error("{path}: line {line} has schema version {found}; this hark reads version {expected}")]
    Schema {
        path: String,
        line: usize,
        found: u64,
        expected: u32,
    },
    #[error("PNG rendering failed: {0}")]
    Render(String),
}
