//! GGUF block formats: sizes, the 8-bit activation formats they are multiplied with, and
//! reference dequantizers.
//!
//! Layouts (little-endian, as ggml writes them; `f16` is IEEE half):
//! - Q4_0: `d: f16, qs: [u8; 16]`, 32 values `d * (nibble - 8)`.
//! - Q4_1: `d: f16, m: f16, qs: [u8; 16]`, 32 values `d * nibble + m`.
//! - Q5_0: `d: f16, qh: [u8; 4], qs: [u8; 16]`, 32 values `d * (nibble | high bit << 4) - 16d`.
//! - Q8_0: `d: f16, qs: [i8; 32]`.
//! - Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`: 256 values in 8 sub-blocks of
//!   32, each with a 6-bit scale and min.
//! - Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`: 256 values in 16 sub-blocks
//!   of 16, 6-bit values offset by 32.
//!
//! Activations are ours, so their layouts are whatever the kernels like best:
//! - Q8_0 (for Q4_0, Q5_0, Q8_0): `d: f32, qs: [i8; 32]`.
//! - Q8_1 (for Q4_1): `d: f32, s: f32, qs: [i8; 32]` with `s = d * sum(qs)`.
//!   (`d` and `s` hold values rounded to f16, as llama.cpp stores them, but as f32 so the inner
//!   loops need no conversion.)
//! - Q8Sum (for Q5_0 repacked eight rows at a time, see [`crate::packed`]): `d: f32, sum: i32,
//!   qs: [i8; 32]`, the block's exact integer sum alongside Q8_0's values.
//! - Q8_K (for the K formats): `d: f32, qs: [i8; 256], bsums: [i16; 16]` (sums of 16).
//!
//! The quantizers round as llama.cpp's x86 code does, so our logits track llama.cpp's closely.

use half::f16;

use crate::KernelError;

/// How a weight matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

/// How activations are quantized for a weight type's dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActType {
    F32,
    Q8_0,
    Q8_1,
    Q8K,
    Q8Sum,
}

pub const QK: usize = 32;
pub const QK_K: usize = 256;

impl WeightType {
    /// The type for ggml's numeric type id (as in GGUF tensor infos).
    pub fn from_ggml_id(id: u32) -> Result<Self, KernelError> {
        Ok(match id {
            0 => WeightType::F32,
            1 => WeightType::F16,
            2 => WeightType::Q4_0,
            3 => WeightType::Q4_1,
            6 => WeightType::Q5_0,
            8 => WeightType::Q8_0,
            12 => WeightType::Q4K,
            14 => WeightType::Q6K,
            other => {
                return Err(KernelError::UnsupportedType(format!(
                    "ggml type id {other}"
                )))
            }
        })
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            WeightType::F32 | WeightType::F16 => 1,
            WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q5_0 | WeightType::Q8_0 => QK,
            WeightType::Q4K | WeightType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            WeightType::F32 => 4,
            WeightType::F16 => 2,
            WeightType::Q4_0 => 18,
            WeightType::Q4_1 => 20,
            WeightType::Q5_0 => 22,
            WeightType::Q8_0 => 34,
            WeightType::Q4K => 144,
            WeightType::Q6K => 210,
        }
    }

    pub fn act_type(self) -> ActType {
        match self {
            WeightType::F32 | WeightType::F16 => ActType::F32,
            WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => ActType::Q8_0,
            WeightType::Q4_1 => ActType::Q8_1,
            WeightType::Q4K | WeightType::Q6K => ActType::Q8K,
        }
    }

    /// Bytes of one row of `cols` values, or an error if the row is not whole blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize, KernelError> {
        let block = self.block_len();
        if cols == 0 || !cols.is_multiple_of(block) {
            return Err(KernelError::RaggedRow {
                ty: self,
                cols,
                block,
            });
        }
        Ok(cols / block * self.block_bytes())
    }
}

impl ActType {
    pub fn block_len(self) -> usize {
        match self {
            ActType::F32 => 1,
            ActType::Q8_0 | ActType::Q8_1 | ActType::Q8Sum => QK,
            ActType::Q8K => QK_K,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            ActType::F32 => 4,
            ActType::Q8_0 => 36,
            ActType::Q8_1 | ActType::Q8Sum => 40,
            ActType::Q8K => 292,
        }
    }

    pub fn row_bytes(self, cols: usize) -> usize {
        cols.div_ceil(self.block_len()) * self.block_bytes()
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[inline]
pub(crate) fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// `v` rounded to the nearest f16 value.
#[inline]
fn round_f16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// Quantizes one row `x` into `out` (`act.row_bytes(x.len())` bytes). Rows of F32 activations
/// are copied; a ragged tail of a block format is padded with zeros.
pub fn quantize_row(act: ActType, x: &[f32], out: &mut [u8]) {
    match crate::backend() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the backend was chosen because the CPU has these features.
        crate::Backend::Avx2 => unsafe { quantize_row_avx2(act, x, out) },
        _ => quantize_row_generic(act, x, out),
    }
}

/// The same code compiled for AVX2, so rounding and the loops use vector instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_avx2(act: ActType, x: &[f32], out: &mut [u8]) {
    quantize_row_generic(act, x, out)
}

#[inline(always)]
fn quantize_row_generic(act: ActType, x: &[f32], out: &mut [u8]) {
    match act {
        ActType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        ActType::Q8_0 | ActType::Q8_1 | ActType::Q8Sum => {
            let head = if act == ActType::Q8_0 { 4 } else { 8 };
            for (block, o) in x.chunks(QK).zip(out.chunks_exact_mut(head + QK)) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                // llama.cpp's AVX2 quantizer: d = amax/127, values = round-to-even(x * 127/amax).
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let mut sum = 0i32;
                for j in 0..QK {
                    let q = block
                        .get(j)
                        .map_or(0, |v| (v * id).round_ties_even() as i32);
                    sum += q;
                    o[head + j] = q as i8 as u8;
                }
                put_f32(o, 0, round_f16(d));
                match act {
                    ActType::Q8_1 => put_f32(o, 4, round_f16(d * sum as f32)),
                    ActType::Q8Sum => o[4..8].copy_from_slice(&sum.to_le_bytes()),
                    _ => {}
                }
            }
        }
        ActType::Q8K => {
            for (block, o) in x.chunks(QK_K).zip(out.chunks_exact_mut(292)) {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in block {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                if amax == 0.0 {
                    o.fill(0);
                    continue;
                }
                let iscale = -127.0 / max;
                let mut qs = [0i8; QK_K];
                for (q, &v) in qs.iter_mut().zip(block) {
                    *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
                }
                put_f32(o, 0, 1.0 / iscale);
                for (j, q) in qs.iter().enumerate() {
                    o[4 + j] = *q as u8;
                }
                for (g, group) in qs.chunks_exact(16).enumerate() {
                    let s: i16 = group.iter().map(|&q| q as i16).sum();
                    o[260 + 2 * g..262 + 2 * g].copy_from_slice(&s.to_le_bytes());
                }
            }
        }
    }
}

/// The 6-bit scale and min of Q4_K sub-block `j` (0..8) from the packed 12 bytes.
#[inline]
pub(crate) fn q4k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Expands one row of `cols` values stored as `ty` into `out`.
pub fn dequantize_row(ty: WeightType, row: &[u8], out: &mut [f32]) {
    let bb = ty.block_bytes();
    match ty {
        WeightType::F32 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32_at(b, 0);
            }
        }
        WeightType::F16 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16_at(b, 0);
            }
        }
        WeightType::Q4_0 | WeightType::Q4_1 => {
            for (b, y) in row.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
                let d = f16_at(b, 0);
                let (m, qs) = match ty {
                    WeightType::Q4_1 => (f16_at(b, 2), &b[4..20]),
                    _ => (-8.0 * d, &b[2..18]),
                };
                for j in 0..16 {
                    y[j] = d * (qs[j] & 0xF) as f32 + m;
                    y[j + 16] = d * (qs[j] >> 4) as f32 + m;
                }
            }
        }
        WeightType::Q5_0 => {
            for (b, y) in row.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let qs = &b[6..22];
                for j in 0..16 {
                    let lo = (qs[j] & 0xF) as i32 | ((((qh >> j) & 1) as i32) << 4);
                    let hi = (qs[j] >> 4) as i32 | ((((qh >> (j + 16)) & 1) as i32) << 4);
                    y[j] = d * (lo - 16) as f32;
                    y[j + 16] = d * (hi - 16) as f32;
                }
            }
        }
        WeightType::Q8_0 => {
            for (b, y) in row.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    y[j] = d * b[2 + j] as i8 as f32;
                }
            }
        }
        WeightType::Q4K => {
            for (b, y) in row.chunks_exact(bb).zip(out.chunks_exact_mut(QK_K)) {
                let d = f16_at(b, 0);
                let dmin = f16_at(b, 2);
                let scales = &b[4..16];
                let qs = &b[16..144];
                for c in 0..4 {
                    let (s1, m1) = q4k_scale_min(2 * c, scales);
                    let (s2, m2) = q4k_scale_min(2 * c + 1, scales);
                    let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
                    let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
                    let q = &qs[32 * c..32 * c + 32];
                    let y = &mut y[64 * c..64 * c + 64];
                    for l in 0..32 {
                        y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                        y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                    }
                }
            }
        }
        WeightType::Q6K => {
            for (b, y) in row.chunks_exact(bb).zip(out.chunks_exact_mut(QK_K)) {
                let d = f16_at(b, 208);
                for half in 0..2 {
                    let ql = &b[64 * half..64 * half + 64];
                    let qh = &b[128 + 32 * half..128 + 32 * half + 32];
                    let sc = &b[192 + 8 * half..192 + 8 * half + 8];
                    let y = &mut y[128 * half..128 * half + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
            }
        }
    }
}
