//! One pre-norm decoder layer, as the Llama family and GPT-2 share it, with forward and backward:
//! h = x + O(attention(rope(Q·n₁(x)), rope(K·n₁(x)), V·n₁(x))); out = h + MLP(n₂(h)), where the
//! MLP is SwiGLU (down(silu(gate·x) · up·x), Llama) or GELU (c_proj(gelu(c_fc·x)), GPT-2), and
//! q/k/v are three linears (Llama) or one fused `c_attn` (GPT-2).
//!
//! Dimensions: N packed rows, C width, F feed-forward width, H query heads and Hkv key/value
//! heads of width D (Q = H·D, KV = Hkv·D).

use super::acts::{GradScratch, KeptPre, LayerCache, LayerScratch};
use crate::model::linear::{grow, Linear};
use crate::model::norm::Norm;
use crate::ops::activation::{swiglu_backward, swiglu_forward, Activation};
use crate::ops::add::add_into;
use crate::ops::attention::{attention_backward, attention_forward, AttnSpan, Heads, SavedProbs};
use crate::ops::dropout::Dropout;
use crate::ops::precision::Precision;
use crate::ops::rope::{rope_backward, rope_forward};

/// The attention projections: three linears, or one fused q|k|v linear (GPT-2's `c_attn`).
// One value per layer, built once: the variants' size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Qkv {
    /// q [Q, C], k [KV, C], v [KV, C].
    Separate([Linear; 3]),
    /// c_attn [Q + 2·KV, C], whose output columns are q | k | v.
    Fused(Linear),
}

/// The feed-forward block.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Mlp {
    /// down(silu(gate(x)) · up(x)).
    Gated {
        /// gate_proj C → F.
        gate: Linear,
        /// up_proj C → F.
        up: Linear,
        /// down_proj F → C.
        down: Linear,
    },
    /// proj(act(fc(x))).
    Plain {
        /// c_fc C → F.
        fc: Linear,
        /// c_proj F → C.
        proj: Linear,
        /// The activation.
        activation: Activation,
    },
}

/// Dropout masks of one layer for one step.
#[derive(Clone, Copy, Debug)]
pub struct LayerDropout {
    /// On attention probabilities.
    pub attn: Dropout,
    /// On the attention output before the residual sum (GPT-2).
    pub attn_out: Dropout,
    /// On the MLP output before the residual sum (GPT-2).
    pub mlp_out: Dropout,
    /// On each LoRA branch's input (in [`DecoderLayer::linears`] order).
    pub lora: [Dropout; 7],
}

impl LayerDropout {
    /// No dropout anywhere (evaluation).
    pub const OFF: LayerDropout =
        LayerDropout { attn: Dropout::OFF, attn_out: Dropout::OFF, mlp_out: Dropout::OFF, lora: [Dropout::OFF; 7] };
}

/// One decoder layer.
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    /// Norm before attention (input_layernorm / ln_1).
    pub attn_norm: Norm,
    /// q, k, v projections.
    pub qkv: Qkv,
    /// Attention output projection (o_proj / attn.c_proj).
    pub o: Linear,
    /// Norm before the MLP (post_attention_layernorm / ln_2).
    pub mlp_norm: Norm,
    /// The MLP.
    pub mlp: Mlp,
    /// The heads.
    pub heads: Heads,
}

/// The rotary angle tables of a batch, [N, D/2] each (None: learned positions).
pub type RopeTables<'a> = Option<(&'a [f32], &'a [f32])>;

impl DecoderLayer {
    /// The linears in storage order: q, k, v (or c_attn), o, then gate, up, down (or c_fc, c_proj).
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = match &self.qkv {
            Qkv::Separate(l) => l.iter().collect(),
            Qkv::Fused(l) => vec![l],
        };
        v.push(&self.o);
        match &self.mlp {
            Mlp::Gated { gate, up, down } => v.extend([gate, up, down]),
            Mlp::Plain { fc, proj, .. } => v.extend([fc, proj]),
        }
        v
    }

    /// Mutable access to [`DecoderLayer::linears`].
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = match &mut self.qkv {
            Qkv::Separate(l) => l.iter_mut().collect(),
            Qkv::Fused(l) => vec![l],
        };
        v.push(&mut self.o);
        match &mut self.mlp {
            Mlp::Gated { gate, up, down } => v.extend([gate, up, down]),
            Mlp::Plain { fc, proj, .. } => v.extend([fc, proj]),
        }
        v
    }

    /// Whether any parameter of the layer trains.
    pub fn trainable(&self) -> bool {
        self.linears().iter().any(|l| l.trainable()) || self.attn_norm.trainable() || self.mlp_norm.trainable()
    }

    /// Whether backward reads the attention norm's output (a q / k / v linear needs its input)
    /// and the MLP norm's (gate / up or c_fc does): only then is it recomputed.
    fn norm_outputs_read(&self) -> (bool, bool) {
        let qkv = match &self.qkv {
            Qkv::Separate(l) => l.iter().any(Linear::needs_input),
            Qkv::Fused(l) => l.needs_input(),
        };
        let mlp = match &self.mlp {
            Mlp::Gated { gate, up, .. } => gate.needs_input() || up.needs_input(),
            Mlp::Plain { fc, .. } => fc.needs_input(),
        };
        (qkv, mlp)
    }

    /// Forward of `x[N,C]` into `out[N,C]`, filling `cache` (the norms' outputs and the MLP
    /// activation go to `scratch`: [`DecoderLayer::backward`] recomputes them).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        out: &mut [f32],
        x: &[f32],
        cache: &mut LayerCache,
        scratch: &mut LayerScratch,
        spans: &[AttnSpan],
        rope: RopeTables<'_>,
        n: usize,
        drop: &LayerDropout,
    ) {
        let c = x.len() / n;
        let (h, d) = (self.heads.q, self.heads.dim);
        let (qd, kvd) = (h * d, self.heads.kv * d);
        let x = &x[..n * c];
        let LayerCache { n1, q, k, v, ctx, h1, n2, f1, f2, lora_h } = cache;
        let LayerScratch { xn, act, qkv, lora_x, probs, probs_drop, pre } = scratch;
        let xn1 = &mut xn[..];
        self.attn_norm.forward(xn1, n1, x, n);
        let mut lh = lora_h.iter_mut();
        let mut li = 0usize;
        match &self.qkv {
            Qkv::Separate([lq, lk, lv]) => {
                lq.forward(q, lh.next().expect("7 slots"), &xn1[..n * c], lora_x, n, drop.lora[0]);
                lk.forward(k, lh.next().expect("7 slots"), &xn1[..n * c], lora_x, n, drop.lora[1]);
                lv.forward(v, lh.next().expect("7 slots"), &xn1[..n * c], lora_x, n, drop.lora[2]);
                li += 3;
            }
            Qkv::Fused(l) => {
                let w = qd + 2 * kvd;
                l.forward(qkv, lh.next().expect("7 slots"), &xn1[..n * c], lora_x, n, drop.lora[0]);
                for (r, row) in qkv[..n * w].chunks_exact(w).enumerate() {
                    q[r * qd..(r + 1) * qd].copy_from_slice(&row[..qd]);
                    k[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                    v[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
                }
                li += 1;
            }
        }
        if let Some((cos, sin)) = rope {
            rope_forward(q, cos, sin, n, h, d);
            rope_forward(k, cos, sin, n, self.heads.kv, d);
        }
        if drop.attn.active() {
            grow(probs_drop, probs.len());
        }
        attention_forward(ctx, probs, probs_drop, q, k, v, spans, self.heads, drop.attn, self.o.precision);
        self.o.forward(h1, lh.next().expect("7 slots"), &ctx[..n * qd], lora_x, n, drop.lora[li]);
        li += 1;
        drop.attn_out.apply(&mut h1[..n * c], 0);
        add_into(&mut h1[..n * c], x);
        let xn2 = &mut xn[..];
        self.mlp_norm.forward(xn2, n2, &h1[..n * c], n);
        let xn2 = &xn2[..n * c];
        match &self.mlp {
            Mlp::Gated { gate, up, down } => {
                let len = n * gate.out_dim();
                let [p1, p2] = pre;
                let g = pre_activation(f1, p1, len, gate.precision);
                gate.forward(g, lh.next().expect("7 slots"), xn2, lora_x, n, drop.lora[li]);
                let u = pre_activation(f2, p2, len, up.precision);
                up.forward(u, lh.next().expect("7 slots"), xn2, lora_x, n, drop.lora[li + 1]);
                let (g, u) = (keep(f1, p1, len, gate.precision), keep(f2, p2, len, up.precision));
                swiglu_forward(&mut act[..len], g, u);
                down.forward(out, lh.next().expect("7 slots"), &act[..len], lora_x, n, drop.lora[li + 2]);
            }
            Mlp::Plain { fc, proj, activation } => {
                let len = n * fc.out_dim();
                let z = pre_activation(f1, &mut pre[0], len, fc.precision);
                fc.forward(z, lh.next().expect("7 slots"), xn2, lora_x, n, drop.lora[li]);
                let z = keep(f1, &mut pre[0], len, fc.precision);
                activation.forward(&mut act[..len], z);
                proj.forward(out, lh.next().expect("7 slots"), &act[..len], lora_x, n, drop.lora[li + 1]);
            }
        }
        drop.mlp_out.apply(&mut out[..n * c], 0);
        add_into(&mut out[..n * c], &h1[..n * c]);
    }

    /// Backward: from `g.d_out` (gradient of the layer's output, [N,C]) to `g.d_out` again (the
    /// gradient of its input `x`, when `need_dx`), accumulating the gradients of whatever trains.
    /// What the forward did not keep — the norms' outputs, the MLP activation, the attention
    /// probabilities — is recomputed first, with the forward's own functions on the same inputs.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        g: &mut GradScratch,
        x: &[f32],
        cache: &LayerCache,
        spans: &[AttnSpan],
        rope: RopeTables<'_>,
        n: usize,
        drop: &LayerDropout,
        need_dx: bool,
    ) {
        let c = x.len() / n;
        let (h, d) = (self.heads.q, self.heads.dim);
        let (qd, kvd) = (h * d, self.heads.kv * d);
        let x = &x[..n * c];
        let GradScratch {
            d_out,
            d_a,
            d_b,
            d_tmp,
            d_f1,
            d_f2,
            d_act,
            d_ctx,
            dq,
            dk,
            dv,
            dqkv,
            probs,
            probs_rec,
            lora,
            xn,
            xn_stats,
            act,
            pre,
            ..
        } = g;
        let lh = &cache.lora_h;
        let n_attn = match self.qkv {
            Qkv::Separate(_) => 4,
            Qkv::Fused(_) => 2,
        };
        // MLP branch: d_a = d(xn2).
        let d_m: &[f32] = drop.mlp_out.backward_of(d_out, d_tmp, n * c);
        // The MLP's input, recomputed (where a linear reads it): the forward's arithmetic on the
        // forward's input.
        let (qkv_reads, mlp_reads) = self.norm_outputs_read();
        if mlp_reads {
            self.mlp_norm.forward(xn, xn_stats, &cache.h1[..n * c], n);
        }
        let xn2 = &xn[..n * c];
        match &mut self.mlp {
            Mlp::Gated { gate, up, down } => {
                let fw = gate.out_dim();
                let li = n_attn;
                grow(d_act, n * fw);
                let [p1, p2] = pre;
                let (f1, f2) = (cache.f1.values(n * fw, p1), cache.f2.values(n * fw, p2));
                if down.needs_input() {
                    swiglu_forward(&mut act[..n * fw], f1, f2);
                }
                down.backward(Some(d_act), false, d_m, act, &lh[li + 2], lora, n, drop.lora[li + 2]);
                swiglu_backward(&mut d_f1[..n * fw], &mut d_f2[..n * fw], &d_act[..n * fw], f1, f2);
                gate.backward(Some(d_a), false, d_f1, xn2, &lh[li], lora, n, drop.lora[li]);
                up.backward(Some(d_a), true, d_f2, xn2, &lh[li + 1], lora, n, drop.lora[li + 1]);
            }
            Mlp::Plain { fc, proj, activation } => {
                let fw = fc.out_dim();
                let li = n_attn;
                grow(d_f1, n * fw);
                let f1 = cache.f1.values(n * fw, &mut pre[0]);
                activation.forward(&mut act[..n * fw], f1);
                proj.backward(Some(d_f1), false, d_m, act, &lh[li + 1], lora, n, drop.lora[li + 1]);
                activation.backward_inplace(&mut d_f1[..n * fw], f1, &act[..n * fw]);
                fc.backward(Some(d_a), false, d_f1, xn2, &lh[li], lora, n, drop.lora[li]);
            }
        }
        // d_b = d(h1) = d_out (residual) + the MLP norm's input gradient.
        self.mlp_norm.backward(d_b, d_a, &cache.h1[..n * c], &cache.n2, n, false);
        add_into(&mut d_b[..n * c], &d_out[..n * c]);
        // Attention branch.
        let d_o: &[f32] = drop.attn_out.backward_of(d_b, d_tmp, n * c);
        let oi = n_attn - 1;
        self.o.backward(Some(d_ctx), false, d_o, &cache.ctx, &lh[oi], lora, n, drop.lora[oi]);
        attention_backward(
            dq,
            dk,
            dv,
            probs,
            d_ctx,
            &cache.q,
            &cache.k,
            &cache.v,
            SavedProbs::Recompute(probs_rec),
            spans,
            self.heads,
            drop.attn,
            self.o.precision,
        );
        if let Some((cos, sin)) = rope {
            rope_backward(dq, cos, sin, n, h, d);
            rope_backward(dk, cos, sin, n, self.heads.kv, d);
        }
        if qkv_reads {
            self.attn_norm.forward(xn, xn_stats, x, n);
        }
        let xn1 = &xn[..n * c];
        // The norm's input gradient is wanted below; its own parameters need d(xn1) too.
        let norm_trains = self.attn_norm.trainable();
        let d_xn1 = (need_dx || norm_trains).then_some(&mut d_a[..]);
        match &mut self.qkv {
            Qkv::Separate([lq, lk, lv]) => {
                let mut d_xn1 = d_xn1;
                lq.backward(d_xn1.as_deref_mut(), false, dq, xn1, &lh[0], lora, n, drop.lora[0]);
                lk.backward(d_xn1.as_deref_mut(), true, dk, xn1, &lh[1], lora, n, drop.lora[1]);
                lv.backward(d_xn1, true, dv, xn1, &lh[2], lora, n, drop.lora[2]);
            }
            Qkv::Fused(l) => {
                let w = qd + 2 * kvd;
                grow(dqkv, n * w);
                for (r, row) in dqkv[..n * w].chunks_exact_mut(w).enumerate() {
                    row[..qd].copy_from_slice(&dq[r * qd..(r + 1) * qd]);
                    row[qd..qd + kvd].copy_from_slice(&dk[r * kvd..(r + 1) * kvd]);
                    row[qd + kvd..].copy_from_slice(&dv[r * kvd..(r + 1) * kvd]);
                }
                l.backward(d_xn1, false, dqkv, xn1, &lh[0], lora, n, drop.lora[0]);
            }
        }
        if need_dx {
            // d(x) = d_b (residual) + the attention norm's input gradient, into d_out.
            self.attn_norm.backward(d_out, d_a, x, &cache.n1, n, false);
            add_into(&mut d_out[..n * c], &d_b[..n * c]);
        } else if norm_trains {
            // Nothing below trains: only the norm's parameter gradients are wanted.
            self.attn_norm.backward(d_tmp, d_a, x, &cache.n1, n, false);
        }
    }
}

/// Where a linear writes an MLP pre-activation of `len` values: straight into the f32 cache, or,
/// in bf16, into `scratch` first (to be kept rounded by [`keep`]).
fn pre_activation<'a>(kept: &'a mut KeptPre, scratch: &'a mut Vec<f32>, len: usize, precision: Precision) -> &'a mut [f32] {
    match precision {
        Precision::Fp32 => kept.f32_mut(len),
        Precision::Bf16 => {
            grow(scratch, len);
            &mut scratch[..len]
        }
    }
}

/// The pre-activation the forward goes on with: the f32 cache, or (bf16) `scratch` rounded in
/// place, its bits kept.
fn keep<'a>(kept: &'a mut KeptPre, scratch: &'a mut [f32], len: usize, precision: Precision) -> &'a [f32] {
    match precision {
        Precision::Fp32 => &kept.f32[..len],
        Precision::Bf16 => {
            kept.keep_rounded(&mut scratch[..len]);
            &scratch[..len]
        }
    }
}
