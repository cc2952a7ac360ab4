//! Hark's CPU kernels for the LLM engine.
//!
//! The engine's time goes into one operation: multiplying quantized weight rows (GGUF block
//! formats) by the activations of one or a few tokens. As llama.cpp does, the activations are
//! quantized once per matrix to 8-bit blocks matching the weight format, so the inner loop is an
//! integer dot product; here it runs on AVX2 (x86-64, chosen at run time) with a portable scalar
//! fallback that computes the same sums.
//!
//! - [`formats`]: the block layouts, activation quantizers and dequantizers.
//! - [`QMatrix`] / [`Activations`]: a weight matrix and quantized activations, with [`dot_row`].
//! - [`packed`]: Q4_1, Q5_0 and Q4_K repacked eight rows at a time, so each instruction serves eight
//!   rows.
//! - [`vec`]: f32 helpers for attention and norms (dot, axpy, softmax).
//! - [`ThreadPool`]: a pool whose workers spin briefly between jobs, so the hundreds of small
//!   parallel matmuls in one decode step cost microseconds to dispatch, then sleep.

pub mod formats;
mod matrix;
pub mod packed;
mod pool;
mod scalar;
pub mod vec;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use formats::{ActType, WeightType};
pub use matrix::{dot_row, dot_row_tail, dot_row_x4, Activations, QMatrix};
pub use pool::ThreadPool;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "unsupported tensor type {0} (supported: F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K)"
    )]
    UnsupportedType(String),
    #[error("a {ty:?} row of {cols} values is not a whole number of {block}-value blocks")]
    RaggedRow {
        ty: WeightType,
        cols: usize,
        block: usize,
    },
    #[error("{ty:?} matrix {rows}x{cols} needs {expected} bytes, got {got}")]
    Size {
        ty: WeightType,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
}

/// Which implementation the kernels use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// Portable Rust; the same sums, without SIMD.
    Scalar,
}

/// The backend chosen for this CPU (detected once). `HARK_KERNELS=scalar` forces the fallback.
pub fn backend() -> Backend {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<Backend> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        if std::env::var("HARK_KERNELS").is_ok_and(|v| v == "scalar") {
            return Backend::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Backend::Avx2;
        }
        Backend::Scalar
    })
}
