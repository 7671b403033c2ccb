//! Decoders: the Llama family (Llama, Qwen2, Mistral) and GPT-2, with a sequence-classification
//! head (`score` on each sequence's last token, as transformers' *ForSequenceClassification) or a
//! language-model head, and an explicit forward and backward over their buffer plan ([`acts`]).
//!
//! One network serves every family ([`layer`]: pre-norm, causal grouped-query attention,
//! rotary or learned positions, SwiGLU or GELU MLP); [`config`] reads each family's
//! config.json, [`names`] keeps its tensor names and [`load`] reads its checkpoints.
//!
//! Dimensions: N packed rows, B sequences, C width, V vocabulary, K classes.

pub mod acts;
pub mod config;
pub mod layer;
pub mod load;
pub mod names;
pub mod save;
pub mod summary;

pub use acts::DecoderActs;
pub use config::{DecoderArch, DecoderConfig};
pub use layer::{DecoderLayer, LayerDropout, Mlp, Qkv};

use crate::data::batch::{Batch, IGNORE};
use crate::lora::Role;
use crate::model::linear::{grow, Linear};
use crate::model::norm::{LayerNorm, Norm, RmsNorm};
use crate::model::Pass;
use crate::ops::attention::{probs_len, AttnSpan, Heads};
use crate::ops::dropout::Dropout;
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::linear::Arith;
use crate::ops::lm_loss::{lm_loss, lm_weight_grad, LmStats};
use crate::ops::precision::{PackedWeight, Precision};
use crate::ops::rope::Rope;
use crate::param::Param;
use std::sync::Arc;

/// What sits on top of the decoder.
#[derive(Clone, Debug)]
pub enum DecoderHead {
    /// Sequence classification: `score` [K, C] (no bias) on each sequence's last token.
    Score(Linear),
    /// Next-token prediction: `lm_head` [V, C], or the token embedding itself when tied.
    Lm(Option<Linear>),
}

/// A decoder with its head.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// The decoder's configuration.
    pub config: DecoderConfig,
    /// Token embedding [V, C].
    pub embed: Param,
    /// Learned position embedding [P, C] (GPT-2).
    pub positions: Option<Param>,
    /// The layers.
    pub layers: Vec<DecoderLayer>,
    /// The final norm.
    pub norm: Norm,
    /// The head.
    pub head: DecoderHead,
    /// Rotary frequencies (None: learned positions).
    pub rope: Option<Rope>,
    /// Names of parameters initialised here rather than loaded (a fresh `score`).
    pub initialised: Vec<String>,
    /// The arithmetic of the language-model head's products.
    pub precision: Precision,
    /// The frozen output weight packed as bf16 (language-model head, bf16 only).
    pub packed_output: Option<Arc<PackedWeight>>,
}

fn norm(cfg: &DecoderConfig, path: String) -> Norm {
    if cfg.arch.is_gpt2() {
        Norm::Layer(LayerNorm::new(path, cfg.dim, cfg.norm_eps))
    } else {
        Norm::Rms(RmsNorm::new(path, cfg.dim, cfg.norm_eps))
    }
}

impl Decoder {
    /// A decoder of zeros (norm scales 1) with every tensor named; nothing trains. `num_labels`
    /// Some(K) gives a classification head, None a language-model head.
    pub fn new(cfg: &DecoderConfig, num_labels: Option<usize>) -> Decoder {
        let (c, f, q, kv) = (cfg.dim, cfg.ffn_dim, cfg.q_dim(), cfg.kv_dim());
        let arch = cfg.arch;
        let heads = Heads { q: cfg.n_heads, kv: cfg.n_kv_heads, dim: cfg.head_dim };
        let lin = |path: &String, role, i, o, bias: bool| {
            if bias {
                Linear::new(path.clone(), role, i, o)
            } else {
                Linear::without_bias(path.clone(), role, i, o)
            }
        };
        let layers = (0..cfg.n_layers)
            .map(|l| {
                let (n1, n2) = names::layer_norms(arch, l);
                let a = names::attention(arch, l);
                let m = names::mlp(arch, l);
                let (qkv, o) = if arch.is_gpt2() {
                    (Qkv::Fused(lin(&a[0], Role::Qkv, c, q + 2 * kv, true)), lin(&a[1], Role::Projection, q, c, true))
                } else {
                    let b = cfg.qkv_bias;
                    let sep = [lin(&a[0], Role::Query, c, q, b), lin(&a[1], Role::Key, c, kv, b), lin(&a[2], Role::Value, c, kv, b)];
                    (Qkv::Separate(sep), lin(&a[3], Role::Projection, q, c, cfg.o_bias))
                };
                let mlp = if arch.is_gpt2() {
                    Mlp::Plain {
                        fc: lin(&m[0], Role::FfnIn, c, f, true),
                        proj: lin(&m[1], Role::FfnOut, f, c, true),
                        activation: cfg.activation,
                    }
                } else {
                    let b = cfg.mlp_bias;
                    Mlp::Gated {
                        gate: lin(&m[0], Role::FfnIn, c, f, b),
                        up: lin(&m[1], Role::FfnIn, c, f, b),
                        down: lin(&m[2], Role::FfnOut, f, c, b),
                    }
                };
                DecoderLayer { attn_norm: norm(cfg, n1), qkv, o, mlp_norm: norm(cfg, n2), mlp, heads }
            })
            .collect();
        let head = match num_labels {
            Some(k) => DecoderHead::Score(Linear::without_bias(names::SCORE.into(), Role::Classifier, c, k)),
            None if cfg.tie_word_embeddings => DecoderHead::Lm(None),
            None => DecoderHead::Lm(Some(Linear::without_bias(names::LM_HEAD.into(), Role::Classifier, c, cfg.vocab_size))),
        };
        Decoder {
            config: cfg.clone(),
            embed: Param::zeros(format!("{}.weight", names::embed(arch)), &[cfg.vocab_size, c]),
            positions: arch.is_gpt2().then(|| Param::zeros(format!("{}.weight", names::POSITIONS), &[cfg.max_position_embeddings, c])),
            layers,
            norm: norm(cfg, names::final_norm(arch).into()),
            head,
            rope: cfg.rope_theta.map(|theta| Rope::new(theta, cfg.head_dim, cfg.rope_scaling)),
            initialised: Vec::new(),
            precision: Precision::Fp32,
            packed_output: None,
        }
    }

    /// Number of classes K (the vocabulary for a language-model head).
    pub fn num_labels(&self) -> usize {
        match &self.head {
            DecoderHead::Score(s) => s.out_dim(),
            DecoderHead::Lm(_) => self.config.vocab_size,
        }
    }

    /// The head's own linear layer (score, or an untied lm_head).
    pub fn head_linear(&self) -> Option<&Linear> {
        match &self.head {
            DecoderHead::Score(s) | DecoderHead::Lm(Some(s)) => Some(s),
            DecoderHead::Lm(None) => None,
        }
    }

    /// Mutable access to [`Decoder::head_linear`].
    pub fn head_linear_mut(&mut self) -> Option<&mut Linear> {
        match &mut self.head {
            DecoderHead::Score(s) | DecoderHead::Lm(Some(s)) => Some(s),
            DecoderHead::Lm(None) => None,
        }
    }

    /// Every linear layer: layer by layer (q, k, v, o, gate, up, down), then the head's.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = self.layers.iter().flat_map(DecoderLayer::linears).collect();
        v.extend(self.head_linear());
        v
    }

    /// Mutable access to every linear layer, in [`Decoder::linears`] order.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = Vec::new();
        for l in &mut self.layers {
            v.extend(l.linears_mut());
        }
        if let DecoderHead::Score(s) | DecoderHead::Lm(Some(s)) = &mut self.head {
            v.push(s);
        }
        v
    }

    /// Every base parameter (LoRA excluded) in a fixed order: embeddings, then per layer its
    /// attention norm, attention linears, MLP norm and MLP linears, then the final norm and head.
    pub fn base_params(&self) -> Vec<&Param> {
        let mut v: Vec<&Param> = vec![&self.embed];
        v.extend(self.positions.as_ref());
        for l in &self.layers {
            v.extend(l.attn_norm.params());
            let lins = l.linears();
            let split = lins.len() - if matches!(l.mlp, Mlp::Gated { .. }) { 3 } else { 2 };
            for lin in &lins[..split] {
                v.extend(lin.base_params());
            }
            v.extend(l.mlp_norm.params());
            for lin in &lins[split..] {
                v.extend(lin.base_params());
            }
        }
        v.extend(self.norm.params());
        if let Some(h) = self.head_linear() {
            v.extend(h.base_params());
        }
        v
    }

    /// Mutable access to every base parameter, in [`Decoder::base_params`] order.
    pub fn base_params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = Vec::new();
        self.collect_params_mut(&mut v, &mut Vec::new());
        v
    }

    /// Every parameter: base ones in [`Decoder::base_params`] order, then every LoRA A and B.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let (mut base, mut loras) = (Vec::new(), Vec::new());
        self.collect_params_mut(&mut base, &mut loras);
        base.extend(loras);
        base
    }

    fn collect_params_mut<'a>(&'a mut self, base: &mut Vec<&'a mut Param>, loras: &mut Vec<&'a mut Param>) {
        base.push(&mut self.embed);
        base.extend(self.positions.as_mut());
        for l in &mut self.layers {
            let DecoderLayer { attn_norm, qkv, o, mlp_norm, mlp, .. } = l;
            base.extend(attn_norm.params_mut());
            match qkv {
                Qkv::Separate(ls) => ls.iter_mut().for_each(|lin| lin.collect_params_mut(base, loras)),
                Qkv::Fused(lin) => lin.collect_params_mut(base, loras),
            }
            o.collect_params_mut(base, loras);
            base.extend(mlp_norm.params_mut());
            match mlp {
                Mlp::Gated { gate, up, down } => [gate, up, down].into_iter().for_each(|lin| lin.collect_params_mut(base, loras)),
                Mlp::Plain { fc, proj, .. } => [fc, proj].into_iter().for_each(|lin| lin.collect_params_mut(base, loras)),
            }
        }
        base.extend(self.norm.params_mut());
        if let DecoderHead::Score(s) | DecoderHead::Lm(Some(s)) = &mut self.head {
            s.collect_params_mut(base, loras);
        }
    }

    /// Every parameter including LoRA, read-only, in [`Decoder::params_mut`] order.
    pub fn params(&self) -> Vec<&Param> {
        let mut v = self.base_params();
        for lin in self.linears() {
            v.extend(lin.lora_params());
        }
        v
    }

    /// The parameters the seed's "last layers" baseline trains on a decoder: the head, the last
    /// decoder layer and the final norm (as in Raschka's GPT-2 classification chapter).
    pub fn set_last_layers_trainable(&mut self) {
        if let Some(h) = self.head_linear_mut() {
            h.set_base_trainable(true);
        }
        self.norm.params_mut().into_iter().for_each(|p| p.set_trainable(true));
        if let Some(last) = self.layers.last_mut() {
            last.attn_norm.params_mut().into_iter().for_each(|p| p.set_trainable(true));
            last.mlp_norm.params_mut().into_iter().for_each(|p| p.set_trainable(true));
            last.linears_mut().into_iter().for_each(|l| l.set_base_trainable(true));
        }
    }

    fn embeddings_trainable(&self) -> bool {
        self.embed.trainable() || self.positions.as_ref().is_some_and(Param::trainable)
    }

    /// The lowest layer whose backward is needed (None when nothing below the head trains), and
    /// whether the embeddings train.
    fn backward_floor(&self) -> (Option<usize>, bool) {
        if self.embeddings_trainable() {
            return (Some(0), true);
        }
        (self.layers.iter().position(DecoderLayer::trainable), false)
    }

    fn dropouts(&self, pass: Pass) -> (Dropout, Vec<LayerDropout>, Dropout) {
        let Pass::Train { seed, step } = pass else {
            return (Dropout::OFF, vec![LayerDropout::OFF; self.layers.len()], Dropout::OFF);
        };
        let cfg = &self.config;
        let site = |p: f32, id: u64| if p > 0.0 { Dropout::site(p, seed, step, id) } else { Dropout::OFF };
        let lora_p = |lin: &Linear| lin.lora.as_ref().map_or(0.0, |l| l.dropout);
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let base = 16 * (l as u64 + 1);
                let lins = layer.linears();
                LayerDropout {
                    attn: site(cfg.attention_dropout, base),
                    attn_out: site(cfg.resid_dropout, base + 1),
                    mlp_out: site(cfg.resid_dropout, base + 2),
                    lora: std::array::from_fn(|i| lins.get(i).map_or(Dropout::OFF, |lin| site(lora_p(lin), base + 3 + i as u64))),
                }
            })
            .collect();
        let head = self.head_linear().map_or(Dropout::OFF, |h| site(lora_p(h), 2));
        (site(cfg.embd_dropout, 0), layers, head)
    }

    /// Causal attention spans, one per sequence.
    fn spans(batch: &Batch) -> Vec<AttnSpan> {
        batch.seqs.iter().map(AttnSpan::causal).collect()
    }

    /// The row each sequence's classification head reads: its last token that is not the padding
    /// token (transformers' rule), else its last real token.
    fn head_rows(&self, batch: &Batch, rows: &mut Vec<usize>) {
        rows.clear();
        let pad = self.config.pad_token_id;
        for s in &batch.seqs {
            let real = &batch.ids[s.start..s.start + s.valid];
            let last = real.iter().rposition(|id| Some(*id) != pad).unwrap_or(s.valid.saturating_sub(1));
            rows.push(s.start + last);
        }
    }

    /// The rows whose head output is wanted (classification: each sequence's head row; language
    /// modelling: every row with a target), their targets, the layers run and the final norm
    /// applied to those rows (into `acts.pooled`).
    fn forward_body(&self, batch: &Batch, acts: &mut DecoderActs, pass: Pass) {
        let (n, b, c) = (batch.n_tokens(), batch.len(), self.config.dim);
        let keep = pass.keeps_caches();
        let spans = Self::spans(batch);
        let k = if matches!(self.head, DecoderHead::Score(_)) { self.num_labels() } else { 0 };
        acts.prepare(&self.config, k, n, b, probs_len(&spans, self.config.n_heads), keep);
        let (emb_drop, layer_drops, _) = self.dropouts(pass);
        let last = self.run_layers(batch, acts, &spans, keep, emb_drop, &layer_drops);
        match self.head {
            DecoderHead::Score(_) => self.head_rows(batch, &mut acts.rows),
            DecoderHead::Lm(_) => {
                acts.rows.clear();
                acts.targets.clear();
                for (r, &t) in batch.targets.iter().enumerate() {
                    if t != IGNORE {
                        acts.rows.push(r);
                        acts.targets.push(t);
                    }
                }
            }
        }
        let m = acts.rows.len();
        let DecoderActs { hidden, rows, gathered, nf, pooled, .. } = acts;
        grow(gathered, m * c);
        grow(pooled, m * c);
        for (i, &r) in rows.iter().enumerate() {
            gathered[i * c..(i + 1) * c].copy_from_slice(&hidden[last][r * c..(r + 1) * c]);
        }
        self.norm.forward(pooled, nf, &gathered[..m * c], m);
    }

    /// Forward pass with a classification head; returns the logits [B, K].
    pub fn forward<'a>(&self, batch: &Batch, acts: &'a mut DecoderActs, pass: Pass) -> &'a [f32] {
        let b = batch.len();
        self.forward_body(batch, acts, pass);
        let head_drop = self.dropouts(pass).2;
        let c = self.config.dim;
        let DecoderActs { pooled, logits, head_lora_h, scratch, .. } = acts;
        let head = self.head_linear().expect("a classification head");
        head.forward(logits, head_lora_h, &pooled[..b * c], &mut scratch.lora_x, b, head_drop);
        &acts.logits[..b * self.num_labels()]
    }

    /// The output layer's weight [V, C]: lm_head's, or the token embedding when tied.
    fn output_weight(&self) -> &[f32] {
        match &self.head {
            DecoderHead::Lm(Some(l)) => &l.weight.data,
            _ => &self.embed.data,
        }
    }

    /// The arithmetic of the language-model head's products.
    fn output_arith(&self) -> Arith<'_> {
        Arith::of(self.precision, self.packed_output.as_deref(), self.output_weight())
    }

    /// Sets the arithmetic of every base product (see [`Linear::set_precision`]); a frozen
    /// language-model output weight is packed too.
    pub fn set_precision(&mut self, precision: Precision, backward: bool) {
        for l in self.linears_mut() {
            l.set_precision(precision, backward);
        }
        self.precision = precision;
        let frozen = match &self.head {
            DecoderHead::Lm(Some(l)) => !l.weight.trainable(),
            DecoderHead::Lm(None) => !self.embed.trainable(),
            DecoderHead::Score(_) => false,
        };
        self.packed_output = (precision == Precision::Bf16 && frozen)
            .then(|| Arc::new(PackedWeight::new(self.output_weight(), self.config.vocab_size, self.config.dim, backward)));
    }

    /// Forward pass with the language-model head: the next-token loss over every row of
    /// `batch.targets` that is not [`IGNORE`]. A pass that keeps caches also leaves the loss's
    /// gradient (of the mean over the batch's targets) ready for [`Decoder::lm_backward`].
    pub fn lm_forward(&self, batch: &Batch, acts: &mut DecoderActs, pass: Pass) -> LmStats {
        assert!(matches!(self.head, DecoderHead::Lm(_)), "lm_forward needs a language-model head");
        self.forward_body(batch, acts, pass);
        let (c, v, m) = (self.config.dim, self.config.vocab_size, acts.rows.len());
        let DecoderActs { pooled, targets, lm_scratch, grad, .. } = acts;
        let scale = 1.0 / m.max(1) as f32;
        let dh = if pass.keeps_caches() {
            grow(&mut grad.d_pooled, m * c);
            Some(&mut grad.d_pooled[..m * c])
        } else {
            None
        };
        lm_loss(&pooled[..m * c], self.output_weight(), targets, c, v, scale, dh, lm_scratch, self.output_arith())
    }

    /// The language-model head's product over final-normed rows: `logits` [R, V] = `normed`
    /// [R, C] · Wᵀ, W the output weight (lm_head's, or the tied token embedding), in the model's
    /// arithmetic (incremental decoding).
    pub fn lm_head_forward(&self, logits: &mut [f32], normed: &[f32], r: usize) {
        let (c, v) = (self.config.dim, self.config.vocab_size);
        crate::ops::linear::linear_forward_with(logits, normed, self.output_weight(), None, r, c, v, self.output_arith());
    }

    /// Logits [R, V] of the language-model head at `rows` of the last forward pass's final
    /// hidden state (generation and tests); `acts.hidden` must hold it (an inference pass).
    pub fn lm_logits(&self, acts: &DecoderActs, rows: &[usize], keep: bool) -> Vec<f32> {
        let (c, v) = (self.config.dim, self.config.vocab_size);
        let last = if keep { self.layers.len() } else { self.layers.len() % 2 };
        let gathered: Vec<f32> = rows.iter().flat_map(|&r| acts.hidden[last][r * c..(r + 1) * c].to_vec()).collect();
        let mut normed = vec![0.0; gathered.len()];
        self.norm.forward(&mut normed, &mut crate::model::norm::NormCache::default(), &gathered, rows.len());
        let mut logits = vec![0.0; rows.len() * v];
        crate::ops::linear::linear_forward_with(&mut logits, &normed, self.output_weight(), None, rows.len(), c, v, self.output_arith());
        logits
    }

    /// Embeddings and every layer; returns the index of the last hidden state in `acts.hidden`.
    fn run_layers(
        &self,
        batch: &Batch,
        acts: &mut DecoderActs,
        spans: &[AttnSpan],
        keep: bool,
        emb_drop: Dropout,
        drops: &[LayerDropout],
    ) -> usize {
        let (n, c) = (batch.n_tokens(), self.config.dim);
        let DecoderActs { hidden, layers, cos, sin, scratch, .. } = acts;
        let pos = self.positions.as_ref().map(|p| p.data.as_slice());
        embedding_forward(&mut hidden[0], &batch.ids, &batch.positions, None, &self.embed.data, pos, None, c);
        emb_drop.apply(&mut hidden[0][..n * c], 0);
        if let Some(rope) = &self.rope {
            rope.tables(&batch.positions, cos, sin);
        }
        let tables = self.rope.as_ref().map(|_| (cos.as_slice(), sin.as_slice()));
        for (l, layer) in self.layers.iter().enumerate() {
            let (src, dst, cache) = if keep { (l, l + 1, &mut layers[l]) } else { (l % 2, (l + 1) % 2, &mut layers[0]) };
            let (lo, hi) = hidden.split_at_mut(src.max(dst));
            let (x, out) = if src < dst { (&lo[src], &mut hi[0]) } else { (&hi[0], &mut lo[dst]) };
            layer.forward(out, &x[..n * c], cache, scratch, spans, tables, n, &drops[l]);
        }
        if keep {
            self.layers.len()
        } else {
            self.layers.len() % 2
        }
    }

    /// The final-normed hidden state at each sequence's head row [B, C], from the last forward.
    pub fn pooled_hidden<'a>(&self, acts: &'a DecoderActs) -> &'a [f32] {
        &acts.pooled[..acts.b * self.config.dim]
    }

    /// Backward pass of the classification head and the layers from `acts.grad.dlogits`,
    /// accumulating into the gradients of trainable parameters.
    pub fn backward(&mut self, batch: &Batch, acts: &mut DecoderActs, pass: Pass) {
        assert!(pass.keeps_caches(), "backward needs a forward pass in Eval or Train mode");
        let (b, c) = (batch.len(), self.config.dim);
        let head_drop = self.dropouts(pass).2;
        let need_below = self.backward_floor().0.is_some() || self.norm.trainable();
        let DecoderActs { pooled, head_lora_h, grad, .. } = acts;
        let head = self.head_linear_mut().expect("a classification head");
        let d_pooled = need_below.then_some(&mut grad.d_pooled[..b * c]);
        head.backward(d_pooled, false, &grad.dlogits, &pooled[..b * c], head_lora_h, &mut grad.lora, b, head_drop);
        if need_below {
            self.backward_body(batch, acts, pass);
        }
    }

    /// Backward pass of the language-model head and the layers from the gradient
    /// [`Decoder::lm_forward`] left, accumulating into the gradients of trainable parameters.
    pub fn lm_backward(&mut self, batch: &Batch, acts: &mut DecoderActs, pass: Pass) {
        assert!(pass.keeps_caches(), "backward needs a forward pass in Eval or Train mode");
        let (c, v, m) = (self.config.dim, self.config.vocab_size, acts.rows.len());
        let scale = 1.0 / m.max(1) as f32;
        let DecoderActs { pooled, targets, lm_scratch, .. } = acts;
        // A trainable output weight is never packed: its products pack it on the fly.
        let arith = Arith::of(self.precision, None, &[]);
        match &mut self.head {
            DecoderHead::Lm(Some(l)) => {
                if let Some(g) = l.weight.grad.as_deref_mut() {
                    lm_weight_grad(g, &pooled[..m * c], &l.weight.data, targets, c, v, scale, lm_scratch, arith);
                }
            }
            _ => {
                if let Some(g) = self.embed.grad.as_deref_mut() {
                    lm_weight_grad(g, &pooled[..m * c], &self.embed.data, targets, c, v, scale, lm_scratch, arith);
                }
            }
        }
        if self.backward_floor().0.is_some() || self.norm.trainable() {
            self.backward_body(batch, acts, pass);
        }
    }

    /// From the gradient of the final norm's output rows (`acts.grad.d_pooled`) down through the
    /// final norm, every layer that needs it, and the embeddings.
    fn backward_body(&mut self, batch: &Batch, acts: &mut DecoderActs, pass: Pass) {
        let (n, c, m) = (batch.n_tokens(), self.config.dim, acts.rows.len());
        let (emb_drop, layer_drops, _) = self.dropouts(pass);
        let (floor, emb) = self.backward_floor();
        let spans = Self::spans(batch);
        let DecoderActs { hidden, layers, cos, sin, rows, gathered, nf, grad, .. } = acts;
        grow(&mut grad.d_final, m * c);
        self.norm.backward(&mut grad.d_final, &grad.d_pooled, &gathered[..m * c], nf, m, false);
        let Some(floor) = floor else { return };
        // Scatter the head rows' gradient into the last hidden state's gradient.
        grad.d_out[..n * c].fill(0.0);
        for (i, &r) in rows.iter().enumerate() {
            grad.d_out[r * c..(r + 1) * c].copy_from_slice(&grad.d_final[i * c..(i + 1) * c]);
        }
        let tables = self.rope.as_ref().map(|_| (cos.as_slice(), sin.as_slice()));
        for l in (floor..self.layers.len()).rev() {
            let need_dx = l > floor || emb;
            self.layers[l].backward(grad, &hidden[l][..n * c], &layers[l], &spans, tables, n, &layer_drops[l], need_dx);
        }
        if emb {
            emb_drop.apply(&mut grad.d_out[..n * c], 0);
            if let Some(g) = self.embed.grad.as_deref_mut() {
                embedding_backward(g, &batch.ids, &grad.d_out[..n * c], c);
            }
            if let Some(g) = self.positions.as_mut().and_then(|p| p.grad.as_deref_mut()) {
                embedding_backward(g, &batch.positions, &grad.d_out[..n * c], c);
            }
        }
    }
}
