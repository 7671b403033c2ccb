//! The scalar oracle of the bf16 products: rounding f32 -> bf16 (round to nearest, ties to even;
//! NaN stays NaN), widening bf16 -> f32, and the triple-loop product on bf16-rounded inputs.
//! Every fast path in `ops::bf16` is tested against these.
//!
//! Dimensions: `m` rows of `a` and `out`, `k` the inner dimension (columns of `a`, rows of `b`),
//! `n` columns of `b` and `out`.

use crate::ops::gemm::{MatMut, MatRef};

/// Rounds an f32 to the nearest bf16 (ties to even) and returns its bits; NaN maps to a quiet NaN
/// with the same sign and top payload bits, infinities stay infinite, and finite values that round
/// past the largest bf16 become infinite (IEEE round-to-nearest).
pub fn round_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    // Adding 0x7fff rounds half-way cases down, the low bit of the kept half turns them into ties
    // to even; a carry out of the mantissa correctly bumps the exponent (up to infinity).
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// The f32 with the same value as the bf16 `bits` (exact: bf16 is the top half of an f32).
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `x` rounded to bf16 and widened back: the value the bf16 kernels multiply.
pub fn round_f32(x: f32) -> f32 {
    bf16_to_f32(round_bf16(x))
}

/// `out = beta * out + alpha * (round(a) · round(b))` with beta 0 (old contents ignored) or 1.
///
/// `out` [m, n], `a` [m, k], `b` [k, n], any strides. The products of bf16 values are exact in f32;
/// the sum is accumulated in f64 and rounded once, so this is the value every fp32-accumulating
/// kernel approximates (each within γ_k·Σ|a||b| of it, whatever its summation order).
pub fn matmul_ref(out: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, beta: f32) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!((out.rows, out.cols), (a.rows, b.cols), "output shape differs");
    assert!(beta == 0.0 || beta == 1.0, "beta must be 0 (replace) or 1 (accumulate)");
    for i in 0..out.rows {
        for j in 0..out.cols {
            let mut acc = 0.0f64;
            for p in 0..a.cols {
                let x = round_f32(a.data[i * a.rs + p * a.cs]);
                let y = round_f32(b.data[p * b.rs + j * b.cs]);
                acc += (x * y) as f64;
            }
            let o = &mut out.data[i * out.rs + j * out.cs];
            let old = if beta == 0.0 { 0.0 } else { *o as f64 };
            *o = (old + alpha as f64 * acc) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn rounding_matches_the_half_crate_bit_for_bit() {
        // half::bf16::from_f32 is an independent round-to-nearest-even implementation.
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
            1.0e-40,
            f32::from_bits(0x3f80_8000), // exactly half-way, even below: rounds down
            f32::from_bits(0x3f81_8000), // exactly half-way, odd below: rounds up
            f32::from_bits(0x3f80_8001),
            f32::from_bits(0x7f7f_ffff),
            f32::from_bits(0x7fc0_0001),
            f32::from_bits(0xff80_0001), // signalling NaN
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let randoms = (0..200_000).map(|_| f32::from_bits(rng.random::<u32>()));
        for x in specials.into_iter().chain(randoms) {
            let want = half::bf16::from_f32(x).to_bits();
            let got = round_bf16(x);
            if x.is_nan() {
                assert!(bf16_to_f32(got).is_nan() && (got & 0x8000) == (want & 0x8000), "{x:?}: {got:#x} vs {want:#x}");
            } else {
                assert_eq!(got, want, "{x:e} ({:#x})", x.to_bits());
            }
        }
        assert_eq!(round_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(round_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(round_bf16(f32::MAX), 0x7f80);
    }

    #[test]
    fn reference_product_of_small_integers_is_exact() {
        // Integers below 256 are exact in bf16, so the product must equal integer arithmetic.
        let a: Vec<f32> = (0..6).map(|v| v as f32 + 1.0).collect(); // [2, 3]
        let b: Vec<f32> = (0..12).map(|v| 2.0 * v as f32 - 5.0).collect(); // [3, 4]
        let mut out = vec![100.0f32; 8];
        matmul_ref(MatMut::new(&mut out, 2, 4), MatRef::new(&a, 2, 3), MatRef::new(&b, 3, 4), 0.5, 1.0);
        for i in 0..2 {
            for j in 0..4 {
                let s: f32 = (0..3).map(|p| a[i * 3 + p] * b[p * 4 + j]).sum();
                assert_eq!(out[i * 4 + j], 100.0 + 0.5 * s);
            }
        }
        let mut out = vec![f32::NAN; 8];
        matmul_ref(MatMut::new(&mut out, 2, 4), MatRef::new(&a, 2, 3), MatRef::new(&b, 3, 4), 1.0, 0.0);
        assert!(out.iter().all(|v| v.is_finite()), "beta 0 must ignore old contents");
        // Inputs are rounded: 1 + 2^-9 is less than half a bf16 ulp (2^-7) above 1, so it rounds to 1.
        let x = [1.0 + 1.0 / 512.0];
        let mut o = [0.0f32];
        matmul_ref(MatMut::new(&mut o, 1, 1), MatRef::new(&x, 1, 1), MatRef::new(&x, 1, 1), 1.0, 0.0);
        assert_eq!(o[0], 1.0);
    }
}
