//! The encoders' configuration: a Hugging Face `config.json` of DistilBERT or BERT read into one
//! [`EncoderConfig`].

use crate::error::{Error, Result};
use crate::ops::activation::Activation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Which family of checkpoint (and so which tensor names) a model follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// `model_type: "distilbert"`: `distilbert.transformer.layer.N.attention.q_lin`, ...
    DistilBert,
    /// `model_type: "bert"`: `bert.encoder.layer.N.attention.self.query`, ...
    Bert,
}

impl Arch {
    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::DistilBert => "distilbert",
            Arch::Bert => "bert",
        }
    }

    /// The prefix of encoder tensors in a *ForSequenceClassification checkpoint.
    pub fn prefix(self) -> &'static str {
        match self {
            Arch::DistilBert => "distilbert",
            Arch::Bert => "bert",
        }
    }
}

/// The shape and regularisation of a transformer encoder, whatever checkpoint it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// Tensor naming family.
    pub arch: Arch,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence the position table covers.
    pub max_position_embeddings: usize,
    /// Token type (segment) vocabulary; 0 when the model has none (DistilBERT).
    pub type_vocab_size: usize,
    /// Hidden width C.
    pub dim: usize,
    /// Number of encoder layers.
    pub n_layers: usize,
    /// Attention heads H (C must divide by H).
    pub n_heads: usize,
    /// Feed-forward width F.
    pub ffn_dim: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
    /// Dropout on hidden states (embeddings, sublayer outputs).
    pub hidden_dropout: f32,
    /// Dropout on attention probabilities.
    pub attention_dropout: f32,
    /// Dropout before the classifier.
    pub classifier_dropout: f32,
    /// Whether a sublayer's attention output projection is followed by dropout (BERT: yes, DistilBERT: no).
    pub dropout_after_attention_output: bool,
    /// Padding token id.
    pub pad_token_id: u32,
    /// Class names by id, when config.json declares them.
    pub id2label: Option<BTreeMap<usize, String>>,
    /// The original config.json, kept so that exported models carry every field.
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Deserialize)]
struct DistilBertJson {
    vocab_size: usize,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    hidden_dim: usize,
    #[serde(default = "default_activation")]
    activation: String,
    #[serde(default = "default_dropout")]
    dropout: f32,
    #[serde(default = "default_dropout")]
    attention_dropout: f32,
    #[serde(default = "default_classif_dropout")]
    seq_classif_dropout: f32,
    #[serde(default)]
    sinusoidal_pos_embds: bool,
    #[serde(default)]
    pad_token_id: Option<u32>,
}

#[derive(Deserialize)]
struct BertJson {
    vocab_size: usize,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_activation")]
    hidden_act: String,
    #[serde(default = "default_dropout")]
    hidden_dropout_prob: f32,
    #[serde(default = "default_dropout")]
    attention_probs_dropout_prob: f32,
    #[serde(default)]
    classifier_dropout: Option<f32>,
    #[serde(default = "default_eps")]
    layer_norm_eps: f32,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    pad_token_id: Option<u32>,
}

fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_activation() -> String {
    "gelu".into()
}
fn default_dropout() -> f32 {
    0.1
}
fn default_classif_dropout() -> f32 {
    0.2
}
fn default_eps() -> f32 {
    1e-12
}

/// An f32 setting as the decimal it was written as (0.1, not 0.10000000149011612).
fn round6(v: f32) -> f64 {
    (v as f64 * 1e6).round() / 1e6
}

fn parse_activation(name: &str) -> Result<Activation> {
    match name {
        "gelu" => Ok(Activation::Gelu),
        "relu" => Ok(Activation::Relu),
        other => Err(Error::UnsupportedModel(format!("activation {other:?} (lowrank implements \"gelu\" (exact erf) and \"relu\")"))),
    }
}

impl EncoderConfig {
    /// Parses the text of a config.json.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw: Value = serde_json::from_str(text).map_err(|e| Error::BadConfig(e.to_string()))?;
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        let bad = |e: serde_json::Error| Error::BadConfig(e.to_string());
        let mut cfg = match model_type {
            "distilbert" => {
                let j: DistilBertJson = serde_json::from_value(raw.clone()).map_err(bad)?;
                if j.sinusoidal_pos_embds {
                    return Err(Error::UnsupportedModel("distilbert with sinusoidal_pos_embds = true".into()));
                }
                EncoderConfig {
                    arch: Arch::DistilBert,
                    vocab_size: j.vocab_size,
                    max_position_embeddings: j.max_position_embeddings,
                    type_vocab_size: 0,
                    dim: j.dim,
                    n_layers: j.n_layers,
                    n_heads: j.n_heads,
                    ffn_dim: j.hidden_dim,
                    activation: parse_activation(&j.activation)?,
                    layer_norm_eps: 1e-12,
                    hidden_dropout: j.dropout,
                    attention_dropout: j.attention_dropout,
                    classifier_dropout: j.seq_classif_dropout,
                    dropout_after_attention_output: false,
                    pad_token_id: j.pad_token_id.unwrap_or(0),
                    id2label: None,
                    raw: Value::Null,
                }
            }
            "bert" => {
                let j: BertJson = serde_json::from_value(raw.clone()).map_err(bad)?;
                if let Some(kind) = j.position_embedding_type.as_deref() {
                    if kind != "absolute" {
                        return Err(Error::UnsupportedModel(format!("bert with position_embedding_type {kind:?}")));
                    }
                }
                EncoderConfig {
                    arch: Arch::Bert,
                    vocab_size: j.vocab_size,
                    max_position_embeddings: j.max_position_embeddings,
                    type_vocab_size: j.type_vocab_size,
                    dim: j.hidden_size,
                    n_layers: j.num_hidden_layers,
                    n_heads: j.num_attention_heads,
                    ffn_dim: j.intermediate_size,
                    activation: parse_activation(&j.hidden_act)?,
                    layer_norm_eps: j.layer_norm_eps,
                    hidden_dropout: j.hidden_dropout_prob,
                    attention_dropout: j.attention_probs_dropout_prob,
                    classifier_dropout: j.classifier_dropout.unwrap_or(j.hidden_dropout_prob),
                    dropout_after_attention_output: true,
                    pad_token_id: j.pad_token_id.unwrap_or(0),
                    id2label: None,
                    raw: Value::Null,
                }
            }
            "" => return Err(Error::BadConfig("no \"model_type\" field".into())),
            other => return Err(Error::UnsupportedModel(format!("model_type {other:?}"))),
        };
        if cfg.n_heads == 0 || cfg.dim % cfg.n_heads != 0 {
            return Err(Error::BadConfig(format!("hidden size {} is not divisible by {} attention heads", cfg.dim, cfg.n_heads)));
        }
        cfg.id2label = crate::model::config::id2label(&raw);
        cfg.raw = raw;
        Ok(cfg)
    }

    /// The same network expressed as DistilBERT: token type 0 folded into positions, BERT's
    /// post-attention dropout removed, DistilBERT's classifier dropout (0.2) unless `classifier_dropout` is set.
    pub fn as_distilbert(&self) -> EncoderConfig {
        let mut c = self.clone();
        if self.arch == Arch::Bert {
            c.arch = Arch::DistilBert;
            c.type_vocab_size = 0;
            c.dropout_after_attention_output = false;
            c.classifier_dropout = self.raw.get("classifier_dropout").and_then(Value::as_f64).map(|v| v as f32).unwrap_or(0.2);
        }
        c
    }

    /// A config.json for this configuration in the model's own format, with `num_labels` classes.
    pub fn to_hf_json(&self, id2label: &[String]) -> Value {
        let mut v = match self.arch {
            Arch::DistilBert => serde_json::json!({
                "model_type": "distilbert",
                "architectures": ["DistilBertForSequenceClassification"],
                "vocab_size": self.vocab_size,
                "max_position_embeddings": self.max_position_embeddings,
                "dim": self.dim,
                "n_layers": self.n_layers,
                "n_heads": self.n_heads,
                "hidden_dim": self.ffn_dim,
                "activation": match self.activation { Activation::Relu => "relu", _ => "gelu" },
                "dropout": round6(self.hidden_dropout),
                "attention_dropout": round6(self.attention_dropout),
                "seq_classif_dropout": round6(self.classifier_dropout),
                "sinusoidal_pos_embds": false,
                "pad_token_id": self.pad_token_id,
                "initializer_range": 0.02,
                "qa_dropout": 0.1,
            }),
            Arch::Bert => {
                let mut v = if self.raw.is_object() { self.raw.clone() } else { serde_json::json!({}) };
                let o = v.as_object_mut().expect("object");
                o.insert("model_type".into(), "bert".into());
                o.insert("architectures".into(), serde_json::json!(["BertForSequenceClassification"]));
                v
            }
        };
        crate::model::config::insert_labels(&mut v, id2label);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shared_distilbert() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/distilbert-base-uncased.config.json")
    }

    #[test]
    fn reads_distilbert_base() {
        let c = crate::model::ModelConfig::load(&shared_distilbert()).unwrap().encoder().unwrap().clone();
        assert_eq!((c.arch, c.dim, c.n_layers, c.n_heads, c.ffn_dim, c.vocab_size), (Arch::DistilBert, 768, 6, 12, 3072, 30522));
        assert_eq!((c.classifier_dropout, c.type_vocab_size), (0.2, 0));
    }

    #[test]
    fn reads_bert_with_defaults() {
        let c = EncoderConfig::from_json_str(
            r#"{"model_type":"bert","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16}"#,
        )
        .unwrap();
        assert_eq!((c.arch, c.type_vocab_size, c.classifier_dropout), (Arch::Bert, 2, 0.1));
        let d = c.as_distilbert();
        assert_eq!((d.arch, d.type_vocab_size, d.classifier_dropout, d.dropout_after_attention_output), (Arch::DistilBert, 0, 0.2, false));
    }

    #[test]
    fn rejects_unknown_model_types_and_bad_shapes() {
        let e = EncoderConfig::from_json_str(r#"{"model_type":"gpt2"}"#).unwrap_err();
        assert!(e.to_string().contains("gpt2"), "{e}");
        let e = EncoderConfig::from_json_str(
            r#"{"model_type":"bert","vocab_size":10,"hidden_size":9,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("divisible"), "{e}");
        let e = EncoderConfig::from_json_str(r#"{"model_type":"bert","vocab_size":10}"#).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
    }

    #[test]
    fn malformed_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, "{not json").unwrap();
        let e = crate::model::ModelConfig::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
        let e = crate::model::ModelConfig::load(&dir.path().join("nothing")).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }
}
