//! Test helpers shared by the layer tests: seeded random data and a finite-difference checker.

use rand::{Rng, SeedableRng};

/// `n` values uniform in [-1, 1), reproducible from `seed`.
pub fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Largest absolute element-wise difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Checks an analytic gradient against central differences of a scalar function.
///
/// `f` evaluates the scalar at the point `x`; `grad` is the analytic gradient at `x`. Every
/// coordinate (or every `stride`-th, for big inputs) is perturbed by ±`eps` in f64 arithmetic of the
/// f32 results; the check passes when |fd - grad| <= atol + rtol * |fd|.
pub fn check_gradient(what: &str, x: &[f32], grad: &[f32], stride: usize, mut f: impl FnMut(&[f32]) -> f64) {
    let (eps, atol, rtol) = (1e-2f32, 2e-3f64, 2e-2f64);
    let mut point = x.to_vec();
    let mut worst = 0.0f64;
    for i in (0..x.len()).step_by(stride.max(1)) {
        let orig = point[i];
        point[i] = orig + eps;
        let up = f(&point);
        point[i] = orig - eps;
        let down = f(&point);
        point[i] = orig;
        let fd = (up - down) / (2.0 * eps as f64);
        let err = (fd - grad[i] as f64).abs();
        assert!(err <= atol + rtol * fd.abs(), "{what}: gradient mismatch at {i}: finite difference {fd}, analytic {}", grad[i]);
        worst = worst.max(err);
    }
    assert!(worst.is_finite());
}

/// Scalar probe used by gradient checks: sum(out · w), whose gradient w.r.t. out is w.
pub fn dot(out: &[f32], w: &[f32]) -> f64 {
    out.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum()
}
