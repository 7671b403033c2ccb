//! The model layer, as a family of architectures over shared parts.
//!
//! Shared by every architecture: [`linear`] (a linear layer that may carry LoRA), [`norm`]
//! (normalisation modules), the kernels of [`crate::ops`] (GEMM, attention, LayerNorm,
//! embeddings, activations, dropout) and the buffer helpers. Specific to one architecture, one
//! folder each: [`bert`] (BERT and DistilBERT encoders with a classification head). [`Model`]
//! is the one surface the rest of lowrank uses: forward, backward, parameters, linear layers and
//! the head, whatever the architecture.

pub mod bert;
pub mod config;
pub mod linear;
pub mod load;
pub mod norm;
pub mod save;
pub mod summary;

pub use bert::HeadKind;
pub use config::{Arch, ModelConfig};
pub use linear::Linear;
pub use load::{LoadOptions, LoadReport};
pub use norm::LayerNorm;

use crate::data::batch::Batch;
use crate::error::Result;
use crate::lora::Role;
use crate::param::Param;

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
}

/// A model of any supported architecture, with its head.
#[derive(Clone, Debug)]
pub enum Model {
    /// A BERT or DistilBERT encoder with a sequence-classification head.
    Bert(bert::Encoder),
}

impl Model {
    /// A model of zeros (norm scales 1) with every tensor named; nothing trains. Zero pages are
    /// not touched until written, so building one only to count parameters is cheap.
    pub fn new(config: &ModelConfig, head: HeadKind, num_labels: usize) -> Model {
        Model::Bert(bert::Encoder::new(config, head, num_labels))
    }

    /// The architecture's configuration.
    pub fn config(&self) -> &ModelConfig {
        match self {
            Model::Bert(m) => &m.config,
        }
    }

    /// Number of classes K of the head.
    pub fn num_labels(&self) -> usize {
        match self {
            Model::Bert(m) => m.num_labels(),
        }
    }

    /// The head's kind (recorded with adapters).
    pub fn head_kind(&self) -> HeadKind {
        match self {
            Model::Bert(m) => m.head.kind,
        }
    }

    /// Names of parameters initialised here rather than loaded (a fresh head): an adapter must
    /// carry them, since the base model cannot supply them.
    pub fn initialised(&self) -> &[String] {
        match self {
            Model::Bert(m) => &m.initialised,
        }
    }

    /// Mutable access to [`Model::initialised`].
    pub fn initialised_mut(&mut self) -> &mut Vec<String> {
        match self {
            Model::Bert(m) => &mut m.initialised,
        }
    }

    /// Every linear layer in a fixed order (body layer by layer, then the head); LoRA is injected
    /// and initialised in this order.
    pub fn linears(&self) -> Vec<&Linear> {
        match self {
            Model::Bert(m) => m.linears(),
        }
    }

    /// Mutable access to every linear layer, in [`Model::linears`] order.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Model::Bert(m) => m.linears_mut(),
        }
    }

    /// (module path, role) of every linear layer.
    pub fn linear_modules(&self) -> Vec<(String, Role)> {
        self.linears().iter().map(|l| (l.path.clone(), l.role)).collect()
    }

    /// The head's linear layers (what the seed's "last layers" baseline trains).
    pub fn head_linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Model::Bert(m) => vec![&mut m.head.hidden, &mut m.head.classifier],
        }
    }

    /// Replaces the classifier by a frozen zero one with `k` classes (an adapter then supplies it).
    pub fn reset_classifier(&mut self, k: usize) {
        match self {
            Model::Bert(m) => {
                let c = &m.head.classifier;
                m.head.classifier = Linear::new(c.path.clone(), c.role, c.in_dim(), k);
            }
        }
    }

    /// Every base parameter (LoRA excluded) in a fixed order.
    pub fn base_params(&self) -> Vec<&Param> {
        match self {
            Model::Bert(m) => m.base_params(),
        }
    }

    /// Mutable access to every base parameter, in [`Model::base_params`] order.
    pub fn base_params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Model::Bert(m) => m.base_params_mut(),
        }
    }

    /// Every parameter: base ones in [`Model::base_params`] order, then every LoRA tensor (A, B,
    /// lora_B's bias, DoRA's magnitude; the optimizer's order).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Model::Bert(m) => m.params_mut(),
        }
    }

    /// Every parameter including LoRA, read-only, in [`Model::params_mut`] order (base ones,
    /// then each linear's LoRA tensors: the same for every architecture).
    pub fn params(&self) -> Vec<&Param> {
        let mut v = self.base_params();
        for l in self.linears() {
            v.extend(l.lora_params());
        }
        v
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
        }
    }

    /// The gradient of the loss with respect to the last forward pass's logits [B, K], which the
    /// caller sets (e.g. from cross-entropy) before [`Model::backward`].
    pub fn dlogits_mut<'a>(&self, acts: &'a mut Activations) -> &'a mut [f32] {
        match self {
            Model::Bert(m) => &mut acts.bert.grad.dlogits[..acts.bert.b * m.num_labels()],
        }
    }

    /// Backward pass from [`Model::dlogits_mut`], accumulating into the gradients of trainable
    /// parameters. `pass` must be the one the forward pass ran with (it regenerates the same
    /// dropout masks).
    pub fn backward(&mut self, batch: &Batch, acts: &mut Activations, pass: Pass) {
        match self {
            Model::Bert(m) => m.backward(batch, &mut acts.bert, pass),
        }
    }

    /// The final hidden state that reaches the head, one row per sequence [B, C], from the most
    /// recent forward pass.
    pub fn pooled_hidden<'a>(&self, acts: &'a Activations, pass: Pass) -> &'a [f32] {
        match self {
            Model::Bert(m) => m.cls_hidden(&acts.bert, pass),
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
        Ok(())
    }

    /// Undoes [`Model::merge_lora`].
    pub fn unmerge_lora(&mut self) {
        for l in self.linears_mut() {
            l.unmerge();
        }
    }

    /// The module tree in the style of PyTorch's `print(model)`, marking LoRA and what trains.
    pub fn module_tree(&self) -> String {
        match self {
            Model::Bert(m) => bert::summary::module_tree(m),
        }
    }
}
