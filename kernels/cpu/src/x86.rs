//! AVX2 dot products (x86-64 with AVX2, FMA and F16C), after llama.cpp's x86 kernels.
//!
//! Safety: every function here requires those CPU features (checked by [`crate::backend`]) and
//! reads `nb` whole blocks from each pointer; callers pass slices at least that long.

use core::arch::x86_64::*;

#[inline(always)]
unsafe fn f16_to_f32(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn hsum_f32_8(x: __m256) -> f32 {
    let mut r = _mm256_extractf128_ps(x, 1);
    r = _mm_add_ps(r, _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// 32 nibbles → 32 bytes: low nibbles first, then high nibbles.
#[inline(always)]
unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p as *const __m128i);
    let bytes = _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
    _mm256_and_si256(_mm256_set1_epi8(0xF), bytes)
}

/// 32 bits → 32 bytes, 0xFF where the bit is set.
#[inline(always)]
unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
    let x32 = (p as *const u32).read_unaligned();
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32 as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// The 8-bit dot product step: sums of four products of unsigned bytes `ax` and signed bytes
/// `sy` into eight i32 lanes. A trait so another instruction sequence can be slotted in; AVX-VNNI's
/// `vpdpbusd` was tried and measured slower here than `maddubs` + `madd` (prefill 257 vs 290
/// tok/s on SmolLM2), which can issue on two ports.
pub(crate) trait Us8 {
    unsafe fn dot(ax: __m256i, sy: __m256i) -> __m256i;
}

/// AVX2: `maddubs` to i16 pairs, then `madd` to i32.
pub(crate) struct Madd;

impl Us8 for Madd {
    #[inline(always)]
    unsafe fn dot(ax: __m256i, sy: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
    }
}

/// Sum of products of unsigned bytes `ax` and signed bytes `sy`, as 8 f32 lanes.
#[inline(always)]
unsafe fn mul_sum_us8_pairs_float<U: Us8>(ax: __m256i, sy: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(U::dot(ax, sy))
}

/// How far ahead of the current block to prefetch weights: enough to cover memory latency at
/// the rate these loops consume bytes.
const PREFETCH_BYTES: usize = 4096;

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

/// A 32-value block format: its block sizes and how to unpack one weight block into its scale
/// and 32 byte values. Trait functions, not closures: closures would not inherit the target
/// features of the kernels they are inlined into.
trait Block32 {
    /// Weight block bytes.
    const WB: usize;
    /// Activation block bytes, and where its 32 values start (after the f32 scale(s)).
    const AB: usize;
    const Y_QS: usize;
    /// Whether the unpacked values are signed (else unsigned, as Q4_1's nibbles).
    const SIGNED: bool;
    unsafe fn unpack(x: *const u8) -> (f32, __m256i);
}

struct Q8_0;
struct Q4_0;
struct Q4_1;
struct Q5_0;

impl Block32 for Q8_0 {
    const WB: usize = 34;
    const AB: usize = 36;
    const Y_QS: usize = 4;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> (f32, __m256i) {
        (
            f16_to_f32(x),
            _mm256_loadu_si256(x.add(2) as *const __m256i),
        )
    }
}

impl Block32 for Q4_0 {
    const WB: usize = 18;
    const AB: usize = 36;
    const Y_QS: usize = 4;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> (f32, __m256i) {
        let q = _mm256_sub_epi8(bytes_from_nibbles_32(x.add(2)), _mm256_set1_epi8(8));
        (f16_to_f32(x), q)
    }
}

impl Block32 for Q4_1 {
    const WB: usize = 20;
    const AB: usize = 40;
    const Y_QS: usize = 8;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> (f32, __m256i) {
        (f16_to_f32(x), bytes_from_nibbles_32(x.add(4)))
    }
}

impl Block32 for Q5_0 {
    const WB: usize = 22;
    const AB: usize = 36;
    const Y_QS: usize = 4;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> (f32, __m256i) {
        // Where the fifth bit is clear the value is nibble - 16: set the byte's high nibble.
        let bxhi =
            _mm256_andnot_si256(bytes_from_bits_32(x.add(2)), _mm256_set1_epi8(0xF0u8 as i8));
        (
            f16_to_f32(x),
            _mm256_or_si256(bytes_from_nibbles_32(x.add(6)), bxhi),
        )
    }
}

/// One weight block `x` against the matching block at `y` of an activation row, added into
/// `acc` scaled by both blocks' scales.
#[inline(always)]
unsafe fn block_dot<F: Block32, U: Us8>(
    acc: &mut __m256,
    dx: f32,
    qx: __m256i,
    ax: __m256i,
    y: *const u8,
) {
    let mut qy = _mm256_loadu_si256(y.add(F::Y_QS) as *const __m256i);
    if F::SIGNED {
        qy = _mm256_sign_epi8(qy, qx);
    }
    let d = _mm256_set1_ps(dx * f32_at(y));
    *acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float::<U>(ax, qy), *acc);
}

/// For signed values, |x| once; the signs move onto each y in `block_dot`.
#[inline(always)]
unsafe fn abs_if_signed<F: Block32>(qx: __m256i) -> __m256i {
    if F::SIGNED {
        _mm256_sign_epi8(qx, qx)
    } else {
        qx
    }
}

/// One weight row against one activation row. Even and odd blocks go to separate
/// accumulators so consecutive blocks' adds overlap.
#[inline(always)]
unsafe fn dot_blocks<F: Block32, U: Us8>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let mut even = _mm256_setzero_ps();
    let mut odd = _mm256_setzero_ps();
    let mut i = 0;
    while i < nb {
        _mm_prefetch::<_MM_HINT_T0>(w.add(F::WB * i + PREFETCH_BYTES) as *const i8);
        one_block::<F, U>(&mut even, w, a, i);
        if i + 1 < nb {
            one_block::<F, U>(&mut odd, w, a, i + 1);
        }
        i += 2;
    }
    hsum_f32_8(_mm256_add_ps(even, odd))
}

#[inline(always)]
unsafe fn one_block<F: Block32, U: Us8>(acc: &mut __m256, w: *const u8, a: *const u8, i: usize) {
    let (dx, qx) = F::unpack(w.add(F::WB * i));
    let ax = abs_if_signed::<F>(qx);
    block_dot::<F, U>(acc, dx, qx, ax, a.add(F::AB * i));
}

/// One weight row against four activation rows: each weight block unpacked once and used four
/// times (prefill and verify batches). The same even/odd accumulation as [`dot_blocks`], so a
/// token's result does not depend on whether it was computed alone or in a batch.
#[inline(always)]
unsafe fn dot_blocks_x4<F: Block32, U: Us8>(
    w: *const u8,
    a: [*const u8; 4],
    nb: usize,
) -> [f32; 4] {
    let mut e = [_mm256_setzero_ps(); 4];
    let mut o = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < nb {
        _mm_prefetch::<_MM_HINT_T0>(w.add(F::WB * i + PREFETCH_BYTES) as *const i8);
        four_blocks::<F, U>(&mut e, w, a, i);
        if i + 1 < nb {
            four_blocks::<F, U>(&mut o, w, a, i + 1);
        }
        i += 2;
    }
    [
        hsum_f32_8(_mm256_add_ps(e[0], o[0])),
        hsum_f32_8(_mm256_add_ps(e[1], o[1])),
        hsum_f32_8(_mm256_add_ps(e[2], o[2])),
        hsum_f32_8(_mm256_add_ps(e[3], o[3])),
    ]
}

#[inline(always)]
unsafe fn four_blocks<F: Block32, U: Us8>(
    acc: &mut [__m256; 4],
    w: *const u8,
    a: [*const u8; 4],
    i: usize,
) {
    let (dx, qx) = F::unpack(w.add(F::WB * i));
    let ax = abs_if_signed::<F>(qx);
    block_dot::<F, U>(&mut acc[0], dx, qx, ax, a[0].add(F::AB * i));
    block_dot::<F, U>(&mut acc[1], dx, qx, ax, a[1].add(F::AB * i));
    block_dot::<F, U>(&mut acc[2], dx, qx, ax, a[2].add(F::AB * i));
    block_dot::<F, U>(&mut acc[3], dx, qx, ax, a[3].add(F::AB * i));
}

/// One product of Q4_1's min term for four activation rows (lanes).
#[inline(always)]
unsafe fn q4_1_min_product(w: *const u8, a: [*const u8; 4], i: usize) -> __m128 {
    let m = _mm_set1_ps(f16_to_f32(w.add(20 * i + 2)));
    let at = 40 * i + 4;
    let s = _mm_set_ps(
        f32_at(a[3].add(at)),
        f32_at(a[2].add(at)),
        f32_at(a[1].add(at)),
        f32_at(a[0].add(at)),
    );
    _mm_mul_ps(m, s)
}

/// Q4_1's min term `sum_i m_i * s_i` for four activation rows (lanes), in four interleaved
/// chains of blocks so the adds overlap; one-row callers pass the same row four times.
#[inline(always)]
unsafe fn q4_1_min_term(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    let (mut c0, mut c1, mut c2, mut c3) = (
        _mm_setzero_ps(),
        _mm_setzero_ps(),
        _mm_setzero_ps(),
        _mm_setzero_ps(),
    );
    let mut i = 0;
    while i < nb {
        c0 = _mm_add_ps(c0, q4_1_min_product(w, a, i));
        if i + 1 < nb {
            c1 = _mm_add_ps(c1, q4_1_min_product(w, a, i + 1));
        }
        if i + 2 < nb {
            c2 = _mm_add_ps(c2, q4_1_min_product(w, a, i + 2));
        }
        if i + 3 < nb {
            c3 = _mm_add_ps(c3, q4_1_min_product(w, a, i + 3));
        }
        i += 4;
    }
    let sum = _mm_add_ps(_mm_add_ps(c0, c1), _mm_add_ps(c2, c3));
    let mut out = [0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), sum);
    out
}

#[inline(always)]
unsafe fn dot_q8_0_impl<U: Us8>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_blocks::<Q8_0, U>(w, a, nb)
}

#[inline(always)]
unsafe fn dot_q4_0_impl<U: Us8>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_blocks::<Q4_0, U>(w, a, nb)
}

#[inline(always)]
unsafe fn dot_q5_0_impl<U: Us8>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_blocks::<Q5_0, U>(w, a, nb)
}

#[inline(always)]
unsafe fn dot_q4_1_impl<U: Us8>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    q4_1_min_term(w, [a, a, a, a], nb)[0] + dot_blocks::<Q4_1, U>(w, a, nb)
}

#[inline(always)]
unsafe fn dot_q8_0_x4_impl<U: Us8>(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    dot_blocks_x4::<Q8_0, U>(w, a, nb)
}

#[inline(always)]
unsafe fn dot_q4_0_x4_impl<U: Us8>(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    dot_blocks_x4::<Q4_0, U>(w, a, nb)
}

#[inline(always)]
unsafe fn dot_q5_0_x4_impl<U: Us8>(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    dot_blocks_x4::<Q5_0, U>(w, a, nb)
}

#[inline(always)]
unsafe fn dot_q4_1_x4_impl<U: Us8>(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    let m = q4_1_min_term(w, a, nb);
    let b = dot_blocks_x4::<Q4_1, U>(w, a, nb);
    [m[0] + b[0], m[1] + b[1], m[2] + b[2], m[3] + b[3]]
}

/// Q4_K rows against one or four Q8_K activation rows: each super-block's scales and nibbles are
/// unpacked once and used for every row; each token's sums are formed exactly as for one token,
/// so batched and single-token results are bit-identical.
#[inline(always)]
unsafe fn q4k_n<const N: usize>(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [_mm_setzero_ps(); N];
    for i in 0..nb {
        let x = w.add(144 * i);
        _mm_prefetch::<_MM_HINT_T0>(x.add(PREFETCH_BYTES) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(x.add(PREFETCH_BYTES + 64) as *const i8);
        let xd = f16_to_f32(x);
        let xmin = f16_to_f32(x.add(2));
        let s = x.add(4) as *const u32;
        let mut utmp = [
            s.read_unaligned(),
            s.add(1).read_unaligned(),
            s.add(2).read_unaligned(),
            0,
        ];
        utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
        let uaux = utmp[1] & KMASK1;
        utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
        utmp[2] = uaux;
        utmp[0] &= KMASK1;
        let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
            utmp[3] as i32,
            utmp[2] as i32,
            utmp[1] as i32,
            utmp[0] as i32,
        ));
        let mins = _mm256_extracti128_si256(mins_and_scales, 1);
        let sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
        let scales = _mm256_insertf128_si256(_mm256_castsi128_si256(sc128), sc128, 1);
        let mut sumi = [_mm256_setzero_si256(); N];
        for t in 0..N {
            let y = a[t].add(292 * i);
            let yd = (y as *const f32).read_unaligned();
            let q8sums = _mm256_loadu_si256(y.add(260) as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(mins, q8s);
            acc_m[t] = _mm_fmadd_ps(_mm_set1_ps(-yd * xmin), _mm_cvtepi32_ps(prod), acc_m[t]);
        }
        for j in 0..4 {
            let scale_l = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j));
            let scale_h = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1));
            let q4bits = _mm256_loadu_si256(x.add(16 + 32 * j) as *const __m256i);
            let q4l = _mm256_and_si256(q4bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
            for t in 0..N {
                let q8 = a[t].add(292 * i + 4 + 64 * j);
                let q8l = _mm256_loadu_si256(q8 as *const __m256i);
                let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
                let q8h = _mm256_loadu_si256(q8.add(32) as *const __m256i);
                let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p16l, p16h));
            }
        }
        for t in 0..N {
            let d = (a[t].add(292 * i) as *const f32).read_unaligned() * xd;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    let mut out = [0f32; 4];
    for t in 0..N {
        let mut m = acc_m[t];
        m = _mm_add_ps(m, _mm_movehl_ps(m, m));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[t] = hsum_f32_8(acc[t]) + _mm_cvtss_f32(m);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    q4k_n::<1>(w, [a; 4], nb)[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4k_x4(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    q4k_n::<4>(w, a, nb)
}

/// [`dot_q4k_x4`] for the first two or three rows of `a` (the rest are not read).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4k_x23(w: *const u8, a: [*const u8; 4], n: usize, nb: usize) -> [f32; 4] {
    match n {
        2 => q4k_n::<2>(w, a, nb),
        _ => q4k_n::<3>(w, a, nb),
    }
}

/// Broadcasts the 16-bit scale `i` to every 16-bit lane.
#[inline(always)]
unsafe fn scale_shuffle_k4(i: usize) -> __m256i {
    let lo = (2 * i) as u16;
    _mm256_set1_epi16(((lo + 1) << 8 | lo) as i16)
}

/// Bytes `2i` (8 times) then `2i + 1` (8 times): one scale per 16-value sub-block.
#[inline(always)]
unsafe fn scale_shuffle_q6(i: usize) -> __m128i {
    let a = (2 * i) as i8;
    let b = a + 1;
    _mm_set_epi8(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a)
}

/// Public entry points: the 32-value kernels compiled for AVX2.
macro_rules! entry_points {
    ($($avx2:ident = $body:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $avx2($($arg: $ty),*) -> $ret {
            $body::<Madd>($($arg),*)
        }
    )*};
}

entry_points! {
    dot_q8_0 = dot_q8_0_impl(w: *const u8, a: *const u8, nb: usize) -> f32;
    dot_q4_0 = dot_q4_0_impl(w: *const u8, a: *const u8, nb: usize) -> f32;
    dot_q4_1 = dot_q4_1_impl(w: *const u8, a: *const u8, nb: usize) -> f32;
    dot_q5_0 = dot_q5_0_impl(w: *const u8, a: *const u8, nb: usize) -> f32;
    dot_q8_0_x4 = dot_q8_0_x4_impl(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4];
    dot_q4_0_x4 = dot_q4_0_x4_impl(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4];
    dot_q4_1_x4 = dot_q4_1_x4_impl(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4];
    dot_q5_0_x4 = dot_q5_0_x4_impl(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4];
}

/// One Q6_K half super-block's 128 values as four registers of unsigned 6-bit values.
#[inline(always)]
unsafe fn q6k_unpack_half(x: *const u8, half: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(3);
    let q4bits1 = _mm256_loadu_si256(x.add(64 * half) as *const __m256i);
    let q4bits2 = _mm256_loadu_si256(x.add(64 * half + 32) as *const __m256i);
    let q4bits_h = _mm256_loadu_si256(x.add(128 + 32 * half) as *const __m256i);
    let q4h_0 = _mm256_slli_epi16(_mm256_and_si256(q4bits_h, m2), 4);
    let q4h_1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 2), m2), 4);
    let q4h_2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 4), m2), 4);
    let q4h_3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 6), m2), 4);
    [
        _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h_0),
        _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h_1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m4), q4h_2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m4), q4h_3),
    ]
}

/// Q6_K rows against one or four Q8_K activation rows, unpacking each super-block once (as
/// [`q4k_n`]). The `- 32` offset is taken off with the activations' 16-value sums: `Σ s·(q -
/// 32)·y = Σ s·q·y - 32 Σ s·Σy`, exact in integers.
#[inline(always)]
unsafe fn q6k_n<const N: usize>(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..nb {
        let x = w.add(210 * i);
        _mm_prefetch::<_MM_HINT_T0>(x.add(PREFETCH_BYTES) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(x.add(PREFETCH_BYTES + 64) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(x.add(PREFETCH_BYTES + 128) as *const i8);
        let xd = f16_to_f32(x.add(208));
        let scales = _mm_loadu_si128(x.add(192) as *const __m128i);
        let scales16 = _mm256_cvtepi8_epi16(scales);
        let mut sumi = [_mm256_setzero_si256(); N];
        for t in 0..N {
            // 32 Σ s·Σy over the 16 sub-blocks, to subtract.
            let bsums = _mm256_loadu_si256(a[t].add(292 * i + 260) as *const __m256i);
            sumi[t] = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales16, bsums));
            sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(), sumi[t]);
        }
        for half in 0..2 {
            let is = 4 * half;
            let s0 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is)));
            let s1 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is + 1)));
            let s2 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is + 2)));
            let s3 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is + 3)));
            let q = q6k_unpack_half(x, half);
            for t in 0..N {
                let q8 = a[t].add(292 * i + 4 + 128 * half);
                let y0 = _mm256_loadu_si256(q8 as *const __m256i);
                let y1 = _mm256_loadu_si256(q8.add(32) as *const __m256i);
                let y2 = _mm256_loadu_si256(q8.add(64) as *const __m256i);
                let y3 = _mm256_loadu_si256(q8.add(96) as *const __m256i);
                let p0 = _mm256_madd_epi16(s0, _mm256_maddubs_epi16(q[0], y0));
                let p1 = _mm256_madd_epi16(s1, _mm256_maddubs_epi16(q[1], y1));
                let p2 = _mm256_madd_epi16(s2, _mm256_maddubs_epi16(q[2], y2));
                let p3 = _mm256_madd_epi16(s3, _mm256_maddubs_epi16(q[3], y3));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p0, p2));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p1, p3));
            }
        }
        for t in 0..N {
            let d = (a[t].add(292 * i) as *const f32).read_unaligned() * xd;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    let mut out = [0f32; 4];
    for t in 0..N {
        out[t] = hsum_f32_8(acc[t]);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    q6k_n::<1>(w, [a; 4], nb)[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6k_x4(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
    q6k_n::<4>(w, a, nb)
}

/// [`dot_q6k_x4`] for the first two or three rows of `a` (the rest are not read).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6k_x23(w: *const u8, a: [*const u8; 4], n: usize, nb: usize) -> [f32; 4] {
    match n {
        2 => q6k_n::<2>(w, a, nb),
        _ => q6k_n::<3>(w, a, nb),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(x: *const f32, y: *const f32, n: usize) -> f32 {
    dot_f32_inline(x, y, n)
}

/// [`dot_f32`]'s sums, inlined into a caller that runs many short dots (attention's scores).
#[inline(always)]
unsafe fn dot_f32_inline(x: *const f32, y: *const f32, n: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(
                _mm256_loadu_ps(x.add(i + 8 * k)),
                _mm256_loadu_ps(y.add(i + 8 * k)),
                *a,
            );
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(y.add(i)), acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_f32_8(sum);
    while i < n {
        s += *x.add(i) * *y.add(i);
        i += 1;
    }
    s
}

/// One query's attention over `n` cached positions, fused: scores `q·k_j * scale` into
/// `scores`, their softmax, and `out = Σ_j p_j v_j`. Every sum is formed as the separate
/// [`dot_f32`], scalar softmax and [`axpy_f32`] loop form it (the output's columns stay in
/// registers across the positions instead of being stored after each one); the exponential is
/// [`exp_ps`], which rounds as the scalar one does bar a rare last bit. `keys` and `values`
/// hold `n` rows of `q.len()` values, `scores` room for `n` and `out` for `q.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend_f32(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    debug_assert!(keys.len() >= n * hd && values.len() >= n * hd);
    debug_assert!(scores.len() >= n && out.len() >= hd);
    let (q, keys, values) = (q.as_ptr(), keys.as_ptr(), values.as_ptr());
    let (scores, out) = (scores.as_mut_ptr(), out.as_mut_ptr());
    for j in 0..n {
        *scores.add(j) = dot_f32_inline(q, keys.add(j * hd), hd) * scale;
    }
    // Softmax: the largest score, the exponentials and their sum (in f64, as the scalar one).
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut j = 0;
    while j + 8 <= n {
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(scores.add(j)));
        j += 8;
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
    let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for k in j..n {
        max = max.max(*scores.add(k));
    }
    let vm = _mm256_set1_ps(max);
    let (mut sum_lo, mut sum_hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut j = 0;
    while j + 8 <= n {
        let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(scores.add(j)), vm));
        _mm256_storeu_ps(scores.add(j), e);
        sum_lo = _mm256_add_pd(sum_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        sum_hi = _mm256_add_pd(sum_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
        j += 8;
    }
    let mut halves = [0f64; 4];
    _mm256_storeu_pd(halves.as_mut_ptr(), _mm256_add_pd(sum_lo, sum_hi));
    let mut sum: f64 = halves.iter().sum();
    for k in j..n {
        let e = (*scores.add(k) - max).exp();
        *scores.add(k) = e;
        sum += e as f64;
    }
    let inv = (1.0 / sum) as f32;
    let vinv = _mm256_set1_ps(inv);
    let mut j = 0;
    while j + 8 <= n {
        _mm256_storeu_ps(
            scores.add(j),
            _mm256_mul_ps(_mm256_loadu_ps(scores.add(j)), vinv),
        );
        j += 8;
    }
    for k in j..n {
        *scores.add(k) *= inv;
    }
    // The weighted values, 64 columns at a time in registers, positions in order.
    let mut c = 0;
    while c + 64 <= hd {
        let mut acc = [_mm256_setzero_ps(); 8];
        for j in 0..n {
            let p = _mm256_set1_ps(*scores.add(j));
            let v = values.add(j * hd + c);
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(v.add(8 * k)), *a);
            }
        }
        for (k, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(c + 8 * k), *a);
        }
        c += 64;
    }
    while c + 8 <= hd {
        let mut a = _mm256_setzero_ps();
        for j in 0..n {
            a = _mm256_fmadd_ps(
                _mm256_set1_ps(*scores.add(j)),
                _mm256_loadu_ps(values.add(j * hd + c)),
                a,
            );
        }
        _mm256_storeu_ps(out.add(c), a);
        c += 8;
    }
    for c in c..hd {
        let mut a = 0f32;
        for j in 0..n {
            a += *scores.add(j) * *values.add(j * hd + c);
        }
        *out.add(c) = a;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16_f32(x: *const u8, y: *const f32, n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtph_ps(_mm_loadu_si128(x.add(2 * i) as *const __m128i));
        acc = _mm256_fmadd_ps(h, _mm256_loadu_ps(y.add(i)), acc);
        i += 8;
    }
    let mut s = hsum_f32_8(acc);
    while i < n {
        s += f16_to_f32(x.add(2 * i)) * *y.add(i);
        i += 1;
    }
    s
}

/// `y += a * x`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_f32(a: f32, x: *const f32, y: *mut f32, n: usize) {
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(y.add(i)));
        _mm256_storeu_ps(y.add(i), r);
        i += 8;
    }
    while i < n {
        *y.add(i) += a * *x.add(i);
        i += 1;
    }
}

/// Four activation bytes (values `at..at + 4`) in every 32-bit lane.
#[inline(always)]
unsafe fn broadcast4(y: *const u8, at: usize) -> __m256i {
    _mm256_set1_epi32((y.add(at) as *const i32).read_unaligned())
}

#[inline(always)]
unsafe fn low_nibbles(l: __m256i) -> __m256i {
    _mm256_and_si256(l, _mm256_set1_epi8(0xF))
}

#[inline(always)]
unsafe fn high_nibbles(l: __m256i) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16::<4>(l), _mm256_set1_epi8(0xF))
}

/// Keeps bit 4 of every byte.
#[inline(always)]
unsafe fn bit4(x: __m256i) -> __m256i {
    _mm256_and_si256(x, _mm256_set1_epi8(0x10))
}

/// One Q5_0×8 block's values as unsigned bytes: register `k`, lane `r` = row `r`'s values
/// `4k..4k + 4` (layout in [`crate::packed`]). Plain functions, not closures, so the target
/// features reach every instruction.
#[inline(always)]
unsafe fn q5_0x8_unpack(blk: *const u8) -> [__m256i; 8] {
    let hb = _mm256_loadu_si256(blk.add(16) as *const __m256i);
    let l0 = _mm256_loadu_si256(blk.add(48) as *const __m256i);
    let l1 = _mm256_loadu_si256(blk.add(80) as *const __m256i);
    let l2 = _mm256_loadu_si256(blk.add(112) as *const __m256i);
    let l3 = _mm256_loadu_si256(blk.add(144) as *const __m256i);
    // Bit k of each plane byte is the fifth bit of register k's byte: move it to bit 4. The
    // 16-bit shifts never carry a wanted bit across a byte for these distances.
    [
        _mm256_or_si256(low_nibbles(l0), bit4(_mm256_slli_epi16::<4>(hb))),
        _mm256_or_si256(low_nibbles(l1), bit4(_mm256_slli_epi16::<3>(hb))),
        _mm256_or_si256(low_nibbles(l2), bit4(_mm256_slli_epi16::<2>(hb))),
        _mm256_or_si256(low_nibbles(l3), bit4(_mm256_slli_epi16::<1>(hb))),
        _mm256_or_si256(high_nibbles(l0), bit4(hb)),
        _mm256_or_si256(high_nibbles(l1), bit4(_mm256_srli_epi16::<1>(hb))),
        _mm256_or_si256(high_nibbles(l2), bit4(_mm256_srli_epi16::<2>(hb))),
        _mm256_or_si256(high_nibbles(l3), bit4(_mm256_srli_epi16::<3>(hb))),
    ]
}

/// `maddubs` of register `k` against the activation bytes it pairs with.
#[inline(always)]
unsafe fn maddubs_k(w: &[__m256i; 8], qy: *const u8, k: usize) -> __m256i {
    _mm256_maddubs_epi16(w[k], broadcast4(qy, 4 * k))
}

/// Eight rows' unpacked values `w` (register `k`, lane `r` = row `r`'s values `4k..4k + 4`)
/// against the 32 activation bytes at `qy`: lane `r` = row `r`'s integer dot product. Four
/// `maddubs` results fit in 16 bits for values below 32 (|4 · 2 · 31 · 127| < 2^15).
#[inline(always)]
unsafe fn x8_block_isum(w: &[__m256i; 8], qy: *const u8) -> __m256i {
    let p0 = _mm256_add_epi16(
        _mm256_add_epi16(maddubs_k(w, qy, 0), maddubs_k(w, qy, 1)),
        _mm256_add_epi16(maddubs_k(w, qy, 2), maddubs_k(w, qy, 3)),
    );
    let p1 = _mm256_add_epi16(
        _mm256_add_epi16(maddubs_k(w, qy, 4), maddubs_k(w, qy, 5)),
        _mm256_add_epi16(maddubs_k(w, qy, 6), maddubs_k(w, qy, 7)),
    );
    let ones = _mm256_set1_epi16(1);
    _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones))
}

/// A 32-value block format repacked eight rows at a time ([`crate::packed`]): how one group's
/// block unpacks to unsigned bytes (register `k`, lane `r` = row `r`'s values `4k..4k + 4`)
/// and how its integer sums against one 40-byte activation block become the eight rows' values.
pub(crate) trait Block32x8 {
    /// Bytes of one group's block.
    const BYTES: usize;
    /// What a block carries besides its values (scales, mins), as vectors over the rows.
    type Scales: Copy;
    unsafe fn unpack(blk: *const u8) -> (Self::Scales, [__m256i; 8]);
    /// Adds the block's eight results against activation block `y` into `acc`.
    unsafe fn accumulate(w: &[__m256i; 8], s: Self::Scales, y: *const u8, acc: &mut __m256);
}

/// Q5_0×8 against Q8Sum activations (`d: f32, sum: i32, qs`).
pub(crate) struct Q5_0x8;

impl Block32x8 for Q5_0x8 {
    const BYTES: usize = crate::packed::Q5_0X8_BYTES;
    type Scales = __m256;
    #[inline(always)]
    unsafe fn unpack(blk: *const u8) -> (__m256, [__m256i; 8]) {
        (
            _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i)),
            q5_0x8_unpack(blk),
        )
    }
    #[inline(always)]
    unsafe fn accumulate(w: &[__m256i; 8], d: __m256, y: *const u8, acc: &mut __m256) {
        let isum = x8_block_isum(w, y.add(8));
        // Σ(q - 16)·y exactly, in integers.
        let ysum = _mm256_set1_epi32((y.add(4) as *const i32).read_unaligned());
        let v = _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_sub_epi32(isum, _mm256_slli_epi32::<4>(ysum))),
            _mm256_set1_ps(f32_at(y)),
        );
        *acc = _mm256_fmadd_ps(d, v, *acc);
    }
}

/// Q4_1×8 against Q8_1 activations (`d: f32, s: f32, qs`, `s = d·Σq`): `d·dy·Σq·y + m·s`.
pub(crate) struct Q4_1x8;

impl Block32x8 for Q4_1x8 {
    const BYTES: usize = crate::packed::Q4_1X8_BYTES;
    type Scales = (__m256, __m256);
    #[inline(always)]
    unsafe fn unpack(blk: *const u8) -> ((__m256, __m256), [__m256i; 8]) {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let m = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
        let l = [0, 1, 2, 3].map(|k| _mm256_loadu_si256(blk.add(32 + 32 * k) as *const __m256i));
        let w = [
            low_nibbles(l[0]),
            low_nibbles(l[1]),
            low_nibbles(l[2]),
            low_nibbles(l[3]),
            high_nibbles(l[0]),
            high_nibbles(l[1]),
            high_nibbles(l[2]),
            high_nibbles(l[3]),
        ];
        ((d, m), w)
    }
    #[inline(always)]
    unsafe fn accumulate(
        w: &[__m256i; 8],
        (d, m): (__m256, __m256),
        y: *const u8,
        acc: &mut __m256,
    ) {
        let isum = x8_block_isum(w, y.add(8));
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(f32_at(y)));
        *acc = _mm256_fmadd_ps(d, v, *acc);
        *acc = _mm256_fmadd_ps(m, _mm256_set1_ps(f32_at(y.add(4))), *acc);
    }
}

/// One group of eight rows of format `B` (`nb` blocks at `g`) against `n` (1..=4) activation
/// rows `a[..n]`; token `t`'s eight results are stored at `out[t]`. Each token's sums are
/// computed the same way whatever `n` is, so batched and single-token results are bit-identical.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_x8<B: Block32x8>(
    g: *const u8,
    nb: usize,
    a: [*const u8; 4],
    out: [*mut f32; 4],
    n: usize,
) {
    match n {
        1 => gemm_x8_n::<B, 1>(g, nb, a, out),
        2 => gemm_x8_n::<B, 2>(g, nb, a, out),
        3 => gemm_x8_n::<B, 3>(g, nb, a, out),
        _ => gemm_x8_n::<B, 4>(g, nb, a, out),
    }
}

#[inline(always)]
unsafe fn gemm_x8_n<B: Block32x8, const N: usize>(
    g: *const u8,
    nb: usize,
    a: [*const u8; 4],
    out: [*mut f32; 4],
) {
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let blk = g.add(B::BYTES * b);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH_BYTES) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH_BYTES + 64) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH_BYTES + 128) as *const i8);
        let (scales, w) = B::unpack(blk);
        for t in 0..N {
            B::accumulate(&w, scales, a[t].add(40 * b), &mut acc[t]);
        }
    }
    for t in 0..N {
        _mm256_storeu_ps(out[t], acc[t]);
    }
}

/// e^x for 8 f32 lanes, computed in f64 (relative error below 1e-13) and rounded once to f32:
/// so the result is the correctly rounded e^x, as glibc's `expf` gives, in all but vanishingly
/// rare cases. Matching the scalar `exp` matters more than the few instructions an f32
/// polynomial would save: a last-bit change in the feed-forward's SiLU shifts which near-tied
/// token a small model picks.
#[inline(always)]
unsafe fn exp_ps(x: __m256) -> __m256 {
    let lo = exp_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
    let hi = exp_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)));
    _mm256_insertf128_ps::<1>(
        _mm256_castps128_ps256(_mm256_cvtpd_ps(lo)),
        _mm256_cvtpd_ps(hi),
    )
}

/// e^x for 4 f64 lanes with `x` from f32 (clamped where f32's e^x is 0 or infinite anyway):
/// `x = n·ln2 + r`, `|r| <= ln2/2`, a degree-11 Taylor polynomial, and `2^n` in the exponent.
#[inline(always)]
unsafe fn exp_pd(x: __m256d) -> __m256d {
    let x = _mm256_min_pd(
        _mm256_max_pd(x, _mm256_set1_pd(-150.0)),
        _mm256_set1_pd(100.0),
    );
    let n = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_pd(
        x,
        _mm256_set1_pd(std::f64::consts::LOG2_E),
    ));
    // ln2 in two parts (fdlibm's) so n·ln2_hi is exact for |n| < 2^11.
    let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.931_471_803_691_238e-1), x);
    let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.908_214_929_270_587_7e-10), r);
    let mut p = _mm256_set1_pd(1.0 / 39_916_800.0);
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 3_628_800.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 362_880.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 40_320.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 5_040.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 720.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 120.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 24.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 6.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(0.5));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    let e = _mm256_add_epi64(
        _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)),
        _mm256_set1_epi64x(1023),
    );
    _mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64::<52>(e)))
}

/// `g[i] = silu(g[i]) * u[i]` for `n` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn silu_mul_f32(g: *mut f32, u: *const f32, n: usize) {
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_loadu_ps(g.add(i));
        let e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g.add(i), _mm256_mul_ps(s, _mm256_loadu_ps(u.add(i))));
        i += 8;
    }
    while i < n {
        let x = *g.add(i);
        *g.add(i) = x / (1.0 + (-x).exp()) * *u.add(i);
        i += 1;
    }
}

/// Lane `r` = `(v_r, v_r)` as two 16-bit halves, from eight bytes (one per row): the form
/// `madd` needs to scale both 16-bit partial sums of a lane by its row's value.
#[inline(always)]
unsafe fn row_bytes_as_i16_pairs(p: *const u8) -> __m256i {
    let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
    _mm256_or_si256(v, _mm256_slli_epi32::<16>(v))
}

/// Lane `r` = `(v_r,j, v_r,j+1)`: two sub-blocks' bytes for each row, for `madd` against a pair
/// of activation sums.
#[inline(always)]
unsafe fn row_byte_pairs(p: *const u8) -> __m256i {
    let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
    let hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8) as *const __m128i));
    _mm256_or_si256(lo, _mm256_slli_epi32::<16>(hi))
}

/// One group of eight Q4_K rows (`nb` super-blocks at `g`, layout in [`crate::packed`])
/// against `n` (1..=4) Q8_K activation rows; token `t`'s eight results go to `out[t]`. Each
/// token's sums are formed the same way whatever `n` is.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_q4kx8(g: *const u8, nb: usize, a: [*const u8; 4], out: [*mut f32; 4], n: usize) {
    match n {
        1 => gemm_q4kx8_n::<1>(g, nb, a, out),
        2 => gemm_q4kx8_n::<2>(g, nb, a, out),
        3 => gemm_q4kx8_n::<3>(g, nb, a, out),
        _ => gemm_q4kx8_n::<4>(g, nb, a, out),
    }
}

#[inline(always)]
unsafe fn gemm_q4kx8_n<const N: usize>(
    g: *const u8,
    nb: usize,
    a: [*const u8; 4],
    out: [*mut f32; 4],
) {
    const BLOCK: usize = crate::packed::Q4KX8_BYTES;
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let blk = g.add(BLOCK * b);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
        let mut isum = [_mm256_setzero_si256(); N];
        let mut msum = [_mm256_setzero_si256(); N];
        for c in 0..4 {
            let mut lo = [_mm256_setzero_si256(); N];
            let mut hi = [_mm256_setzero_si256(); N];
            for k in 0..8 {
                let q = blk.add(160 + 256 * c + 32 * k);
                _mm_prefetch::<_MM_HINT_T0>(q.add(PREFETCH_BYTES) as *const i8);
                let l = _mm256_loadu_si256(q as *const __m256i);
                let wl = _mm256_and_si256(l, m4);
                let wh = _mm256_and_si256(_mm256_srli_epi16::<4>(l), m4);
                for t in 0..N {
                    let y = a[t].add(292 * b + 4 + 64 * c + 4 * k);
                    // Eight products of at most 15 · 127, twice: within 16 bits.
                    lo[t] = _mm256_add_epi16(lo[t], _mm256_maddubs_epi16(wl, broadcast4(y, 0)));
                    hi[t] = _mm256_add_epi16(hi[t], _mm256_maddubs_epi16(wh, broadcast4(y, 32)));
                }
            }
            let sc_lo = row_bytes_as_i16_pairs(blk.add(32 + 8 * (2 * c)));
            let sc_hi = row_bytes_as_i16_pairs(blk.add(32 + 8 * (2 * c + 1)));
            let mins = row_byte_pairs(blk.add(96 + 8 * (2 * c)));
            for t in 0..N {
                isum[t] = _mm256_add_epi32(
                    isum[t],
                    _mm256_add_epi32(
                        _mm256_madd_epi16(lo[t], sc_lo),
                        _mm256_madd_epi16(hi[t], sc_hi),
                    ),
                );
                // The two sub-blocks' activation sums (each two 16-value sums), as a pair.
                let bs = a[t].add(292 * b + 260 + 8 * c) as *const i16;
                let s0 = bs.read_unaligned() as i32 + bs.add(1).read_unaligned() as i32;
                let s1 = bs.add(2).read_unaligned() as i32 + bs.add(3).read_unaligned() as i32;
                let pair = _mm256_set1_epi32((s0 & 0xFFFF) | (s1 << 16));
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mins, pair));
            }
        }
        for t in 0..N {
            let dy = _mm256_set1_ps(f32_at(a[t].add(292 * b)));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum[t]), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(msum[t]), acc[t]);
        }
    }
    for t in 0..N {
        _mm256_storeu_ps(out[t], acc[t]);
    }
}
