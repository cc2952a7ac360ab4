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
