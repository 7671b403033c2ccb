//! BERT and DistilBERT: the post-LayerNorm encoder with a sequence-classification head, with an
//! explicit forward and backward over its buffer plan ([`acts`]).
//!
//! One struct serves DistilBERT and BERT checkpoints (they are the same network); [`names`] keeps
//! each family's Hugging Face tensor names, [`load`] reads them.
//!
//! Dimensions: N packed rows, B sequences, C width, F feed-forward width, K classes.

pub mod acts;
pub mod config;
pub mod embeddings;
pub mod head;
pub mod layer;
pub mod load;
pub mod names;
pub mod summary;

pub use crate::model::HeadKind;
pub use acts::BertActs;
use acts::{Keep, FFN2, O};
pub use embeddings::Embeddings;
pub use head::{Head, HeadDropout};
pub use layer::{EncoderLayer, LayerDropout};

use super::config::EncoderConfig;
use crate::data::batch::Batch;
use crate::lora::Role;
use crate::model::linear::Linear;
use crate::model::norm::LayerNorm;
use crate::model::Pass;
use crate::ops::attention::{probs_len, AttnSpan};
use crate::ops::dropout::Dropout;
use crate::param::Param;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// A BERT-family encoder with a classification head.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// The encoder's configuration (arch says which tensor names it uses).
    pub config: EncoderConfig,
    /// Embeddings.
    pub embeddings: Embeddings,
    /// Encoder layers.
    pub layers: Vec<EncoderLayer>,
    /// Classification head.
    pub head: Head,
    /// Names of parameters that were initialised here rather than loaded from the checkpoint
    /// (a fresh head): an adapter must carry them, since the base model cannot supply them.
    pub initialised: Vec<String>,
}

impl Encoder {
    /// A model of zeros (LayerNorm γ = 1) with every tensor named; nothing trains. Zero pages
    /// are not touched until written, so building one only to count parameters is cheap.
    pub fn new(config: &EncoderConfig, head: HeadKind, num_labels: usize) -> Encoder {
        let arch = config.arch;
        let (c, f) = (config.dim, config.ffn_dim);
        let emb = names::embeddings(arch);
        let embeddings = Embeddings {
            word: Param::zeros(format!("{emb}.word_embeddings.weight"), &[config.vocab_size, c]),
            position: Param::zeros(format!("{emb}.position_embeddings.weight"), &[config.max_position_embeddings, c]),
            token_type: (config.type_vocab_size > 0)
                .then(|| Param::zeros(format!("{emb}.token_type_embeddings.weight"), &[config.type_vocab_size, c])),
            ln: LayerNorm::new(format!("{emb}.LayerNorm"), c, config.layer_norm_eps),
        };
        let layers = (0..config.n_layers)
            .map(|l| {
                let lin = |role: Role, i: usize, o: usize| Linear::new(names::layer_linear(arch, l, role), role, i, o);
                let (ln1, ln2) = names::layer_norms(arch, l);
                EncoderLayer {
                    linears: [
                        lin(Role::Query, c, c),
                        lin(Role::Key, c, c),
                        lin(Role::Value, c, c),
                        lin(Role::Projection, c, c),
                        lin(Role::FfnIn, c, f),
                        lin(Role::FfnOut, f, c),
                    ],
                    ln1: LayerNorm::new(ln1, c, config.layer_norm_eps),
                    ln2: LayerNorm::new(ln2, c, config.layer_norm_eps),
                    heads: config.n_heads,
                    activation: config.activation,
                }
            })
            .collect();
        let head = Head {
            kind: head,
            hidden: Linear::new(names::head_linear(head, Role::HeadHidden), Role::HeadHidden, c, c),
            classifier: Linear::new(names::head_linear(head, Role::Classifier), Role::Classifier, c, num_labels),
            dropout: config.classifier_dropout,
        };
        Encoder { config: config.clone(), embeddings, layers, head, initialised: Vec::new() }
    }

    /// Number of classes K.
    pub fn num_labels(&self) -> usize {
        self.head.classifier.out_dim()
    }

    /// Initialises the head as transformers does for a fresh one: weights N(0, std), biases 0.
    pub fn init_head(&mut self, seed: u64, std: f32) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, std).expect("valid std");
        for lin in [&mut self.head.hidden, &mut self.head.classifier] {
            lin.weight.data.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
            if let Some(b) = &mut lin.bias {
                b.data.fill(0.0);
            }
        }
    }

    /// Every linear layer, encoder first (layer by layer: q, k, v, o, ffn in, ffn out), then the head.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = self.layers.iter().flat_map(|l| l.linears.iter()).collect();
        v.push(&self.head.hidden);
        v.push(&self.head.classifier);
        v
    }

    /// Mutable access to every linear layer, in [`Encoder::linears`] order.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = self.layers.iter_mut().flat_map(|l| l.linears.iter_mut()).collect();
        v.push(&mut self.head.hidden);
        v.push(&mut self.head.classifier);
        v
    }

    /// (module path, role) of every linear layer.
    pub fn linear_modules(&self) -> Vec<(String, Role)> {
        self.linears().iter().map(|l| (l.path.clone(), l.role)).collect()
    }

    /// Every base parameter (LoRA excluded) in a fixed order: embeddings, then per layer its six
    /// linears' weight and bias and its two LayerNorms, then the head.
    pub fn base_params(&self) -> Vec<&Param> {
        let e = &self.embeddings;
        let mut v: Vec<&Param> = vec![&e.word, &e.position];
        v.extend(e.token_type.as_ref());
        v.extend([&e.ln.weight, &e.ln.bias]);
        for layer in &self.layers {
            for lin in &layer.linears {
                v.extend(lin.base_params());
            }
            v.extend([&layer.ln1.weight, &layer.ln1.bias, &layer.ln2.weight, &layer.ln2.bias]);
        }
        v.extend(self.head.hidden.base_params().chain(self.head.classifier.base_params()));
        v
    }

    /// Mutable access to every base parameter, in [`Encoder::base_params`] order.
    pub fn base_params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = Vec::new();
        self.collect_params_mut(&mut v, &mut Vec::new());
        v
    }

    /// Every parameter, base ones in [`Encoder::base_params`] order followed by every LoRA tensor
    /// (A, B, lora_B's bias, DoRA's magnitude; the optimizer's order).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let (mut base, mut loras) = (Vec::new(), Vec::new());
        self.collect_params_mut(&mut base, &mut loras);
        base.extend(loras);
        base
    }

    fn collect_params_mut<'a>(&'a mut self, base: &mut Vec<&'a mut Param>, loras: &mut Vec<&'a mut Param>) {
        let e = &mut self.embeddings;
        base.push(&mut e.word);
        base.push(&mut e.position);
        base.extend(e.token_type.as_mut());
        base.extend([&mut e.ln.weight, &mut e.ln.bias]);
        for layer in &mut self.layers {
            let EncoderLayer { linears, ln1, ln2, .. } = layer;
            for lin in linears.iter_mut() {
                lin.collect_params_mut(base, loras);
            }
            base.extend([&mut ln1.weight, &mut ln1.bias, &mut ln2.weight, &mut ln2.bias]);
        }
        let Head { hidden, classifier, .. } = &mut self.head;
        hidden.collect_params_mut(base, loras);
        classifier.collect_params_mut(base, loras);
    }

    /// Every parameter including LoRA, read-only, in [`Encoder::params_mut`] order.
    pub fn params(&self) -> Vec<&Param> {
        let mut v = self.base_params();
        for lin in self.linears() {
            v.extend(lin.lora_params());
        }
        v
    }

    /// The lowest encoder layer whose backward is needed (None when nothing below the head
    /// trains), and whether the embeddings train.
    fn backward_floor(&self) -> (Option<usize>, bool) {
        let emb = self.embeddings.trainable();
        if emb {
            return (Some(0), true);
        }
        (self.layers.iter().position(EncoderLayer::trainable), false)
    }

    fn dropouts(&self, pass: Pass) -> (Dropout, Vec<LayerDropout>, HeadDropout) {
        let Pass::Train { seed, step } = pass else {
            return (
                Dropout::OFF,
                vec![LayerDropout::OFF; self.layers.len()],
                HeadDropout { classifier: Dropout::OFF, lora: [Dropout::OFF; 2] },
            );
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
                LayerDropout {
                    attn: site(cfg.attention_dropout, base),
                    attn_out: if cfg.dropout_after_attention_output { site(cfg.hidden_dropout, base + 1) } else { Dropout::OFF },
                    ffn_out: site(cfg.hidden_dropout, base + 2),
                    lora: std::array::from_fn(|i| site(lora_p(&layer.linears[i]), base + 3 + i as u64)),
                }
            })
            .collect();
        let head = HeadDropout {
            classifier: site(self.head.dropout, 1),
            lora: [site(lora_p(&self.head.hidden), 2), site(lora_p(&self.head.classifier), 3)],
        };
        (site(cfg.hidden_dropout, 0), layers, head)
    }

    /// Attention spans of every layer but the last (full self-attention), and of the last
    /// (only the [CLS] row of each sequence queries: nothing else reaches the head).
    fn spans(batch: &Batch) -> (Vec<AttnSpan>, Vec<AttnSpan>) {
        (batch.seqs.iter().map(AttnSpan::full).collect(), batch.seqs.iter().enumerate().map(|(i, s)| AttnSpan::cls(s, i)).collect())
    }

    /// Forward pass; returns the logits [B, K] (also kept in `acts`).
    pub fn forward<'a>(&self, batch: &Batch, acts: &'a mut BertActs, pass: Pass) -> &'a [f32] {
        let (n, b, c) = (batch.n_tokens(), batch.len(), self.config.dim);
        let keep = pass.keeps_caches();
        let (full, cls) = Self::spans(batch);
        let keeps = self.keeps();
        acts.prepare(&self.config, self.num_labels(), n, b, probs_len(&full, self.config.n_heads), keep, &keeps);
        let (emb_drop, layer_drops, head_drop) = self.dropouts(pass);
        let BertActs { emb_sum, emb_mean, emb_rstd, hidden, layers, head, lora_x, probs_drop, cls_in, spare_ctx, spare_act, .. } = acts;
        self.embeddings.forward(&mut hidden[0], emb_sum, emb_mean, emb_rstd, &batch.ids, &batch.positions, &batch.type_ids, emb_drop);
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let (src, dst, cache) = if keep { (l, l + 1, &mut layers[l]) } else { (l % 2, (l + 1) % 2, &mut layers[0]) };
            let (lo, hi) = hidden.split_at_mut(src.max(dst));
            let (x, out) = if src < dst { (&lo[src], &mut hi[0]) } else { (&hi[0], &mut lo[dst]) };
            // What backward will not read goes to the spare buffers (lent for this layer).
            let lend = |kept: bool, own: &mut Vec<f32>, spare: &mut Vec<f32>| {
                if keep && !kept {
                    std::mem::swap(own, spare);
                }
            };
            lend(keeps[l].ctx, &mut cache.ctx, spare_ctx);
            lend(keeps[l].ffn_act, &mut cache.ffn_act, spare_act);
            if l == last {
                // Only the [CLS] rows go on: gather them as the last layer's queries.
                for (i, s) in batch.seqs.iter().enumerate() {
                    cls_in[i * c..(i + 1) * c].copy_from_slice(&x[s.start * c..(s.start + 1) * c]);
                }
                layer.forward(out, x, Some(cls_in), cache, &cls, n, b, &layer_drops[l], lora_x, probs_drop);
            } else {
                layer.forward(out, x, None, cache, &full, n, n, &layer_drops[l], lora_x, probs_drop);
            }
            lend(keeps[l].ctx, &mut cache.ctx, spare_ctx);
            lend(keeps[l].ffn_act, &mut cache.ffn_act, spare_act);
        }
        let out = if keep { self.layers.len() } else { self.layers.len() % 2 };
        self.head.forward(head, &hidden[out][..b * c], &head_drop, lora_x);
        acts.logits(self.num_labels())
    }

    /// Which optional activations each layer's backward reads (see [`Keep`]).
    fn keeps(&self) -> Vec<Keep> {
        self.layers
            .iter()
            .map(|l| Keep { ctx: l.linears[O].needs_input(), ffn_act: l.linears[FFN2].needs_input() || l.activation.reads_output() })
            .collect()
    }

    /// The final hidden state of each sequence's [CLS] row, [B, C], from the most recent forward pass.
    pub fn cls_hidden<'a>(&self, acts: &'a BertActs, pass: Pass) -> &'a [f32] {
        let last = if pass.keeps_caches() { self.layers.len() } else { self.layers.len() % 2 };
        &acts.hidden[last][..acts.b * self.config.dim]
    }

    /// Backward pass from `acts.grad.dlogits` (set by the caller, e.g. by cross-entropy),
    /// accumulating into the gradients of trainable parameters. `mode` must be the one the
    /// forward pass ran with (it regenerates the same dropout masks).
    pub fn backward(&mut self, batch: &Batch, acts: &mut BertActs, pass: Pass) {
        assert!(pass.keeps_caches(), "backward needs a forward pass in Eval or Train mode");
        let (n, b, c) = (batch.n_tokens(), batch.len(), self.config.dim);
        let (emb_drop, layer_drops, head_drop) = self.dropouts(pass);
        let (floor, emb) = self.backward_floor();
        let (full, cls) = Self::spans(batch);
        let BertActs { emb_sum, emb_mean, emb_rstd, hidden, layers, head, grad, cls_in, .. } = acts;
        let mut d_out = floor.map(|_| std::mem::take(&mut grad.d_out));
        self.head.backward(grad, head, b, &head_drop, d_out.as_deref_mut().map(|d| &mut d[..b * c]));
        let Some(floor) = floor else {
            return;
        };
        grad.d_out = d_out.expect("floor implies d_out");
        let last = self.layers.len() - 1;
        for l in (floor..self.layers.len()).rev() {
            let need_dx = l > floor || emb;
            if l == last {
                self.layers[l].backward(grad, &hidden[l], Some(cls_in), &layers[l], &cls, n, b, &layer_drops[l], need_dx);
            } else {
                self.layers[l].backward(grad, &hidden[l], None, &layers[l], &full, n, n, &layer_drops[l], need_dx);
            }
            std::mem::swap(&mut grad.d_out, &mut grad.d_b);
        }
        if emb {
            self.embeddings.backward(
                &mut grad.d_out,
                &mut grad.d_a,
                emb_sum,
                emb_mean,
                emb_rstd,
                &batch.ids,
                &batch.positions,
                &batch.type_ids,
                emb_drop,
            );
        }
    }
}
