//! The decoder's one hot loop, a 1-D convolution over channel rows, written for AVX-512.
//!
//! ONNX Runtime runs a 1-D convolution as im2col and a matrix product: it copies every input
//! row `kernel` times and, with HiFi-GAN's 32 and 64 channels at audio rate, spends as much time
//! moving memory as multiplying (about 110 GFLOP/s on two cores here). This kernel reads the
//! input in place: a tile of 8 output channels by 48 samples is 24 vector accumulators, and each
//! (input channel, tap) step is 3 loads, 8 broadcasts and 24 fused multiply-adds (about 210
//! GFLOP/s on the same two cores). The tile's epilogue does what the graph does next (bias,
//! residual add, running sum, LeakyReLU), so those never make a pass over memory of their own.

// The register tiles are indexed with plain loops on purpose: LLVM keeps them in registers
// that way (see `tile`).
#![allow(clippy::needless_range_loop)]

/// Output channels per tile.
pub const OUT_BLOCK: usize = 8;
/// Samples per tile: three 16-float vectors.
pub const TIME_BLOCK: usize = 48;

/// Raw pointers into buffers shared by the threads of one convolution; each thread writes only
/// its own tiles.
#[derive(Clone, Copy)]
pub struct Ptr(pub *mut f32);
// SAFETY: a `Ptr` is only dereferenced inside `conv_tiles`, whose callers hand every thread a
// disjoint range of tiles to write; what is read is not written during the call.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    pub fn null() -> Self {
        Ptr(std::ptr::null_mut())
    }

    /// `count` floats further on (or back).
    pub fn at(self, count: isize) -> Ptr {
        Ptr(self.0.wrapping_offset(count))
    }
}

/// What happens to a tile's sums `acc` (bias included) before they are stored, per element:
/// `v = acc + residual + sum`; `raw = v`; `act = leaky_relu(v, slope)`. Null pointers are
/// skipped. Element (o, t) is at `o * in_stride + t` of `residual` and `sum`, at
/// `o * out_stride + t` of `raw` and `act`.
#[derive(Clone, Copy)]
pub struct Epilogue {
    pub residual: Ptr,
    pub sum: Ptr,
    pub raw: Ptr,
    pub act: Ptr,
    pub slope: f32,
    pub in_stride: usize,
    pub out_stride: usize,
}

impl Epilogue {
    /// A plain convolution's: its sums into `raw` and their LeakyReLU into `act`.
    pub fn new(raw: Ptr, act: Ptr, slope: f32, stride: usize) -> Self {
        Epilogue {
            residual: Ptr::null(),
            sum: Ptr::null(),
            raw,
            act,
            slope,
            in_stride: stride,
            out_stride: stride,
        }
    }
}

/// One convolution's geometry. The input row `i` of output sample `t` and tap `k` is read at
/// `input + i * in_stride + t + offset + k * dilation` (`offset` may be negative: the buffers
/// keep zeroed margins on both sides).
#[derive(Clone, Copy)]
pub struct Geometry {
    pub input: Ptr,
    pub in_stride: usize,
    pub in_channels: usize,
    pub taps: usize,
    pub dilation: usize,
    pub offset: isize,
    /// Weights packed by [`pack`]: `[out_block][in_channel][tap][OUT_BLOCK]`.
    pub weights: Ptr,
    /// `OUT_BLOCK`-padded bias.
    pub bias: Ptr,
    pub out_channels: usize,
}

/// Whether this CPU runs the kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Packs `weights[o][i][k]` (ONNX's Conv layout) for the kernel, padding the output channels
/// to a multiple of `OUT_BLOCK` with zeros.
pub fn pack(weights: &[f32], outs: usize, ins: usize, taps: usize) -> Vec<f32> {
    let blocks = outs.div_ceil(OUT_BLOCK);
    let mut packed = vec![0.0; blocks * OUT_BLOCK * ins * taps];
    for o in 0..outs {
        let (b, lane) = (o / OUT_BLOCK, o % OUT_BLOCK);
        for i in 0..ins {
            for k in 0..taps {
                packed[((b * ins + i) * taps + k) * OUT_BLOCK + lane] =
                    weights[(o * ins + i) * taps + k];
            }
        }
    }
    packed
}

/// Computes tiles `tiles` (of `TIME_BLOCK` samples each) of output blocks `blocks` (of
/// `OUT_BLOCK` channels each; a one-channel convolution has only the one).
///
/// # Safety
/// The CPU must have AVX-512F ([`supported`]). Every address the geometry and epilogue name
/// for these tiles must lie inside live buffers: the input rows from `offset` to
/// `end * TIME_BLOCK + offset + (taps - 1) * dilation`, the epilogue rows over the tiles'
/// samples. No other thread may write what this call reads or writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn conv_tiles(
    g: &Geometry,
    e: &Epilogue,
    tiles: std::ops::Range<usize>,
    blocks: std::ops::Range<usize>,
) {
    for tile in tiles {
        if g.out_channels == 1 {
            single(g, e, tile * TIME_BLOCK);
            continue;
        }
        for block in blocks.clone() {
            self::tile(g, e, tile * TIME_BLOCK, block);
        }
    }
}

/// A tile of a convolution to one channel (HiFi-GAN's last): 3 accumulators, not 24 of which
/// 21 would sum zeros. Only `raw` is written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn single(g: &Geometry, e: &Epilogue, t0: usize) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(*g.bias.0); 3];
    let mut w = g.weights.0 as *const f32;
    let base = g.input.0.offset(t0 as isize + g.offset) as *const f32;
    for i in 0..g.in_channels {
        let row = base.add(i * g.in_stride);
        for k in 0..g.taps {
            let x = row.add(k * g.dilation);
            let wv = _mm512_set1_ps(*w);
            for j in 0..3 {
                acc[j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x.add(16 * j)), acc[j]);
            }
            w = w.add(OUT_BLOCK);
        }
    }
    for j in 0..3 {
        _mm512_storeu_ps(e.raw.0.add(t0 + 16 * j), acc[j]);
    }
}

/// One tile: output channels `block * OUT_BLOCK..`, samples `t0..t0 + TIME_BLOCK`. The 24
/// accumulators must stay in registers: when the epilogue read them directly, LLVM kept a copy
/// in memory and stored it after every multiply-add, at 40 % of the speed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile(g: &Geometry, e: &Epilogue, t0: usize, block: usize) {
    use std::arch::x86_64::*;
    let bias = g.bias.0.add(block * OUT_BLOCK);
    let mut acc = [[_mm512_setzero_ps(); 3]; OUT_BLOCK];
    for o in 0..OUT_BLOCK {
        let b = _mm512_set1_ps(*bias.add(o));
        for j in 0..3 {
            acc[o][j] = b;
        }
    }
    let mut w = g.weights.0.add(block * g.in_channels * g.taps * OUT_BLOCK) as *const f32;
    let base = g.input.0.offset(t0 as isize + g.offset) as *const f32;
    for i in 0..g.in_channels {
        let row = base.add(i * g.in_stride);
        if block == 0 {
            let ahead = row.add(2 * TIME_BLOCK + (g.taps - 1) * g.dilation) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
            _mm_prefetch::<_MM_HINT_T0>(ahead.add(128));
        }
        for k in 0..g.taps {
            let x = row.add(k * g.dilation);
            let xv = [
                _mm512_loadu_ps(x),
                _mm512_loadu_ps(x.add(16)),
                _mm512_loadu_ps(x.add(32)),
            ];
            for o in 0..OUT_BLOCK {
                let wv = _mm512_set1_ps(*w.add(o));
                for j in 0..3 {
                    acc[o][j] = _mm512_fmadd_ps(wv, xv[j], acc[o][j]);
                }
            }
            w = w.add(OUT_BLOCK);
        }
    }
    // Out of the registers in one unrolled pass, so that the epilogue's loop (too big to
    // unroll) does not index the accumulators themselves.
    let mut sums = [[0f32; TIME_BLOCK]; OUT_BLOCK];
    for o in 0..OUT_BLOCK {
        for j in 0..3 {
            _mm512_storeu_ps(sums[o].as_mut_ptr().add(j * 16), acc[o][j]);
        }
    }
    let slope = _mm512_set1_ps(e.slope);
    let zero = _mm512_setzero_ps();
    for (o, sum) in sums.iter().enumerate() {
        let row = block * OUT_BLOCK + o;
        for j in 0..3 {
            let (at_in, at) = (
                row * e.in_stride + t0 + j * 16,
                row * e.out_stride + t0 + j * 16,
            );
            let mut v = _mm512_loadu_ps(sum.as_ptr().add(j * 16));
            if !e.residual.0.is_null() {
                v = _mm512_add_ps(v, _mm512_loadu_ps(e.residual.0.add(at_in)));
            }
            if !e.sum.0.is_null() {
                v = _mm512_add_ps(v, _mm512_loadu_ps(e.sum.0.add(at_in)));
            }
            if !e.raw.0.is_null() {
                _mm512_storeu_ps(e.raw.0.add(at), v);
            }
            if !e.act.0.is_null() {
                let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
                _mm512_storeu_ps(e.act.0.add(at), _mm512_mask_mul_ps(v, negative, v, slope));
            }
        }
    }
}

/// Stand-in where the kernel cannot be built; [`supported`] is false there, so it is never
/// called.
///
/// # Safety
/// Never called: [`supported`] is false on this architecture.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn conv_tiles(
    _: &Geometry,
    _: &Epilogue,
    _: std::ops::Range<usize>,
    _: std::ops::Range<usize>,
) {
    unreachable!("the AVX-512 convolution is only built for x86_64")
}
