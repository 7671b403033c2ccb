//! Writing an adapter in PEFT's format: `base_model.model.<module>.lora_A.weight` [r, in] and
//! `.lora_B.weight` [out, r] (transposes of lowrank's A and B), modules trained in full or
//! freshly initialised (the head) as `base_model.model.<module>.weight` / `.bias` (with any LoRA
//! on them merged in, since PEFT never adds LoRA to a saved module), an adapter_config.json PEFT
//! computes the same scale from, lowrank.json (head, scaling), the tokenizer files and labels.json.

use crate::data::LabelMap;
use crate::error::{Error, Result};
use crate::fsutil::{copy_tokenizer_files, write_folder};
use crate::lora::LoraConfig;
use crate::model::Model;
use crate::tensorfile::{self, OutTensor};
use serde_json::json;
use std::path::Path;

/// What an adapter records besides tensors.
pub struct AdapterInfo<'a> {
    /// base_model_name_or_path.
    pub base_model: String,
    /// Class names, written as labels.json.
    pub labels: &'a LabelMap,
    /// Folder whose tokenizer files are copied beside the adapter.
    pub tokenizer_dir: &'a Path,
    /// The LoRA hyperparameters (None when nothing has LoRA, e.g. last-layers).
    pub lora: Option<LoraConfig>,
}

/// Row-major transpose of `[rows, cols]`.
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = data[i * cols + j];
        }
    }
    out
}

/// Writes the adapter of `model` into `dir` (replacing it atomically).
pub fn save_adapter(model: &Model, dir: &Path, info: &AdapterInfo<'_>) -> Result<()> {
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut targets = Vec::new();
    let mut to_save = Vec::new();
    let mut rank = None;
    for lin in model.linears() {
        let fresh = model.initialised().contains(&lin.weight.name);
        let saved_whole = lin.base_trainable() || fresh;
        match &lin.lora {
            Some(l) if l.merged => {
                return Err(Error::CannotSaveAdapter(format!(
                    "{} has its LoRA merged into the weight; unmerge before saving an adapter",
                    lin.path
                )));
            }
            // PEFT never applies LoRA to a module it saves whole (modules_to_save), so a fresh
            // head that also carries LoRA is saved with the update merged into its weight.
            Some(_) if saved_whole => {
                let mut merged = lin.clone();
                merged.merge();
                owned.push((format!("base_model.model.{}", lin.weight.name), lin.weight.shape.clone(), merged.weight.data));
                if let Some(b) = &lin.bias {
                    owned.push((format!("base_model.model.{}", b.name), b.shape.clone(), b.data.clone()));
                }
                to_save.push(lin.path.clone());
            }
            Some(l) => {
                let (i, r, o) = (lin.in_dim(), l.rank(), lin.out_dim());
                if rank.is_some_and(|x| x != r) {
                    return Err(Error::CannotSaveAdapter("LoRA layers of different ranks cannot be saved as one PEFT adapter".into()));
                }
                rank = Some(r);
                owned.push((format!("base_model.model.{}.lora_A.weight", lin.path), vec![r, i], transpose(&l.a.data, i, r)));
                owned.push((format!("base_model.model.{}.lora_B.weight", lin.path), vec![o, r], transpose(&l.b.data, r, o)));
                targets.push(lin.path.clone());
            }
            None if saved_whole => {
                for p in lin.base_params() {
                    owned.push((format!("base_model.model.{}", p.name), p.shape.clone(), p.data.clone()));
                }
                to_save.push(lin.path.clone());
            }
            None => {}
        }
    }
    if model
        .params()
        .iter()
        .any(|p| p.trainable() && !p.name.contains(".lora_") && !model.linears().iter().any(|l| l.base_params().any(|q| q.name == p.name)))
    {
        return Err(Error::CannotSaveAdapter(
            "non-linear parameters train (full fine-tuning): export a full model folder instead of an adapter".into(),
        ));
    }
    let lora = info.lora.unwrap_or_default();
    let r = rank.unwrap_or(lora.r);
    let config = json!({
        "peft_type": "LORA",
        "base_model_name_or_path": info.base_model,
        "r": r,
        "lora_alpha": lora.peft_alpha(),
        // PEFT's marker for "no LoRA module" (an adapter of saved modules only, e.g. last-layers).
        "target_modules": if targets.is_empty() { json!("dummy-target-modules") } else { json!(targets) },
        "lora_dropout": lora.dropout,
        "bias": "none",
        "modules_to_save": if to_save.is_empty() { serde_json::Value::Null } else { json!(to_save) },
        "use_rslora": lora.scaling == crate::lora::Scaling::Rslora,
        "use_dora": false,
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "task_type": match model.head_kind() {
            crate::model::HeadKind::Score => json!("SEQ_CLS"),
            crate::model::HeadKind::Lm => json!("CAUSAL_LM"),
            _ => serde_json::Value::Null,
        },
    });
    // lowrank's own record lives beside the adapter (PEFT warns about unknown config keys).
    let extra = super::config::LowrankExtra {
        head: model.head_kind(),
        scaling: lora.scaling,
        alpha: lora.alpha,
        version: env!("CARGO_PKG_VERSION").into(),
        base: Some(crate::guard::fit::base_shape(&model.config())),
    };
    write_folder(dir, |tmp| {
        let tensors: Vec<OutTensor<'_>> = owned.iter().map(|(n, s, d)| OutTensor { name: n.clone(), shape: s.clone(), data: d }).collect();
        tensorfile::write(&tmp.join("adapter_model.safetensors"), &tensors, &[("format", "pt")])?;
        crate::fsutil::write_json(&tmp.join("adapter_config.json"), &config)?;
        crate::fsutil::write_json(&tmp.join("lowrank.json"), &extra)?;
        crate::fsutil::write_json(&tmp.join("labels.json"), info.labels)?;
        copy_tokenizer_files(info.tokenizer_dir, tmp)
    })
}
