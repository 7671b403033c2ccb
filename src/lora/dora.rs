//! DoRA (weight-decomposed low-rank adaptation) exactly as PEFT's `DoraLinearLayer` computes it.
//!
//! With W₀ [O, I], ΔW = scale·(A·B)ᵀ and the trainable magnitude m [O] (PEFT's
//! `lora_magnitude_vector`, initialised to the row norms ‖W₀ + ΔW‖ at the start), the norm
//! n = ‖W₀ + ΔW‖ per output row is *detached* (no gradient flows through it, DoRA paper §4.3)
//! and g = m / n:
//!
//! - without LoRA dropout: y = g ⊙ (x·W₀ᵀ + scale·(x·A)·B) + b;
//! - with it (training): y = x·W₀ᵀ + b + (g − 1) ⊙ (x_d·W₀ᵀ) + g ⊙ scale·(x_d·A)·B, x_d = dropout(x)
//!   (PEFT then recomputes the base product on the dropped-out input).
//!
//! The norms are computed once per forward call per layer from W₀·A [O, r] and AᵀA [r, r]
//! (‖W₀ⱼ‖² + 2·scale·⟨W₀ⱼ, ΔWⱼ⟩ + scale²·‖ΔWⱼ‖², in f64), never per token and without
//! materialising ΔW. Merging gives W′ = g ⊙ (W₀ + ΔW) row-wise; unmerging divides by the g of the
//! merge (PEFT caches that norm too). Raschka's article normalises per input column and keeps the
//! norm in the graph; this is PEFT's version, the one adapters travel with.
//!
//! Dimensions: N rows, I in, O out, r rank. The per-call cache (the caller's LoRA cache vector)
//! is laid out [h: N·r][z: N·O][n: O][g: O][W₀·A: O·r][AᵀA: r·r], where z = the branch output
//! before g. Nothing is allocated per call once the caller's buffers have grown.

use super::layer::{grow, LoraLayer, LoraScratch};
use crate::ops::dropout::Dropout;
use crate::ops::gemm::{matmul, MatMut, MatRef, Threads};
use crate::ops::linear::{linear_backward_with, linear_forward_with, Arith};
use crate::param::Param;
use rayon::prelude::*;

/// Vectorised row kernels (AVX2 / AVX-512 chosen at run time, as the other element-wise kernels).
mod rows {
    use multiversion::multiversion;

    /// Σ v² in f64, with eight independent accumulators (so it vectorises).
    #[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
    pub fn sum_squares(v: &[f32]) -> f64 {
        let mut acc = [0.0f64; 8];
        let chunks = v.chunks_exact(8);
        let tail: f64 = chunks.remainder().iter().map(|x| *x as f64 * *x as f64).sum();
        for c in chunks {
            acc.iter_mut().zip(c).for_each(|(a, x)| *a += *x as f64 * *x as f64);
        }
        acc.iter().sum::<f64>() + tail
    }

    /// y = g ⊙ z + b, one row.
    #[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
    pub fn scale_bias(y: &mut [f32], z: &[f32], g: &[f32], b: Option<&[f32]>) {
        match b {
            Some(b) => y.iter_mut().zip(z.iter().zip(g.iter().zip(b))).for_each(|(y, (z, (g, b)))| *y = g * z + b),
            None => y.iter_mut().zip(z.iter().zip(g)).for_each(|(y, (z, g))| *y = g * z),
        }
    }

    /// y += g ⊙ z, one row.
    #[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
    pub fn add_scaled(y: &mut [f32], z: &[f32], g: &[f32]) {
        y.iter_mut().zip(z.iter().zip(g)).for_each(|(y, (z, g))| *y += g * z);
    }

    /// d = (g − c) ⊙ dy, one row.
    #[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
    pub fn scale_grad(d: &mut [f32], dy: &[f32], g: &[f32], c: f32) {
        d.iter_mut().zip(dy.iter().zip(g)).for_each(|(d, (dy, g))| *d = (g - c) * dy);
    }

    /// acc += dy ⊙ z in f64, one row segment.
    #[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
    pub fn dot_cols(acc: &mut [f64], dy: &[f32], z: &[f32]) {
        acc.iter_mut().zip(dy.iter().zip(z)).for_each(|(a, (d, z))| *a += *d as f64 * *z as f64);
    }
}

/// DoRA's trainable magnitude.
#[derive(Clone, Debug)]
pub struct Dora {
    /// m [O] (`<module>.lora_magnitude_vector`).
    pub magnitude: Param,
    /// The norms n [O] used by the merge, kept for the unmerge.
    pub merged_norm: Option<Vec<f32>>,
}

impl Dora {
    /// A trainable magnitude initialised to the row norms of `w` + ΔW (PEFT's `update_layer`).
    pub fn new(module: &str, w: &[f32], lora: &LoraLayer) -> Dora {
        let o = lora.b.shape[1];
        let mut magnitude = Param::zeros(format!("{module}.lora_magnitude_vector"), &[o]);
        magnitude.data = norms(w, lora);
        magnitude.set_trainable(true);
        Dora { magnitude, merged_norm: None }
    }
}

/// Length of the forward cache of a DoRA layer for `n` rows.
pub fn cache_len(n: usize, r: usize, o: usize) -> usize {
    n * r + n * o + 2 * o + o * r + r * r
}

/// The row norms ‖W₀ + ΔW‖ [O] (allocating; for initialisation and merging).
pub fn norms(w: &[f32], lora: &LoraLayer) -> Vec<f32> {
    let (r, o) = (lora.rank(), lora.b.shape[1]);
    let (mut n, mut wa, mut gram) = (vec![0.0; o], vec![0.0; o * r], vec![0.0; r * r]);
    row_norms(&mut n, &mut wa, &mut gram, w, lora);
    n
}

/// n[O] = ‖W₀ⱼ + ΔWⱼ‖ per row, with scratch `wa` [O, r] and `gram` [r, r].
pub fn row_norms(n: &mut [f32], wa: &mut [f32], gram: &mut [f32], w: &[f32], lora: &LoraLayer) {
    let (i, r, o) = (lora.a.shape[0], lora.rank(), lora.b.shape[1]);
    let a = MatRef::new(&lora.a.data, i, r);
    matmul(MatMut::new(&mut wa[..o * r], o, r), MatRef::new(&w[..o * i], o, i), a, 1.0, 0.0, Threads::Pool);
    matmul(MatMut::new(&mut gram[..r * r], r, r), a.t(), a, 1.0, 0.0, Threads::Pool);
    let (s, b, wa, gram) = (lora.scale as f64, &lora.b.data, &wa[..o * r], &gram[..r * r]);
    n[..o].par_iter_mut().zip(w[..o * i].par_chunks_exact(i)).enumerate().for_each(|(j, (nj, row))| {
        let ww = rows::sum_squares(row);
        let cross: f64 = (0..r).map(|t| wa[j * r + t] as f64 * b[t * o + j] as f64).sum();
        let mut quad = 0.0f64;
        for t in 0..r {
            let bt = b[t * o + j] as f64;
            quad += bt * (0..r).map(|u| gram[t * r + u] as f64 * b[u * o + j] as f64).sum::<f64>();
        }
        *nj = (ww + 2.0 * s * cross + s * s * quad).max(0.0).sqrt() as f32;
    });
}

/// The base layer a DoRA update sits on: W₀ [O, I], its bias [O], and the arithmetic of its
/// products (the layer's precision: in bf16 both base products x·W₀ᵀ round to bf16; the norms,
/// g and the LoRA branch stay f32).
#[derive(Clone, Copy)]
pub struct Base<'a> {
    /// W₀ [O, I].
    pub w: &'a [f32],
    /// The bias [O], when the layer has one.
    pub bias: Option<&'a [f32]>,
    /// How the products with W₀ are computed.
    pub arith: Arith<'a>,
}

/// What [`backward`] reads and writes besides the parameters.
pub struct Grads<'a> {
    /// The input gradient [N, I], when wanted: written, or added to with `accumulate_dx`.
    pub dx: Option<&'a mut [f32]>,
    /// Whether `dx` is added to rather than overwritten.
    pub accumulate_dx: bool,
    /// The output gradient [N, O].
    pub dy: &'a [f32],
    /// The forward input [N, I].
    pub x: &'a [f32],
    /// The cache [`forward`] filled.
    pub cache: &'a [f32],
    /// The arithmetic of the products with W₀ (as in the forward).
    pub arith: Arith<'a>,
}

/// Forward of a DoRA linear into `y` [N,O] (see the module doc), filling `cache`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    y: &mut [f32],
    cache: &mut Vec<f32>,
    x: &[f32],
    x_drop: &mut Vec<f32>,
    base: Base<'_>,
    lora: &LoraLayer,
    n: usize,
    drop: Dropout,
) {
    let Base { w, bias, arith } = base;
    let dora = lora.dora.as_ref().expect("a DoRA layer");
    let (i, r, o) = (lora.a.shape[0], lora.rank(), lora.b.shape[1]);
    grow(cache, cache_len(n, r, o));
    let (h, rest) = cache.split_at_mut(n * r);
    let (z, rest) = rest.split_at_mut(n * o);
    let (norm, rest) = rest.split_at_mut(o);
    let (g, rest) = rest.split_at_mut(o);
    let (wa, gram) = rest.split_at_mut(o * r);
    row_norms(norm, wa, gram, w, lora);
    g.iter_mut().zip(dora.magnitude.data.iter().zip(norm.iter())).for_each(|(g, (m, nj))| *g = m / nj);
    let g: &[f32] = g;
    let y = &mut y[..n * o];
    if drop.active() {
        grow(x_drop, n * i);
        let xd = &mut x_drop[..n * i];
        xd.copy_from_slice(&x[..n * i]);
        drop.apply(xd, 0);
        linear_forward_with(y, x, w, bias, n, i, o, arith);
        linear_forward_with(z, xd, w, None, n, i, o, arith);
        y.par_chunks_exact_mut(o).zip(z.par_chunks_exact(o)).for_each(|(yr, zr)| yr.iter_mut().zip(zr).for_each(|(v, u)| *v -= u));
        lora.forward(z, h, xd, &mut [], n, Dropout::OFF);
        y.par_chunks_exact_mut(o).zip(z.par_chunks_exact(o)).for_each(|(yr, zr)| rows::add_scaled(yr, zr, g));
    } else {
        linear_forward_with(z, x, w, None, n, i, o, arith);
        lora.forward(z, h, x, &mut [], n, Dropout::OFF);
        y.par_chunks_exact_mut(o).zip(z.par_chunks_exact(o)).for_each(|(yr, zr)| rows::scale_bias(yr, zr, g, bias));
    }
}

/// Backward of [`forward`]: writes (or, with `accumulate_dx`, adds) the input gradient into
/// `dx` when given, and accumulates the gradients of m, A, B and of W and b when they train.
pub fn backward(
    grads: Grads<'_>,
    scratch: &mut LoraScratch,
    weight: &mut Param,
    bias: Option<&mut Param>,
    lora: &mut LoraLayer,
    n: usize,
    drop: Dropout,
) {
    let Grads { dx, accumulate_dx, dy, x, cache, arith } = grads;
    let (i, r, o) = (lora.a.shape[0], lora.rank(), lora.b.shape[1]);
    let dy = &dy[..n * o];
    let h = &cache[..n * r];
    let z = &cache[n * r..n * r + n * o];
    let norm = &cache[n * r + n * o..n * r + n * o + o];
    let g = &cache[n * r + n * o + o..n * r + n * o + 2 * o];
    let dora = lora.dora.as_mut().expect("a DoRA layer");
    if let Some(gm) = dora.magnitude.grad.as_deref_mut() {
        // dm_j = Σ_rows dy·z / n_j (n detached), by blocks of columns (contiguous row segments).
        const W: usize = 64;
        gm.par_chunks_mut(W).zip(norm.par_chunks(W)).enumerate().for_each(|(blk, (gmb, nb))| {
            let j0 = blk * W;
            let mut acc = [0.0f64; W];
            let w = gmb.len();
            for row in 0..n {
                rows::dot_cols(&mut acc[..w], &dy[row * o + j0..row * o + j0 + w], &z[row * o + j0..row * o + j0 + w]);
            }
            gmb.iter_mut().zip(acc.iter().zip(nb)).for_each(|(gv, (a, nj))| *gv += (*a / *nj as f64) as f32);
        });
    }
    scratch.ensure(n, i, r);
    grow(&mut scratch.dz, n * o);
    let LoraScratch { dh, x: xs, dz, t } = scratch;
    let dz = &mut dz[..n * o];
    let mut dx = dx;
    if drop.active() {
        // Direct path x·W₀ᵀ + b.
        linear_backward_with(
            dx.as_deref_mut(),
            weight.grad.as_deref_mut(),
            bias.and_then(|b| b.grad.as_deref_mut()),
            dy,
            x,
            &weight.data,
            n,
            i,
            o,
            accumulate_dx,
            arith,
        );
        // The dropped-out base branch (g − 1) ⊙ (x_d·W₀ᵀ): e = (g − 1) ⊙ dy.
        dz.par_chunks_exact_mut(o).zip(dy.par_chunks_exact(o)).for_each(|(er, dr)| rows::scale_grad(er, dr, g, 1.0));
        if dx.is_some() || weight.grad.is_some() {
            grow(t, n * i);
            let xd = &mut xs[..n * i];
            xd.copy_from_slice(&x[..n * i]);
            drop.apply(xd, 0);
            let want_dx = dx.is_some();
            linear_backward_with(
                want_dx.then_some(&mut t[..n * i]),
                weight.grad.as_deref_mut(),
                None,
                dz,
                xd,
                &weight.data,
                n,
                i,
                o,
                false,
                arith,
            );
            if let Some(dx) = dx.as_deref_mut() {
                let t = &mut t[..n * i];
                drop.apply(t, 0);
                dx[..n * i].iter_mut().zip(t.iter()).for_each(|(d, v)| *d += v);
            }
        }
        // dz = g ⊙ dy = e + dy, into the LoRA branch (which regenerates x_d itself).
        dz.iter_mut().zip(dy).for_each(|(e, d)| *e += d);
        lora.backward(dx, dz, x, h, dh, xs, n, drop);
    } else {
        dz.par_chunks_exact_mut(o).zip(dy.par_chunks_exact(o)).for_each(|(zr, dr)| rows::scale_grad(zr, dr, g, 0.0));
        linear_backward_with(dx.as_deref_mut(), weight.grad.as_deref_mut(), None, dz, x, &weight.data, n, i, o, accumulate_dx, arith);
        if let Some(gb) = bias.and_then(|b| b.grad.as_deref_mut()) {
            for row in dy.chunks_exact(o) {
                gb.iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
        }
        lora.backward(dx, dz, x, h, dh, xs, n, Dropout::OFF);
    }
}

/// The merged weight g ⊙ (W₀ + ΔW) [O, I] and the norms n [O] it used.
pub fn merged_weight(w: &[f32], lora: &LoraLayer) -> (Vec<f32>, Vec<f32>) {
    let dora = lora.dora.as_ref().expect("a DoRA layer");
    let i = lora.a.shape[0];
    let n = norms(w, lora);
    let mut out = lora.delta_weight();
    out.par_chunks_exact_mut(i).zip(w.par_chunks_exact(i)).enumerate().for_each(|(j, (row, wr))| {
        let g = dora.magnitude.data[j] / n[j];
        row.iter_mut().zip(wr).for_each(|(d, w)| *d = g * (w + *d));
    });
    (out, n)
}

/// Undoes [`merged_weight`]: W₀ = W′ / g − ΔW with the merge's norms `n`.
pub fn unmerged_weight(merged: &[f32], lora: &LoraLayer, n: &[f32]) -> Vec<f32> {
    let dora = lora.dora.as_ref().expect("a DoRA layer");
    let i = lora.a.shape[0];
    let mut out = lora.delta_weight();
    out.par_chunks_exact_mut(i).zip(merged.par_chunks_exact(i)).enumerate().for_each(|(j, (row, wr))| {
        let g = dora.magnitude.data[j] / n[j];
        row.iter_mut().zip(wr).for_each(|(d, w)| *d = w / g - *d);
    });
    out
}

#[cfg(test)]
#[path = "dora_tests.rs"]
mod tests;
