//! A model's configuration, whatever its architecture: a Hugging Face `config.json` read into the
//! encoder ([`EncoderConfig`]) or decoder ([`DecoderConfig`]) form its `model_type` calls for.

pub use super::bert::config::{Arch, EncoderConfig};
pub use super::decoder::config::{DecoderArch, DecoderConfig};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The configuration of a supported model.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    /// BERT or DistilBERT.
    Encoder(EncoderConfig),
    /// A Llama-family model or GPT-2.
    Decoder(DecoderConfig),
}

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) && !path.is_dir()
}

/// config.json's `id2label`, when it declares one.
pub(crate) fn id2label(raw: &Value) -> Option<BTreeMap<usize, String>> {
    let map = raw.get("id2label").and_then(Value::as_object)?;
    let mut labels = BTreeMap::new();
    for (k, v) in map {
        if let (Ok(id), Some(name)) = (k.parse::<usize>(), v.as_str()) {
            labels.insert(id, name.to_string());
        }
    }
    Some(labels)
}

/// Writes `id2label` / `label2id` (and the problem type) for `labels` into a config.json object.
pub(crate) fn insert_labels(config: &mut Value, labels: &[String]) {
    let Some(o) = config.as_object_mut() else { return };
    let id2: serde_json::Map<String, Value> = labels.iter().enumerate().map(|(i, n)| (i.to_string(), Value::from(n.clone()))).collect();
    let l2i: serde_json::Map<String, Value> = labels.iter().enumerate().map(|(i, n)| (n.clone(), Value::from(i))).collect();
    o.insert("id2label".into(), Value::Object(id2));
    o.insert("label2id".into(), Value::Object(l2i));
    o.insert("problem_type".into(), "single_label_classification".into());
}

impl ModelConfig {
    /// Reads `config.json` from a file path, or from a model folder; or the configuration a
    /// GGUF file's metadata describes.
    pub fn load(path: &Path) -> Result<Self> {
        if is_gguf(path) {
            let file = crate::gguf::GgufFile::open(path)?;
            return Self::from_value(&crate::gguf::hf::hf_config(&file)?);
        }
        let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        if !file.exists() {
            return Err(Error::MissingModelFile { dir: path.to_path_buf(), file: "config.json" });
        }
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io("read", &file, e))?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::BadConfig(message) => Error::Malformed { what: "config.json", path: file.clone(), message },
            other => other,
        })
    }

    /// Parses the text of a config.json.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw: Value = serde_json::from_str(text).map_err(|e| Error::BadConfig(e.to_string()))?;
        Self::from_value(&raw)
    }

    /// Parses a config.json's value.
    pub fn from_value(raw: &Value) -> Result<Self> {
        match raw.get("model_type").and_then(Value::as_str).unwrap_or("") {
            "distilbert" | "bert" => Ok(ModelConfig::Encoder(EncoderConfig::from_json_str(&raw.to_string())?)),
            "llama" | "qwen2" | "mistral" | "gpt2" => Ok(ModelConfig::Decoder(DecoderConfig::from_value(raw)?)),
            "" => Err(Error::BadConfig("no \"model_type\" field".into())),
            other => Err(Error::UnsupportedModel(format!("model_type {other:?}"))),
        }
    }

    /// The `model_type` of config.json.
    pub fn model_type(&self) -> &'static str {
        match self {
            ModelConfig::Encoder(c) => c.arch.model_type(),
            ModelConfig::Decoder(c) => c.arch.model_type(),
        }
    }

    /// Hidden width C.
    pub fn dim(&self) -> usize {
        match self {
            ModelConfig::Encoder(c) => c.dim,
            ModelConfig::Decoder(c) => c.dim,
        }
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        match self {
            ModelConfig::Encoder(c) => c.n_layers,
            ModelConfig::Decoder(c) => c.n_layers,
        }
    }

    /// Vocabulary size: token ids must be below it.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Encoder(c) => c.vocab_size,
            ModelConfig::Decoder(c) => c.vocab_size,
        }
    }

    /// Attention heads (query heads, for grouped-query decoders).
    pub fn n_heads(&self) -> usize {
        match self {
            ModelConfig::Encoder(c) => c.n_heads,
            ModelConfig::Decoder(c) => c.n_heads,
        }
    }

    /// Width of the feed-forward block's hidden layer.
    pub fn ffn_dim(&self) -> usize {
        match self {
            ModelConfig::Encoder(c) => c.ffn_dim,
            ModelConfig::Decoder(c) => c.ffn_dim,
        }
    }

    /// Rows of the token-type table (BERT); 0 for models without one.
    pub fn type_vocab_size(&self) -> usize {
        match self {
            ModelConfig::Encoder(c) => c.type_vocab_size,
            ModelConfig::Decoder(_) => 0,
        }
    }

    /// The config.json object as read.
    pub fn raw(&self) -> &Value {
        match self {
            ModelConfig::Encoder(c) => &c.raw,
            ModelConfig::Decoder(c) => &c.raw,
        }
    }

    /// The longest sequence the model takes.
    pub fn max_positions(&self) -> usize {
        match self {
            ModelConfig::Encoder(c) => c.max_position_embeddings,
            ModelConfig::Decoder(c) => c.max_position_embeddings,
        }
    }

    /// Class names by id, when config.json declares them.
    pub fn id2label(&self) -> Option<&BTreeMap<usize, String>> {
        match self {
            ModelConfig::Encoder(c) => c.id2label.as_ref(),
            ModelConfig::Decoder(c) => c.id2label.as_ref(),
        }
    }

    /// The encoder configuration, if this is an encoder.
    pub fn encoder(&self) -> Option<&EncoderConfig> {
        match self {
            ModelConfig::Encoder(c) => Some(c),
            ModelConfig::Decoder(_) => None,
        }
    }

    /// The decoder configuration, if this is a decoder.
    pub fn decoder(&self) -> Option<&DecoderConfig> {
        match self {
            ModelConfig::Decoder(c) => Some(c),
            ModelConfig::Encoder(_) => None,
        }
    }
}
