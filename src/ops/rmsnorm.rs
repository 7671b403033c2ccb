//! RMSNorm over the last dimension (Llama, Qwen2, Mistral): out = x · rstd · w with
//! rstd = 1 / √(mean(x²) + ε).
//!
//! Dimensions: N rows, C features. Forward caches `rstd[N]` for backward.

use super::layernorm::ROWS_PER_TASK;
use multiversion::multiversion;
use rayon::prelude::*;

/// One row: returns 1/rms and writes the normalised, scaled row.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
fn forward_row(o: &mut [f32], x: &[f32], w: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let rs = 1.0 / (ms + eps).sqrt();
    for ((o, xv), wv) in o.iter_mut().zip(x).zip(w) {
        *o = wv * (xv * rs);
    }
    rs
}

/// One row of the input gradient: dx = rs · (g − y · mean(g · y)) with g = dout · w, y = x · rs.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
fn backward_row(dx: &mut [f32], dout: &[f32], x: &[f32], rs: f32, w: &[f32], accumulate: bool) {
    let c = x.len() as f32;
    let dot: f32 = dout.iter().zip(x).zip(w).map(|((d, xv), wv)| d * wv * xv * rs).sum();
    let m = dot / c;
    for (((dxv, d), xv), wv) in dx.iter_mut().zip(dout).zip(x).zip(w) {
        let y = xv * rs;
        let v = rs * (d * wv - y * m);
        *dxv = if accumulate { *dxv + v } else { v };
    }
}

/// Forward: writes `out[N,C]` and `rstd[N]`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward(out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], n: usize, c: usize, eps: f32) {
    out[..n * c]
        .par_chunks_mut(c)
        .zip(x[..n * c].par_chunks(c))
        .zip(rstd[..n].par_iter_mut())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, xr), r)| *r = forward_row(o, xr, w, eps));
}

/// Backward: `dx[N,C]` is set (or added to when `accumulate_dx`); `dw[C]` is accumulated when present.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dx: &mut [f32],
    dw: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
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
        .zip(rstd[..n].par_iter())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(((dxr, dor), xr), rs)| backward_row(dxr, dor, xr, *rs, w, accumulate_dx));
    if let Some(dw) = dw {
        for row in 0..n {
            let rs = rstd[row];
            let (dor, xr) = (&dout[row * c..(row + 1) * c], &x[row * c..(row + 1) * c]);
            for ((g, d), xv) in dw.iter_mut().zip(dor).zip(xr) {
                *g += d * xv * rs;
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

    fn loss(x: &[f32], w: &[f32], probe: &[f32]) -> f64 {
        let (mut out, mut r) = (vec![0.0; N * C], vec![0.0; N]);
        rmsnorm_forward(&mut out, &mut r, x, w, N, C, 1e-5);
        dot(&out, probe)
    }

    #[test]
    fn forward_gives_unit_rms_rows() {
        let x = random_vec(N * C, 1);
        let (mut out, mut r) = (vec![0.0; N * C], vec![0.0; N]);
        rmsnorm_forward(&mut out, &mut r, &x, &[1.0; C], N, C, 0.0);
        for row in out.chunks(C) {
            let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / C as f32;
            assert!((ms - 1.0).abs() < 1e-5, "{ms}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let x = random_vec(N * C, 1);
        let w: Vec<f32> = random_vec(C, 2).iter().map(|v| 1.0 + 0.5 * v).collect();
        let probe = random_vec(N * C, 4);
        let (mut out, mut r) = (vec![0.0; N * C], vec![0.0; N]);
        rmsnorm_forward(&mut out, &mut r, &x, &w, N, C, 1e-5);
        let (mut dx, mut dw) = (vec![0.0; N * C], vec![0.0; C]);
        rmsnorm_backward(&mut dx, Some(&mut dw), &probe, &x, &r, &w, N, C, false);
        check_gradient("rmsnorm dx", &x, &dx, 1, |x| loss(x, &w, &probe));
        check_gradient("rmsnorm dw", &w, &dw, 1, |w| loss(&x, w, &probe));
        // accumulate adds to what is there
        let mut acc = vec![1.0; N * C];
        rmsnorm_backward(&mut acc, None, &probe, &x, &r, &w, N, C, true);
        assert!(acc.iter().zip(&dx).all(|(a, d)| (a - 1.0 - d).abs() < 1e-6));
    }
}
