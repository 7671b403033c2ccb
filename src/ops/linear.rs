//! Linear layer kernels: y = x · Wᵀ + b with PyTorch's weight layout W: [out, in], in f32 or
//! with bf16 products ([`Arith`]).
//!
//! Dimensions: N rows (tokens), I input features, O output features.

use super::bf16;
use super::gemm::{matmul, MatMut, MatRef, Threads};
use super::precision::{PackedWeight, Precision};

/// How a linear layer's products with its weight are computed.
#[derive(Clone, Copy, Debug)]
pub enum Arith<'a> {
    /// f32.
    Fp32,
    /// bf16 operands, f32 sums; against `packed` when it is there (a frozen weight packed once and
    /// still matching), else packing the weight on the fly.
    Bf16 {
        /// The weight packed once.
        packed: Option<&'a PackedWeight>,
    },
}

impl<'a> Arith<'a> {
    /// The arithmetic of `precision`, with `packed` when it is a current copy of `w` (or stands in
    /// for it: `w` empty, its f32 values released).
    pub fn of(precision: Precision, packed: Option<&'a PackedWeight>, w: &[f32]) -> Arith<'a> {
        match precision {
            Precision::Fp32 => Arith::Fp32,
            Precision::Bf16 => Arith::Bf16 { packed: packed.filter(|p| w.is_empty() || p.matches(w)) },
        }
    }
}

/// out = beta·out + x[N,I] · w[O,I]ᵀ in the given arithmetic.
#[allow(clippy::too_many_arguments)]
fn forward_product(out: &mut [f32], x: &[f32], w: &[f32], n: usize, i: usize, o: usize, beta: f32, arith: Arith<'_>) {
    let (out, x) = (MatMut::new(&mut out[..n * o], n, o), MatRef::new(&x[..n * i], n, i));
    // `w` may be empty when a pack stands in for it (released f32 weights): view it only here.
    let wt = || MatRef::new(&w[..o * i], o, i).t();
    match arith {
        Arith::Fp32 => matmul(out, x, wt(), 1.0, beta, Threads::Pool),
        Arith::Bf16 { packed: Some(p) } => bf16::matmul_packed(out, x, &p.wt, 1.0, beta, Threads::Pool),
        Arith::Bf16 { packed: None } => bf16::matmul(out, x, wt(), 1.0, beta, Threads::Pool),
    }
}

/// [`linear_forward`] in the given arithmetic.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_with(y: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, i: usize, o: usize, arith: Arith<'_>) {
    let y = &mut y[..n * o];
    let beta = match b {
        Some(b) => {
            for row in y.chunks_exact_mut(o) {
                row.copy_from_slice(b);
            }
            1.0
        }
        None => 0.0,
    };
    forward_product(y, x, w, n, i, o, beta, arith);
}

/// [`linear_backward`] in the given arithmetic.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_with(
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    i: usize,
    o: usize,
    accumulate_dx: bool,
    arith: Arith<'_>,
) {
    let dy = &dy[..n * o];
    if let Some(dx) = dx {
        let beta = if accumulate_dx { 1.0 } else { 0.0 };
        let (out, a) = (MatMut::new(&mut dx[..n * i], n, i), MatRef::new(dy, n, o));
        let wv = || MatRef::new(&w[..o * i], o, i);
        match arith {
            Arith::Fp32 => matmul(out, a, wv(), 1.0, beta, Threads::Pool),
            Arith::Bf16 { packed: Some(PackedWeight { w: Some(pw), .. }) } => bf16::matmul_packed(out, a, pw, 1.0, beta, Threads::Pool),
            Arith::Bf16 { .. } => bf16::matmul(out, a, wv(), 1.0, beta, Threads::Pool),
        }
    }
    if let Some(dw) = dw {
        let (out, dyt, xv) = (MatMut::new(&mut dw[..o * i], o, i), MatRef::new(dy, n, o).t(), MatRef::new(&x[..n * i], n, i));
        match arith {
            Arith::Fp32 => matmul(out, dyt, xv, 1.0, 1.0, Threads::Pool),
            Arith::Bf16 { .. } => bf16::matmul(out, dyt, xv, 1.0, 1.0, Threads::Pool),
        }
    }
    if let Some(db) = db {
        for row in dy.chunks_exact(o) {
            for (g, d) in db.iter_mut().zip(row) {
                *g += d;
            }
        }
    }
}

/// y[N,O] = x[N,I] · w[O,I]ᵀ + b[O].
pub fn linear_forward(y: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, i: usize, o: usize) {
    linear_forward_with(y, x, w, b, n, i, o, Arith::Fp32);
}
/// Backward of [`linear_forward`].
///
/// - `dx[N,I]`: set to dy · w (or added to it when `accumulate_dx`); `None` skips it.
/// - `dw[O,I]`: `+= dyᵀ · x`; `None` (a frozen weight) skips the product entirely.
/// - `db[O]`: `+= Σ_rows dy`; `None` skips it.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    i: usize,
    o: usize,
    accumulate_dx: bool,
) {
    linear_backward_with(dx, dw, db, dy, x, w, n, i, o, accumulate_dx, Arith::Fp32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gemm::calls;
    use crate::ops::testing::{check_gradient, dot, random_vec};

    const N: usize = 5;
    const I: usize = 7;
    const O: usize = 4;

    fn loss(x: &[f32], w: &[f32], b: &[f32], probe: &[f32]) -> f64 {
        let mut y = vec![0.0; N * O];
        linear_forward(&mut y, x, w, Some(b), N, I, O);
        dot(&y, probe)
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (x, w, b, probe) = (random_vec(N * I, 1), random_vec(O * I, 2), random_vec(O, 3), random_vec(N * O, 4));
        let (mut dx, mut dw, mut db) = (vec![0.0; N * I], vec![0.0; O * I], vec![0.0; O]);
        linear_backward(Some(&mut dx), Some(&mut dw), Some(&mut db), &probe, &x, &w, N, I, O, false);
        check_gradient("linear dx", &x, &dx, 1, |x| loss(x, &w, &b, &probe));
        check_gradient("linear dw", &w, &dw, 1, |w| loss(&x, w, &b, &probe));
        check_gradient("linear db", &b, &db, 1, |b| loss(&x, &w, b, &probe));
    }

    #[test]
    fn frozen_weight_issues_no_weight_gradient_product() {
        let (x, w, dy) = (random_vec(N * I, 1), random_vec(O * I, 2), random_vec(N * O, 4));
        let mut dx = vec![0.0; N * I];
        let before = calls();
        linear_backward(Some(&mut dx), None, None, &dy, &x, &w, N, I, O, false);
        assert_eq!(calls() - before, 1, "a frozen linear must issue only the input-gradient product");
        let mut dw = vec![0.0; O * I];
        let before = calls();
        linear_backward(Some(&mut dx), Some(&mut dw), None, &dy, &x, &w, N, I, O, false);
        assert_eq!(calls() - before, 2);
    }
}
