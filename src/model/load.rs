//! Loading a model of any supported architecture from a Hugging Face model folder (or a bare
//! config.json, for counting): the config decides the architecture, whose own loader reads the
//! tensors.

use super::{HeadKind, Model, ModelConfig};
use crate::error::Result;
use std::path::Path;

/// How to build a model from a checkpoint.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The head; `None` picks the checkpoint's own.
    pub head: Option<HeadKind>,
    /// Number of classes; `None` takes config.json's id2label, else 2.
    pub num_labels: Option<usize>,
    /// Seed of a freshly initialised head.
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { head: None, num_labels: None, seed: 123 }
    }
}

/// What loading did besides copying tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Head tensors that were not in the checkpoint and were initialised N(0, initializer_range).
    pub initialised: Vec<String>,
    /// Checkpoint tensors that belong to other heads or are buffers, and were ignored.
    pub ignored: Vec<String>,
    /// Whether a BERT checkpoint was converted to DistilBERT form (for the DistilBERT head).
    pub converted_to_distilbert: bool,
}

impl Model {
    /// Loads a model folder (or a bare config.json, giving a zero model that can only be counted).
    pub fn from_pretrained(path: &Path, opts: &LoadOptions) -> Result<(Model, LoadReport)> {
        let config = ModelConfig::load(path)?;
        let (encoder, report) = super::bert::Encoder::from_pretrained(path, config, opts)?;
        Ok((Model::Bert(encoder), report))
    }
}
