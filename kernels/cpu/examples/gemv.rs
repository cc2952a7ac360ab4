//! GEMV throughput per weight format, on one thread: cache-resident and streaming from memory.
//!   cargo run --release -p hark-kernels --example gemv

use std::time::Instant;

use hark_kernels::formats::WeightType;
use hark_kernels::{Activations, QMatrix};

fn main() {
    let cols = 1536;
    for ty in [
        WeightType::Q4_1,
        WeightType::Q8_0,
        WeightType::Q4K,
        WeightType::Q6K,
        WeightType::Q5_0,
    ] {
        for (label, rows) in [("in cache", 64usize), ("from memory", 40_000)] {
            let bytes = ty.row_bytes(cols).unwrap() * rows;
            let mut data = vec![0u8; bytes];
            // Zero scales would be fine for timing; fill with a pattern so nothing is special.
            for (i, b) in data.iter_mut().enumerate() {
                *b = (i * 31 % 251) as u8 & 0x3b;
            }
            let m = QMatrix::new(ty, rows, cols, data).unwrap();
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut acts = Activations::default();
            acts.quantize(m.act_type(), &x, 1, cols);
            let mut out = vec![0f32; rows];
            let reps = (200_000_000 / bytes).max(3);
            let t = Instant::now();
            for _ in 0..reps {
                unsafe { m.matmul_rows_raw(0..rows, &acts, out.as_mut_ptr(), rows) };
            }
            let s = t.elapsed().as_secs_f64();
            let blocks = (rows * cols / ty.block_len() * reps) as f64;
            println!(
                "{ty:?} {label:>12}: {:6.2} GB/s  {:5.2} ns/block",
                (bytes * reps) as f64 / s / 1e9,
                s * 1e9 / blocks
            );
        }
    }
}
