//! The one ONNX Runtime of the process (Silero VAD and Piper both run on it).
//!
//! ort loads `libonnxruntime` dynamically. With no library path it can deadlock inside
//! `Session::builder` (ort rc.12), so stages call [`ensure_ready`] first, which fails cleanly
//! unless [`init`] was given a library that exists.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static RUNTIME: OnceLock<Result<PathBuf, OnnxError>> = OnceLock::new();

#[derive(Debug, Clone, thiserror::Error)]
pub enum OnnxError {
    #[error("ONNX Runtime library not found at {0}; run `hark models fetch`")]
    Missing(PathBuf),
    #[error("ONNX Runtime library {path} could not be loaded: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error(
        "ONNX Runtime was not initialised (call hark_core::onnx::init with the library path first)"
    )]
    NotInitialised,
}

/// Loads ONNX Runtime from `library`, once per process. Later calls return the first result.
pub fn init(library: &Path) -> Result<(), OnnxError> {
    let result = RUNTIME.get_or_init(|| {
        if !library.is_file() {
            return Err(OnnxError::Missing(library.to_path_buf()));
        }
        match ort::init_from(library) {
            Ok(builder) => {
                // Threads are set per session; the global pool stays off.
                builder.with_name("hark").commit();
                Ok(library.to_path_buf())
            }
            Err(e) => Err(OnnxError::Load {
                path: library.to_path_buf(),
                detail: e.to_string(),
            }),
        }
    });
    result.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Succeeds once [`init`] has loaded the runtime.
pub fn ensure_ready() -> Result<(), OnnxError> {
    match RUNTIME.get() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e.clone()),
        None => Err(OnnxError::NotInitialised),
    }
}
