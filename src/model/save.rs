//! Writing a full Hugging Face model folder (config.json with the label map, model.safetensors,
//! tokenizer files) from a model, e.g. after merging LoRA into the base weights.

use super::{HeadKind, Model};
use crate::error::Result;
use crate::fsutil::{copy_tokenizer_files, write_folder};
use crate::tensorfile::{self, OutTensor};
use std::path::Path;

/// Writes `model` (merged or plain) as a *ForSequenceClassification folder into `dir`; LoRA
/// that is not merged is folded into the written weights (refused if that is not finite).
pub fn write_model_folder(model: &Model, dir: &Path, labels: &[String], tokenizer_dir: &Path) -> Result<()> {
    let config = match model {
        Model::Bert(m) => {
            let mut cfg = m.config.clone();
            if model.head_kind() == HeadKind::DistilBert && cfg.arch != super::Arch::DistilBert {
                cfg = cfg.as_distilbert();
            }
            cfg.to_hf_json(labels)
        }
        Model::Decoder(m) => super::decoder::save::hf_config(m, labels),
    };
    let mut merged = model.clone();
    merged.merge_lora()?;
    let params = merged.base_params();
    // GPT-2 keeps its Conv1D weights as [in, out].
    let stored: Vec<Option<Vec<f32>>> = params.iter().map(|p| super::decoder::save::stored_layout(model, p)).collect();
    write_folder(dir, |tmp| {
        let tensors: Vec<OutTensor<'_>> = params
            .iter()
            .zip(&stored)
            .map(|(p, t)| match t {
                Some(data) => OutTensor { name: p.name.clone(), shape: vec![p.shape[1], p.shape[0]], data },
                None => OutTensor { name: p.name.clone(), shape: p.shape.clone(), data: &p.data },
            })
            .collect();
        tensorfile::write(&tmp.join("model.safetensors"), &tensors, &[("format", "pt")])?;
        crate::fsutil::write_json(&tmp.join("config.json"), &config)?;
        copy_tokenizer_files(tokenizer_dir, tmp)
    })
}
