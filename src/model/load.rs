//! Loading a model of any supported architecture from a Hugging Face model folder (or a bare
//! config.json, for counting): the config decides the architecture, whose own loader reads the
//! tensors.

use super::{DecoderConfig, HeadKind, Model, ModelConfig};
use crate::error::{Error, Result};
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
        if super::config::is_gguf(path) {
            return Self::from_gguf(path, opts);
        }
        match ModelConfig::load(path)? {
            ModelConfig::Encoder(config) => {
                let (encoder, report) = super::bert::Encoder::from_pretrained(path, config, opts)?;
                Ok((Model::Bert(encoder), report))
            }
            ModelConfig::Decoder(config) => {
                let num_labels = decoder_labels(&config, opts)?;
                if !path.is_dir() {
                    let model = super::decoder::Decoder::new(&config, num_labels);
                    return Ok((Model::Decoder(model), LoadReport::default()));
                }
                let (decoder, report) = super::decoder::Decoder::from_folder(path, &config, num_labels, opts.seed)?;
                Ok((Model::Decoder(decoder), report))
            }
        }
    }
}

impl Model {
    /// Loads a GGUF file (llama.cpp's format): the configuration from its metadata, its tensors
    /// dequantized to f32 under their Hugging Face names (attn_q / attn_k rows un-permuted).
    pub fn from_gguf(path: &Path, opts: &LoadOptions) -> Result<(Model, LoadReport)> {
        let file = crate::gguf::GgufFile::open(path)?;
        let config = match ModelConfig::from_value(&crate::gguf::hf::hf_config(&file)?)? {
            ModelConfig::Decoder(c) => c,
            ModelConfig::Encoder(c) => {
                return Err(Error::UnsupportedModel(format!(
                    "a GGUF file holding {} (lowrank reads decoders from GGUF)",
                    c.arch.model_type()
                )))
            }
        };
        let num_labels = decoder_labels(&config, opts)?;
        let mut tensors = std::collections::BTreeMap::new();
        for (gguf_name, _) in crate::gguf::hf::hf_tensor_names(&file)? {
            let (name, t) = crate::gguf::hf::read_hf_tensor(&file, &gguf_name)?;
            tensors.insert(name, crate::tensorfile::Tensor { shape: t.shape, f32: t.data, i64: Vec::new() });
        }
        drop(file);
        let (decoder, report) = super::decoder::Decoder::from_tensors(&config, num_labels, &tensors, path, opts.seed)?;
        Ok((Model::Decoder(decoder), report))
    }
}

/// The classes of a decoder's head (None: a language-model head), checking the head kind.
fn decoder_labels(config: &DecoderConfig, opts: &LoadOptions) -> Result<Option<usize>> {
    match opts.head.unwrap_or(HeadKind::Score) {
        HeadKind::Lm => Ok(None),
        HeadKind::Score => {
            let k = opts.num_labels.or(config.id2label.as_ref().map(|m| m.len())).unwrap_or(2);
            if k < 2 {
                return Err(Error::InvalidOption(format!("a classifier needs at least 2 classes, got {k}")));
            }
            Ok(Some(k))
        }
        other => Err(Error::InvalidOption(format!(
            "--head {} is an encoder's head; a decoder ({}) takes --head score (classification) or lm (language model)",
            other.name(),
            config.arch.model_type()
        ))),
    }
}
