//! Next-token cross-entropy through the output layer, computed in chunks of rows so that the
//! [rows, V] logits never exist whole: logits = h · Wᵀ, loss = logsumexp(logits) − logits[target],
//! averaged over every target of the batch (transformers' causal-LM loss with labels −100 on the
//! masked positions), with the gradients of h and (when it trains) of W.
//!
//! Dimensions: M rows that have a target, C width, V vocabulary.

use super::bf16;
use super::fastmath::{self, exp};
use super::gemm::{matmul, MatMut, MatRef, Threads};
use super::linear::Arith;
use super::precision::PackedWeight;
use multiversion::multiversion;
use rayon::prelude::*;

/// Rows per chunk: 128 · 49,152 logits is 25 MB of scratch.
const CHUNK: usize = 128;

/// Sums over the rows of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmStats {
    /// Σ of the rows' cross-entropies (f64).
    pub loss_sum: f64,
    /// Rows with a target.
    pub count: usize,
    /// Rows whose most likely token is the target.
    pub correct: usize,
}

impl LmStats {
    /// Mean loss (0 without targets).
    pub fn mean(&self) -> f32 {
        if self.count == 0 {
            0.0
        } else {
            (self.loss_sum / self.count as f64) as f32
        }
    }

    /// Adds another call's sums.
    pub fn add(&mut self, o: LmStats) {
        self.loss_sum += o.loss_sum;
        self.count += o.count;
        self.correct += o.correct;
    }
}

/// One chunk's logits [R, V] → losses, and (when `grad_scale` is Some) the logits turned into
/// their gradient (softmax − onehot) · scale in place (without it they are left as scratch).
fn rows_loss(logits: &mut [f32], targets: &[u32], v: usize, grad_scale: Option<f32>) -> LmStats {
    let per: Vec<(f64, bool)> =
        logits.par_chunks_mut(v).zip(targets.par_iter()).map(|(row, &t)| row_loss(row, t as usize, grad_scale)).collect();
    LmStats { loss_sum: per.iter().map(|p| p.0).sum(), count: per.len(), correct: per.iter().filter(|p| p.1).count() }
}

/// Terms summed in f32 (16 lanes) before they join the f64 total.
const SUM_BLOCK: usize = 1024;

/// One row's cross-entropy against target `t` (logsumexp − logit, f64), and whether `t` is the
/// row's first most likely token; the row becomes exp(logit − max) (and, with `scale`, the
/// gradient (softmax − onehot) · scale). Vectorised: this runs over every logit of the
/// vocabulary, twice per row.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn row_loss(row: &mut [f32], t: usize, scale: Option<f32>) -> (f64, bool) {
    let max = fastmath::max(row);
    let target = row[t];
    let correct = target == max && row[..t].iter().all(|&x| x < max);
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let sum: f64 = row.chunks(SUM_BLOCK).map(|b| fastmath::sum(b) as f64).sum();
    if let Some(scale) = scale {
        let k = (scale as f64 / sum) as f32;
        for x in row.iter_mut() {
            *x *= k;
        }
        row[t] -= scale;
    }
    (max as f64 + sum.ln() - target as f64, correct)
}

/// logits[R,V] = h[R,C] · w[V,C]ᵀ in the given arithmetic.
fn logits_of(logits: &mut [f32], h: MatRef<'_>, w: &[f32], c: usize, v: usize, arith: Arith<'_>) {
    let (out, wt) = (MatMut::new(logits, h.rows, v), MatRef::new(&w[..v * c], v, c).t());
    match arith {
        Arith::Fp32 => matmul(out, h, wt, 1.0, 0.0, Threads::Pool),
        Arith::Bf16 { packed: Some(p) } => bf16::matmul_packed(out, h, &p.wt, 1.0, 0.0, Threads::Pool),
        Arith::Bf16 { packed: None } => bf16::matmul(out, h, wt, 1.0, 0.0, Threads::Pool),
    }
}

/// Loss of `h[M,C]` against `targets[M]` through `w[V,C]`; with `dh`, also `dh[M,C]` = ∂(Σ loss ·
/// `grad_scale`)/∂h (the caller passes 1 / the batch's target count to get the mean's gradient).
#[allow(clippy::too_many_arguments)]
pub fn lm_loss(
    h: &[f32],
    w: &[f32],
    targets: &[u32],
    c: usize,
    v: usize,
    grad_scale: f32,
    mut dh: Option<&mut [f32]>,
    scratch: &mut Vec<f32>,
    arith: Arith<'_>,
) -> LmStats {
    let m = targets.len();
    let mut stats = LmStats::default();
    for start in (0..m).step_by(CHUNK) {
        let r = CHUNK.min(m - start);
        if scratch.len() < r * v {
            scratch.resize(r * v, 0.0);
        }
        let logits = &mut scratch[..r * v];
        let hc = MatRef::new(&h[start * c..(start + r) * c], r, c);
        logits_of(logits, hc, w, c, v, arith);
        let want_grad = dh.is_some();
        stats.add(rows_loss(logits, &targets[start..start + r], v, want_grad.then_some(grad_scale)));
        if let Some(dh) = dh.as_deref_mut() {
            let (out, a, wv) =
                (MatMut::new(&mut dh[start * c..(start + r) * c], r, c), MatRef::new(logits, r, v), MatRef::new(&w[..v * c], v, c));
            match arith {
                Arith::Fp32 => matmul(out, a, wv, 1.0, 0.0, Threads::Pool),
                Arith::Bf16 { packed: Some(PackedWeight { w: Some(pw), .. }) } => bf16::matmul_packed(out, a, pw, 1.0, 0.0, Threads::Pool),
                Arith::Bf16 { .. } => bf16::matmul(out, a, wv, 1.0, 0.0, Threads::Pool),
            }
        }
    }
    stats
}

/// The output weight's gradient: `dw[V,C] += Σ dlogitsᵀ · h`, recomputing each chunk's logits
/// (only full fine-tuning needs it, so the common LoRA step pays nothing).
#[allow(clippy::too_many_arguments)]
pub fn lm_weight_grad(
    dw: &mut [f32],
    h: &[f32],
    w: &[f32],
    targets: &[u32],
    c: usize,
    v: usize,
    grad_scale: f32,
    scratch: &mut Vec<f32>,
    arith: Arith<'_>,
) {
    let m = targets.len();
    for start in (0..m).step_by(CHUNK) {
        let r = CHUNK.min(m - start);
        if scratch.len() < r * v {
            scratch.resize(r * v, 0.0);
        }
        let logits = &mut scratch[..r * v];
        let hc = MatRef::new(&h[start * c..(start + r) * c], r, c);
        logits_of(logits, hc, w, c, v, arith);
        rows_loss(logits, &targets[start..start + r], v, Some(grad_scale));
        let out = MatMut::new(&mut dw[..v * c], v, c);
        match arith {
            Arith::Fp32 => matmul(out, MatRef::new(logits, r, v).t(), hc, 1.0, 1.0, Threads::Pool),
            Arith::Bf16 { .. } => bf16::matmul(out, MatRef::new(logits, r, v).t(), hc, 1.0, 1.0, Threads::Pool),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::loss::cross_entropy;
    use crate::ops::testing::{check_gradient, random_vec};

    #[test]
    fn equals_cross_entropy_of_the_full_logits_and_its_gradients() {
        let (m, c, v) = (CHUNK + 5, 6, 11);
        let (h, w) = (random_vec(m * c, 1), random_vec(v * c, 2));
        let targets: Vec<u32> = (0..m).map(|i| (i * 7 % v) as u32).collect();
        let mut logits = vec![0.0; m * v];
        crate::ops::linear::linear_forward(&mut logits, &h, &w, None, m, c, v);
        let labels: Vec<usize> = targets.iter().map(|t| *t as usize).collect();
        let mut dl = vec![0.0; m * v];
        let want = cross_entropy(&mut dl, &logits, &labels, v);
        let (mut dh, mut dw, mut scratch) = (vec![0.0; m * c], vec![0.0; v * c], Vec::new());
        let s = lm_loss(&h, &w, &targets, c, v, 1.0 / m as f32, Some(&mut dh), &mut scratch, Arith::Fp32);
        assert!((s.mean() - want).abs() < 1e-5, "{} vs {want}", s.mean());
        assert_eq!(s.count, m);
        lm_weight_grad(&mut dw, &h, &w, &targets, c, v, 1.0 / m as f32, &mut scratch, Arith::Fp32);
        let f = |h: &[f32], w: &[f32]| lm_loss(h, w, &targets, c, v, 1.0, None, &mut Vec::new(), Arith::Fp32).mean() as f64;
        check_gradient("lm dh", &h, &dh, 7, |h| f(h, &w));
        check_gradient("lm dw", &w, &dw, 3, |w| f(&h, w));
    }

    #[test]
    fn a_row_over_a_large_vocabulary_matches_the_f64_reference() {
        // 49,152 logits as SmolLM2's vocabulary has: the vectorised f32 exponentials summed in
        // blocks give the f64 loss and softmax within f32 rounding.
        let v = 49_152;
        let row: Vec<f32> = random_vec(v, 9).iter().map(|x| x * 12.0).collect();
        let t = 777;
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        let want = max + z.ln() - row[t] as f64;
        let mut got_row = row.clone();
        let (loss, _) = row_loss(&mut got_row, t, Some(0.5));
        assert!((loss - want).abs() < 1e-5 * want.abs().max(1.0), "{loss} vs {want}");
        for (j, (&g, &x)) in got_row.iter().zip(&row).enumerate() {
            let p = (x as f64 - max).exp() / z * 0.5 - if j == t { 0.5 } else { 0.0 };
            assert!((g as f64 - p).abs() < 1e-6 * p.abs().max(1e-3), "logit {j}: {g} vs {p}");
        }
    }

    #[test]
    fn a_target_tied_with_an_earlier_maximum_is_not_counted_correct() {
        // Ties go to the first most likely token, as an argmax does.
        let mut row = vec![0.0, 3.0, 1.0, 3.0];
        assert!(!row_loss(&mut row.clone(), 3, None).1);
        assert!(row_loss(&mut row, 1, None).1);
        let mut other = vec![0.0, 3.0, 1.0, 2.0];
        assert!(!row_loss(&mut other, 3, None).1);
    }
}
