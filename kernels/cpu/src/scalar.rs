//! Portable dot products: integer sums per block, scaled in f32, exactly the arithmetic the SIMD
//! kernels do (only the order of the f32 additions differs).

use crate::formats::{f16_at, f32_at, q4k_scale_min, WeightType, QK, QK_K};

/// Dot product of one weight row (`cols` values of type `ty`) with one activation row quantized
/// to `ty.act_type()`.
pub fn dot(ty: WeightType, w: &[u8], a: &[u8], cols: usize) -> f32 {
    match ty {
        WeightType::F32 => (0..cols).map(|i| f32_at(w, 4 * i) * f32_at(a, 4 * i)).sum(),
        WeightType::F16 => (0..cols).map(|i| f16_at(w, 2 * i) * f32_at(a, 4 * i)).sum(),
        WeightType::Q8_0 => blocks(w, 34, a, 36, cols / QK, |x, y| {
            let s: i32 = (0..QK)
                .map(|j| x[2 + j] as i8 as i32 * y[4 + j] as i8 as i32)
                .sum();
            f16_at(x, 0) * f32_at(y, 0) * s as f32
        }),
        WeightType::Q4_0 => blocks(w, 18, a, 36, cols / QK, |x, y| {
            let mut s = 0i32;
            for j in 0..16 {
                s += ((x[2 + j] & 0xF) as i32 - 8) * y[4 + j] as i8 as i32;
                s += ((x[2 + j] >> 4) as i32 - 8) * y[20 + j] as i8 as i32;
            }
            f16_at(x, 0) * f32_at(y, 0) * s as f32
        }),
        WeightType::Q4_1 => blocks(w, 20, a, 40, cols / QK, |x, y| {
            let mut s = 0i32;
            for j in 0..16 {
                s += (x[4 + j] & 0xF) as i32 * y[8 + j] as i8 as i32;
                s += (x[4 + j] >> 4) as i32 * y[24 + j] as i8 as i32;
            }
            f16_at(x, 0) * f32_at(y, 0) * s as f32 + f16_at(x, 2) * f32_at(y, 4)
        }),
        WeightType::Q5_0 => blocks(w, 22, a, 36, cols / QK, |x, y| {
            let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
            let mut s = 0i32;
            for j in 0..16 {
                let lo = ((x[6 + j] & 0xF) as i32 | ((((qh >> j) & 1) as i32) << 4)) - 16;
                let hi = ((x[6 + j] >> 4) as i32 | ((((qh >> (j + 16)) & 1) as i32) << 4)) - 16;
                s += lo * y[4 + j] as i8 as i32 + hi * y[20 + j] as i8 as i32;
            }
            f16_at(x, 0) * f32_at(y, 0) * s as f32
        }),
        WeightType::Q4K => blocks(w, 144, a, 292, cols / QK_K, |x, y| {
            let scales = &x[4..16];
            let qs = &x[16..144];
            let q8 = |i: usize| y[4 + i] as i8 as i32;
            let bsum = |g: usize| i16::from_le_bytes([y[260 + 2 * g], y[261 + 2 * g]]) as i32;
            let (mut sumi, mut summ) = (0i32, 0i32);
            for c in 0..4 {
                let (s1, m1) = q4k_scale_min(2 * c, scales);
                let (s2, m2) = q4k_scale_min(2 * c + 1, scales);
                let (mut lo, mut hi) = (0i32, 0i32);
                for l in 0..32 {
                    let q = qs[32 * c + l];
                    lo += (q & 0xF) as i32 * q8(64 * c + l);
                    hi += (q >> 4) as i32 * q8(64 * c + 32 + l);
                }
                sumi += s1 as i32 * lo + s2 as i32 * hi;
                summ += m1 as i32 * (bsum(4 * c) + bsum(4 * c + 1))
                    + m2 as i32 * (bsum(4 * c + 2) + bsum(4 * c + 3));
            }
            let d8 = f32_at(y, 0);
            d8 * f16_at(x, 0) * sumi as f32 - d8 * f16_at(x, 2) * summ as f32
        }),
        WeightType::Q6K => blocks(w, 210, a, 292, cols / QK_K, |x, y| {
            let q8 = |i: usize| y[4 + i] as i8 as i32;
            let mut sumi = 0i32;
            for half in 0..2 {
                let ql = &x[64 * half..64 * half + 64];
                let qh = &x[128 + 32 * half..128 + 32 * half + 32];
                let sc = &x[192 + 8 * half..192 + 8 * half + 8];
                let base = 128 * half;
                let mut sub = [0i32; 8];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    sub[is] += q1 * q8(base + l);
                    sub[is + 2] += q2 * q8(base + l + 32);
                    sub[is + 4] += q3 * q8(base + l + 64);
                    sub[is + 6] += q4 * q8(base + l + 96);
                }
                for (k, s) in sub.iter().enumerate() {
                    sumi += (sc[k] as i8) as i32 * s;
                }
            }
            f16_at(x, 208) * f32_at(y, 0) * sumi as f32
        }),
    }
}

#[inline]
fn blocks(
    w: &[u8],
    wb: usize,
    a: &[u8],
    ab: usize,
    n: usize,
    f: impl Fn(&[u8], &[u8]) -> f32,
) -> f32 {
    w.chunks_exact(wb)
        .zip(a.chunks_exact(ab))
        .take(n)
        .map(|(x, y)| f(x, y))
        .sum()
}
