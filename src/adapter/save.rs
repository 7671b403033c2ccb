//! Writing an adapter in PEFT's format: `base_model.model.<module>.lora_A.weight` [r, in] and
//! `.lora_B.weight` [out, r] (transposes of lowrank's A and B; `.lora_B.bias` [out] with
//! lora_bias, `.lora_magnitude_vector` [out] with DoRA), modules trained in full or freshly
//! initialised (the head) as `base_model.model.<module>.weight` / `.bias` (with any LoRA on them
//! merged in, since PEFT never adds LoRA to a saved module), an adapter_config.json PEFT computes
//! the same scales from (per-module ranks and alphas as exact-name rank_pattern / alpha_pattern
//! entries), lowrank.json (head, scaling, init, patterns), the tokenizer files and labels.json.
//!
//! PiSSA / OLoRA layers (whose base weight was turned into a residual) are saved as PEFT's
//! `save_pretrained(path_initial_model_for_weight_conversion=…)` saves them: converted to a plain
//! LoRA of rank 2r relative to the untouched base, A′ = [A; A₀], B′ = [B, −B₀] (ΔW = BA − B₀A₀),
//! with r and lora_alpha doubled (rsLoRA: alpha × √2) so the scale is unchanged.

use crate::data::LabelMap;
use crate::error::{Error, Result};
use crate::fsutil::{copy_tokenizer_files, write_folder};
use crate::lora::{LoraConfig, LoraPatterns, Scaling};
use crate::model::Model;
use crate::tensorfile::{self, OutTensor};
use serde_json::json;
use std::path::Path;

/// What an adapter records besides tensors.
pub struct AdapterInfo<'a> {
    /// base_model_name_or_path.
    pub base_model: String,
    /// Class names, written as labels.json (None: a causal LM, no labels.json).
    pub labels: Option<&'a LabelMap>,
    /// Folder whose tokenizer files are copied beside the adapter.
    pub tokenizer_dir: &'a Path,
    /// The LoRA hyperparameters (None when nothing has LoRA, e.g. last-layers).
    pub lora: Option<LoraConfig>,
    /// The run's rank / alpha patterns, recorded in lowrank.json (None: none).
    pub patterns: Option<&'a LoraPatterns>,
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

/// A′ [2r, I] = [Aᵀ; A₀ᵀ] and B′ [O, 2r] = [Bᵀ, −B₀ᵀ] (PEFT's `subtract_mutated_init`).
fn converted(l: &crate::lora::LoraLayer, i: usize, r: usize, o: usize) -> (Vec<f32>, Vec<f32>) {
    let start = l.start.as_ref().expect("a residual layer");
    let mut a = transpose(&l.a.data, i, r);
    a.extend(transpose(&start.a, i, r));
    let (b_now, b_first) = (transpose(&l.b.data, r, o), transpose(&start.b, r, o));
    let mut b = Vec::with_capacity(o * 2 * r);
    for j in 0..o {
        b.extend_from_slice(&b_now[j * r..(j + 1) * r]);
        b.extend(b_first[j * r..(j + 1) * r].iter().map(|v| -v));
    }
    (a, b)
}

/// Writes the adapter of `model` into `dir` (replacing it atomically).
pub fn save_adapter(model: &Model, dir: &Path, info: &AdapterInfo<'_>) -> Result<()> {
    let lora = info.lora.unwrap_or_default();
    let rslora = lora.scaling == Scaling::Rslora;
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let (mut targets, mut to_save) = (Vec::new(), Vec::new());
    // (module, saved rank, PEFT alpha) of every LoRA module.
    let mut ranks: Vec<(String, usize, f32)> = Vec::new();
    let (mut any_dora, mut any_bias, mut any_residual) = (false, false, false);
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
                merged.check_merge()?;
                merged.merge();
                owned.push((format!("base_model.model.{}", lin.weight.name), lin.weight.shape.clone(), merged.weight.data));
                if let Some(b) = &merged.bias {
                    owned.push((format!("base_model.model.{}", b.name), b.shape.clone(), b.data.clone()));
                }
                to_save.push(lin.path.clone());
            }
            Some(l) => {
                let (i, r, o) = (lin.in_dim(), l.rank(), lin.out_dim());
                let key = |part: &str| format!("base_model.model.{}.{part}", lin.path);
                let (a, b, saved_r) = match &l.start {
                    Some(_) => {
                        any_residual = true;
                        let (a, b) = converted(l, i, r, o);
                        (a, b, 2 * r)
                    }
                    None => (transpose(&l.a.data, i, r), transpose(&l.b.data, r, o), r),
                };
                owned.push((key("lora_A.weight"), vec![saved_r, i], a));
                owned.push((key("lora_B.weight"), vec![o, saved_r], b));
                if let Some(bias) = &l.bias {
                    any_bias = true;
                    owned.push((key("lora_B.bias"), vec![o], bias.data.clone()));
                }
                if let Some(d) = &l.dora {
                    any_dora = true;
                    owned.push((key("lora_magnitude_vector"), vec![o], d.magnitude.data.clone()));
                }
                let alpha = if rslora { l.scale * (saved_r as f32).sqrt() } else { l.scale * saved_r as f32 };
                ranks.push((lin.path.clone(), saved_r, alpha));
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
    // Other trained parameters (a decoder's norms in last-layers mode: the last layer's and the
    // final one) are saved whole too, their modules in modules_to_save, as PEFT saves any module.
    let linear_params: std::collections::HashSet<&str> =
        model.linears().iter().flat_map(|l| l.base_params().map(|q| q.name.as_str())).collect();
    for p in model.params() {
        if p.trainable() && !p.name.contains(".lora_") && !linear_params.contains(p.name.as_str()) {
            owned.push((format!("base_model.model.{}", p.name), p.shape.clone(), p.data.clone()));
            let module = p.name.rsplit_once('.').map_or(p.name.as_str(), |(m, _)| m).to_string();
            if !to_save.contains(&module) {
                to_save.push(module);
            }
        }
    }
    // The global r and lora_alpha: the most common pair; the other modules get exact-name patterns.
    let mut counts: Vec<((usize, f32), usize)> = Vec::new();
    for (_, r, a) in &ranks {
        match counts.iter_mut().find(|(k, _)| k.0 == *r && (k.1 - a).abs() <= 1e-6 * a.abs()) {
            Some((_, c)) => *c += 1,
            None => counts.push(((*r, *a), 1)),
        }
    }
    let (r, alpha) = counts.iter().max_by_key(|(_, c)| *c).map_or((lora.r, lora.peft_alpha()), |(k, _)| *k);
    let (mut rank_pattern, mut alpha_pattern) = (serde_json::Map::new(), serde_json::Map::new());
    for (m, rm, am) in &ranks {
        if *rm != r {
            rank_pattern.insert(regex::escape(m), json!(rm));
        }
        if (am - alpha).abs() > 1e-6 * alpha.abs() {
            alpha_pattern.insert(regex::escape(m), json!(am));
        }
    }
    let config = json!({
        "peft_type": "LORA",
        "base_model_name_or_path": info.base_model,
        "r": r,
        "lora_alpha": alpha,
        // PEFT's marker for "no LoRA module" (an adapter of saved modules only, e.g. last-layers).
        "target_modules": if targets.is_empty() { json!("dummy-target-modules") } else { json!(targets) },
        "lora_dropout": lora.dropout,
        "bias": "none",
        "modules_to_save": if to_save.is_empty() { serde_json::Value::Null } else { json!(to_save) },
        "use_rslora": rslora,
        "use_dora": any_dora,
        "lora_bias": any_bias,
        "fan_in_fan_out": false,
        // Random inits and converted PiSSA / OLoRA adapters both load onto the untouched base.
        "init_lora_weights": true,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "layers_to_transform": null,
        "layers_pattern": null,
        "inference_mode": true,
        "task_type": match model.head_kind() {
            crate::model::HeadKind::Score => json!("SEQ_CLS"),
            crate::model::HeadKind::Lm => json!("CAUSAL_LM"),
            _ => serde_json::Value::Null,
        },
    });
    // lowrank's own record lives beside the adapter (PEFT warns about unknown config keys). A
    // converted adapter has twice the rank: alpha follows so that the scale stays.
    let alpha_factor = match (any_residual, lora.scaling) {
        (false, _) | (true, Scaling::Raschka) => 1.0,
        (true, Scaling::Peft) => 2.0,
        (true, Scaling::Rslora) => 2f32.sqrt(),
    };
    let mut patterns = info.patterns.cloned().unwrap_or_default();
    if any_residual {
        patterns.rank_pattern.iter_mut().for_each(|(_, r)| *r *= 2);
        patterns.alpha_pattern.iter_mut().for_each(|(_, a)| *a *= alpha_factor);
    }
    let extra = super::config::LowrankExtra {
        head: model.head_kind(),
        scaling: lora.scaling,
        alpha: lora.alpha * alpha_factor,
        version: env!("CARGO_PKG_VERSION").into(),
        init: info.lora.map(|l| l.init_kind()),
        patterns,
        base: Some(crate::guard::fit::base_shape(&model.config())),
    };
    write_folder(dir, |tmp| {
        let tensors: Vec<OutTensor<'_>> = owned.iter().map(|(n, s, d)| OutTensor { name: n.clone(), shape: s.clone(), data: d }).collect();
        tensorfile::write(&tmp.join("adapter_model.safetensors"), &tensors, &[("format", "pt")])?;
        crate::fsutil::write_json(&tmp.join("adapter_config.json"), &config)?;
        crate::fsutil::write_json(&tmp.join("lowrank.json"), &extra)?;
        if let Some(labels) = info.labels {
            crate::fsutil::write_json(&tmp.join("labels.json"), labels)?;
        }
        copy_tokenizer_files(info.tokenizer_dir, tmp)
    })
}
