//! The BERT family's buffer plan: every activation the forward pass caches for backward, and the scratch the
//! backward pass works in, grown once to the largest batch seen and then reused (no allocation
//! in a steady-state training step).
//!
//! Dimensions: N packed rows, B sequences, C width, F feed-forward width, K classes.

use super::config::EncoderConfig;
use crate::model::linear::{grow, LoraScratch};

/// Index of each encoder linear in per-layer arrays.
pub const Q: usize = 0;
/// Key projection index.
pub const K: usize = 1;
/// Value projection index.
pub const V: usize = 2;
/// Attention output projection index.
pub const O: usize = 3;
/// Feed-forward input index.
pub const FFN1: usize = 4;
/// Feed-forward output index.
pub const FFN2: usize = 5;

/// What one encoder layer's forward keeps for its backward.
#[derive(Default, Debug)]
pub struct LayerCache {
    /// Projections q, k, v: [N, C] each.
    pub q: Vec<f32>,
    /// Keys [N, C].
    pub k: Vec<f32>,
    /// Values [N, C].
    pub v: Vec<f32>,
    /// Softmax probabilities (before dropout): [Σ H·len·valid].
    pub probs: Vec<f32>,
    /// Attention context, input of the output projection: [N, C] (empty while training when
    /// that projection's backward does not read its input, see [`Keep`]).
    pub ctx: Vec<f32>,
    /// Output projection (+ dropout) + residual: input of the first LayerNorm [N, C].
    pub attn_res: Vec<f32>,
    /// First LayerNorm mean [N].
    pub ln1_mean: Vec<f32>,
    /// First LayerNorm 1/std [N].
    pub ln1_rstd: Vec<f32>,
    /// First LayerNorm output: input of the feed-forward and its residual [N, C].
    pub x1: Vec<f32>,
    /// Feed-forward pre-activation [N, F].
    pub ffn_pre: Vec<f32>,
    /// Feed-forward activation output [N, F] (empty while training when backward needs it not,
    /// see [`Keep`]).
    pub ffn_act: Vec<f32>,
    /// Feed-forward output (+ dropout) + residual: input of the second LayerNorm [N, C].
    pub ffn_res: Vec<f32>,
    /// Second LayerNorm mean [N].
    pub ln2_mean: Vec<f32>,
    /// Second LayerNorm 1/std [N].
    pub ln2_rstd: Vec<f32>,
    /// Each linear's LoRA x·A [N, r] (indexed by [`Q`], [`K`], ...).
    pub lora_h: [Vec<f32>; 6],
}

/// Which of a layer's optional activations its backward reads: the input of a linear is needed
/// only when the linear's weight or LoRA update trains ([`crate::model::Linear::needs_input`]),
/// and the feed-forward output also by a tanh's derivative. What is not kept is written into a
/// spare buffer that all layers share, so LoRA on q and v keeps neither (≈ C + F floats a row
/// and layer less).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    /// The attention context (input of the output projection).
    pub ctx: bool,
    /// The feed-forward activation (input of the second feed-forward linear).
    pub ffn_act: bool,
}

impl Keep {
    /// Everything kept.
    pub const ALL: Keep = Keep { ctx: true, ffn_act: true };
}

/// What the classification head keeps.
#[derive(Default, Debug)]
pub struct HeadCache {
    /// [CLS] rows of the last hidden state [B, C].
    pub cls: Vec<f32>,
    /// First head linear's output [B, C].
    pub pre: Vec<f32>,
    /// After the activation (ReLU or tanh) [B, C].
    pub act: Vec<f32>,
    /// After dropout: the classifier's input [B, C].
    pub dropped: Vec<f32>,
    /// Logits [B, K].
    pub logits: Vec<f32>,
    /// LoRA x·A of the two head linears.
    pub lora_h: [Vec<f32>; 2],
}

/// Scratch of the backward pass, shared by all layers.
#[derive(Default, Debug)]
pub struct GradScratch {
    /// Gradient arriving at a layer's output [N, C].
    pub d_out: Vec<f32>,
    /// Second LayerNorm input gradient, then the first LayerNorm output gradient [N, C].
    pub d_a: Vec<f32>,
    /// First LayerNorm input gradient, then the layer input gradient [N, C].
    pub d_b: Vec<f32>,
    /// Dropout-masked copy of a gradient [N, C].
    pub d_tmp: Vec<f32>,
    /// Feed-forward gradient [N, F].
    pub d_ffn: Vec<f32>,
    /// Context gradient [N, C].
    pub d_ctx: Vec<f32>,
    /// Query gradient [N, C].
    pub dq: Vec<f32>,
    /// Key gradient [N, C].
    pub dk: Vec<f32>,
    /// Value gradient [N, C].
    pub dv: Vec<f32>,
    /// Attention scratch (dropout-masked probabilities, then score gradients).
    pub probs: Vec<f32>,
    /// LoRA scratch.
    pub lora: LoraScratch,
    /// Head gradients [B, C].
    pub d_head_a: Vec<f32>,
    /// Logit gradients [B, K].
    pub dlogits: Vec<f32>,
}

/// All buffers of one model for batches up to the largest seen so far.
#[derive(Default, Debug)]
pub struct BertActs {
    /// Rows in the current batch.
    pub n: usize,
    /// Sequences in the current batch.
    pub b: usize,
    /// Embedding sum before LayerNorm [N, C].
    pub emb_sum: Vec<f32>,
    /// Embedding LayerNorm mean [N].
    pub emb_mean: Vec<f32>,
    /// Embedding LayerNorm 1/std [N].
    pub emb_rstd: Vec<f32>,
    /// Hidden states: hidden[0] after the embeddings, hidden[l + 1] after layer l. Only two
    /// (reused alternately) in inference mode.
    pub hidden: Vec<Vec<f32>>,
    /// Per-layer caches (a single reused one in inference mode).
    pub layers: Vec<LayerCache>,
    /// Head cache.
    pub head: HeadCache,
    /// Backward scratch.
    pub grad: GradScratch,
    /// Forward scratch for LoRA input dropout [N, max(C, F)].
    pub lora_x: Vec<f32>,
    /// Forward scratch for attention-probability dropout.
    pub probs_drop: Vec<f32>,
    /// The last layer's input at the [CLS] rows [B, C] (its queries).
    pub cls_in: Vec<f32>,
    /// Where layers that do not keep their context write it [N, C].
    pub spare_ctx: Vec<f32>,
    /// Where layers that do not keep their feed-forward activation write it [N, F].
    pub spare_act: Vec<f32>,
}

impl BertActs {
    /// Grows the buffers for a batch of `n` rows, `b` sequences, `probs` attention
    /// probabilities; `train` keeps every layer's cache (for backward, with the optional
    /// activations `keeps[l]` says layer l needs), otherwise one is reused.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(&mut self, cfg: &EncoderConfig, num_labels: usize, n: usize, b: usize, probs: usize, train: bool, keeps: &[Keep]) {
        let (c, f) = (cfg.dim, cfg.ffn_dim);
        self.n = n;
        self.b = b;
        grow(&mut self.emb_sum, n * c);
        grow(&mut self.emb_mean, n);
        grow(&mut self.emb_rstd, n);
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
        for (i, l) in self.layers[..n_layers].iter_mut().enumerate() {
            let keep = if train { keeps.get(i).copied().unwrap_or(Keep::ALL) } else { Keep::ALL };
            for v in [&mut l.q, &mut l.k, &mut l.v, &mut l.attn_res, &mut l.x1, &mut l.ffn_res] {
                grow(v, n * c);
            }
            grow(&mut l.ffn_pre, n * f);
            for (v, kept, len) in [(&mut l.ctx, keep.ctx, n * c), (&mut l.ffn_act, keep.ffn_act, n * f)] {
                if kept {
                    grow(v, len);
                } else {
                    *v = Vec::new();
                }
            }
            for v in [&mut l.ln1_mean, &mut l.ln1_rstd, &mut l.ln2_mean, &mut l.ln2_rstd] {
                grow(v, n);
            }
            grow(&mut l.probs, probs);
        }
        grow(&mut self.cls_in, b * c);
        let hd = &mut self.head;
        for v in [&mut hd.cls, &mut hd.pre, &mut hd.act, &mut hd.dropped] {
            grow(v, b * c);
        }
        grow(&mut hd.logits, b * num_labels);
        grow(&mut self.probs_drop, probs);
        if train && keeps.iter().any(|k| !k.ctx) {
            grow(&mut self.spare_ctx, n * c);
        }
        if train && keeps.iter().any(|k| !k.ffn_act) {
            grow(&mut self.spare_act, n * f);
        }
        if train {
            let g = &mut self.grad;
            for v in [&mut g.d_out, &mut g.d_a, &mut g.d_b, &mut g.d_tmp, &mut g.d_ctx, &mut g.dq, &mut g.dk, &mut g.dv] {
                grow(v, n * c);
            }
            grow(&mut g.d_ffn, n * f);
            grow(&mut g.probs, probs);
            grow(&mut g.d_head_a, b * c);
            grow(&mut g.dlogits, b * num_labels);
        }
    }

    /// Logits of the last forward pass [B, K].
    pub fn logits(&self, num_labels: usize) -> &[f32] {
        &self.head.logits[..self.b * num_labels]
    }
}
