//! Building a decoder from its tensors: a Hugging Face folder (model.safetensors, or shards listed
//! by model.safetensors.index.json), with or without the `model.` / `transformer.` prefix,
//! GPT-2's Conv1D weights transposed into PyTorch's [out, in], a classification head loaded when
//! present and initialised otherwise.

use super::{names, Decoder, DecoderConfig, DecoderHead};
use crate::error::{Error, Result};
use crate::model::load::LoadReport;
use crate::param::Param;
use crate::tensorfile::{Tensor, TensorFile};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Reads the checkpoint tensors of a model folder: model.safetensors, or every shard named by
/// model.safetensors.index.json.
pub fn read_folder(dir: &Path) -> Result<(BTreeMap<String, Tensor>, PathBuf)> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok((TensorFile::read(&single)?.tensors, single));
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        return Err(Error::MissingModelFile { dir: dir.to_path_buf(), file: "model.safetensors" });
    }
    let v: serde_json::Value = crate::fsutil::read_json(&index, "model.safetensors.index.json")?;
    let map = v.get("weight_map").and_then(serde_json::Value::as_object).ok_or_else(|| Error::Malformed {
        what: "model.safetensors.index.json",
        path: index.clone(),
        message: "no \"weight_map\" object".into(),
    })?;
    let files: BTreeSet<&str> = map.values().filter_map(serde_json::Value::as_str).collect();
    let mut tensors = BTreeMap::new();
    for f in files {
        if f.contains('/') || f.contains("..") {
            return Err(Error::Malformed {
                what: "model.safetensors.index.json",
                path: index.clone(),
                message: format!("shard name {f:?}"),
            });
        }
        tensors.extend(TensorFile::read(&dir.join(f))?.tensors);
    }
    Ok((tensors, index))
}

/// Buffers and other heads' tensors that a decoder does not use.
fn ignorable(name: &str) -> bool {
    name.ends_with(".attn.bias") && !name.contains("c_attn")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
        || name == "lm_head.weight"
        || name == "score.weight"
}

/// Row-major transpose of `[rows, cols]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = data[i * cols + j];
        }
    }
    out
}

impl Decoder {
    /// Builds a decoder from checkpoint `tensors` (from `file`, for messages): every body tensor
    /// must be present with its shape; a classification head (`num_labels` Some) absent from the
    /// checkpoint is initialised N(0, initializer_range) from `seed`.
    pub fn from_tensors(
        cfg: &DecoderConfig,
        num_labels: Option<usize>,
        tensors: &BTreeMap<String, Tensor>,
        file: &Path,
        seed: u64,
    ) -> Result<(Decoder, LoadReport)> {
        let mut model = Decoder::new(cfg, num_labels);
        let arch = cfg.arch;
        let prefix = names::prefix(arch);
        let mut used = BTreeSet::new();
        let mut report = LoadReport::default();
        let head_name = model.head_linear().map(|h| h.weight.name.clone());
        let tied_head = matches!(model.head, DecoderHead::Lm(None));
        for p in model.base_params_mut() {
            let mut candidates = vec![p.name.clone()];
            if let Some(bare) = p.name.strip_prefix(prefix) {
                candidates.push(bare.to_string());
            }
            let found = candidates.iter().find(|c| tensors.contains_key(*c)).cloned();
            match found {
                Some(key) => {
                    copy_into(p, &key, &tensors[&key], names::is_conv1d(arch, p.name.trim_end_matches(".weight")))?;
                    used.insert(key);
                }
                None if Some(&p.name) == head_name.as_ref() && num_labels.is_some() => report.initialised.push(p.name.clone()),
                None => {
                    return Err(Error::MissingTensor {
                        name: p.name.clone(),
                        file: file.to_path_buf(),
                        arch: arch.model_type(),
                        prefix: prefix.trim_end_matches('.'),
                    })
                }
            }
        }
        for name in tensors.keys().filter(|k| !used.contains(*k)) {
            let tied_copy = tied_head && name == "lm_head.weight";
            if !(ignorable(name) || tied_copy) {
                return Err(Error::UnexpectedTensor { name: name.clone(), file: file.to_path_buf(), arch: arch.model_type() });
            }
            report.ignored.push(name.clone());
        }
        if !report.initialised.is_empty() {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let normal = Normal::new(0.0f32, cfg.initializer_range).map_err(|e| Error::BadConfig(format!("initializer_range: {e}")))?;
            if let Some(h) = model.head_linear_mut() {
                h.weight.data.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
            }
        }
        model.initialised = report.initialised.clone();
        Ok((model, report))
    }

    /// Loads a Hugging Face model folder whose config.json is `cfg`.
    pub fn from_folder(dir: &Path, cfg: &DecoderConfig, num_labels: Option<usize>, seed: u64) -> Result<(Decoder, LoadReport)> {
        let (tensors, file) = read_folder(dir)?;
        Self::from_tensors(cfg, num_labels, &tensors, &file, seed)
    }
}

fn copy_into(p: &mut Param, key: &str, t: &Tensor, conv1d: bool) -> Result<()> {
    if t.f32.is_empty() && !p.shape.contains(&0) {
        return Err(Error::UnsupportedDtype { name: key.to_string(), dtype: "integer".into() });
    }
    let want: Vec<usize> = if conv1d && p.shape.len() == 2 { vec![p.shape[1], p.shape[0]] } else { p.shape.clone() };
    if t.shape != want {
        return Err(Error::ShapeMismatch { name: key.to_string(), expected: want, got: t.shape.clone() });
    }
    if conv1d && p.shape.len() == 2 {
        p.data = transpose(&t.f32, want[0], want[1]);
    } else {
        p.data.copy_from_slice(&t.f32);
    }
    Ok(())
}
