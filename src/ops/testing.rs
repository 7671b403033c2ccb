//! Test helpers shared by the layer tests and the integration tests: seeded random data,
//! comparisons that fail on NaN, and gradient checks against central differences — of the f32
//! kernels themselves ([`check_gradient`], Richardson-extrapolated), and of f64 reference
//! implementations ([`check_gradient_f64`], tight enough to tell an erf GELU from a tanh one).
//!
//! Every comparison is written as `!within(diff, tol)` (that is `!(diff <= tol)`) → failure, and checks finiteness, so that a
//! NaN anywhere fails instead of passing (`NaN <= tol` is false, but `f32::max` ignores NaN).

use rand::{Rng, SeedableRng};

/// `n` values uniform in [-1, 1), reproducible from `seed`.
pub fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Largest absolute element-wise difference; NaN when either side holds a NaN or an infinity
/// (so that any `diff <= tol` test fails on it).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() || !y.is_finite() {
            return f32::NAN;
        }
        worst = worst.max((x - y).abs());
    }
    worst
}

/// `x <= tol`, false when either is NaN: the form every comparison here uses, so that NaN fails.
pub fn within<T: PartialOrd>(x: T, tol: T) -> bool {
    x <= tol
}

/// Compares `got` with `want`: same length, every value finite, and the largest difference at
/// most `atol + rtol · max|want|`. Returns the largest difference, or a message naming `what`.
pub fn compare(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) -> Result<f32, String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        return Err(format!("{what}: value {i} is {} (not finite)", got[i]));
    }
    if let Some(i) = want.iter().position(|v| !v.is_finite()) {
        return Err(format!("{what}: expected value {i} is {} (not finite)", want[i]));
    }
    let diff = max_abs_diff(got, want);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if !within(diff, atol + rtol * scale) {
        return Err(format!("{what}: max diff {diff:e} vs max |want| {scale:e} (rtol {rtol:e}, atol {atol:e})"));
    }
    Ok(diff)
}

/// [`compare`], panicking with its message.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    if let Err(e) = compare(what, got, want, rtol, atol) {
        panic!("{e}");
    }
}

/// Checks an analytic gradient of an f32 kernel against central differences of the kernel.
///
/// `f` evaluates the scalar at the point `x`; `grad` is the analytic gradient at `x`. Every
/// coordinate (or every `stride`-th) is perturbed by ±h and ±2h (h = 1e-2) and the differences are
/// combined by Richardson extrapolation in f64, which cancels the O(h²) truncation error, so what is
/// left is the f32 rounding of `f`; the check passes when |fd - grad| <= 5e-4 + 5e-3·|fd|.
/// (The tight check of the mathematics is [`check_gradient_f64`], against f64 references.)
pub fn check_gradient(what: &str, x: &[f32], grad: &[f32], stride: usize, mut f: impl FnMut(&[f32]) -> f64) {
    let (h, atol, rtol) = (1e-2f32, 5e-4f64, 5e-3f64);
    assert_eq!(x.len(), grad.len(), "{what}: gradient length");
    let mut point = x.to_vec();
    for i in (0..x.len()).step_by(stride.max(1)) {
        let orig = point[i];
        let mut at = |d: f32| {
            point[i] = orig + d;
            let v = f(&point);
            point[i] = orig;
            v
        };
        let (d1, d2) = (at(h) - at(-h), at(2.0 * h) - at(-2.0 * h));
        let fd = (8.0 * d1 - d2) / (12.0 * h as f64);
        let err = (fd - grad[i] as f64).abs();
        assert!(err <= atol + rtol * fd.abs(), "{what}: gradient mismatch at {i}: finite difference {fd}, analytic {}", grad[i]);
    }
}

/// Checks an analytic gradient (from an f32 kernel) against central differences of an f64
/// reference `f` of the same scalar, at `x` (h = 1e-6, so the reference's error is ~1e-10): passes
/// when |fd - grad| <= 1e-5 + 1e-4·|fd| at every coordinate. Returns the largest error, or a message.
pub fn check_gradient_f64(what: &str, x: &[f32], grad: &[f32], mut f: impl FnMut(&[f64]) -> f64) -> Result<f64, String> {
    let (h, atol, rtol) = (1e-6f64, 1e-5f64, 1e-4f64);
    if x.len() != grad.len() {
        return Err(format!("{what}: gradient has {} values for {} inputs", grad.len(), x.len()));
    }
    let mut point: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let orig = point[i];
        point[i] = orig + h;
        let up = f(&point);
        point[i] = orig - h;
        let down = f(&point);
        point[i] = orig;
        let fd = (up - down) / (2.0 * h);
        let err = (fd - grad[i] as f64).abs();
        if !within(err, atol + rtol * fd.abs()) {
            return Err(format!("{what}: gradient mismatch at {i}: f64 central difference {fd}, analytic {}", grad[i]));
        }
        worst = worst.max(err);
    }
    Ok(worst)
}

/// Scalar probe used by gradient checks: sum(out · w), whose gradient w.r.t. out is w.
pub fn dot(out: &[f32], w: &[f32]) -> f64 {
    out.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// [`dot`] in f64.
pub fn dot64(out: &[f64], w: &[f32]) -> f64 {
    out.iter().zip(w).map(|(a, b)| a * *b as f64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinity_fail_every_comparison() {
        assert!(max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]).is_nan());
        assert!(max_abs_diff(&[1.0, 2.0], &[f32::INFINITY, 2.0]).is_nan());
        assert!(compare("x", &[1.0, f32::NAN], &[1.0, 1.0], 1.0, 1.0).unwrap_err().contains("not finite"));
        assert!(compare("x", &[f32::NAN; 3], &[f32::NAN; 3], 1.0, 1.0).is_err(), "all-NaN on both sides");
        assert!(compare("x", &[1.0], &[1.0, 2.0], 1.0, 1.0).is_err());
        assert_eq!(compare("x", &[1.0, 2.0], &[1.0, 2.0], 0.0, 0.0), Ok(0.0));
        assert!(check_gradient_f64("x", &[0.5], &[f32::NAN], |x| x[0] * x[0]).is_err());
    }

    #[test]
    fn the_f64_check_tells_apart_a_tanh_gelu_and_a_one_and_a_half_percent_scale_error() {
        let x: Vec<f32> = random_vec(64, 9).iter().map(|v| 3.0 * v).collect();
        let erf_gelu = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let erf_grad =
            |x: f64| 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let tanh_grad = |x: f64| {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let u = k * (x + 0.044715 * x * x * x);
            let t = u.tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)
        };
        let f = |p: &[f64]| p.iter().map(|v| erf_gelu(*v)).sum::<f64>();
        let right: Vec<f32> = x.iter().map(|v| erf_grad(*v as f64) as f32).collect();
        let tanh: Vec<f32> = x.iter().map(|v| tanh_grad(*v as f64) as f32).collect();
        let scaled: Vec<f32> = right.iter().map(|g| g * 1.015).collect();
        check_gradient_f64("erf GELU", &x, &right, f).unwrap();
        assert!(check_gradient_f64("tanh GELU", &x, &tanh, f).is_err(), "a tanh-approximate derivative must fail");
        assert!(check_gradient_f64("scaled", &x, &scaled, f).is_err(), "a 1.5% scale error must fail");
    }
}
