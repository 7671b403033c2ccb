//! The model layer, as a family of architectures over shared parts.
//!
//! Shared by every architecture: [`linear`] (a linear layer that may carry LoRA), [`norm`]
//! (normalisation modules), the kernels of [`crate::ops`] (GEMM, attention, LayerNorm, RMSNorm,
//! rotary positions, embeddings, activations, dropout) and the buffer helpers. Specific to one
//! family, one folder each: [`bert`] (BERT and DistilBERT encoders with a classification head)
//! and [`decoder`] (the Llama family and GPT-2). [`Model`] is the one surface the rest of
//! lowrank uses: forward, backward, parameters, linear layers and the head, whatever the
//! architecture.

pub mod bert;
pub mod config;
pub mod decoder;
pub mod linear;
pub mod load;
pub mod norm;
pub mod precision;
pub mod save;
pub mod summary;

pub use config::{Arch, DecoderArch, DecoderConfig, EncoderConfig, ModelConfig};
pub use linear::Linear;
pub use load::{LoadOptions, LoadReport};
pub use norm::LayerNorm;

use crate::data::batch::Batch;
use crate::error::{Error, Result};
use crate::lora::Role;
use crate::param::Param;
use serde::{Deserialize, Serialize};

/// Which head sits on the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// DistilBertForSequenceClassification: pre_classifier, ReLU, dropout, classifier.
    DistilBert,
    /// BertForSequenceClassification: pooler dense, tanh, dropout, classifier.
    Bert,
    /// A decoder's *ForSequenceClassification: `score` on each sequence's last token.
    Score,
    /// A decoder's *ForCausalLM: next-token prediction.
    Lm,
}

impl HeadKind {
    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::DistilBert => "distilbert",
            HeadKind::Bert => "bert",
            HeadKind::Score => "score",
            HeadKind::Lm => "lm",
        }
    }
}

impl std::str::FromStr for HeadKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "distilbert" => Ok(HeadKind::DistilBert),
            "bert" => Ok(HeadKind::Bert),
            "score" => Ok(HeadKind::Score),
            "lm" => Ok(HeadKind::Lm),
            other => {
                Err(Error::InvalidOption(format!("unknown head {other:?}; use distilbert or bert (encoders), score or lm (decoders)")))
            }
        }
    }
}

/// How a forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Prediction: no dropout, nothing kept for backward (one layer's buffers reused).
    Infer,
    /// Evaluation with caches (no dropout; backward possible, e.g. for gradient checks).
    Eval,
    /// Training: dropout on, masks derived from the run seed and the step number.
    Train {
        /// The run's seed.
        seed: u64,
        /// The optimizer step (gives every step fresh masks).
        step: u64,
    },
}

impl Pass {
    /// Whether the pass keeps what backward needs.
    pub fn keeps_caches(self) -> bool {
        !matches!(self, Pass::Infer)
    }
}

/// The buffer plan of whichever architecture runs: grown once to the largest batch, then reused.
#[derive(Default, Debug)]
pub struct Activations {
    /// BERT-family buffers.
    pub(crate) bert: bert::BertActs,
    /// Decoder buffers.
    pub(crate) decoder: decoder::DecoderActs,
    /// Gradient of the classification loss with respect to the logits [B, K].
    dlogits: Vec<f32>,
}

impl Activations {
    /// The decoder buffers (for inspecting a decoder's last forward pass, e.g. its logits).
    pub fn decoder_acts(&self) -> &decoder::DecoderActs {
        &self.decoder
    }
}

/// What a forward pass measured of the training objective.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    /// Mean loss: cross-entropy over the batch's examples (classification) or over its target
    /// tokens (language modelling).
    pub loss: f32,
    /// Examples (classification) or target tokens (language modelling) averaged over.
    pub count: usize,
    /// Of those, how many the model predicts right (arg max).
    pub correct: usize,
}

/// A model of any supported architecture, with its head.
// One value per process: the variants' size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Model {
    /// A BERT or DistilBERT encoder with a sequence-classification head.
    Bert(bert::Encoder),
    /// A decoder with a classification or language-model head.
    Decoder(decoder::Decoder),
}

impl Model {
    /// A model of zeros (norm scales 1) with every tensor named; nothing trains. Zero pages are
    /// not touched until written, so building one only to count parameters is cheap. A decoder
    /// gets a language-model head with [`HeadKind::Lm`], else a classification head.
    pub fn new(config: &ModelConfig, head: HeadKind, num_labels: usize) -> Model {
        match config {
            ModelConfig::Encoder(c) => Model::Bert(bert::Encoder::new(c, head, num_labels)),
            ModelConfig::Decoder(c) => Model::Decoder(decoder::Decoder::new(c, (head != HeadKind::Lm).then_some(num_labels))),
        }
    }

    /// The architecture's configuration.
    pub fn config(&self) -> ModelConfig {
        match self {
            Model::Bert(m) => ModelConfig::Encoder(m.config.clone()),
            Model::Decoder(m) => ModelConfig::Decoder(m.config.clone()),
        }
    }

    /// The model's `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self {
            Model::Bert(m) => m.config.arch.model_type(),
            Model::Decoder(m) => m.config.arch.model_type(),
        }
    }

    /// Hidden width C.
    pub fn dim(&self) -> usize {
        match self {
            Model::Bert(m) => m.config.dim,
            Model::Decoder(m) => m.config.dim,
        }
    }

    /// Vocabulary size: token ids must be below it.
    pub fn vocab_size(&self) -> usize {
        match self {
            Model::Bert(m) => m.config.vocab_size,
            Model::Decoder(m) => m.config.vocab_size,
        }
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        match self {
            Model::Bert(m) => m.layers.len(),
            Model::Decoder(m) => m.layers.len(),
        }
    }

    /// Class names by id from config.json, when it declares them.
    pub fn id2label(&self) -> Option<&std::collections::BTreeMap<usize, String>> {
        match self {
            Model::Bert(m) => m.config.id2label.as_ref(),
            Model::Decoder(m) => m.config.id2label.as_ref(),
        }
    }

    /// Number of classes K of the head.
    pub fn num_labels(&self) -> usize {
        match self {
            Model::Bert(m) => m.num_labels(),
            Model::Decoder(m) => m.num_labels(),
        }
    }

    /// The head's kind (recorded with adapters).
    pub fn head_kind(&self) -> HeadKind {
        match self {
            Model::Bert(m) => m.head.kind,
            Model::Decoder(m) => match m.head {
                decoder::DecoderHead::Score(_) => HeadKind::Score,
                decoder::DecoderHead::Lm(_) => HeadKind::Lm,
            },
        }
    }

    /// Names of parameters initialised here rather than loaded (a fresh head): an adapter must
    /// carry them, since the base model cannot supply them.
    pub fn initialised(&self) -> &[String] {
        match self {
            Model::Bert(m) => &m.initialised,
            Model::Decoder(m) => &m.initialised,
        }
    }

    /// Mutable access to [`Model::initialised`].
    pub fn initialised_mut(&mut self) -> &mut Vec<String> {
        match self {
            Model::Bert(m) => &mut m.initialised,
            Model::Decoder(m) => &mut m.initialised,
        }
    }

    /// Every linear layer in a fixed order (body layer by layer, then the head); LoRA is injected
    /// and initialised in this order.
    pub fn linears(&self) -> Vec<&Linear> {
        match self {
            Model::Bert(m) => m.linears(),
            Model::Decoder(m) => m.linears(),
        }
    }

    /// Mutable access to every linear layer, in [`Model::linears`] order.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Model::Bert(m) => m.linears_mut(),
            Model::Decoder(m) => m.linears_mut(),
        }
    }

    /// (module path, role) of every linear layer.
    pub fn linear_modules(&self) -> Vec<(String, Role)> {
        self.linears().iter().map(|l| (l.path.clone(), l.role)).collect()
    }

    /// The head's linear layers (an encoder's two, a decoder's score or untied lm_head).
    pub fn head_linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Model::Bert(m) => vec![&mut m.head.hidden, &mut m.head.classifier],
            Model::Decoder(m) => m.head_linear_mut().into_iter().collect(),
        }
    }

    /// Makes trainable what the seed's "last layers" baseline trains: an encoder's two head
    /// linears; a decoder's head, last layer and final norm.
    pub fn set_last_layers_trainable(&mut self) {
        match self {
            Model::Bert(m) => [&mut m.head.hidden, &mut m.head.classifier].into_iter().for_each(|l| l.set_base_trainable(true)),
            Model::Decoder(m) => m.set_last_layers_trainable(),
        }
    }

    /// Replaces the classifier by a frozen zero one with `k` classes (an adapter then supplies it).
    pub fn reset_classifier(&mut self, k: usize) {
        let last = self.head_linears_mut().pop();
        if let Some(c) = last {
            *c = if c.bias.is_some() {
                Linear::new(c.path.clone(), c.role, c.in_dim(), k)
            } else {
                Linear::without_bias(c.path.clone(), c.role, c.in_dim(), k)
            };
        }
    }

    /// Every base parameter (LoRA excluded) in a fixed order.
    pub fn base_params(&self) -> Vec<&Param> {
        match self {
            Model::Bert(m) => m.base_params(),
            Model::Decoder(m) => m.base_params(),
        }
    }

    /// Mutable access to every base parameter, in [`Model::base_params`] order.
    pub fn base_params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Model::Bert(m) => m.base_params_mut(),
            Model::Decoder(m) => m.base_params_mut(),
        }
    }

    /// Every parameter: base ones in [`Model::base_params`] order, then every LoRA tensor (A, B,
    /// lora_B's bias, DoRA's magnitude; the optimizer's order).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Model::Bert(m) => m.params_mut(),
            Model::Decoder(m) => m.params_mut(),
        }
    }

    /// Every parameter including LoRA, read-only, in [`Model::params_mut`] order (base ones,
    /// then each linear's LoRA tensors: the same for every architecture).
    pub fn params(&self) -> Vec<&Param> {
        match self {
            Model::Bert(m) => m.params(),
            Model::Decoder(m) => m.params(),
        }
    }

    /// (trainable, total) parameter counts; LoRA tensors count as trainable and total, as in
    /// PyTorch's `sum(p.numel() for p in model.parameters())` after injection.
    pub fn param_counts(&self) -> (usize, usize) {
        let ps = self.params();
        let trainable = ps.iter().filter(|p| p.trainable()).map(|p| p.numel()).sum();
        let total = ps.iter().map(|p| p.numel()).sum();
        (trainable, total)
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for p in self.params_mut() {
            p.zero_grad();
        }
    }

    /// Forward pass; returns the logits [B, K] (also kept in `acts`).
    pub fn forward<'a>(&self, batch: &Batch, acts: &'a mut Activations, pass: Pass) -> &'a [f32] {
        match self {
            Model::Bert(m) => m.forward(batch, &mut acts.bert, pass),
            Model::Decoder(m) => m.forward(batch, &mut acts.decoder, pass),
        }
    }

    /// The gradient of the loss with respect to the last forward pass's logits [B, K], which the
    /// caller sets (e.g. from cross-entropy) before [`Model::backward`].
    pub fn dlogits_mut<'a>(&self, acts: &'a mut Activations) -> &'a mut [f32] {
        match self {
            Model::Bert(m) => &mut acts.bert.grad.dlogits[..acts.bert.b * m.num_labels()],
            Model::Decoder(m) => &mut acts.decoder.grad.dlogits[..acts.decoder.b * m.num_labels()],
        }
    }

    /// Forward pass and the training objective: cross-entropy of the logits against
    /// `batch.labels` (classification) or the next-token loss over `batch.targets` (a
    /// language-model head). A pass that keeps caches leaves the loss's gradient ready for
    /// [`Model::backward`].
    pub fn forward_loss(&self, batch: &Batch, acts: &mut Activations, pass: Pass) -> LossStats {
        if let Model::Decoder(m) = self {
            if matches!(m.head, decoder::DecoderHead::Lm(_)) {
                let s = m.lm_forward(batch, &mut acts.decoder, pass);
                return LossStats { loss: s.mean(), count: s.count, correct: s.correct };
            }
        }
        let k = self.num_labels();
        let mut dl = std::mem::take(&mut acts.dlogits);
        dl.resize(batch.len() * k, 0.0);
        let logits = self.forward(batch, acts, pass);
        let loss = crate::ops::loss::cross_entropy(&mut dl, logits, &batch.labels, k);
        let correct = logits.chunks_exact(k).zip(&batch.labels).filter(|(row, &y)| crate::infer::evaluate::argmax(row) == y).count();
        if pass.keeps_caches() {
            self.dlogits_mut(acts).copy_from_slice(&dl);
        }
        acts.dlogits = dl;
        LossStats { loss, count: batch.len(), correct }
    }

    /// Backward pass from the gradient the forward pass left (see [`Model::forward_loss`], or
    /// [`Model::dlogits_mut`] set by the caller), accumulating into the gradients of trainable
    /// parameters. `pass` must be the one the forward pass ran with (it regenerates the same
    /// dropout masks).
    pub fn backward(&mut self, batch: &Batch, acts: &mut Activations, pass: Pass) {
        match self {
            Model::Bert(m) => m.backward(batch, &mut acts.bert, pass),
            Model::Decoder(m) if matches!(m.head, decoder::DecoderHead::Lm(_)) => m.lm_backward(batch, &mut acts.decoder, pass),
            Model::Decoder(m) => m.backward(batch, &mut acts.decoder, pass),
        }
    }

    /// The final hidden state that reaches the head, one row per sequence [B, C], from the most
    /// recent forward pass.
    pub fn pooled_hidden<'a>(&self, acts: &'a Activations, pass: Pass) -> &'a [f32] {
        match self {
            Model::Bert(m) => m.cls_hidden(&acts.bert, pass),
            Model::Decoder(m) => m.pooled_hidden(&acts.decoder),
        }
    }

    /// Adds every LoRA update into its base weight (inference speed; see [`Linear::merge`]).
    /// Refuses (leaving the model unchanged) when a merged weight would not be finite.
    pub fn merge_lora(&mut self) -> Result<()> {
        for l in self.linears() {
            l.check_merge()?;
        }
        for l in self.linears_mut() {
            l.merge();
        }
        self.repack();
        Ok(())
    }

    /// Undoes [`Model::merge_lora`].
    pub fn unmerge_lora(&mut self) {
        for l in self.linears_mut() {
            l.unmerge();
        }
        self.repack();
    }

    /// The arithmetic of the base weights' products.
    pub fn precision(&self) -> precision::Precision {
        self.linears().first().map_or(precision::Precision::Fp32, |l| l.precision)
    }

    /// Sets the arithmetic of every base product; in bf16 the frozen weights are packed once
    /// (with their transposes for the input gradient when `backward`: training). Call it after
    /// what trains is decided, and again after writing into frozen weights.
    pub fn set_precision(&mut self, precision: precision::Precision, backward: bool) {
        match self {
            Model::Bert(m) => m.linears_mut().into_iter().for_each(|l| l.set_precision(precision, backward)),
            Model::Decoder(m) => m.set_precision(precision, backward),
        }
    }

    /// Frees the f32 values of the frozen transformer-layer weights whose bf16 packs stand in for
    /// them ([`Linear::release_f32`]; training in bf16, after [`Model::set_precision`] with
    /// `backward`); heads keep theirs. Afterwards merging those layers is refused: load the model
    /// again to merge. Returns the bytes freed.
    pub fn release_packed_weights(&mut self) -> usize {
        let layers: Vec<&mut Linear> = match self {
            Model::Bert(m) => m.layers.iter_mut().flat_map(|l| l.linears.iter_mut()).collect(),
            Model::Decoder(m) => m.layers.iter_mut().flat_map(|l| l.linears_mut()).collect(),
        };
        layers.into_iter().map(Linear::release_f32).sum()
    }

    /// Packs again, in bf16, the frozen weights whose values changed (after a merge).
    fn repack(&mut self) {
        if self.precision() == precision::Precision::Bf16 {
            let backward = self.linears().iter().any(|l| l.packed.as_ref().is_some_and(|p| p.w.is_some()));
            self.set_precision(precision::Precision::Bf16, backward);
        }
    }

    /// The module tree in the style of PyTorch's `print(model)`, marking LoRA and what trains.
    pub fn module_tree(&self) -> String {
        match self {
            Model::Bert(m) => bert::summary::module_tree(m),
            Model::Decoder(m) => decoder::summary::module_tree(m),
        }
    }
}
