//! Checkpoints of a run: the resumable checkpoint (trainable tensors, optimizer moments and loop
//! position in one safetensors file, replaced atomically), the best-validation weights (the same
//! file without optimizer and progress), and the metrics log.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::optim::Adam;
use crate::tensorfile::{self, OutTensor, TensorFile};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// A training step.
    Step {
        /// Optimizer step (1-based).
        step: u64,
        /// Epoch (1-based).
        epoch: u32,
        /// Training loss of the batch.
        loss: f32,
        /// Learning rate used.
        lr: f32,
    },
    /// An evaluation.
    Eval {
        /// Optimizer steps done.
        step: u64,
        /// Epoch (1-based; fractional evaluations carry the current epoch).
        epoch: u32,
        /// Which split.
        split: String,
        /// Accuracy (0..1).
        accuracy: f64,
        /// Mean cross-entropy.
        loss: f64,
        /// Perplexity exp(loss) (causal LM).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        perplexity: Option<f64>,
    },
}

/// Where the training loop stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimizer steps done.
    pub step: u64,
    /// Current epoch (0-based).
    pub epoch: u32,
    /// Batches of the current epoch already done.
    pub batch_in_epoch: usize,
    /// Best validation result so far: accuracy, or the causal-LM loss ([`crate::run::Task::criterion`]).
    pub best_val: Option<f64>,
    /// Epoch (1-based) of the best validation result.
    pub best_epoch: u32,
    /// Step of the best validation result.
    pub best_step: u64,
    /// Seconds spent training (all sessions).
    pub train_seconds: f64,
    /// Seconds from start, evaluations included (all sessions).
    pub wall_seconds: f64,
    /// Examples trained on (all sessions).
    pub examples: u64,
    /// Real (non-padding) tokens trained on (all sessions).
    #[serde(default)]
    pub tokens: u64,
    /// Every metrics record so far (metrics.jsonl is rewritten from it on resume).
    pub history: Vec<Record>,
}

/// Writes the trainable tensors (as `param.<name>`) and, with `opt`, the optimizer state and
/// `progress`, to one file atomically.
pub fn save(path: &Path, model: &mut Model, opt: Option<&Adam>, progress: Option<&Progress>) -> Result<()> {
    let params = model.params_mut();
    let trainable: Vec<&crate::param::Param> = params.iter().filter(|p| p.trainable()).map(|p| &**p).collect();
    let mut names = Vec::new();
    let mut tensors: Vec<OutTensor<'_>> = Vec::new();
    for (i, p) in trainable.iter().enumerate() {
        tensors.push(OutTensor { name: format!("param.{}", p.name), shape: p.shape.clone(), data: &p.data });
        if let Some(opt) = opt.filter(|o| !o.m.is_empty()) {
            tensors.push(OutTensor { name: format!("adam_m.{}", p.name), shape: p.shape.clone(), data: &opt.m[i] });
            tensors.push(OutTensor { name: format!("adam_v.{}", p.name), shape: p.shape.clone(), data: &opt.v[i] });
        }
        names.push(p.name.clone());
    }
    let progress_json = progress.map(|p| serde_json::to_string(p).expect("serialisable")).unwrap_or_default();
    let t = opt.map(|o| o.t.to_string()).unwrap_or_default();
    let order = serde_json::to_string(&names).expect("serialisable");
    tensorfile::write(path, &tensors, &[("format", "lowrank"), ("progress", &progress_json), ("adam_t", &t), ("order", &order)])
}

/// Loads a file written by [`save`] into the model's trainable tensors (and the optimizer);
/// returns the saved progress, if any. Every trainable tensor must be present.
pub fn load(path: &Path, model: &mut Model, opt: Option<&mut Adam>) -> Result<Option<Progress>> {
    let file = TensorFile::read(path)?;
    let mut params = model.params_mut();
    let trainable: Vec<&mut crate::param::Param> = params.iter_mut().filter(|p| p.trainable()).map(|p| &mut **p).collect();
    let has_opt = opt.is_some() && file.tensors.keys().any(|k| k.starts_with("adam_m."));
    let (mut ms, mut vs) = (Vec::new(), Vec::new());
    for p in trainable {
        let data = file
            .f32(&format!("param.{}", p.name), &p.shape)
            .map_err(|e| Error::CheckpointMismatch { path: path.to_path_buf(), message: e.to_string() })?;
        p.data.copy_from_slice(data);
        if has_opt {
            ms.push(file.f32(&format!("adam_m.{}", p.name), &p.shape)?.to_vec());
            vs.push(file.f32(&format!("adam_v.{}", p.name), &p.shape)?.to_vec());
        }
    }
    if let Some(opt) = opt {
        if has_opt {
            opt.m = ms;
            opt.v = vs;
            opt.t = file.metadata.get("adam_t").and_then(|t| t.parse().ok()).unwrap_or(0);
        }
    }
    match file.metadata.get("progress").filter(|s| !s.is_empty()) {
        Some(p) => Ok(Some(serde_json::from_str(p).map_err(|e| Error::Malformed {
            what: "checkpoint progress",
            path: path.to_path_buf(),
            message: e.to_string(),
        })?)),
        None => Ok(None),
    }
}

/// Rewrites metrics.jsonl from the records.
pub fn write_metrics(path: &Path, history: &[Record]) -> Result<()> {
    let mut text = String::new();
    for r in history {
        text.push_str(&serde_json::to_string(r).expect("serialisable"));
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}
