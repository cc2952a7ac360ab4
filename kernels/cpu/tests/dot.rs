//! Every weight format's dot product, on the chosen backend and the scalar fallback, against a
//! plain f32 dot of the dequantized weights and activations.

use half::f16;
use hark_kernels::formats::{dequantize_row, quantize_row, ActType, WeightType, QK, QK_K};
use hark_kernels::{dot_row, dot_row_tail, dot_row_x4, Activations, QMatrix, ThreadPool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [WeightType; 8] = [
    WeightType::F32,
    WeightType::F16,
    WeightType::Q4_0,
    WeightType::Q4_1,
    WeightType::Q5_0,
    WeightType::Q8_0,
    WeightType::Q4K,
    WeightType::Q6K,
];

/// Random blocks with sane scales (random bytes there could be NaN or huge).
fn random_row(ty: WeightType, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let n = cols / ty.block_len();
    let bb = ty.block_bytes();
    let mut row: Vec<u8> = (0..n * bb).map(|_| rng.random()).collect();
    let put = |b: &mut [u8], at: usize, v: f32| {
        b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes())
    };
    for b in row.chunks_exact_mut(bb) {
        match ty {
            WeightType::F32 => b.copy_from_slice(&rng.random_range(-1.0f32..1.0).to_le_bytes()),
            WeightType::F16 => put(b, 0, rng.random_range(-1.0..1.0)),
            WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => {
                put(b, 0, rng.random_range(-0.05..0.05))
            }
            WeightType::Q4_1 => {
                put(b, 0, rng.random_range(0.0..0.05));
                put(b, 2, rng.random_range(-0.2..0.0));
            }
            WeightType::Q4K => {
                put(b, 0, rng.random_range(0.0..0.01));
                put(b, 2, rng.random_range(0.0..0.01));
            }
            WeightType::Q6K => put(b, 208, rng.random_range(-0.01..0.01)),
        }
    }
    row
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn dequantize_acts(ty: ActType, a: &[u8], cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; cols];
    match ty {
        ActType::F32 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f32::from_le_bytes(a[4 * i..4 * i + 4].try_into().unwrap());
            }
        }
        ActType::Q8_0 | ActType::Q8_1 | ActType::Q8Sum => {
            let (bb, head) = if ty == ActType::Q8_0 {
                (36, 4)
            } else {
                (40, 8)
            };
            for (i, o) in out.iter_mut().enumerate() {
                let b = i / QK * bb;
                *o = f32_at(a, b) * a[b + head + i % QK] as i8 as f32;
            }
        }
        ActType::Q8K => {
            for (i, o) in out.iter_mut().enumerate() {
                let b = i / QK_K * 292;
                let d = f32::from_le_bytes(a[b..b + 4].try_into().unwrap());
                *o = d * a[b + 4 + i % QK_K] as i8 as f32;
            }
        }
    }
    out
}

/// The f64 dot product of dequantized weights `wf` (from the weight row `w`) and activations
/// `af` (from the activation row `a`), and the sum of the products' magnitudes (for a
/// tolerance).
fn reference_dot(ty: WeightType, w: &[u8], wf: &[f32], a: &[u8], af: &[f32]) -> (f64, f64) {
    let mut reference: f64 = wf.iter().zip(af).map(|(p, q)| *p as f64 * *q as f64).sum();
    if ty == WeightType::Q4_1 {
        // Q4_1's min term uses the block sum `s` stored (rounded to f16) with the activations,
        // not the sum of the dequantized values.
        for (b, block) in af.chunks(QK).enumerate() {
            let m = f16_at(w, 20 * b + 2) as f64;
            let s = f32_at(a, 40 * b + 4) as f64;
            let exact: f64 = block.iter().map(|&v| v as f64).sum();
            reference += m * (s - exact);
        }
    }
    let scale = wf
        .iter()
        .zip(af)
        .map(|(p, q)| (*p as f64 * *q as f64).abs())
        .sum();
    (reference, scale)
}

#[test]
fn dot_products_match_dequantized_reference() {
    let mut rng = StdRng::seed_from_u64(7);
    let cols = 2 * QK_K;
    for ty in TYPES {
        for trial in 0..20 {
            let w = random_row(ty, cols, &mut rng);
            let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-3.0..3.0)).collect();
            let act = ty.act_type();
            let mut a = vec![0u8; act.row_bytes(cols)];
            quantize_row(act, &x, &mut a);
            let mut wf = vec![0f32; cols];
            dequantize_row(ty, &w, &mut wf);
            let af = dequantize_acts(act, &a, cols);
            let (reference, scale) = reference_dot(ty, &w, &wf, &a, &af);
            let got = dot_row(ty, &w, &a, cols) as f64;
            let tol = 1e-5 * scale + 1e-6;
            assert!(
                (got - reference).abs() <= tol,
                "{ty:?} trial {trial}: {got} vs {reference} (tolerance {tol})"
            );
            // The activations themselves are close to what was quantized.
            let err: f32 = x
                .iter()
                .zip(&af)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            assert!(err <= 3.0 / 100.0, "{ty:?}: activation error {err}");
        }
    }
}

#[test]
fn four_token_kernels_equal_one_token_kernels() {
    let mut rng = StdRng::seed_from_u64(5);
    let cols = 2 * QK_K;
    for ty in TYPES {
        let w = random_row(ty, cols, &mut rng);
        let act = ty.act_type();
        let rows: Vec<Vec<u8>> = (0..4)
            .map(|_| {
                let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-2.0..2.0)).collect();
                let mut a = vec![0u8; act.row_bytes(cols)];
                quantize_row(act, &x, &mut a);
                a
            })
            .collect();
        let a = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
        let four = dot_row_x4(ty, &w, a, cols);
        for (t, row) in rows.iter().enumerate() {
            let one = dot_row(ty, &w, row, cols);
            // Same sums in the same order: a token's logits must not depend on its batch.
            assert_eq!(four[t], one, "{ty:?} token {t}");
            // The kernels for a tail of one, two or three tokens likewise.
            for n in t + 1..=3 {
                assert_eq!(
                    dot_row_tail(ty, &w, a, n, cols)[t],
                    one,
                    "{ty:?} token {t} of {n}"
                );
            }
        }
    }
}

#[test]
fn the_scalar_fallback_passes_the_reference_tests_too() {
    // The backend choice is made once per process, so the fallback runs in a child process.
    if std::env::var("HARK_KERNELS").is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(&exe)
        .args([
            "dot_products_match_dequantized_reference",
            "four_token_kernels_equal_one_token_kernels",
            "matrices_in_every_layout_match_the_reference_and_batch_bit_exactly",
            "--quiet",
        ])
        .env("HARK_KERNELS", "scalar")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the scalar fallback failed the reference tests"
    );
}

#[test]
fn parallel_matmul_fills_every_output_once() {
    let mut rng = StdRng::seed_from_u64(11);
    let (rows, cols, tokens) = (37, QK_K, 5);
    let ty = WeightType::Q4K;
    let data: Vec<u8> = (0..rows)
        .flat_map(|_| random_row(ty, cols, &mut rng))
        .collect();
    let m = QMatrix::new(ty, rows, cols, data).unwrap();
    let x: Vec<f32> = (0..tokens * cols)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut acts = Activations::default();
    acts.quantize(ty.act_type(), &x, tokens, cols);
    let pool = ThreadPool::new(2);
    let mut out = vec![f32::NAN; tokens * rows];
    let ptr = SendPtr(out.as_mut_ptr());
    pool.for_each(rows.div_ceil(8), &|chunk| {
        let r = chunk * 8..((chunk + 1) * 8).min(rows);
        // SAFETY: each chunk writes its own rows of `out`.
        unsafe { m.matmul_rows_raw(r.clone(), &acts, ptr.get().add(r.start), rows) };
    });
    for t in 0..tokens {
        for r in 0..rows {
            let expect = m.dot(r, &acts, t);
            assert_eq!(out[t * rows + r], expect, "token {t} row {r}");
        }
    }
}

/// Every format as a whole matrix: rows a multiple of eight (Q4_1, Q5_0 and Q4_K are then
/// interleaved eight rows at a time) and not (they stay in file order); seven tokens, so the
/// batched kernels run full and partial tiles.
#[test]
fn matrices_in_every_layout_match_the_reference_and_batch_bit_exactly() {
    let mut rng = StdRng::seed_from_u64(13);
    let (cols, tokens) = (2 * QK_K, 7);
    for ty in TYPES {
        for rows in [24, 20] {
            let file_rows: Vec<Vec<u8>> =
                (0..rows).map(|_| random_row(ty, cols, &mut rng)).collect();
            let m = QMatrix::new(ty, rows, cols, file_rows.concat()).unwrap();
            let x: Vec<f32> = (0..tokens * cols)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let mut acts = Activations::default();
            acts.quantize(m.act_type(), &x, tokens, cols);
            let mut batched = vec![f32::NAN; tokens * rows];
            let align = m.row_alignment();
            for start in (0..rows).step_by(8) {
                let end = (start + 8).min(rows);
                if end % align != 0 {
                    continue;
                }
                // SAFETY: each call writes its own rows of `batched`.
                unsafe {
                    m.matmul_rows_raw(start..end, &acts, batched.as_mut_ptr().add(start), rows)
                };
            }
            for (r, file_row) in file_rows.iter().enumerate() {
                // Whatever the layout, a row reads back as the file's row.
                let (mut wf, mut expect) = (vec![0f32; cols], vec![0f32; cols]);
                m.dequantize_row(r, &mut wf);
                dequantize_row(ty, file_row, &mut expect);
                assert_eq!(wf, expect, "{ty:?} rows {rows}: row {r} reads back changed");
                for t in 0..tokens {
                    let af = dequantize_acts(m.act_type(), acts.row(t), cols);
                    let (reference, scale) = reference_dot(ty, file_row, &wf, acts.row(t), &af);
                    let got = batched[t * rows + r];
                    assert!(
                        (got as f64 - reference).abs() <= 1e-5 * scale + 1e-6,
                        "{ty:?} rows {rows}: row {r} token {t}: {got} vs {reference}"
                    );
                    // A token's result must not depend on the batch it was computed in.
                    assert_eq!(
                        got,
                        m.dot(r, &acts, t),
                        "{ty:?} rows {rows}: row {r} token {t}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_ragged_or_short_matrix_is_refused() {
    assert!(QMatrix::new(WeightType::Q4_1, 2, 33, vec![0; 100]).is_err());
    assert!(QMatrix::new(WeightType::Q4_1, 2, 64, vec![0; 79]).is_err());
    assert!(QMatrix::new(WeightType::Q4_1, 2, 64, vec![0; 80]).is_ok());
    assert!(WeightType::from_ggml_id(99).is_err());
}

struct SendPtr(*mut f32);
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}
