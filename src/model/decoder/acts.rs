//! The decoders' buffer plan: what each layer's forward keeps for its backward, the scratch the
//! backward works in, and the head's buffers, grown once to the largest batch seen and reused.
//! Kept per layer: the layer's input, the residual after attention, rotated q and k, v, the
//! context, the MLP's pre-activations (as bf16 when the layer computes in bf16: [`KeptPre`]) and
//! the norms' statistics; the norms' outputs, the MLP activation and the attention probabilities
//! are recomputed in backward (bit for bit).
//!
//! Dimensions: N packed rows, B sequences, C width, F feed-forward width, Q = H·D query width,
//! KV = Hkv·D key/value width, K classes.

use super::config::DecoderConfig;
use crate::model::linear::{grow, LoraScratch};
use crate::model::norm::NormCache;
use crate::ops::bf16::store;

/// One MLP pre-activation kept for backward [N, F]: f32, or — when the layer's products run in
/// bf16 — its bf16 rounding, half the bytes (the largest item of a layer's cache: 2·F floats per
/// token against C for each other buffer). A bf16 layer's forward then goes on with the rounded
/// values, so what backward widens back is exactly what the forward used (as PyTorch's autocast,
/// whose linears' outputs are bf16, keeps them too).
#[derive(Default, Debug)]
pub struct KeptPre {
    /// The values (fp32 layers).
    pub f32: Vec<f32>,
    /// The bf16 bits (bf16 layers).
    pub bf16: Vec<u16>,
    /// Whether the last forward kept bf16 bits.
    pub in_bf16: bool,
}

impl KeptPre {
    /// The f32 buffer that an fp32 layer's product writes into, `len` long.
    pub fn f32_mut(&mut self, len: usize) -> &mut [f32] {
        self.in_bf16 = false;
        grow(&mut self.f32, len);
        &mut self.f32[..len]
    }

    /// Keeps `values` as bf16, rounding them in place (the forward continues with those).
    pub fn keep_rounded(&mut self, values: &mut [f32]) {
        self.in_bf16 = true;
        if self.bf16.len() < values.len() {
            self.bf16.resize(values.len(), 0);
        }
        store::round_keep(values, &mut self.bf16[..values.len()]);
    }

    /// The first `len` kept values as f32: the f32 buffer, or the bf16 bits widened into `scratch`.
    pub fn values<'a>(&'a self, len: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        if !self.in_bf16 {
            return &self.f32[..len];
        }
        grow(scratch, len);
        store::widen(&self.bf16[..len], &mut scratch[..len]);
        &scratch[..len]
    }
}

/// What one decoder layer's forward keeps for its backward.
#[derive(Default, Debug)]
pub struct LayerCache {
    /// Statistics of the norm before attention.
    pub n1: NormCache,
    /// Queries after the rotation [N, Q].
    pub q: Vec<f32>,
    /// Keys after the rotation [N, KV].
    pub k: Vec<f32>,
    /// Values [N, KV].
    pub v: Vec<f32>,
    /// Attention context, input of the output projection [N, Q].
    pub ctx: Vec<f32>,
    /// The residual stream after attention [N, C].
    pub h1: Vec<f32>,
    /// Statistics of the norm before the MLP.
    pub n2: NormCache,
    /// Gate projection (gated MLP) or c_fc output (GPT-2) [N, F].
    pub f1: KeptPre,
    /// Up projection (gated MLP only) [N, F].
    pub f2: KeptPre,
    /// Each linear's LoRA x·A [N, r], in the layer's linear order.
    pub lora_h: [Vec<f32>; 7],
}

/// Buffers of a layer's forward that its backward does not keep, shared by all layers: the norms'
/// outputs and the MLP activation are cheap to recompute from what [`LayerCache`] holds (the
/// backward does, into [`GradScratch`]), and keeping them would cost 2·C + F floats per token and
/// layer — a third of the cache.
#[derive(Default, Debug)]
pub struct LayerScratch {
    /// A norm's output: the attention projections' input, then the MLP's [N, C].
    pub xn: Vec<f32>,
    /// The MLP activation: silu(gate)·up, or gelu(c_fc) [N, F].
    pub act: Vec<f32>,
    /// Fused q/k/v output before the split (GPT-2) [N, Q + 2·KV].
    pub qkv: Vec<f32>,
    /// LoRA input dropout [N, max(C, F)].
    pub lora_x: Vec<f32>,
    /// Softmax probabilities (before dropout) [Σ H·len·valid]: recomputed in backward (they
    /// would be the largest item of the cache: H·len floats per token and layer).
    pub probs: Vec<f32>,
    /// Attention-probability dropout (grown only when dropout is active).
    pub probs_drop: Vec<f32>,
    /// A bf16 layer's MLP pre-activations before they are kept rounded [N, F] each.
    pub pre: [Vec<f32>; 2],
}

/// Scratch of the backward pass, shared by all layers.
#[derive(Default, Debug)]
pub struct GradScratch {
    /// Gradient arriving at a layer's output; on return, the gradient of its input [N, C].
    pub d_out: Vec<f32>,
    /// Gradient of a norm's output [N, C].
    pub d_a: Vec<f32>,
    /// Gradient of the residual stream after attention [N, C].
    pub d_b: Vec<f32>,
    /// Dropout-masked copy of a gradient [N, C].
    pub d_tmp: Vec<f32>,
    /// Gradients of the MLP's pre-activations and activation [N, F] each.
    pub d_f1: Vec<f32>,
    /// Second MLP pre-activation gradient (gated MLP) [N, F].
    pub d_f2: Vec<f32>,
    /// Gradient of the MLP activation [N, F].
    pub d_act: Vec<f32>,
    /// Context gradient [N, Q].
    pub d_ctx: Vec<f32>,
    /// Query gradient [N, Q].
    pub dq: Vec<f32>,
    /// Key gradient [N, KV].
    pub dk: Vec<f32>,
    /// Value gradient [N, KV].
    pub dv: Vec<f32>,
    /// Fused q/k/v gradient (GPT-2) [N, Q + 2·KV].
    pub dqkv: Vec<f32>,
    /// Attention scratch (dropout-masked probabilities, then score gradients).
    pub probs: Vec<f32>,
    /// The attention probabilities, recomputed.
    pub probs_rec: Vec<f32>,
    /// A norm's output recomputed from its input [N, C].
    pub xn: Vec<f32>,
    /// The statistics of that recomputation (equal to the forward's).
    pub xn_stats: NormCache,
    /// The MLP activation recomputed from its pre-activations [N, F].
    pub act: Vec<f32>,
    /// The MLP pre-activations widened from their kept bf16 bits (bf16 layers) [N, F] each.
    pub pre: [Vec<f32>; 2],
    /// LoRA scratch.
    pub lora: LoraScratch,
    /// Gradient of the head's input rows [B, C].
    pub d_pooled: Vec<f32>,
    /// Gradient of the final norm's input rows [B, C].
    pub d_final: Vec<f32>,
    /// Logit gradients [B, K].
    pub dlogits: Vec<f32>,
}

/// All buffers of one decoder for batches up to the largest seen so far.
#[derive(Default, Debug)]
pub struct DecoderActs {
    /// Rows in the current batch.
    pub n: usize,
    /// Sequences in the current batch.
    pub b: usize,
    /// Hidden states: hidden[0] after the embeddings, hidden[l + 1] after layer l (two, reused
    /// alternately, in inference).
    pub hidden: Vec<Vec<f32>>,
    /// Per-layer caches (a single reused one in inference).
    pub layers: Vec<LayerCache>,
    /// Rotary angle tables [N, D/2].
    pub cos: Vec<f32>,
    /// Rotary angle tables [N, D/2].
    pub sin: Vec<f32>,
    /// The forward's scratch.
    pub scratch: LayerScratch,
    /// The rows the head reads: each sequence's last token (classification) or every row with a
    /// target (language modelling) [M].
    pub rows: Vec<usize>,
    /// The targets of those rows (language modelling) [M].
    pub targets: Vec<u32>,
    /// Chunk logits of the language-model loss.
    pub lm_scratch: Vec<f32>,
    /// The head's input rows, gathered from the last hidden state [M, C].
    pub gathered: Vec<f32>,
    /// Statistics of the final norm over the gathered rows.
    pub nf: NormCache,
    /// The final norm's output over the gathered rows [M, C].
    pub pooled: Vec<f32>,
    /// Logits [B, K].
    pub logits: Vec<f32>,
    /// The head's LoRA x·A.
    pub head_lora_h: Vec<f32>,
    /// Backward scratch.
    pub grad: GradScratch,
}

impl DecoderActs {
    /// Grows the buffers for a batch of `n` rows, `b` sequences and `probs` attention
    /// probabilities; `train` keeps every layer's cache (for backward).
    pub fn prepare(&mut self, cfg: &DecoderConfig, num_labels: usize, n: usize, b: usize, probs: usize, train: bool) {
        let (c, f, q, kv) = (cfg.dim, cfg.ffn_dim, cfg.q_dim(), cfg.kv_dim());
        self.n = n;
        self.b = b;
        let (n_hidden, n_layers) = if train { (cfg.n_layers + 1, cfg.n_layers) } else { (2, 1) };
        if self.hidden.len() < n_hidden {
            self.hidden.resize_with(n_hidden, Vec::new);
        }
        for h in &mut self.hidden[..n_hidden] {
            grow(h, n * c);
        }
        if self.layers.len() < n_layers {
            self.layers.resize_with(n_layers, LayerCache::default);
        }
        for l in &mut self.layers[..n_layers] {
            grow(&mut l.h1, n * c);
            grow(&mut l.q, n * q);
            grow(&mut l.ctx, n * q);
            grow(&mut l.k, n * kv);
            grow(&mut l.v, n * kv);
            // f1 and f2 grow in the layer's forward, in the precision it keeps them in.
        }
        let sc = &mut self.scratch;
        grow(&mut sc.xn, n * c);
        grow(&mut sc.act, n * f);
        if cfg.arch.is_gpt2() {
            grow(&mut sc.qkv, n * (q + 2 * kv));
        }
        grow(&mut sc.probs, probs);
        for v in [&mut self.gathered, &mut self.pooled] {
            grow(v, b * c);
        }
        grow(&mut self.logits, b * num_labels);
        if train {
            let g = &mut self.grad;
            for v in [&mut g.d_out, &mut g.d_a, &mut g.d_b, &mut g.d_tmp, &mut g.xn] {
                grow(v, n * c);
            }
            for v in [&mut g.d_f1, &mut g.d_act, &mut g.act] {
                grow(v, n * f);
            }
            if !cfg.arch.is_gpt2() {
                grow(&mut g.d_f2, n * f);
            } else {
                grow(&mut g.dqkv, n * (q + 2 * kv));
            }
            grow(&mut g.d_ctx, n * q);
            grow(&mut g.dq, n * q);
            grow(&mut g.dk, n * kv);
            grow(&mut g.dv, n * kv);
            grow(&mut g.probs, probs);
            grow(&mut g.probs_rec, probs);
            grow(&mut g.d_pooled, b * c);
            grow(&mut g.d_final, b * c);
            grow(&mut g.dlogits, b * num_labels);
        }
    }
}
