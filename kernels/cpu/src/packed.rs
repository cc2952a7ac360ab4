//! Weights repacked so one instruction works on eight rows at once.
//!
//! A GGUF row-major matrix makes every output value a horizontal sum: each row's products land in
//! the lanes of a register that must be added up and scaled block by block. Interleaving eight
//! rows block by block (as llama.cpp's "repack" buffers do) turns that around: lane `r` of every
//! register belongs to row `r`, so one broadcast of four activation bytes feeds eight rows, the
//! eight row scales are one vector, and a block costs a third of the instructions. The bytes are
//! the same; only their order changes.
//!
//! Q4_1×8 ([`Q4_1X8_BYTES`]) is Q5_0×8 without the bit plane and with each row's min beside
//! its scale. Q4_K×8 is the same idea for 256-value super-blocks ([`Q4KX8_BYTES`]), with the
//! 6-bit sub-block scales and mins unpacked to bytes (3 % more memory than the file).
//!
//! Q5_0×8, one group of 8 rows and one 32-value block (176 bytes = 8 × 22):
//! - `d`: the 8 rows' f16 scales (16 bytes).
//! - `hb`: the fifth bits as a bit plane (32 bytes): bit `k` of byte `4r + i` is the fifth bit of
//!   value `4k + i` of row `r`, so register `k`'s high bits are one shift and mask away.
//! - `qs`: four 32-byte groups; group `k`, bytes `4r..4r+4` = row `r`'s nibble bytes `4k..4k+4`
//!   (low nibbles are values `4k..`, high nibbles values `16 + 4k..`).
//!
//! Values are used unsigned (`0..32`, not `-16..16`) so no sign tricks are needed per product;
//! the activations carry each block's integer sum ([`crate::ActType::Q8Sum`]) and the offset is
//! taken off exactly in integers: `Σ(q - 16)·y = Σq·y - 16·Σy`.

use crate::formats::{f16_at, QK};

/// Rows interleaved per group.
pub const GROUP: usize = 8;
/// Bytes of one Q5_0 block.
const Q5_0_BYTES: usize = 22;
/// Bytes of one group's block.
pub const Q5_0X8_BYTES: usize = GROUP * Q5_0_BYTES;
const HB: usize = 16;
const QS: usize = 48;

/// Repacks `rows` rows (a multiple of [`GROUP`]) of `nb` Q5_0 blocks each.
pub fn pack_q5_0x8(data: &[u8], rows: usize, nb: usize) -> Vec<u8> {
    debug_assert!(rows.is_multiple_of(GROUP) && data.len() == rows * nb * Q5_0_BYTES);
    let mut out = vec![0u8; data.len()];
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let o = &mut out[(g * nb + b) * Q5_0X8_BYTES..][..Q5_0X8_BYTES];
            for r in 0..GROUP {
                let src = &data[((g * GROUP + r) * nb + b) * Q5_0_BYTES..][..Q5_0_BYTES];
                o[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
                let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
                for i in 0..4 {
                    o[HB + 4 * r + i] =
                        (0..8).fold(0u8, |acc, k| acc | ((((qh >> (4 * k + i)) & 1) as u8) << k));
                }
                for k in 0..4 {
                    o[QS + 32 * k + 4 * r..][..4].copy_from_slice(&src[6 + 4 * k..][..4]);
                }
            }
        }
    }
    out
}

/// Block `b` of row `r` (within its group's bytes `group`) back in GGUF's Q5_0 layout.
pub fn q5_0x8_block(group: &[u8], r: usize, b: usize) -> [u8; Q5_0_BYTES] {
    let o = &group[b * Q5_0X8_BYTES..][..Q5_0X8_BYTES];
    let mut blk = [0u8; Q5_0_BYTES];
    blk[..2].copy_from_slice(&o[2 * r..2 * r + 2]);
    let mut qh = 0u32;
    for i in 0..4 {
        let plane = o[HB + 4 * r + i];
        for k in 0..8 {
            qh |= (((plane >> k) & 1) as u32) << (4 * k + i);
        }
    }
    blk[2..6].copy_from_slice(&qh.to_le_bytes());
    for k in 0..4 {
        blk[6 + 4 * k..][..4].copy_from_slice(&o[QS + 32 * k + 4 * r..][..4]);
    }
    blk
}

/// The eight rows of one group (`group` = its `nb` blocks) against one Q8Sum activation row:
/// the portable version of the AVX2 kernel, with the same integer sums.
pub fn dot_q5_0x8(group: &[u8], a: &[u8], nb: usize) -> [f32; GROUP] {
    let mut acc = [0f32; GROUP];
    for b in 0..nb {
        let y = &a[b * 40..][..40];
        let dy = crate::formats::f32_at(y, 0);
        let ysum = i32::from_le_bytes([y[4], y[5], y[6], y[7]]);
        for (r, acc) in acc.iter_mut().enumerate() {
            let blk = q5_0x8_block(group, r, b);
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let mut isum = 0i32;
            for j in 0..QK {
                let nibble = if j < 16 {
                    blk[6 + j] & 0xF
                } else {
                    blk[6 + j - 16] >> 4
                };
                let q = (nibble | ((((qh >> j) & 1) as u8) << 4)) as i32;
                isum += q * y[8 + j] as i8 as i32;
            }
            *acc += f16_at(&blk, 0) * ((isum - 16 * ysum) as f32 * dy);
        }
    }
    acc
}

/// Bytes of one Q4_1 block.
const Q4_1_BYTES: usize = 20;
/// Bytes of one group's block in Q4_1×8 (160 = 8 × 20): the 8 rows' f16 scales `d` (16 bytes),
/// their f16 mins `m` (16 bytes), then four 32-byte groups of nibbles laid out as Q5_0×8's
/// (group `k`, bytes `4r..4r+4` = row `r`'s nibble bytes `4k..4k+4`).
pub const Q4_1X8_BYTES: usize = GROUP * Q4_1_BYTES;

/// Repacks `rows` rows (a multiple of [`GROUP`]) of `nb` Q4_1 blocks each.
pub fn pack_q4_1x8(data: &[u8], rows: usize, nb: usize) -> Vec<u8> {
    debug_assert!(rows.is_multiple_of(GROUP) && data.len() == rows * nb * Q4_1_BYTES);
    let mut out = vec![0u8; data.len()];
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let o = &mut out[(g * nb + b) * Q4_1X8_BYTES..][..Q4_1X8_BYTES];
            for r in 0..GROUP {
                let src = &data[((g * GROUP + r) * nb + b) * Q4_1_BYTES..][..Q4_1_BYTES];
                o[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
                o[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&src[2..4]);
                for k in 0..4 {
                    o[32 + 32 * k + 4 * r..][..4].copy_from_slice(&src[4 + 4 * k..][..4]);
                }
            }
        }
    }
    out
}

/// Block `b` of row `r` (within its group's bytes `group`) back in GGUF's Q4_1 layout.
pub fn q4_1x8_block(group: &[u8], r: usize, b: usize) -> [u8; Q4_1_BYTES] {
    let o = &group[b * Q4_1X8_BYTES..][..Q4_1X8_BYTES];
    let mut blk = [0u8; Q4_1_BYTES];
    blk[..2].copy_from_slice(&o[2 * r..2 * r + 2]);
    blk[2..4].copy_from_slice(&o[16 + 2 * r..16 + 2 * r + 2]);
    for k in 0..4 {
        blk[4 + 4 * k..][..4].copy_from_slice(&o[32 + 32 * k + 4 * r..][..4]);
    }
    blk
}

/// The eight rows of one Q4_1×8 group against one Q8_1 activation row: the portable version
/// of the AVX2 kernel, with the same integer sums and the same order of float operations.
pub fn dot_q4_1x8(group: &[u8], a: &[u8], nb: usize) -> [f32; GROUP] {
    let mut acc = [0f32; GROUP];
    for b in 0..nb {
        let y = &a[b * 40..][..40];
        let (dy, sy) = (crate::formats::f32_at(y, 0), crate::formats::f32_at(y, 4));
        for (r, acc) in acc.iter_mut().enumerate() {
            let blk = q4_1x8_block(group, r, b);
            let isum: i32 = (0..QK)
                .map(|j| {
                    let nibble = if j < 16 {
                        blk[4 + j] & 0xF
                    } else {
                        blk[4 + j - 16] >> 4
                    };
                    nibble as i32 * y[8 + j] as i8 as i32
                })
                .sum();
            *acc = f16_at(&blk, 0).mul_add(isum as f32 * dy, *acc);
            *acc = f16_at(&blk, 2).mul_add(sy, *acc);
        }
    }
    acc
}

/// Bytes of one Q4_K super-block.
const Q4K_BYTES: usize = 144;
/// Bytes of one group's super-block in Q4_K×8: scales `d` and `dmin` (8 f16 each), the 6-bit
/// sub-block scales and mins unpacked to bytes (`[8 sub-blocks][8 rows]` each), then the
/// nibbles: for each 64-value chunk `c` and 4-value step `k`, 32 bytes holding rows 0-7's
/// nibble bytes `32c + 4k..32c + 4k + 4` (low nibbles are sub-block `2c`, high `2c + 1`).
pub const Q4KX8_BYTES: usize = 32 + 128 + 1024;
const K_SC: usize = 32;
const K_M: usize = 96;
const K_QS: usize = 160;

/// Repacks `rows` rows (a multiple of [`GROUP`]) of `nb` Q4_K super-blocks each.
pub fn pack_q4kx8(data: &[u8], rows: usize, nb: usize) -> Vec<u8> {
    debug_assert!(rows.is_multiple_of(GROUP) && data.len() == rows * nb * Q4K_BYTES);
    let mut out = vec![0u8; rows / GROUP * nb * Q4KX8_BYTES];
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let o = &mut out[(g * nb + b) * Q4KX8_BYTES..][..Q4KX8_BYTES];
            for r in 0..GROUP {
                let src = &data[((g * GROUP + r) * nb + b) * Q4K_BYTES..][..Q4K_BYTES];
                o[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
                o[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&src[2..4]);
                for j in 0..8 {
                    let (sc, m) = crate::formats::q4k_scale_min(j, &src[4..16]);
                    o[K_SC + 8 * j + r] = sc;
                    o[K_M + 8 * j + r] = m;
                }
                for c in 0..4 {
                    for k in 0..8 {
                        o[K_QS + 256 * c + 32 * k + 4 * r..][..4]
                            .copy_from_slice(&src[16 + 32 * c + 4 * k..][..4]);
                    }
                }
            }
        }
    }
    out
}

/// Super-block `b` of row `r` (within its group's bytes `group`) back in GGUF's Q4_K layout.
pub fn q4kx8_block(group: &[u8], r: usize, b: usize) -> [u8; Q4K_BYTES] {
    let o = &group[b * Q4KX8_BYTES..][..Q4KX8_BYTES];
    let mut blk = [0u8; Q4K_BYTES];
    blk[..2].copy_from_slice(&o[2 * r..2 * r + 2]);
    blk[2..4].copy_from_slice(&o[16 + 2 * r..16 + 2 * r + 2]);
    let sc = |j: usize| o[K_SC + 8 * j + r];
    let m = |j: usize| o[K_M + 8 * j + r];
    // The inverse of `q4k_scale_min`: six bits each, the top two of sub-blocks 4-7 kept in
    // the top bits of the first eight bytes.
    for j in 0..4 {
        blk[4 + j] = sc(j) | ((sc(j + 4) >> 4) << 6);
        blk[4 + j + 4] = m(j) | ((m(j + 4) >> 4) << 6);
        blk[4 + j + 8] = (sc(j + 4) & 0xF) | ((m(j + 4) & 0xF) << 4);
    }
    for c in 0..4 {
        for k in 0..8 {
            blk[16 + 32 * c + 4 * k..][..4]
                .copy_from_slice(&o[K_QS + 256 * c + 32 * k + 4 * r..][..4]);
        }
    }
    blk
}

/// The portable version of the AVX2 Q4_K×8 kernel: each super-block rebuilt in file order on
/// the stack and dotted as the row-order fallback does (no allocation per token).
pub fn dot_q4kx8(group: &[u8], a: &[u8], nb: usize) -> [f32; GROUP] {
    const ACT_BYTES: usize = 292;
    let mut out = [0f32; GROUP];
    for (r, o) in out.iter_mut().enumerate() {
        *o = (0..nb)
            .map(|b| {
                let blk = q4kx8_block(group, r, b);
                let act = &a[b * ACT_BYTES..(b + 1) * ACT_BYTES];
                crate::scalar::dot(crate::WeightType::Q4K, &blk, act, crate::formats::QK_K)
            })
            .sum();
    }
    out
}
