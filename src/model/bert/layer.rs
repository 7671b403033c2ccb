//! The post-LayerNorm encoder layer that DistilBERT and BERT share (self-attention, then
//! feed-forward, each followed by residual + LayerNorm), with forward and backward.
//!
//! Dimensions: N packed rows, C width, H heads, F feed-forward width.

use super::acts::{GradScratch, LayerCache, FFN1, FFN2, K, O, Q, V};
use crate::model::linear::{grow, Linear};
use crate::model::norm::LayerNorm;
use crate::ops::activation::Activation;
use crate::ops::add::add_into;
use crate::ops::attention::{attention_backward, attention_forward, AttnSpan, Heads, SavedProbs};
use crate::ops::dropout::Dropout;
use crate::ops::layernorm::{layernorm_backward, layernorm_forward};

/// Dropout masks of one layer for one step.
#[derive(Clone, Copy, Debug)]
pub struct LayerDropout {
    /// On attention probabilities.
    pub attn: Dropout,
    /// After the attention output projection (BERT only).
    pub attn_out: Dropout,
    /// After the feed-forward output.
    pub ffn_out: Dropout,
    /// On each LoRA branch's input (indexed like [`EncoderLayer::linears`]).
    pub lora: [Dropout; 6],
}

impl LayerDropout {
    /// No dropout anywhere (evaluation).
    pub const OFF: LayerDropout =
        LayerDropout { attn: Dropout::OFF, attn_out: Dropout::OFF, ffn_out: Dropout::OFF, lora: [Dropout::OFF; 6] };
}

/// One encoder layer: x1 = LN(x + O(attn(Q x, K x, V x))); out = LN(x1 + FFN2(act(FFN1 x1))).
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    /// The six linears: q, k, v, attention output, feed-forward in, feed-forward out.
    pub linears: [Linear; 6],
    /// LayerNorm after attention.
    pub ln1: LayerNorm,
    /// LayerNorm after the feed-forward.
    pub ln2: LayerNorm,
    /// Number of heads.
    pub heads: usize,
    /// Feed-forward activation.
    pub activation: Activation,
}

impl EncoderLayer {
    /// Whether any parameter of the layer trains.
    pub fn trainable(&self) -> bool {
        self.linears.iter().any(Linear::trainable) || [&self.ln1, &self.ln2].iter().any(|ln| ln.weight.trainable() || ln.bias.trainable())
    }

    /// Forward of `x[N,C]` into `out[Nq,C]`, filling `cache`. Queries (and everything after
    /// attention) run on `xq[Nq,C]` when given — the [CLS] rows in the last layer — else on `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        out: &mut [f32],
        x: &[f32],
        xq: Option<&[f32]>,
        cache: &mut LayerCache,
        spans: &[AttnSpan],
        n: usize,
        nq: usize,
        drop: &LayerDropout,
        lora_x: &mut Vec<f32>,
        probs_drop: &mut [f32],
    ) {
        let c = self.ln1.weight.numel();
        let f = self.linears[FFN1].out_dim();
        let x = &x[..n * c];
        let xq = xq.map_or(&x[..nq * c], |q| &q[..nq * c]);
        let [lq, lk, lv, lo, l1, l2] = &self.linears;
        let LayerCache { q, k, v, probs, ctx, attn_res, ln1_mean, ln1_rstd, x1, ffn_pre, ffn_act, ffn_res, ln2_mean, ln2_rstd, lora_h } =
            cache;
        let [hq, hk, hv, ho, h1, h2] = lora_h;
        lq.forward(q, hq, xq, lora_x, nq, drop.lora[Q]);
        lk.forward(k, hk, x, lora_x, n, drop.lora[K]);
        lv.forward(v, hv, x, lora_x, n, drop.lora[V]);
        attention_forward(ctx, probs, probs_drop, q, k, v, spans, Heads::mha(self.heads, c), drop.attn, lo.precision);
        lo.forward(attn_res, ho, &ctx[..nq * c], lora_x, nq, drop.lora[O]);
        drop.attn_out.apply(&mut attn_res[..nq * c], 0);
        add_into(&mut attn_res[..nq * c], xq);
        layernorm_forward(x1, ln1_mean, ln1_rstd, attn_res, &self.ln1.weight.data, &self.ln1.bias.data, nq, c, self.ln1.eps);
        l1.forward(ffn_pre, h1, &x1[..nq * c], lora_x, nq, drop.lora[FFN1]);
        self.activation.forward(&mut ffn_act[..nq * f], &ffn_pre[..nq * f]);
        l2.forward(ffn_res, h2, &ffn_act[..nq * f], lora_x, nq, drop.lora[FFN2]);
        drop.ffn_out.apply(&mut ffn_res[..nq * c], 0);
        add_into(&mut ffn_res[..nq * c], &x1[..nq * c]);
        layernorm_forward(out, ln2_mean, ln2_rstd, ffn_res, &self.ln2.weight.data, &self.ln2.bias.data, nq, c, self.ln2.eps);
    }

    /// Backward: from `g.d_out` (gradient of the layer output, [Nq,C]) to `g.d_b` (gradient of
    /// its input `x`, [N,C]), accumulating the gradients of whatever trains. With `xq` (queries on
    /// [CLS] rows only) the query-side gradient row i is added to row `spans[i].k_start`.
    /// `need_dx = false` (the lowest trainable layer) skips the input gradient's products.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        g: &mut GradScratch,
        x: &[f32],
        xq: Option<&[f32]>,
        cache: &LayerCache,
        spans: &[AttnSpan],
        n: usize,
        nq: usize,
        drop: &LayerDropout,
        need_dx: bool,
    ) {
        let c = self.ln1.weight.numel();
        let f = self.linears[FFN1].out_dim();
        let x = &x[..n * c];
        let compact = xq.is_some();
        let xq = xq.map_or(&x[..nq * c], |q| &q[..nq * c]);
        let GradScratch { d_out, d_a, d_b, d_tmp, d_ffn, d_ctx, dq, dk, dv, probs, lora, .. } = g;
        let [lq, lk, lv, lo, l1, l2] = &mut self.linears;
        let lh = &cache.lora_h;
        // Second LayerNorm: d_a = d(ffn_res).
        layernorm_backward(
            d_a,
            self.ln2.weight.grad.as_deref_mut(),
            self.ln2.bias.grad.as_deref_mut(),
            d_out,
            &cache.ffn_res,
            &cache.ln2_mean,
            &cache.ln2_rstd,
            &self.ln2.weight.data,
            nq,
            c,
            false,
        );
        // Feed-forward branch; the residual passes d_a through to x1.
        let d_ffn_out: &[f32] = drop.ffn_out.backward_of(d_a, d_tmp, nq * c);
        grow(d_ffn, nq * f);
        l2.backward(Some(d_ffn), false, d_ffn_out, &cache.ffn_act, &lh[FFN2], lora, nq, drop.lora[FFN2]);
        let act_out: &[f32] = if self.activation.reads_output() { &cache.ffn_act[..nq * f] } else { &[] };
        self.activation.backward_inplace(&mut d_ffn[..nq * f], &cache.ffn_pre[..nq * f], act_out);
        l1.backward(Some(d_a), true, d_ffn, &cache.x1, &lh[FFN1], lora, nq, drop.lora[FFN1]);
        // First LayerNorm: d_b = d(attn_res); the residual passes it through to the query rows.
        layernorm_backward(
            d_b,
            self.ln1.weight.grad.as_deref_mut(),
            self.ln1.bias.grad.as_deref_mut(),
            d_a,
            &cache.attn_res,
            &cache.ln1_mean,
            &cache.ln1_rstd,
            &self.ln1.weight.data,
            nq,
            c,
            false,
        );
        let d_attn_out: &[f32] = drop.attn_out.backward_of(d_b, d_tmp, nq * c);
        lo.backward(Some(d_ctx), false, d_attn_out, &cache.ctx, &lh[O], lora, nq, drop.lora[O]);
        attention_backward(
            dq,
            dk,
            dv,
            probs,
            d_ctx,
            &cache.q,
            &cache.k,
            &cache.v,
            SavedProbs::Kept(&cache.probs),
            spans,
            Heads::mha(self.heads, c),
            drop.attn,
            lo.precision,
        );
        lq.backward(need_dx.then_some(&mut d_b[..]), true, dq, xq, &lh[Q], lora, nq, drop.lora[Q]);
        if compact && need_dx {
            // d_b holds the query rows' gradient: set it aside, then scatter it onto the key rows.
            d_tmp[..nq * c].copy_from_slice(&d_b[..nq * c]);
        }
        lk.backward(need_dx.then_some(&mut d_b[..]), !compact, dk, x, &lh[K], lora, n, drop.lora[K]);
        lv.backward(need_dx.then_some(&mut d_b[..]), true, dv, x, &lh[V], lora, n, drop.lora[V]);
        if compact && need_dx {
            for (i, s) in spans.iter().enumerate() {
                let (src, dst) = (&d_tmp[i * c..(i + 1) * c], s.k_start * c);
                d_b[dst..dst + c].iter_mut().zip(src).for_each(|(d, v)| *d += v);
            }
        }
    }
}
