//! Weight matrices in GGUF block formats and the activations they are multiplied with.

use crate::formats::{self, ActType, WeightType};
use crate::packed::{self, GROUP};
use crate::{backend, scalar, Backend, KernelError};

/// A weight matrix `[rows, cols]` kept in its stored (quantized) form.
pub struct QMatrix {
    ty: WeightType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    layout: Layout,
    data: Vec<u8>,
}

/// How a matrix's bytes are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// As in the GGUF file: row after row.
    Rows,
    /// Q5_0 with eight rows interleaved block by block ([`crate::packed`]).
    Q5_0x8,
    /// Q4_K likewise, its sub-block scales unpacked to bytes.
    Q4Kx8,
    /// Q4_1 likewise.
    Q4_1x8,
}

impl QMatrix {
    /// Wraps `data`, checking that it holds exactly `rows` rows of `cols` values of `ty`.
    pub fn new(
        ty: WeightType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self, KernelError> {
        let row_bytes = ty.row_bytes(cols)?;
        let expected = row_bytes.saturating_mul(rows);
        if data.len() != expected {
            return Err(KernelError::Size {
                ty,
                rows,
                cols,
                expected,
                got: data.len(),
            });
        }
        // Q5_0, Q4_1 and Q4_K are repacked eight rows at a time (a third of the instructions
        // per block); other formats, and matrices whose rows do not group evenly, keep the file's
        // order.
        let nb = cols / ty.block_len();
        let (layout, data) = match ty {
            WeightType::Q5_0 if rows.is_multiple_of(GROUP) => {
                (Layout::Q5_0x8, packed::pack_q5_0x8(&data, rows, nb))
            }
            WeightType::Q4_1 if rows.is_multiple_of(GROUP) => {
                (Layout::Q4_1x8, packed::pack_q4_1x8(&data, rows, nb))
            }
            WeightType::Q4K if rows.is_multiple_of(GROUP) => {
                (Layout::Q4Kx8, packed::pack_q4kx8(&data, rows, nb))
            }
            _ => (Layout::Rows, data),
        };
        Ok(QMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            layout,
            data,
        })
    }

    /// The activation format this matrix multiplies with.
    pub fn act_type(&self) -> ActType {
        match self.layout {
            Layout::Rows | Layout::Q4Kx8 | Layout::Q4_1x8 => self.ty.act_type(),
            Layout::Q5_0x8 => ActType::Q8Sum,
        }
    }

    /// Row ranges given to [`Self::matmul_rows_raw`] must start and end on multiples of this
    /// (or end at the last row).
    pub fn row_alignment(&self) -> usize {
        match self.layout {
            Layout::Rows => 1,
            Layout::Q5_0x8 | Layout::Q4Kx8 | Layout::Q4_1x8 => GROUP,
        }
    }

    pub fn ty(&self) -> WeightType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (a repacked Q4_K matrix holds 3 % more than the file: its scales unpacked).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The stored bytes of row `r` (file order only).
    #[inline]
    fn row(&self, r: usize) -> &[u8] {
        debug_assert_eq!(self.layout, Layout::Rows);
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The bytes of the group of eight rows `g` (interleaved layouts).
    #[inline]
    fn group(&self, g: usize) -> &[u8] {
        let nb = self.cols / self.ty.block_len();
        let bytes = match self.layout {
            Layout::Q4Kx8 => nb * packed::Q4KX8_BYTES,
            _ => GROUP * self.row_bytes,
        };
        &self.data[g * bytes..(g + 1) * bytes]
    }

    /// Row `r` as f32 values (`out.len() == cols`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match self.layout {
            Layout::Rows => formats::dequantize_row(self.ty, self.row(r), &mut out[..self.cols]),
            Layout::Q5_0x8 | Layout::Q4Kx8 | Layout::Q4_1x8 => {
                let (group, i) = (self.group(r / GROUP), r % GROUP);
                let len = self.ty.block_len();
                // Each block back in the file's layout, dequantized as the file's would be.
                for (b, o) in out[..self.cols].chunks_exact_mut(len).enumerate() {
                    match self.layout {
                        Layout::Q5_0x8 => {
                            formats::dequantize_row(self.ty, &packed::q5_0x8_block(group, i, b), o)
                        }
                        Layout::Q4_1x8 => {
                            formats::dequantize_row(self.ty, &packed::q4_1x8_block(group, i, b), o)
                        }
                        _ => formats::dequantize_row(self.ty, &packed::q4kx8_block(group, i, b), o),
                    }
                }
            }
        }
    }

    /// Row `r` · activation row `t` (a reference for tests and odd callers; the batched
    /// [`Self::matmul_rows_raw`] is the fast path).
    pub fn dot(&self, r: usize, acts: &Activations, t: usize) -> f32 {
        assert!(r < self.rows && t < acts.rows && acts.ty == self.act_type());
        match self.layout {
            Layout::Rows => dot_row(self.ty, self.row(r), acts.row(t), self.cols),
            Layout::Q5_0x8 | Layout::Q4Kx8 | Layout::Q4_1x8 => {
                let mut out = [0f32; GROUP];
                // SAFETY: one whole group, one activation row, an 8-value output.
                unsafe { self.matmul_group(r / GROUP, acts, t..t + 1, out.as_mut_ptr(), 0) };
                out[r % GROUP]
            }
        }
    }

    /// `out[t * out_stride + r - rows.start] = row r · activation row t` for every row in `rows`
    /// and every activation row `t`.
    ///
    /// # Safety
    /// `out` must be valid for writes at every index above, and no other thread may touch those
    /// elements meanwhile (callers give each thread its own rows).
    pub unsafe fn matmul_rows_raw(
        &self,
        rows: std::ops::Range<usize>,
        acts: &Activations,
        out: *mut f32,
        out_stride: usize,
    ) {
        assert_eq!(acts.ty, self.act_type());
        assert_eq!(acts.cols, self.cols);
        if self.layout != Layout::Rows {
            assert!(
                rows.start.is_multiple_of(GROUP) && rows.end.is_multiple_of(GROUP),
                "row range {rows:?} not aligned to groups of {GROUP}"
            );
            for g in rows.start / GROUP..rows.end / GROUP {
                let at = out.add(g * GROUP - rows.start);
                self.matmul_group(g, acts, 0..acts.rows, at, out_stride);
            }
            return;
        }
        // Tokens in groups whose activations stay in L1/L2 while each weight row is reused;
        // within a group, four tokens at a time share each unpacked weight block.
        const TOKEN_TILE: usize = 16;
        let mut t0 = 0;
        while t0 < acts.rows {
            let t1 = (t0 + TOKEN_TILE).min(acts.rows);
            for r in rows.clone() {
                let w = self.row(r);
                let mut t = t0;
                while t + 4 <= t1 {
                    let a = [
                        acts.row(t),
                        acts.row(t + 1),
                        acts.row(t + 2),
                        acts.row(t + 3),
                    ];
                    for (k, v) in dot_row_x4(self.ty, w, a, self.cols).into_iter().enumerate() {
                        *out.add((t + k) * out_stride + r - rows.start) = v;
                    }
                    t += 4;
                }
                let rest = t1 - t;
                if rest > 0 {
                    let a = [0, 1, 2, 3].map(|k| acts.row(t + k.min(rest - 1)));
                    let v = dot_row_tail(self.ty, w, a, rest, self.cols);
                    for (k, v) in v.into_iter().take(rest).enumerate() {
                        *out.add((t + k) * out_stride + r - rows.start) = v;
                    }
                }
            }
            t0 = t1;
        }
    }

    /// Group `g` of an interleaved matrix against activation rows `tokens`: token `t`'s eight
    /// results go to `out[(t - tokens.start) * out_stride..][..8]`.
    ///
    /// # Safety
    /// As [`Self::matmul_rows_raw`], for those output elements.
    unsafe fn matmul_group(
        &self,
        g: usize,
        acts: &Activations,
        tokens: std::ops::Range<usize>,
        out: *mut f32,
        out_stride: usize,
    ) {
        let group = self.group(g);
        let nb = self.cols / self.ty.block_len();
        let mut t = tokens.start;
        while t < tokens.end {
            let n = (tokens.end - t).min(4);
            let row = |k: usize| acts.row(t + k.min(n - 1));
            let dst = |k: usize| out.add((t + k.min(n - 1) - tokens.start) * out_stride);
            let rows = [
                row(0).as_ptr(),
                row(1).as_ptr(),
                row(2).as_ptr(),
                row(3).as_ptr(),
            ];
            let dsts = [dst(0), dst(1), dst(2), dst(3)];
            match (backend(), self.layout) {
                #[cfg(target_arch = "x86_64")]
                (Backend::Avx2, Layout::Q5_0x8) => {
                    crate::x86::gemm_x8::<crate::x86::Q5_0x8>(group.as_ptr(), nb, rows, dsts, n)
                }
                #[cfg(target_arch = "x86_64")]
                (Backend::Avx2, Layout::Q4_1x8) => {
                    crate::x86::gemm_x8::<crate::x86::Q4_1x8>(group.as_ptr(), nb, rows, dsts, n)
                }
                #[cfg(target_arch = "x86_64")]
                (Backend::Avx2, _) => crate::x86::gemm_q4kx8(group.as_ptr(), nb, rows, dsts, n),
                (_, layout) => {
                    for k in 0..n {
                        let v = match layout {
                            Layout::Q5_0x8 => packed::dot_q5_0x8(group, row(k), nb),
                            Layout::Q4_1x8 => packed::dot_q4_1x8(group, row(k), nb),
                            _ => packed::dot_q4kx8(group, row(k), nb),
                        };
                        std::ptr::copy_nonoverlapping(v.as_ptr(), dst(k), GROUP);
                    }
                }
            }
            t += n;
        }
    }
}

/// Rows of activations quantized for one weight type's dot product. The buffer is reused.
pub struct Activations {
    ty: ActType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

impl Default for Activations {
    fn default() -> Self {
        Activations {
            ty: ActType::F32,
            rows: 0,
            cols: 0,
            row_bytes: 0,
            data: Vec::new(),
        }
    }
}

impl Activations {
    /// Quantizes `rows` rows of `cols` values from `x` (row-major).
    pub fn quantize(&mut self, ty: ActType, x: &[f32], rows: usize, cols: usize) {
        self.ty = ty;
        self.rows = rows;
        self.cols = cols;
        self.row_bytes = ty.row_bytes(cols);
        let need = self.row_bytes * rows;
        if self.data.len() < need {
            self.data.resize(need, 0);
        }
        for r in 0..rows {
            formats::quantize_row(
                ty,
                &x[r * cols..(r + 1) * cols],
                &mut self.data[r * self.row_bytes..(r + 1) * self.row_bytes],
            );
        }
    }

    pub fn ty(&self) -> ActType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline]
    pub fn row(&self, t: usize) -> &[u8] {
        &self.data[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// Dot product of one weight row of `ty` with one activation row of `ty.act_type()`, both
/// holding `cols` values.
#[inline]
pub fn dot_row(ty: WeightType, w: &[u8], a: &[u8], cols: usize) -> f32 {
    let nb = cols / ty.block_len();
    assert!(w.len() >= nb * ty.block_bytes() && a.len() >= ty.act_type().row_bytes(cols));
    match backend() {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => {
            use crate::x86;
            let (wp, ap) = (w.as_ptr(), a.as_ptr());
            // SAFETY: the backend was chosen because the CPU has AVX2/FMA/F16C, and the assert
            // above guarantees `nb` whole blocks on each side.
            unsafe {
                match ty {
                    WeightType::Q8_0 => x86::dot_q8_0(wp, ap, nb),
                    WeightType::Q4_0 => x86::dot_q4_0(wp, ap, nb),
                    WeightType::Q4_1 => x86::dot_q4_1(wp, ap, nb),
                    WeightType::Q5_0 => x86::dot_q5_0(wp, ap, nb),
                    WeightType::Q4K => x86::dot_q4k(wp, ap, nb),
                    WeightType::Q6K => x86::dot_q6k(wp, ap, nb),
                    WeightType::F32 => x86::dot_f32(wp as *const f32, ap as *const f32, cols),
                    WeightType::F16 => x86::dot_f16_f32(wp, ap as *const f32, cols),
                }
            }
        }
        _ => scalar::dot(ty, w, a, cols),
    }
}

/// [`dot_row`] for the first `n` (1 to 3) of four activation rows (a verify batch, or the tokens
/// left over after groups of four): the K-quants unpack the weight row once for all `n`; the
/// other formats run two tokens apart, and three as four (the last row standing in for the
/// missing one: measured 1.9x a step against 2.4x for three apart on SmolLM2).
#[inline]
pub fn dot_row_tail(ty: WeightType, w: &[u8], a: [&[u8]; 4], n: usize, cols: usize) -> [f32; 4] {
    assert!((1..=3).contains(&n));
    if n == 1 {
        return [dot_row(ty, w, a[0], cols), 0.0, 0.0, 0.0];
    }
    #[cfg(target_arch = "x86_64")]
    if backend() == Backend::Avx2 && matches!(ty, WeightType::Q4K | WeightType::Q6K) {
        let nb = cols / ty.block_len();
        let act_bytes = ty.act_type().row_bytes(cols);
        assert!(w.len() >= nb * ty.block_bytes() && a[..n].iter().all(|r| r.len() >= act_bytes));
        let ap = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
        // SAFETY: AVX2/FMA/F16C present (backend choice); the assert above guarantees `nb`
        // whole blocks in the weight row and in each of the `n` activation rows read.
        return unsafe {
            match ty {
                WeightType::Q4K => crate::x86::dot_q4k_x23(w.as_ptr(), ap, n, nb),
                _ => crate::x86::dot_q6k_x23(w.as_ptr(), ap, n, nb),
            }
        };
    }
    match n {
        2 => [
            dot_row(ty, w, a[0], cols),
            dot_row(ty, w, a[1], cols),
            0.0,
            0.0,
        ],
        _ => dot_row_x4(ty, w, a, cols),
    }
}

/// [`dot_row`] for four activation rows at once; the same sums, with the weight row unpacked
/// once (where a kernel for the format exists).
#[inline]
pub fn dot_row_x4(ty: WeightType, w: &[u8], a: [&[u8]; 4], cols: usize) -> [f32; 4] {
    let nb = cols / ty.block_len();
    let act_bytes = ty.act_type().row_bytes(cols);
    assert!(w.len() >= nb * ty.block_bytes() && a.iter().all(|r| r.len() >= act_bytes));
    match backend() {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => {
            use crate::x86;
            let wp = w.as_ptr();
            let ap = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
            // SAFETY: AVX2/FMA/F16C present (backend choice); the assert above guarantees `nb`
            // whole blocks in the weight row and in each activation row.
            unsafe {
                match ty {
                    WeightType::Q8_0 => return x86::dot_q8_0_x4(wp, ap, nb),
                    WeightType::Q4_0 => return x86::dot_q4_0_x4(wp, ap, nb),
                    WeightType::Q4_1 => return x86::dot_q4_1_x4(wp, ap, nb),
                    WeightType::Q5_0 => return x86::dot_q5_0_x4(wp, ap, nb),
                    WeightType::Q4K => return x86::dot_q4k_x4(wp, ap, nb),
                    WeightType::Q6K => return x86::dot_q6k_x4(wp, ap, nb),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    a.map(|r| dot_row(ty, w, r, cols))
}
