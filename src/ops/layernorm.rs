//! LayerNorm over the last dimension: out = (x - mean) · rstd · w + b.
//!
//! Dimensions: N rows, C features. Forward caches `mean[N]` and `rstd[N]` for backward.

use multiversion::multiversion;
use rayon::prelude::*;

/// Rows per parallel task for row-wise kernels.
pub(crate) const ROWS_PER_TASK: usize = 16;

/// One row: returns (mean, 1/std) and writes the normalised, scaled, shifted row.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn forward_row(o: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) -> (f32, f32) {
    let c = x.len() as f32;
    let mu = x.iter().sum::<f32>() / c;
    let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / c;
    let rs = 1.0 / (var + eps).sqrt();
    for ((o, xv), (wv, bv)) in o.iter_mut().zip(x).zip(w.iter().zip(b)) {
        *o = (xv - mu) * rs * wv + bv;
    }
    (mu, rs)
}

/// One row of the input gradient.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn backward_row(dx: &mut [f32], dout: &[f32], x: &[f32], mu: f32, rs: f32, w: &[f32], accumulate: bool) {
    let c = x.len() as f32;
    let (mut sum_g, mut sum_gx) = (0.0f32, 0.0f32);
    for ((d, xv), wv) in dout.iter().zip(x).zip(w) {
        let g = d * wv;
        sum_g += g;
        sum_gx += g * (xv - mu) * rs;
    }
    let (mg, mgx) = (sum_g / c, sum_gx / c);
    for (((dxv, d), xv), wv) in dx.iter_mut().zip(dout).zip(x).zip(w) {
        let v = rs * (d * wv - mg - (xv - mu) * rs * mgx);
        *dxv = if accumulate { *dxv + v } else { v };
    }
}

/// Forward: writes `out[N,C]`, `mean[N]`, `rstd[N]`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    out[..n * c]
        .par_chunks_mut(c)
        .zip(x[..n * c].par_chunks(c))
        .zip(mean[..n].par_iter_mut().zip(rstd[..n].par_iter_mut()))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, xr), (m, r))| (*m, *r) = forward_row(o, xr, w, b, eps));
}

/// Backward: `dx` is set (or added to when `accumulate_dx`); `dw`/`db` are accumulated when present.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dx: &mut [f32],
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    accumulate_dx: bool,
) {
    dx[..n * c]
        .par_chunks_mut(c)
        .zip(dout[..n * c].par_chunks(c))
        .zip(x[..n * c].par_chunks(c))
        .zip(mean[..n].par_iter().zip(rstd[..n].par_iter()))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(((dxr, dor), xr), (mu, rs))| backward_row(dxr, dor, xr, *mu, *rs, w, accumulate_dx));
    if dw.is_none() && db.is_none() {
        return;
    }
    let (mut dw, mut db) = (dw, db);
    for row in 0..n {
        let (mu, rs) = (mean[row], rstd[row]);
        let dor = &dout[row * c..(row + 1) * c];
        if let Some(dw) = dw.as_deref_mut() {
            let xr = &x[row * c..(row + 1) * c];
            for ((g, d), xv) in dw.iter_mut().zip(dor).zip(xr) {
                *g += d * (xv - mu) * rs;
            }
        }
        if let Some(db) = db.as_deref_mut() {
            for (g, d) in db.iter_mut().zip(dor) {
                *g += d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_gradient, dot, random_vec};

    const N: usize = 3;
    const C: usize = 8;

    fn loss(x: &[f32], w: &[f32], b: &[f32], probe: &[f32]) -> f64 {
        let (mut out, mut m, mut r) = (vec![0.0; N * C], vec![0.0; N], vec![0.0; N]);
        layernorm_forward(&mut out, &mut m, &mut r, x, w, b, N, C, 1e-5);
        dot(&out, probe)
    }

    #[test]
    fn forward_normalises_rows() {
        let x = random_vec(N * C, 1);
        let (w, b) = (vec![1.0; C], vec![0.0; C]);
        let (mut out, mut m, mut r) = (vec![0.0; N * C], vec![0.0; N], vec![0.0; N]);
        layernorm_forward(&mut out, &mut m, &mut r, &x, &w, &b, N, C, 1e-12);
        for row in out.chunks(C) {
            let mu: f32 = row.iter().sum::<f32>() / C as f32;
            let var: f32 = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / C as f32;
            assert!(mu.abs() < 1e-6 && (var - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let x = random_vec(N * C, 1);
        let w: Vec<f32> = random_vec(C, 2).iter().map(|v| 1.0 + 0.5 * v).collect();
        let (b, probe) = (random_vec(C, 3), random_vec(N * C, 4));
        let (mut out, mut m, mut r) = (vec![0.0; N * C], vec![0.0; N], vec![0.0; N]);
        layernorm_forward(&mut out, &mut m, &mut r, &x, &w, &b, N, C, 1e-5);
        let (mut dx, mut dw, mut db) = (vec![0.0; N * C], vec![0.0; C], vec![0.0; C]);
        layernorm_backward(&mut dx, Some(&mut dw), Some(&mut db), &probe, &x, &m, &r, &w, N, C, false);
        check_gradient("layernorm dx", &x, &dx, 1, |x| loss(x, &w, &b, &probe));
        check_gradient("layernorm dw", &w, &dw, 1, |w| loss(&x, w, &b, &probe));
        check_gradient("layernorm db", &b, &db, 1, |b| loss(&x, &w, b, &probe));
    }
}
