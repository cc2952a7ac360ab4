//! For tests that run the real models: where they are, and ONNX Runtime loaded from there.
//! (Panics with the command that fixes a missing model: a test cannot go on without it.)

use std::path::PathBuf;

/// `$HARK_MODELS`, else the workspace's `models/`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("HARK_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

/// Loads ONNX Runtime from the models directory (once per process); returns the directory.
pub fn init_onnx() -> PathBuf {
    let m = models_dir();
    let lib = m.join("onnxruntime/libonnxruntime.so.1.32.0");
    assert!(
        lib.is_file(),
        "{} is missing: run `hark models fetch`",
        lib.display()
    );
    crate::onnx::init(&lib).expect("load ONNX Runtime");
    m
}
