//! What a decoder's Hugging Face folder needs besides its tensors: a config.json for the head it
//! carries, and GPT-2's Conv1D weights back in their stored [in, out] layout.

use super::{Decoder, DecoderHead};
use crate::model::Model;
use crate::param::Param;
use serde_json::Value;

/// The config.json of `m` with its head: `*ForSequenceClassification` with `labels`, or
/// `*ForCausalLM`.
pub fn hf_config(m: &Decoder, labels: &[String]) -> Value {
    let mut v = if m.config.raw.is_object() { m.config.raw.clone() } else { serde_json::json!({}) };
    let family = match m.config.arch.model_type() {
        "qwen2" => "Qwen2",
        "mistral" => "Mistral",
        "gpt2" => "GPT2",
        _ => "Llama",
    };
    let class = match m.head {
        DecoderHead::Score(_) => format!("{family}ForSequenceClassification"),
        DecoderHead::Lm(_) => {
            if m.config.arch.is_gpt2() {
                "GPT2LMHeadModel".to_string()
            } else {
                format!("{family}ForCausalLM")
            }
        }
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("model_type".into(), m.config.arch.model_type().into());
        o.insert("architectures".into(), serde_json::json!([class]));
    }
    if matches!(m.head, DecoderHead::Score(_)) {
        crate::model::config::insert_labels(&mut v, labels);
    }
    v
}

/// A parameter's data in the layout the checkpoint stores it, when that differs from lowrank's
/// (GPT-2's Conv1D weights, [in, out]); None when it is the same.
pub fn stored_layout(model: &Model, p: &Param) -> Option<Vec<f32>> {
    let Model::Decoder(m) = model else { return None };
    let module = p.name.strip_suffix(".weight")?;
    if !(super::names::is_conv1d(m.config.arch, module) && p.shape.len() == 2) {
        return None;
    }
    let (rows, cols) = (p.shape[0], p.shape[1]);
    let mut out = vec![0.0; p.data.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = p.data[i * cols + j];
        }
    }
    Some(out)
}
