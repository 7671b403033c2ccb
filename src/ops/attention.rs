//! Multi-head attention core over packed variable-length sequences:
//! ctx = dropout(softmax(Q·Kᵀ/√D + mask)) · V, per sequence and head, bidirectional (encoders)
//! or causal (decoders), with grouped-query attention (several query heads share one key/value
//! head).
//!
//! Dimensions: N packed key rows (all sequences back to back), Nq query rows, H query heads and
//! Hkv key/value heads of width D (queries and context are [Nq, H·D], keys and values
//! [N, Hkv·D]; query head h reads key/value head h / (H / Hkv)). An [`AttnSpan`] says where a
//! sequence's queries and keys are: for self-attention both are the sequence's rows; for an
//! encoder's last layer (where only [CLS] matters) a sequence has one query row. Only the first
//! `k_valid` key rows are attended to (the rest are padding: no attention, no gradient); a causal
//! query at position p attends to keys 0..=p. Probabilities live in one buffer of Σ H·q_len·k_valid
//! floats (masked entries are 0), kept for backward or recomputed there ([`SavedProbs`]).

use super::bf16;
use super::dropout::Dropout;
use super::fastmath::{self, exp};
use super::gemm::{matmul, MatMut, MatRef, Threads};
use super::precision::Precision;
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
    /// Causal: query row t sits at position `q_pos + t` and attends to keys 0..=that position.
    pub causal: bool,
    /// Position of the first query row within the sequence (causal attention only).
    pub q_pos: usize,
}

impl AttnSpan {
    /// Bidirectional self-attention over a sequence.
    pub fn full(s: &SeqSpan) -> Self {
        AttnSpan { q_start: s.start, q_len: s.len, k_start: s.start, k_valid: s.valid, k_total: s.len, causal: false, q_pos: 0 }
    }

    /// Only the sequence's first row ([CLS]) as query, stored at row `q_row` of the query matrix.
    pub fn cls(s: &SeqSpan, q_row: usize) -> Self {
        AttnSpan { q_start: q_row, q_len: 1, k_start: s.start, k_valid: s.valid, k_total: s.len, causal: false, q_pos: 0 }
    }

    /// Causal self-attention over a sequence (each row attends to itself and the rows before it).
    pub fn causal(s: &SeqSpan) -> Self {
        AttnSpan { causal: true, ..Self::full(s) }
    }

    /// Keys that query row `t` attends to.
    fn allowed(&self, t: usize) -> usize {
        if self.causal {
            (self.q_pos + t + 1).min(self.k_valid)
        } else {
            self.k_valid
        }
    }
}

/// The heads of an attention layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// Query heads H.
    pub q: usize,
    /// Key/value heads Hkv (H is a multiple of it).
    pub kv: usize,
    /// Width D of every head.
    pub dim: usize,
}

impl Heads {
    /// Multi-head attention over `c` features: H = Hkv = `heads`, D = c / heads.
    pub fn mha(heads: usize, c: usize) -> Self {
        Heads { q: heads, kv: heads, dim: c / heads }
    }
}

/// Size of the probability cache for `spans` with `heads` query heads.
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

/// In-place softmax of each row of `p` (rows of `cols` values); with a span, row t keeps only
/// its first `span.allowed(t)` values (the rest become 0).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn softmax_rows(p: &mut [f32], cols: usize, span: &AttnSpan) {
    for (t, full) in p.chunks_exact_mut(cols).enumerate() {
        let (row, masked) = full.split_at_mut(span.allowed(t));
        let max = fastmath::max(row);
        for x in row.iter_mut() {
            *x = exp(*x - max);
        }
        let inv = 1.0 / fastmath::sum(row);
        for x in row.iter_mut() {
            *x *= inv;
        }
        masked.fill(0.0);
    }
}

/// Softmax backward in place over the first `keys` of each row of `cols` values (the rest of a row
/// is masked: P = 0 there, and `g` is not read): g ← P ∘ (g − rowsum(g ∘ P)) · scale.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn softmax_backward_rows(g: &mut [f32], p: &[f32], cols: usize, keys: usize, scale: f32) {
    for (gr, pr) in g.chunks_exact_mut(cols).zip(p.chunks_exact(cols)) {
        let (gr, pr) = (&mut gr[..keys], &pr[..keys]);
        let dot = fastmath::dot(gr, pr);
        for (x, pv) in gr.iter_mut().zip(pr) {
            *x = pv * (*x - dot) * scale;
        }
    }
}

/// The (sequence, key/value head) tasks with the offset of the probability block of the task's
/// first query head (the group's heads follow it, each q_len·k_valid long).
fn tasks(spans: &[AttnSpan], heads: Heads) -> Vec<(AttnSpan, usize, usize)> {
    let group = heads.q / heads.kv;
    let mut out = Vec::with_capacity(spans.len() * heads.kv);
    let mut off = 0;
    for s in spans {
        for g in 0..heads.kv {
            out.push((*s, g, off));
            off += group * s.q_len * s.k_valid;
        }
    }
    out
}

/// One head's product on this task's thread, in the given arithmetic: bf16 rounds both operands
/// (as PyTorch's autocast does for attention) and sums in f32.
fn head_matmul(precision: Precision, out: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, beta: f32) {
    match precision {
        Precision::Fp32 => matmul(out, a, b, alpha, beta, Threads::One),
        Precision::Bf16 => bf16::matmul(out, a, b, alpha, beta, Threads::One),
    }
}

/// Query rows per block of a causal span: block b's rows attend to keys 0..=its last row only, so
/// its products skip the keys after that (the upper triangle: 3/8 of the products' work at 256
/// rows). Measured on SmolLM2-135M's attention (8 × 256 tokens, 9 / 3 heads of 64, bf16, AMD Zen 4,
/// best of 40): forward + backward 21.4–23.4 ms unblocked, 17.7–20.5 ms with blocks of 64 (128
/// about the same; smaller blocks pack their operands more often).
const CAUSAL_BLOCK: usize = 64;

/// The span's query-row blocks `(r0, r1, keys)`: rows r0..r1 read keys 0..`keys` (one block of all
/// rows and keys unless causal).
fn row_blocks(s: &AttnSpan) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let step = if s.causal { CAUSAL_BLOCK } else { s.q_len.max(1) };
    (0..s.q_len).step_by(step).map(move |r0| {
        let r1 = (r0 + step).min(s.q_len);
        (r0, r1, s.allowed(r1 - 1))
    })
}

/// One head's probabilities `p[q_len, k_valid]` = softmax(qh · khᵀ · scale) under the span's
/// mask (block by block: the masked keys of a causal block are never multiplied): the forward's,
/// and the backward's when it recomputes them (one function, so the two are the same bit for bit).
fn head_probs(precision: Precision, p: &mut [f32], qh: MatRef<'_>, kh: MatRef<'_>, s: &AttnSpan, scale: f32) {
    let kv = s.k_valid;
    for (r0, r1, keys) in row_blocks(s) {
        let out = MatMut::cols_of(&mut p[r0 * kv..], r1 - r0, kv, 0, keys);
        head_matmul(precision, out, qh.rows(r0, r1), kh.rows(0, keys).t(), scale, 0.0);
    }
    // Row t keeps its first allowed(t) ≤ keys values; the rest (never written) become 0.
    softmax_rows(p, kv, s);
}

/// Forward. Writes `ctx[Nq, H·D]` and `probs` (pre-dropout softmax); `scratch` (same size as
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
    heads: Heads,
    dropout: Dropout,
    precision: Precision,
) {
    let (d, group) = (heads.dim, heads.q / heads.kv);
    let (cq, ckv) = (heads.q * d, heads.kv * d);
    let scale = 1.0 / (d as f32).sqrt();
    let (ctx_p, probs_p, scratch_p) = (Shared::new(ctx), Shared::new(probs), Shared::new(scratch));
    tasks(spans, heads).into_par_iter().for_each(|(s, g, off0)| {
        // SAFETY: task (s, g) writes the probability blocks of its group's heads and the query
        // rows of s in those heads' columns: disjoint from every other task.
        let (ctx, probs, scratch) = unsafe { (ctx_p.slice(), probs_p.slice(), scratch_p.slice()) };
        let (qb, kb, n) = (s.q_start * cq, s.k_start * ckv, s.q_len * s.k_valid);
        let kh = MatRef::cols_of(&k[kb..], s.k_valid, ckv, g * d, d);
        let vh = MatRef::cols_of(&v[kb..], s.k_valid, ckv, g * d, d);
        for j in 0..group {
            let (h, off) = (g * group + j, off0 + j * n);
            let p = &mut probs[off..off + n];
            let qh = MatRef::cols_of(&q[qb..], s.q_len, cq, h * d, d);
            head_probs(precision, p, qh, kh, &s, scale);
            let pd: &[f32] = if dropout.active() {
                let sc = &mut scratch[off..off + n];
                sc.copy_from_slice(p);
                dropout.apply(sc, off);
                sc
            } else {
                p
            };
            for (r0, r1, keys) in row_blocks(&s) {
                let out = MatMut::cols_of(&mut ctx[qb + r0 * cq..], r1 - r0, cq, h * d, d);
                let pb = MatRef::cols_of(&pd[r0 * s.k_valid..], r1 - r0, s.k_valid, 0, keys);
                head_matmul(precision, out, pb, vh.rows(0, keys), 1.0, 0.0);
            }
        }
    });
}

/// Where [`attention_backward`] finds the forward's softmax probabilities ([`probs_len`] floats).
pub enum SavedProbs<'a> {
    /// Kept by the forward pass.
    Kept(&'a [f32]),
    /// Recomputed from q and k into this buffer: bit for bit the forward's (the same
    /// single-threaded product and softmax on the same inputs), so a model holds one layer's
    /// probabilities at a time instead of every layer's, for one more Q·Kᵀ per head.
    Recompute(&'a mut [f32]),
}

/// Backward. Sets `dq` ([Nq, H·D]), `dk`, `dv` ([N, Hkv·D]; padding rows become 0); `scratch`
/// has the size of the probabilities.
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
    probs: SavedProbs<'_>,
    spans: &[AttnSpan],
    heads: Heads,
    dropout: Dropout,
    precision: Precision,
) {
    let (d, group) = (heads.dim, heads.q / heads.kv);
    let (cq, ckv) = (heads.q * d, heads.kv * d);
    let scale = 1.0 / (d as f32).sqrt();
    let (dq_p, dk_p, dv_p, scratch_p) = (Shared::new(dq), Shared::new(dk), Shared::new(dv), Shared::new(scratch));
    let (kept, recompute_p) = match probs {
        SavedProbs::Kept(p) => (Some(p), None),
        SavedProbs::Recompute(buf) => (None, Some(Shared::new(buf))),
    };
    tasks(spans, heads).into_par_iter().for_each(|(s, g, off0)| {
        // SAFETY: as in the forward pass, each task owns its group's scratch (and recomputed
        // probability) blocks, its query heads' columns of the sequence's query rows and its
        // key/value head's columns.
        let (dq, dk, dv, scratch) = unsafe { (dq_p.slice(), dk_p.slice(), dv_p.slice(), scratch_p.slice()) };
        let mut recomputed = recompute_p.as_ref().map(|r| unsafe { r.slice() });
        let (qb, kb, n) = (s.q_start * cq, s.k_start * ckv, s.q_len * s.k_valid);
        let kh = MatRef::cols_of(&k[kb..], s.k_valid, ckv, g * d, d);
        let vh = MatRef::cols_of(&v[kb..], s.k_valid, ckv, g * d, d);
        // Every query head of the group (and every row block of a causal span) adds to dK, dV.
        for row in 0..s.k_valid {
            let at = kb + row * ckv + g * d;
            dk[at..at + d].fill(0.0);
            dv[at..at + d].fill(0.0);
        }
        let kv = s.k_valid;
        for j in 0..group {
            let (h, off) = (g * group + j, off0 + j * n);
            let qh = MatRef::cols_of(&q[qb..], s.q_len, cq, h * d, d);
            let p: &[f32] = match recomputed.as_deref_mut() {
                Some(buf) => {
                    let buf = &mut buf[off..off + n];
                    head_probs(precision, buf, qh, kh, &s, scale);
                    buf
                }
                None => &kept.expect("probabilities kept when not recomputed")[off..off + n],
            };
            let gr = &mut scratch[off..off + n];
            let dctx_h = MatRef::cols_of(&dctx[qb..], s.q_len, cq, h * d, d);
            // dV = Pdᵀ · dctx
            gr.copy_from_slice(p);
            dropout.apply(gr, off);
            for (r0, r1, keys) in row_blocks(&s) {
                let dvh = MatMut::cols_of(&mut dv[kb..], keys, ckv, g * d, d);
                let pb = MatRef::cols_of(&gr[r0 * kv..], r1 - r0, kv, 0, keys);
                head_matmul(precision, dvh, pb.t(), dctx_h.rows(r0, r1), 1.0, 1.0);
            }
            for (r0, r1, keys) in row_blocks(&s) {
                // dP = (dctx · Vᵀ) ∘ mask;  dS = P ∘ (dP - rowsum(dP ∘ P)) · scale (0 where P is
                // masked), over the block's rows and the keys they read.
                let rows = &mut gr[r0 * kv..r1 * kv];
                head_matmul(precision, MatMut::cols_of(rows, r1 - r0, kv, 0, keys), dctx_h.rows(r0, r1), vh.rows(0, keys).t(), 1.0, 0.0);
                dropout.apply(rows, off + r0 * kv);
                softmax_backward_rows(rows, &p[r0 * kv..r1 * kv], kv, keys, scale);
                let gs = MatRef::cols_of(rows, r1 - r0, kv, 0, keys);
                head_matmul(precision, MatMut::cols_of(&mut dq[qb + r0 * cq..], r1 - r0, cq, h * d, d), gs, kh.rows(0, keys), 1.0, 0.0);
                let dkh = MatMut::cols_of(&mut dk[kb..], keys, ckv, g * d, d);
                head_matmul(precision, dkh, gs.t(), qh.rows(r0, r1), 1.0, 1.0);
            }
        }
        for row in s.k_valid..s.k_total {
            let at = kb + row * ckv + g * d;
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
        run_in(q, k, v, drop, Precision::Fp32)
    }

    fn run_in(q: &[f32], k: &[f32], v: &[f32], drop: Dropout, precision: Precision) -> (Vec<f32>, Vec<f32>) {
        let s = seqs();
        let n = 9;
        let mut ctx = vec![0.0; n * C];
        let mut probs = vec![0.0; probs_len(&s, H)];
        let mut scratch = probs.clone();
        attention_forward(&mut ctx, &mut probs, &mut scratch, q, k, v, &s, Heads::mha(H, C), drop, precision);
        (ctx, probs)
    }

    #[test]
    fn bf16_attention_is_fp32_attention_within_bf16_rounding() {
        let (q, k, v) = (random_vec(9 * C, 21), random_vec(9 * C, 22), random_vec(9 * C, 23));
        let (c32, p32) = run(&q, &k, &v, Dropout::OFF);
        let (c16, p16) = run_in(&q, &k, &v, Dropout::OFF, Precision::Bf16);
        // bf16 keeps 8 significant bits: each product term is off by ≤ 2⁻⁸ relative.
        let (dc, dp) = (max_abs_diff(&c32, &c16), max_abs_diff(&p32, &p16));
        assert!(dc > 0.0 && dc < 3e-2, "context differs by {dc:e}");
        assert!(dp > 0.0 && dp < 3e-2, "probabilities differ by {dp:e}");
        let (mut dq, mut dk, mut dv) = (vec![0.0; 9 * C], vec![0.0; 9 * C], vec![0.0; 9 * C]);
        let (mut dq16, mut dk16, mut dv16) = (dq.clone(), dk.clone(), dv.clone());
        let g = random_vec(9 * C, 24);
        let mut scratch = vec![0.0; p32.len()];
        attention_backward(
            &mut dq,
            &mut dk,
            &mut dv,
            &mut scratch,
            &g,
            &q,
            &k,
            &v,
            SavedProbs::Kept(&p32),
            &seqs(),
            Heads::mha(H, C),
            Dropout::OFF,
            Precision::Fp32,
        );
        attention_backward(
            &mut dq16,
            &mut dk16,
            &mut dv16,
            &mut scratch,
            &g,
            &q,
            &k,
            &v,
            SavedProbs::Kept(&p16),
            &seqs(),
            Heads::mha(H, C),
            Dropout::OFF,
            Precision::Bf16,
        );
        for (what, a, b) in [("dq", &dq, &dq16), ("dk", &dk, &dk16), ("dv", &dv, &dv16)] {
            let d = max_abs_diff(a, b);
            assert!(d < 3e-2 * a.iter().fold(1.0f32, |m, x| m.max(x.abs())), "{what} differs by {d:e}");
        }
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
        attention_forward(&mut ctx, &mut probs, &mut scratch, &qc, &k, &v, &spans, Heads::mha(H, C), Dropout::OFF, Precision::Fp32);
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
            attention_backward(
                &mut dq,
                &mut dk,
                &mut dv,
                &mut scratch,
                &probe,
                &q,
                &k,
                &v,
                SavedProbs::Kept(&probs),
                &seqs(),
                Heads::mha(H, C),
                drop,
                Precision::Fp32,
            );
            // Recomputing the probabilities gives the same gradients, bit for bit (dropout too).
            let (mut rq, mut rk, mut rv) = (vec![1.0; n * C], vec![1.0; n * C], vec![1.0; n * C]);
            let mut rec = vec![0.0; probs.len()];
            attention_backward(
                &mut rq,
                &mut rk,
                &mut rv,
                &mut scratch,
                &probe,
                &q,
                &k,
                &v,
                SavedProbs::Recompute(&mut rec),
                &seqs(),
                Heads::mha(H, C),
                drop,
                Precision::Fp32,
            );
            assert_eq!((&rq, &rk, &rv, &rec), (&dq, &dk, &dv, &probs));
            check_gradient("attention dq", &q, &dq, 1, |q| dot(&run(q, &k, &v, drop).0, &probe));
            check_gradient("attention dk", &k, &dk, 1, |k| dot(&run(&q, k, &v, drop).0, &probe));
            check_gradient("attention dv", &v, &dv, 1, |v| dot(&run(&q, &k, v, drop).0, &probe));
        }
    }

    /// Causal grouped-query attention computed the obvious way, in f64: [N, H·D].
    fn naive_causal_gqa(q: &[f32], k: &[f32], v: &[f32], seqs: &[SeqSpan], heads: Heads) -> Vec<f32> {
        let (d, group) = (heads.dim, heads.q / heads.kv);
        let (cq, ckv) = (heads.q * d, heads.kv * d);
        let n: usize = seqs.iter().map(|s| s.len).sum();
        let mut out = vec![0.0f32; n * cq];
        for s in seqs {
            for h in 0..heads.q {
                let g = h / group;
                for t in 0..s.len {
                    let allowed = (t + 1).min(s.valid);
                    let qr = &q[(s.start + t) * cq + h * d..][..d];
                    let scores: Vec<f64> = (0..allowed)
                        .map(|j| {
                            let kr = &k[(s.start + j) * ckv + g * d..][..d];
                            qr.iter().zip(kr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                    for e in 0..d {
                        let acc: f64 = (0..allowed).map(|j| (scores[j] - max).exp() / z * v[(s.start + j) * ckv + g * d + e] as f64).sum();
                        out[(s.start + t) * cq + h * d + e] = acc as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn causal_grouped_query_attention_matches_the_naive_one_and_its_gradients() {
        let heads = Heads { q: 4, kv: 2, dim: 3 };
        let (cq, ckv) = (12, 6);
        let seq = [SeqSpan { start: 0, len: 5, valid: 5 }, SeqSpan { start: 5, len: 4, valid: 3 }, SeqSpan { start: 9, len: 1, valid: 1 }];
        let spans: Vec<AttnSpan> = seq.iter().map(AttnSpan::causal).collect();
        let n = 10;
        let (q, k, v) = (random_vec(n * cq, 1), random_vec(n * ckv, 2), random_vec(n * ckv, 3));
        let fwd_in = |q: &[f32], k: &[f32], v: &[f32], precision: Precision| {
            let mut ctx = vec![0.0; n * cq];
            let mut probs = vec![0.0; probs_len(&spans, heads.q)];
            let mut scratch = probs.clone();
            attention_forward(&mut ctx, &mut probs, &mut scratch, q, k, v, &spans, heads, Dropout::OFF, precision);
            (ctx, probs)
        };
        let fwd = |q: &[f32], k: &[f32], v: &[f32]| fwd_in(q, k, v, Precision::Fp32);
        let (ctx, probs) = fwd(&q, &k, &v);
        let want = naive_causal_gqa(&q, &k, &v, &seq, heads);
        // Padding query rows (row 8 of sequence 1) are not compared: nothing reads them.
        for row in (0..n).filter(|r| *r != 8) {
            assert!(max_abs_diff(&ctx[row * cq..(row + 1) * cq], &want[row * cq..(row + 1) * cq]) < 1e-5, "row {row}");
        }
        // A future key changes nothing before it.
        let mut k2 = k.clone();
        k2[3 * ckv] += 5.0;
        let (ctx2, _) = fwd(&q, &k2, &v);
        assert_eq!(&ctx[..3 * cq], &ctx2[..3 * cq]);
        let probe = random_vec(n * cq, 4);
        let (mut dq, mut dk, mut dv) = (vec![1.0; n * cq], vec![1.0; n * ckv], vec![1.0; n * ckv]);
        let mut scratch = vec![0.0; probs.len()];
        attention_backward(
            &mut dq,
            &mut dk,
            &mut dv,
            &mut scratch,
            &probe,
            &q,
            &k,
            &v,
            SavedProbs::Kept(&probs),
            &spans,
            heads,
            Dropout::OFF,
            Precision::Fp32,
        );
        for precision in [Precision::Fp32, Precision::Bf16] {
            // What the decoders do: recompute the probabilities in backward; the gradients equal
            // those from the kept ones bit for bit, in either arithmetic.
            let (_, kept) = fwd_in(&q, &k, &v, precision);
            let mut grads = Vec::new();
            for recompute in [false, true] {
                let (mut gq, mut gk, mut gv) = (vec![1.0; n * cq], vec![1.0; n * ckv], vec![1.0; n * ckv]);
                let mut rec = vec![0.0; kept.len()];
                let saved = if recompute { SavedProbs::Recompute(&mut rec) } else { SavedProbs::Kept(&kept) };
                attention_backward(
                    &mut gq,
                    &mut gk,
                    &mut gv,
                    &mut scratch,
                    &probe,
                    &q,
                    &k,
                    &v,
                    saved,
                    &spans,
                    heads,
                    Dropout::OFF,
                    precision,
                );
                grads.push((gq, gk, gv));
            }
            assert_eq!(grads[0], grads[1], "{precision:?}");
        }
        check_gradient("causal gqa dq", &q, &dq, 1, |q| dot(&fwd(q, &k, &v).0, &probe));
        check_gradient("causal gqa dk", &k, &dk, 1, |k| dot(&fwd(&q, k, &v).0, &probe));
        check_gradient("causal gqa dv", &v, &dv, 1, |v| dot(&fwd(&q, &k, v).0, &probe));
    }

    /// Causal attention, forward and backward, the obvious way in f64 with the engine's dropout
    /// indexing (probability block of (sequence, head) after every earlier one): (ctx [N, H·D],
    /// dq, dk, dv) for the context gradient `dctx`.
    #[allow(clippy::type_complexity)]
    fn naive_causal_both(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dctx: &[f32],
        seqs: &[SeqSpan],
        heads: Heads,
        drop: Dropout,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let (d, group) = (heads.dim, heads.q / heads.kv);
        let (cq, ckv) = (heads.q * d, heads.kv * d);
        let n: usize = seqs.iter().map(|s| s.len).sum();
        let (mut ctx, mut dq, mut dk, mut dv) = (vec![0.0f64; n * cq], vec![0.0f64; n * cq], vec![0.0f64; n * ckv], vec![0.0f64; n * ckv]);
        let scale = 1.0 / (d as f64).sqrt();
        let mut base = 0;
        for s in seqs {
            let kv = s.valid;
            for h in 0..heads.q {
                let g = h / group;
                let off = base + h * s.len * kv;
                let (qr, kr, vr) =
                    (|t: usize| (s.start + t) * cq + h * d, |j: usize| (s.start + j) * ckv + g * d, |j: usize| (s.start + j) * ckv + g * d);
                for t in 0..s.len {
                    let allowed = (t + 1).min(kv);
                    let sc: Vec<f64> =
                        (0..allowed).map(|j| (0..d).map(|e| q[qr(t) + e] as f64 * k[kr(j) + e] as f64).sum::<f64>() * scale).collect();
                    let max = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - max).exp()).sum();
                    let p: Vec<f64> = sc.iter().map(|x| (x - max).exp() / z).collect();
                    let f = |j: usize| drop.factor(off + t * kv + j) as f64;
                    let dc = |e: usize| dctx[qr(t) + e] as f64;
                    let mut dp = vec![0.0f64; allowed];
                    for j in 0..allowed {
                        for e in 0..d {
                            ctx[qr(t) + e] += p[j] * f(j) * v[vr(j) + e] as f64;
                            dv[vr(j) + e] += p[j] * f(j) * dc(e);
                            dp[j] += dc(e) * v[vr(j) + e] as f64 * f(j);
                        }
                    }
                    let dot: f64 = (0..allowed).map(|j| dp[j] * p[j]).sum();
                    for j in 0..allowed {
                        let ds = p[j] * (dp[j] - dot) * scale;
                        for e in 0..d {
                            dq[qr(t) + e] += ds * k[kr(j) + e] as f64;
                            dk[kr(j) + e] += ds * q[qr(t) + e] as f64;
                        }
                    }
                }
            }
            base += heads.q * s.len * kv;
        }
        let f = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
        (f(ctx), f(dq), f(dk), f(dv))
    }

    #[test]
    fn long_causal_sequences_skip_their_masked_blocks_exactly() {
        // Longer than CAUSAL_BLOCK, ends inside a block, padding from inside a block, with dropout:
        // the blocked products equal the dense formula (f64), and recomputed probabilities give
        // the kept ones' gradients bit for bit.
        let heads = Heads { q: 4, kv: 2, dim: 8 };
        let (cq, ckv) = (32, 16);
        let seq = [
            SeqSpan { start: 0, len: 150, valid: 150 },
            SeqSpan { start: 150, len: 140, valid: 100 },
            SeqSpan { start: 290, len: 64, valid: 64 },
        ];
        let spans: Vec<AttnSpan> = seq.iter().map(AttnSpan::causal).collect();
        let n = 354;
        let (q, k, v, mut dctx) = (random_vec(n * cq, 11), random_vec(n * ckv, 12), random_vec(n * ckv, 13), random_vec(n * cq, 14));
        // The dctx of padding query rows is zero, as from a loss that does not read them.
        dctx[250 * cq..290 * cq].fill(0.0);
        for drop in [Dropout::OFF, Dropout::site(0.2, 5, 1, 3)] {
            let mut ctx = vec![0.0; n * cq];
            let mut probs = vec![0.0; probs_len(&spans, heads.q)];
            let mut scratch = probs.clone();
            attention_forward(&mut ctx, &mut probs, &mut scratch, &q, &k, &v, &spans, heads, drop, Precision::Fp32);
            let (want, wq, wk, wv) = naive_causal_both(&q, &k, &v, &dctx, &seq, heads, drop);
            let real = |r: usize| !(250..290).contains(&r); // sequence 1's padding query rows
            for row in (0..n).filter(|r| real(*r)) {
                assert!(max_abs_diff(&ctx[row * cq..(row + 1) * cq], &want[row * cq..(row + 1) * cq]) < 1e-5, "ctx row {row}");
            }
            let mut grads = Vec::new();
            for recompute in [false, true] {
                let (mut gq, mut gk, mut gv) = (vec![f32::NAN; n * cq], vec![f32::NAN; n * ckv], vec![f32::NAN; n * ckv]);
                let mut rec = vec![f32::NAN; probs.len()];
                let saved = if recompute { SavedProbs::Recompute(&mut rec) } else { SavedProbs::Kept(&probs) };
                attention_backward(&mut gq, &mut gk, &mut gv, &mut scratch, &dctx, &q, &k, &v, saved, &spans, heads, drop, Precision::Fp32);
                grads.push((gq, gk, gv));
            }
            assert_eq!(grads[0], grads[1], "recomputed probabilities change the gradients");
            let (gq, gk, gv) = &grads[0];
            for row in (0..n).filter(|r| real(*r)) {
                assert!(max_abs_diff(&gq[row * cq..(row + 1) * cq], &wq[row * cq..(row + 1) * cq]) < 1e-4, "dq row {row}");
                assert!(max_abs_diff(&gk[row * ckv..(row + 1) * ckv], &wk[row * ckv..(row + 1) * ckv]) < 1e-4, "dk row {row}");
                assert!(max_abs_diff(&gv[row * ckv..(row + 1) * ckv], &wv[row * ckv..(row + 1) * ckv]) < 1e-4, "dv row {row}");
            }
            // Padding key rows get no gradient.
            assert!(gk[250 * ckv..290 * ckv].iter().chain(&gv[250 * ckv..290 * ckv]).all(|x| *x == 0.0));
        }
    }
}
