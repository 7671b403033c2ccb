//! The decoders' configuration: a Hugging Face `config.json` of a Llama-family model (`llama`,
//! `qwen2`, `mistral`) or of GPT-2 read into one [`DecoderConfig`]. Both the transformers 4 form
//! (`rope_theta`, `rope_scaling`) and the transformers 5 form (`rope_parameters`) are read.

use crate::error::{Error, Result};
use crate::ops::activation::Activation;
use crate::ops::rope::RopeScaling;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Which decoder family (tensor names, norms, positions, MLP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderArch {
    /// Llama: RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP.
    Llama,
    /// Qwen2: Llama with q/k/v biases.
    Qwen2,
    /// Mistral: Llama's network (sliding-window attention beyond `sliding_window` tokens).
    Mistral,
    /// GPT-2: LayerNorm, learned positions, fused q/k/v (`c_attn`), tanh-GELU MLP, Conv1D weights.
    Gpt2,
}

impl DecoderArch {
    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            DecoderArch::Llama => "llama",
            DecoderArch::Qwen2 => "qwen2",
            DecoderArch::Mistral => "mistral",
            DecoderArch::Gpt2 => "gpt2",
        }
    }

    /// Whether the network is GPT-2's rather than Llama's.
    pub fn is_gpt2(self) -> bool {
        self == DecoderArch::Gpt2
    }
}

/// The shape and regularisation of a decoder, whatever checkpoint it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// Family.
    pub arch: DecoderArch,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Hidden width C.
    pub dim: usize,
    /// Decoder layers L.
    pub n_layers: usize,
    /// Query heads H.
    pub n_heads: usize,
    /// Key/value heads Hkv (H is a multiple of it).
    pub n_kv_heads: usize,
    /// Width D of a head.
    pub head_dim: usize,
    /// Feed-forward width F.
    pub ffn_dim: usize,
    /// Longest sequence the model was trained for (GPT-2: the position table's size).
    pub max_position_embeddings: usize,
    /// Epsilon of the norms (RMSNorm for Llama, LayerNorm for GPT-2).
    pub norm_eps: f32,
    /// Rotary base θ (None: learned positions, GPT-2).
    pub rope_theta: Option<f32>,
    /// Rotary frequency rescaling.
    pub rope_scaling: RopeScaling,
    /// The MLP's activation: SiLU inside SwiGLU (Llama) or tanh-GELU (GPT-2).
    pub activation: Activation,
    /// Whether q/k/v projections have biases.
    pub qkv_bias: bool,
    /// Whether the attention output projection has a bias.
    pub o_bias: bool,
    /// Whether the MLP's linears have biases.
    pub mlp_bias: bool,
    /// Whether the output layer shares the token embedding's weight.
    pub tie_word_embeddings: bool,
    /// Padding token id (the classifier's last-token rule skips it, as transformers does).
    pub pad_token_id: Option<u32>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (generation stops at any of them).
    pub eos_token_ids: Vec<u32>,
    /// Dropout on attention probabilities.
    pub attention_dropout: f32,
    /// Dropout on each sublayer's output before the residual sum (GPT-2's resid_pdrop).
    pub resid_dropout: f32,
    /// Dropout on the embeddings (GPT-2's embd_pdrop).
    pub embd_dropout: f32,
    /// Standard deviation of a freshly initialised head.
    pub initializer_range: f32,
    /// Mistral's sliding attention window, when set.
    pub sliding_window: Option<usize>,
    /// Class names by id, when config.json declares them.
    pub id2label: Option<BTreeMap<usize, String>>,
    /// The original config.json, kept so that exported models carry every field.
    #[serde(skip)]
    pub raw: Value,
}

fn get<'a>(raw: &'a Value, key: &str) -> Option<&'a Value> {
    raw.get(key).filter(|v| !v.is_null())
}

fn req_usize(raw: &Value, key: &str) -> Result<usize> {
    get(raw, key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| Error::BadConfig(format!("missing or non-integer field \"{key}\"")))
}

fn opt_usize(raw: &Value, key: &str) -> Option<usize> {
    get(raw, key).and_then(Value::as_u64).map(|v| v as usize)
}

fn opt_f32(raw: &Value, key: &str) -> Option<f32> {
    get(raw, key).and_then(Value::as_f64).map(|v| v as f32)
}

fn opt_bool(raw: &Value, key: &str) -> Option<bool> {
    get(raw, key).and_then(Value::as_bool)
}

/// A token id field that may be a number or a list (eos_token_id is a list in Llama 3).
fn token_ids(raw: &Value, key: &str) -> Vec<u32> {
    match get(raw, key) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|v| v as u32).collect(),
        Some(v) => v.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        None => Vec::new(),
    }
}

/// The rotary settings: θ and the rescaling, from `rope_parameters` (transformers 5) or
/// `rope_theta` + `rope_scaling` (transformers 4).
fn rope(raw: &Value) -> Result<(f32, RopeScaling)> {
    let params = get(raw, "rope_parameters").or_else(|| get(raw, "rope_scaling"));
    let theta = params.and_then(|p| opt_f32(p, "rope_theta")).or_else(|| opt_f32(raw, "rope_theta")).unwrap_or(10_000.0);
    let Some(p) = params else { return Ok((theta, RopeScaling::Default)) };
    let kind = get(p, "rope_type").or_else(|| get(p, "type")).and_then(Value::as_str).unwrap_or("default");
    let f = |k: &str| opt_f32(p, k).ok_or_else(|| Error::BadConfig(format!("rope scaling {kind:?} needs the field \"{k}\"")));
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: f("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: f("factor")?,
            low_freq_factor: f("low_freq_factor")?,
            high_freq_factor: f("high_freq_factor")?,
            original_max_position_embeddings: f("original_max_position_embeddings")?,
        },
        other => {
            return Err(Error::UnsupportedModel(format!(
                "rope scaling {other:?} (lowrank implements \"default\", \"linear\" and \"llama3\")"
            )))
        }
    };
    Ok((theta, scaling))
}

impl DecoderConfig {
    /// Parses a config.json whose `model_type` is llama, qwen2, mistral or gpt2.
    pub fn from_value(raw: &Value) -> Result<Self> {
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        let cfg = match model_type {
            "llama" | "qwen2" | "mistral" => Self::llama(raw, model_type)?,
            "gpt2" => Self::gpt2(raw)?,
            other => return Err(Error::UnsupportedModel(format!("model_type {other:?}"))),
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn llama(raw: &Value, model_type: &str) -> Result<Self> {
        let arch = match model_type {
            "qwen2" => DecoderArch::Qwen2,
            "mistral" => DecoderArch::Mistral,
            _ => DecoderArch::Llama,
        };
        let dim = req_usize(raw, "hidden_size")?;
        let n_heads = req_usize(raw, "num_attention_heads")?;
        if n_heads == 0 {
            return Err(Error::BadConfig("num_attention_heads is 0".into()));
        }
        let act = get(raw, "hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            return Err(Error::UnsupportedModel(format!("{model_type} with hidden_act {act:?} (lowrank implements \"silu\")")));
        }
        if opt_usize(raw, "pretraining_tp").is_some_and(|tp| tp != 1) {
            return Err(Error::UnsupportedModel("pretraining_tp other than 1".into()));
        }
        let (theta, scaling) = rope(raw)?;
        let attention_bias = opt_bool(raw, "attention_bias").unwrap_or(false);
        Ok(DecoderConfig {
            arch,
            vocab_size: req_usize(raw, "vocab_size")?,
            dim,
            n_layers: req_usize(raw, "num_hidden_layers")?,
            n_heads,
            n_kv_heads: opt_usize(raw, "num_key_value_heads").unwrap_or(n_heads),
            head_dim: opt_usize(raw, "head_dim").unwrap_or(dim / n_heads),
            ffn_dim: req_usize(raw, "intermediate_size")?,
            max_position_embeddings: opt_usize(raw, "max_position_embeddings").unwrap_or(2048),
            norm_eps: opt_f32(raw, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta: Some(theta),
            rope_scaling: scaling,
            activation: Activation::Silu,
            qkv_bias: arch == DecoderArch::Qwen2 || attention_bias,
            o_bias: arch != DecoderArch::Qwen2 && attention_bias,
            mlp_bias: opt_bool(raw, "mlp_bias").unwrap_or(false),
            tie_word_embeddings: opt_bool(raw, "tie_word_embeddings").unwrap_or(false),
            pad_token_id: token_ids(raw, "pad_token_id").first().copied(),
            bos_token_id: token_ids(raw, "bos_token_id").first().copied(),
            eos_token_ids: token_ids(raw, "eos_token_id"),
            attention_dropout: opt_f32(raw, "attention_dropout").unwrap_or(0.0),
            resid_dropout: 0.0,
            embd_dropout: 0.0,
            initializer_range: opt_f32(raw, "initializer_range").unwrap_or(0.02),
            sliding_window: match arch {
                DecoderArch::Mistral => opt_usize(raw, "sliding_window"),
                DecoderArch::Qwen2 if opt_bool(raw, "use_sliding_window") == Some(true) => opt_usize(raw, "sliding_window"),
                _ => None,
            },
            id2label: super::super::config::id2label(raw),
            raw: raw.clone(),
        })
    }

    fn gpt2(raw: &Value) -> Result<Self> {
        let dim = req_usize(raw, "n_embd")?;
        let n_heads = req_usize(raw, "n_head")?;
        if n_heads == 0 {
            return Err(Error::BadConfig("n_head is 0".into()));
        }
        let act = get(raw, "activation_function").and_then(Value::as_str).unwrap_or("gelu_new");
        if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
            return Err(Error::UnsupportedModel(format!("gpt2 with activation_function {act:?} (lowrank implements \"gelu_new\")")));
        }
        for (key, bad) in [("scale_attn_weights", false), ("scale_attn_by_inverse_layer_idx", true), ("reorder_and_upcast_attn", true)] {
            if opt_bool(raw, key) == Some(bad) {
                return Err(Error::UnsupportedModel(format!("gpt2 with {key} = {bad}")));
            }
        }
        let pdrop = |k: &str| opt_f32(raw, k).unwrap_or(0.1);
        Ok(DecoderConfig {
            arch: DecoderArch::Gpt2,
            vocab_size: req_usize(raw, "vocab_size")?,
            dim,
            n_layers: req_usize(raw, "n_layer")?,
            n_heads,
            n_kv_heads: n_heads,
            head_dim: dim / n_heads,
            ffn_dim: opt_usize(raw, "n_inner").unwrap_or(4 * dim),
            max_position_embeddings: opt_usize(raw, "n_positions").unwrap_or(1024),
            norm_eps: opt_f32(raw, "layer_norm_epsilon").unwrap_or(1e-5),
            rope_theta: None,
            rope_scaling: RopeScaling::Default,
            activation: Activation::GeluTanh,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            tie_word_embeddings: opt_bool(raw, "tie_word_embeddings").unwrap_or(true),
            pad_token_id: token_ids(raw, "pad_token_id").first().copied(),
            bos_token_id: token_ids(raw, "bos_token_id").first().copied(),
            eos_token_ids: token_ids(raw, "eos_token_id"),
            attention_dropout: pdrop("attn_pdrop"),
            resid_dropout: pdrop("resid_pdrop"),
            embd_dropout: pdrop("embd_pdrop"),
            initializer_range: opt_f32(raw, "initializer_range").unwrap_or(0.02),
            sliding_window: None,
            id2label: super::super::config::id2label(raw),
            raw: raw.clone(),
        })
    }

    /// Shapes that cannot work.
    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadConfig(m));
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!("{} attention heads cannot share {} key/value heads", self.n_heads, self.n_kv_heads));
        }
        if self.head_dim == 0 || (self.rope_theta.is_some() && !self.head_dim.is_multiple_of(2)) {
            return bad(format!("head_dim {} must be even and positive for rotary positions", self.head_dim));
        }
        if self.arch.is_gpt2() && !self.dim.is_multiple_of(self.n_heads) {
            return bad(format!("n_embd {} is not divisible by {} heads", self.dim, self.n_heads));
        }
        if self.vocab_size == 0 || self.dim == 0 || self.n_layers == 0 || self.ffn_dim == 0 {
            return bad("vocab_size, the hidden size, the layer count and the feed-forward width must be positive".into());
        }
        Ok(())
    }

    /// Query width H·D.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Key/value width Hkv·D.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden").join(name).join("config.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn reads_the_tiny_decoders() {
        let l = DecoderConfig::from_value(&fixture("tiny-llama")).unwrap();
        assert_eq!((l.arch, l.dim, l.n_heads, l.n_kv_heads, l.head_dim, l.ffn_dim), (DecoderArch::Llama, 32, 4, 2, 8, 48));
        assert!(matches!(l.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert!(!l.tie_word_embeddings && !l.qkv_bias);
        let q = DecoderConfig::from_value(&fixture("tiny-qwen2")).unwrap();
        assert!(q.qkv_bias && !q.o_bias && q.tie_word_embeddings && q.rope_scaling == RopeScaling::Default);
        let g = DecoderConfig::from_value(&fixture("tiny-gpt2")).unwrap();
        assert_eq!((g.arch, g.head_dim, g.ffn_dim, g.activation), (DecoderArch::Gpt2, 8, 128, Activation::GeluTanh));
        assert!(g.tie_word_embeddings && g.rope_theta.is_none());
    }

    #[test]
    fn reads_the_transformers_4_rope_form_and_rejects_unknown_scalings() {
        let mut v = fixture("tiny-llama");
        let o = v.as_object_mut().unwrap();
        o.remove("rope_parameters");
        o.insert("rope_theta".into(), 500000.0.into());
        o.insert("rope_scaling".into(), serde_json::json!({"type": "linear", "factor": 2.0}));
        let c = DecoderConfig::from_value(&v).unwrap();
        assert_eq!((c.rope_theta, c.rope_scaling), (Some(500000.0), RopeScaling::Linear { factor: 2.0 }));
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        let e = DecoderConfig::from_value(&v).unwrap_err().to_string();
        assert!(e.contains("yarn") && e.contains("llama3"), "{e}");
        v["rope_scaling"] = Value::Null;
        v["num_key_value_heads"] = 3.into();
        assert!(DecoderConfig::from_value(&v).unwrap_err().to_string().contains("key/value heads"));
    }
}
