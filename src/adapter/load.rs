//! Loading a PEFT LoRA adapter (written by PEFT or by lowrank) onto a base model, with errors
//! that name the tensor or module that does not fit.

use super::config::PeftConfig;
use super::save::transpose;
use crate::data::LabelMap;
use crate::error::{Error, Result};
use crate::lora::{LoraConfig, LoraLayer, Scaling};
use crate::model::{HeadKind, Model};
use crate::tensorfile::{Tensor, TensorFile};
use rand::SeedableRng;
use std::path::Path;

/// An adapter folder's configuration and labels.
pub struct AdapterFiles {
    /// adapter_config.json.
    pub config: PeftConfig,
    /// lowrank.json, when lowrank wrote the adapter.
    pub lowrank: Option<super::config::LowrankExtra>,
    /// labels.json, when present.
    pub labels: Option<LabelMap>,
}

impl AdapterFiles {
    /// The head the adapter expects (lowrank's record, else the base's own family).
    pub fn head(&self) -> Option<HeadKind> {
        self.lowrank.as_ref().map(|l| l.head)
    }

    /// The LoRA hyperparameters in lowrank's terms (exact scale).
    pub fn lora_config(&self) -> LoraConfig {
        match &self.lowrank {
            Some(l) => LoraConfig { r: self.config.r, alpha: l.alpha, scaling: l.scaling, dropout: self.config.lora_dropout },
            None => LoraConfig {
                r: self.config.r,
                alpha: self.config.lora_alpha,
                scaling: if self.config.use_rslora { Scaling::Rslora } else { Scaling::Peft },
                dropout: self.config.lora_dropout,
            },
        }
    }
}

/// Reads an adapter folder's configuration and labels.
pub fn read_adapter(dir: &Path) -> Result<AdapterFiles> {
    let config = PeftConfig::read(dir)?;
    let labels_path = dir.join("labels.json");
    let labels = if labels_path.exists() { Some(crate::fsutil::read_json(&labels_path, "labels.json")?) } else { None };
    let extra = dir.join("lowrank.json");
    let lowrank = if extra.exists() { Some(crate::fsutil::read_json(&extra, "lowrank.json")?) } else { None };
    Ok(AdapterFiles { config, lowrank, labels })
}

/// Loads the adapter in `dir` onto `model`: LoRA tensors become (trainable) LoRA layers on
/// their modules, modules_to_save tensors replace the base weights.
pub fn load_into(dir: &Path, model: &mut Model) -> Result<()> {
    let files = read_adapter(dir)?;
    let cfg = &files.config;
    let lora_cfg = files.lora_config();
    let scale = cfg.scale();
    let path = dir.join("adapter_model.safetensors");
    if !path.exists() {
        return Err(Error::Adapter { dir: dir.to_path_buf(), message: "no adapter_model.safetensors".into() });
    }
    let file = TensorFile::read(&path)?;
    let bad = |m: String| Error::Adapter { dir: dir.to_path_buf(), message: m };
    let examples: Vec<String> =
        model.linears().iter().take(3).map(|l| l.path.clone()).chain(std::iter::once("classifier".into())).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    // LoRA tensors first: a wrong base model shows as a missing module rather than a head shape.
    let mut keys: Vec<(&String, &Tensor)> = file.tensors.iter().collect();
    keys.sort_by_key(|(k, _)| !k.contains(".lora_"));
    for (key, t) in keys {
        let name = key
            .strip_prefix("base_model.model.")
            .ok_or_else(|| bad(format!("tensor {key} does not start with base_model.model. (not a PEFT adapter file)")))?;
        let name = name.replace(".default.", ".");
        if let Some(module) = name.strip_suffix(".lora_A.weight").or_else(|| name.strip_suffix(".lora_B.weight")) {
            let is_a = name.ends_with(".lora_A.weight");
            let lin = model.linears_mut().into_iter().find(|l| l.path == module).ok_or_else(|| {
                bad(format!("LoRA tensor {key} targets module {module}, which this base model does not have (its modules are named like {}); is the adapter for another model or head?", examples.join(", ")))
            })?;
            let (i, o, r) = (lin.in_dim(), lin.out_dim(), cfg.r);
            let expected = if is_a { vec![r, i] } else { vec![o, r] };
            if t.shape != expected {
                return Err(Error::ShapeMismatch { name: key.clone(), expected, got: t.shape.clone() });
            }
            if lin.lora.as_ref().is_none_or(|l| l.rank() != r) {
                lin.lora = Some(LoraLayer::new(&lin.path, i, o, &lora_cfg, &mut rng));
            }
            let l = lin.lora.as_mut().expect("just set");
            l.scale = scale;
            l.dropout = lora_cfg.dropout;
            if is_a {
                l.a.data = transpose(&t.f32, r, i);
            } else {
                l.b.data = transpose(&t.f32, o, r);
            }
        } else {
            let p = model
                .base_params_mut()
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| bad(format!("tensor {key} matches no parameter of this base model")))?;
            if t.shape != p.shape {
                return Err(Error::ShapeMismatch { name: key.clone(), expected: p.shape.clone(), got: t.shape.clone() });
            }
            p.data.copy_from_slice(&t.f32);
            model.initialised_mut().retain(|n| *n != name);
        }
    }
    // Every LoRA layer present must have received both of its tensors.
    for lin in model.linears() {
        if lin.lora.is_some() {
            for part in ["lora_A", "lora_B"] {
                if !file.tensors.contains_key(&format!("base_model.model.{}.{part}.weight", lin.path))
                    && cfg.target_modules.as_array().is_some_and(|a| a.iter().any(|t| t.as_str() == Some(&lin.path)))
                {
                    return Err(bad(format!("adapter lists {} as a target but has no {part} tensor for it", lin.path)));
                }
            }
        }
    }
    Ok(())
}
