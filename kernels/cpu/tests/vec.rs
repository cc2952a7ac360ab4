//! The f32 helpers against f64 references.

use hark_kernels::vec;

#[test]
fn silu_mul_matches_an_f64_reference_over_the_whole_range() {
    // Every magnitude from tiny to past the clamp, both signs, and lengths with a ragged tail.
    let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).collect();
    let up: Vec<f32> = xs.iter().map(|x| 1.0 + x.abs() * 0.01).collect();
    let mut got = xs.clone();
    vec::silu_mul(&mut got, &up);
    for ((&x, &u), &g) in xs.iter().zip(&up).zip(&got) {
        let (x64, u64) = (x as f64, u as f64);
        let expect = x64 / (1.0 + (-x64).exp()) * u64;
        let err = (g as f64 - expect).abs();
        assert!(
            err <= 4e-7 * expect.abs() + 1e-30,
            "silu({x}) * {u}: {g} vs {expect}"
        );
    }
    // The vector exp rounds as the scalar (correctly rounded) one: the same bits, bar the
    // vanishingly rare value within 1e-13 of a rounding boundary.
    let same = xs
        .iter()
        .zip(&up)
        .zip(&got)
        .filter(|((&x, &u), &g)| (x / (1.0 + (-x).exp()) * u).to_bits() == g.to_bits())
        .count();
    assert!(
        same * 1000 >= xs.len() * 999,
        "{same} of {} bit-equal to the scalar SiLU",
        xs.len()
    );
    let mut short = [0.5f32, -0.5, 3.0];
    vec::silu_mul(&mut short, &[1.0, 1.0, 1.0]);
    assert!((short[2] - 3.0 / (1.0 + (-3.0f32).exp())).abs() < 1e-6);
}

/// A reproducible spread of values in about [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn fused_attention_equals_its_dot_softmax_and_axpy_steps() {
    // Head sizes of the models (64, 128), one with a ragged tail, and context lengths on both
    // sides of the kernel's 8-wide steps.
    for hd in [64, 128, 72, 20] {
        for n in [1, 3, 8, 9, 37, 300] {
            let q = values(hd, 1 + hd as u32);
            // Sharp scores (large keys) as well as flat ones.
            let keys: Vec<f32> = values(n * hd, 7 + n as u32)
                .iter()
                .map(|k| k * 4.0)
                .collect();
            let vals = values(n * hd, 11 + n as u32);
            let scale = 1.0 / (hd as f32).sqrt();

            let mut expect_scores: Vec<f32> = (0..n)
                .map(|j| vec::dot(&q, &keys[j * hd..(j + 1) * hd]) * scale)
                .collect();
            vec::softmax(&mut expect_scores);
            let mut expect = vec![0f32; hd];
            for (j, &p) in expect_scores.iter().enumerate() {
                vec::axpy(p, &vals[j * hd..(j + 1) * hd], &mut expect);
            }

            let (mut scores, mut out) = (vec![f32::NAN; n + 5], vec![f32::NAN; hd]);
            vec::attend(&q, &keys, &vals, n, scale, &mut scores, &mut out);

            let total: f32 = scores[..n].iter().sum();
            assert!((total - 1.0).abs() < 1e-5, "hd {hd}, n {n}: Σp = {total}");
            // The same sums in the same order. The vector exponential rounds as the scalar one
            // bar a rare last bit, and the softmax's f64 normaliser is added in another order:
            // a probability may differ in its last bit, so an output by a few ulps at most.
            let ulps = |a: f32, b: f32| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs();
            let equal = (0..n)
                .filter(|&j| scores[j].to_bits() == expect_scores[j].to_bits())
                .count();
            assert!(
                (0..n).all(|j| ulps(scores[j], expect_scores[j]) <= 1) && equal * 100 >= n * 99,
                "hd {hd}, n {n}: {equal} of {n} probabilities bit-equal"
            );
            let worst = (0..hd).map(|c| ulps(out[c], expect[c])).max().unwrap_or(0);
            assert!(worst <= 4, "hd {hd}, n {n}: an output {worst} ulps off");
        }
    }
}
