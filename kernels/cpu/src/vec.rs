//! f32 vector helpers for attention and normalisation, on AVX2 where present.

use crate::{backend, Backend};

/// `x · y` over the shorter length.
#[inline]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    match backend() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA present (backend choice); both pointers valid for `n` values.
        Backend::Avx2 => unsafe { crate::x86::dot_f32(x.as_ptr(), y.as_ptr(), n) },
        _ => x[..n].iter().zip(&y[..n]).map(|(a, b)| a * b).sum(),
    }
}

/// `y += a * x` over the shorter length.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    match backend() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA present; both pointers valid for `n` values.
        Backend::Avx2 => unsafe { crate::x86::axpy_f32(a, x.as_ptr(), y.as_mut_ptr(), n) },
        _ => {
            for (yi, xi) in y[..n].iter_mut().zip(&x[..n]) {
                *yi += a * xi;
            }
        }
    }
}

/// One query's attention over `n` cached positions: `scores[j] = q · k_j * scale`, softmax,
/// then `out = Σ_j scores[j] v_j`. `keys` and `values` hold at least `n` rows of `q.len()`
/// values; `scores` at least `n`, `out` at least `q.len()`. Fused on AVX2 (no call per position,
/// the output kept in registers), with the same sums as [`dot`], [`softmax`] and [`axpy`] in
/// turn, which is what the fallback runs.
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(
        keys.len() >= n * hd && values.len() >= n * hd && scores.len() >= n && out.len() >= hd,
        "attention over {n} positions of {hd} values: buffers too short"
    );
    match backend() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA present; the slices are as long as checked above.
        Backend::Avx2 => unsafe { crate::x86::attend_f32(q, keys, values, n, scale, scores, out) },
        _ => {
            let scores = &mut scores[..n];
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(q, &keys[j * hd..(j + 1) * hd]) * scale;
            }
            softmax(scores);
            let out = &mut out[..hd];
            out.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                axpy(p, &values[j * hd..(j + 1) * hd], out);
            }
        }
    }
}

/// Softmax in place; returns nothing useful for an empty slice.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `out = x / rms(x) * weight`, accumulating the mean square in f64 as llama.cpp does.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate[i] = silu(gate[i]) * up[i]` (the gated feed-forward's product) over the shorter length.
#[inline]
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    match backend() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA present; both pointers valid for `n` values.
        Backend::Avx2 => unsafe { crate::x86::silu_mul_f32(gate.as_mut_ptr(), up.as_ptr(), n) },
        _ => {
            for (g, u) in gate[..n].iter_mut().zip(&up[..n]) {
                *g = silu(*g) * u;
            }
        }
    }
}
