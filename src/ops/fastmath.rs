//! Branch-free `exp` and `erf` that the compiler vectorises (AVX2 / AVX-512 via `multiversion`
//! in the kernels that call them): Cephes-style range reduction for exp (≤ 2 ulp), and the
//! Abramowitz–Stegun 7.1.26 erf (|error| ≤ 1e-6 in f32), the same approximation PyTorch's vectorised
//! CPU `erf` uses.

/// e^x for x in roughly [-87, 88] (smaller inputs flush to 0, larger saturate).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2) with the magic-number trick (pure arithmetic, vectorises).
    let magic = 12_582_912.0f32; // 1.5 * 2^23
    let n = (x * LOG2E + magic) - magic;
    let r = x - n * LN2_HI - n * LN2_LO;
    // e^r on [-ln2/2, ln2/2]: Cephes expf polynomial.
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    er * scale
}

/// erf(x) by Abramowitz & Stegun 7.1.26: |error| ≤ 1.5e-7 in exact arithmetic, ≤ 1e-6 in f32.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let y = 1.0 - poly * exp(-ax * ax);
    y.copysign(x)
}

/// Lanes of the reductions below: 16 independent partial results, so that the compiler may keep
/// them in one AVX-512 (or two AVX2) registers instead of one serial chain.
const LANES: usize = 16;

/// Σ x in 16 interleaved partial sums (vectorises; the order differs from a serial sum only in
/// rounding).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a·b in 16 interleaved partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// max x (−∞ for an empty slice) in 16 interleaved partial maxima.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = if *v > *a { *v } else { *a };
        }
    }
    acc.iter().fold(tail, |m, v| m.max(*v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "max relative error {worst:e}");
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn erf_is_within_1e_6_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf(x) as f64 - libm::erf(x as f64)).abs());
            x += 0.001;
        }
        assert!(worst < 1e-6, "max abs error {worst:e}");
    }

    #[test]
    fn lane_reductions_equal_serial_ones() {
        for n in [0usize, 1, 15, 16, 17, 100, 257] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let y: Vec<f32> = (0..n).map(|i| ((i * 11 % 13) as f32 - 6.0) / 3.0).collect();
            let serial: f64 = x.iter().map(|v| *v as f64).sum();
            assert!((sum(&x) as f64 - serial).abs() < 1e-4, "sum n={n}");
            let d: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((dot(&x, &y) as f64 - d).abs() < 1e-4, "dot n={n}");
            assert_eq!(max(&x), x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)), "max n={n}");
        }
    }
}
