//! Multi-head attention core over packed variable-length sequences:
//! ctx = dropout(softmax(Q·Kᵀ/√D)) · V, per sequence and head.
//!
//! Dimensions: N packed key rows (all sequences back to back), Nq query rows, C = H·D features,
//! H heads of width D. An [`AttnSpan`] says where a sequence's queries and keys are: for self-
//! attention both are the sequence's rows; for the last layer (where only [CLS] matters) a
//! sequence has one query row. Only the first `k_valid` key rows are attended to (the rest are
//! padding: no attention, no gradient). Probabilities are cached for backward in one buffer of
//! Σ H·q_len·k_valid floats.

use super::dropout::Dropout;
use super::fastmath::exp;
use super::gemm::{matmul, MatMut, MatRef, Threads};
use multiversion::multiversion;
use rayon::prelude::*;

/// One sequence of a packed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpan {
    /// First row of the sequence in the packed token matrix.
    pub start: usize,
    /// Rows of the sequence (its padded length; padding rows still get outputs).
    pub len: usize,
    /// Leading rows that are real tokens and may be attended to.
    pub valid: usize,
}

/// Where one sequence's queries and keys are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnSpan {
    /// First query row.
    pub q_start: usize,
    /// Query rows.
    pub q_len: usize,
    /// First key row.
    pub k_start: usize,
    /// Key rows that are real tokens.
    pub k_valid: usize,
    /// All key rows of the sequence (padding included): key gradients of padding rows are zeroed.
    pub k_total: usize,
}

impl AttnSpan {
    /// Self-attention over a sequence.
    pub fn full(s: &SeqSpan) -> Self {
        AttnSpan { q_start: s.start, q_len: s.len, k_start: s.start, k_valid: s.valid, k_total: s.len }
    }

    /// Only the sequence's first row ([CLS]) as query, stored at row `q_row` of the query matrix.
    pub fn cls(s: &SeqSpan, q_row: usize) -> Self {
        AttnSpan { q_start: q_row, q_len: 1, k_start: s.start, k_valid: s.valid, k_total: s.len }
    }
}

/// Size of the probability cache for `spans` with `heads` heads.
pub fn probs_len(spans: &[AttnSpan], heads: usize) -> usize {
    spans.iter().map(|s| heads * s.q_len * s.k_valid).sum()
}

/// A raw pointer that may cross threads; each task writes a disjoint block through it.
#[derive(Clone, Copy)]
struct Shared(*mut f32, usize);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn new(s: &mut [f32]) -> Self {
        Shared(s.as_mut_ptr(), s.len())
    }
    /// SAFETY: callers guarantee that concurrent tasks touch disjoint elements.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1) }
    }
}

/// In-place softmax of each row of `p` (rows of `cols` values).
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
fn softmax_rows(p: &mut [f32], cols: usize) {
    for row in p.chunks_exact_mut(cols) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
        let mut sum = 0.0f32;
        for x in row.iter_mut() {
            *x = exp(*x - max);
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// Softmax backward in place: g ← P ∘ (g − rowsum(g ∘ P)) · scale.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
fn softmax_backward_rows(g: &mut [f32], p: &[f32], cols: usize, scale: f32) {
    for (gr, pr) in g.chunks_exact_mut(cols).zip(p.chunks_exact(cols)) {
        let dot: f32 = gr.iter().zip(pr).map(|(a, b)| a * b).sum();
        for (x, pv) in gr.iter_mut().zip(pr) {
            *x = pv * (*x - dot) * scale;
        }
    }
}

/// The (sequence, head) tasks with the offset of each task's probability block.
fn tasks(spans: &[AttnSpan], heads: usize) -> Vec<(AttnSpan, usize, usize)> {
    let mut out = Vec::with_capacity(spans.len() * heads);
    let mut off = 0;
    for s in spans {
        for h in 0..heads {
            out.push((*s, h, off));
            off += s.q_len * s.k_valid;
        }
    }
    out
}

/// Forward. Writes `ctx[Nq,C]` and `probs` (pre-dropout softmax); `scratch` (same size as
/// `probs`) receives the dropped-out probabilities when `dropout` is active.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    ctx: &mut [f32],
    probs: &mut [f32],
    scratch: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    spans: &[AttnSpan],
    heads: usize,
    c: usize,
    dropout: Dropout,
) {
    let d = c / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let (ctx_p, probs_p, scratch_p) = (Shared::new(ctx), Shared::new(probs), Shared::new(scratch));
    tasks(spans, heads).into_par_iter().for_each(|(s, h, off)| {
        // SAFETY: task (s, h) writes probs/scratch[off..off+q_len*k_valid] and the query rows of
        // s in columns of head h: disjoint from every other task.
        let (ctx, probs, scratch) = unsafe { (ctx_p.slice(), probs_p.slice(), scratch_p.slice()) };
        let (qb, kb, n) = (s.q_start * c, s.k_start * c, s.q_len * s.k_valid);
        let p = &mut probs[off..off + n];
        let qh = MatRef::cols_of(&q[qb..], s.q_len, c, h * d, d);
        let kh = MatRef::cols_of(&k[kb..], s.k_valid, c, h * d, d);
        let vh = MatRef::cols_of(&v[kb..], s.k_valid, c, h * d, d);
        matmul(MatMut::new(p, s.q_len, s.k_valid), qh, kh.t(), scale, 0.0, Threads::One);
        softmax_rows(p, s.k_valid);
        let pd: &[f32] = if dropout.active() {
            let sc = &mut scratch[off..off + n];
            sc.copy_from_slice(p);
            dropout.apply(sc, off);
            sc
        } else {
            p
        };
        matmul(MatMut::cols_of(&mut ctx[qb..], s.q_len, c, h * d, d), MatRef::new(pd, s.q_len, s.k_valid), vh, 1.0, 0.0, Threads::One);
    });
}

/// Backward. Sets `dq` ([Nq,C]), `dk`, `dv` ([N,C]; padding rows become 0); `scratch` has the
/// size of `probs`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    scratch: &mut [f32],
    dctx: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    spans: &[AttnSpan],
    heads: usize,
    c: usize,
    dropout: Dropout,
) {
    let d = c / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let (dq_p, dk_p, dv_p, scratch_p) = (Shared::new(dq), Shared::new(dk), Shared::new(dv), Shared::new(scratch));
    tasks(spans, heads).into_par_iter().for_each(|(s, h, off)| {
        // SAFETY: as in the forward pass, each task owns its scratch block and its head's columns
        // of its sequence's rows.
        let (dq, dk, dv, scratch) = unsafe { (dq_p.slice(), dk_p.slice(), dv_p.slice(), scratch_p.slice()) };
        let (qb, kb, n) = (s.q_start * c, s.k_start * c, s.q_len * s.k_valid);
        let p = &probs[off..off + n];
        let g = &mut scratch[off..off + n];
        let qh = MatRef::cols_of(&q[qb..], s.q_len, c, h * d, d);
        let kh = MatRef::cols_of(&k[kb..], s.k_valid, c, h * d, d);
        let vh = MatRef::cols_of(&v[kb..], s.k_valid, c, h * d, d);
        let dctx_h = MatRef::cols_of(&dctx[qb..], s.q_len, c, h * d, d);
        // dV = Pdᵀ · dctx
        g.copy_from_slice(p);
        dropout.apply(g, off);
        matmul(
            MatMut::cols_of(&mut dv[kb..], s.k_valid, c, h * d, d),
            MatRef::new(g, s.q_len, s.k_valid).t(),
            dctx_h,
            1.0,
            0.0,
            Threads::One,
        );
        // dP = (dctx · Vᵀ) ∘ mask;  dS = P ∘ (dP - rowsum(dP ∘ P)) · scale
        matmul(MatMut::new(g, s.q_len, s.k_valid), dctx_h, vh.t(), 1.0, 0.0, Threads::One);
        dropout.apply(g, off);
        softmax_backward_rows(g, p, s.k_valid, scale);
        let gs = MatRef::new(g, s.q_len, s.k_valid);
        matmul(MatMut::cols_of(&mut dq[qb..], s.q_len, c, h * d, d), gs, kh, 1.0, 0.0, Threads::One);
        matmul(MatMut::cols_of(&mut dk[kb..], s.k_valid, c, h * d, d), gs.t(), qh, 1.0, 0.0, Threads::One);
        for row in s.k_valid..s.k_total {
            let at = kb + row * c + h * d;
            dk[at..at + d].fill(0.0);
            dv[at..at + d].fill(0.0);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_gradient, dot, max_abs_diff, random_vec};

    const H: usize = 2;
    const C: usize = 6;

    fn seqs() -> Vec<AttnSpan> {
        [SeqSpan { start: 0, len: 4, valid: 3 }, SeqSpan { start: 4, len: 2, valid: 2 }, SeqSpan { start: 6, len: 3, valid: 1 }]
            .iter()
            .map(AttnSpan::full)
            .collect()
    }

    fn run(q: &[f32], k: &[f32], v: &[f32], drop: Dropout) -> (Vec<f32>, Vec<f32>) {
        let s = seqs();
        let n = 9;
        let mut ctx = vec![0.0; n * C];
        let mut probs = vec![0.0; probs_len(&s, H)];
        let mut scratch = probs.clone();
        attention_forward(&mut ctx, &mut probs, &mut scratch, q, k, v, &s, H, C, drop);
        (ctx, probs)
    }

    #[test]
    fn padding_keys_get_no_attention_and_no_gradient() {
        let n = 9;
        let (q, k, mut v) = (random_vec(n * C, 1), random_vec(n * C, 2), random_vec(n * C, 3));
        let (ctx, _) = run(&q, &k, &v, Dropout::OFF);
        // Changing a padding row of V (row 3 of sequence 0) must not change any output.
        for x in &mut v[3 * C..4 * C] {
            *x += 10.0;
        }
        let (ctx2, _) = run(&q, &k, &v, Dropout::OFF);
        assert_eq!(ctx, ctx2);
    }

    #[test]
    fn cls_queries_match_the_cls_rows_of_full_attention() {
        let n = 9;
        let (q, k, v) = (random_vec(n * C, 1), random_vec(n * C, 2), random_vec(n * C, 3));
        let (full, _) = run(&q, &k, &v, Dropout::OFF);
        let seq = [SeqSpan { start: 0, len: 4, valid: 3 }, SeqSpan { start: 4, len: 2, valid: 2 }, SeqSpan { start: 6, len: 3, valid: 1 }];
        let spans: Vec<AttnSpan> = seq.iter().enumerate().map(|(i, s)| AttnSpan::cls(s, i)).collect();
        let qc: Vec<f32> = seq.iter().flat_map(|s| q[s.start * C..(s.start + 1) * C].to_vec()).collect();
        let mut ctx = vec![0.0; 3 * C];
        let mut probs = vec![0.0; probs_len(&spans, H)];
        let mut scratch = probs.clone();
        attention_forward(&mut ctx, &mut probs, &mut scratch, &qc, &k, &v, &spans, H, C, Dropout::OFF);
        for (i, s) in seq.iter().enumerate() {
            assert!(max_abs_diff(&ctx[i * C..(i + 1) * C], &full[s.start * C..(s.start + 1) * C]) < 1e-6);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let n = 9;
        for drop in [Dropout::OFF, Dropout::site(0.3, 5, 1, 2)] {
            let (q, k, v) = (random_vec(n * C, 1), random_vec(n * C, 2), random_vec(n * C, 3));
            let probe = random_vec(n * C, 4);
            let (_, probs) = run(&q, &k, &v, drop);
            let (mut dq, mut dk, mut dv) = (vec![1.0; n * C], vec![1.0; n * C], vec![1.0; n * C]);
            let mut scratch = vec![0.0; probs.len()];
            attention_backward(&mut dq, &mut dk, &mut dv, &mut scratch, &probe, &q, &k, &v, &probs, &seqs(), H, C, drop);
            check_gradient("attention dq", &q, &dq, 1, |q| dot(&run(q, &k, &v, drop).0, &probe));
            check_gradient("attention dk", &k, &dk, 1, |k| dot(&run(&q, k, &v, drop).0, &probe));
            check_gradient("attention dv", &v, &dv, 1, |v| dot(&run(&q, &k, v, drop).0, &probe));
        }
    }
}
