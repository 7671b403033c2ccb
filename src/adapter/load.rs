//! Loading a PEFT LoRA adapter (written by PEFT or by lowrank) onto a base model — plain LoRA,
//! DoRA (`lora_magnitude_vector`), lora_B biases, per-module ranks and alphas, and PiSSA / OLoRA
//! adapters whose base weight must first become the same residual — with errors that name the
//! tensor or module that does not fit.

use super::config::PeftConfig;
use super::save::transpose;
use crate::data::LabelMap;
use crate::error::{Error, Result};
use crate::lora::init::initialise;
use crate::lora::{Dora, LoraConfig, LoraLayer, Scaling};
use crate::model::{HeadKind, Model};
use crate::tensorfile::{Tensor, TensorFile};
use rand::SeedableRng;
use serde_json::Value;
use std::collections::BTreeMap;
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
        let c = &self.config;
        let (alpha, scaling) = match &self.lowrank {
            Some(l) => (l.alpha, l.scaling),
            None => (c.lora_alpha, if c.use_rslora { Scaling::Rslora } else { Scaling::Peft }),
        };
        LoraConfig { r: c.r, alpha, scaling, dropout: c.lora_dropout, init: None, dora: c.use_dora, bias: c.lora_bias }
    }

    /// The training options that continuing from this adapter takes from it (applied through the
    /// option catalogue): rank, alpha, scaling, dropout, targets, DoRA, bias, patterns.
    pub fn overrides(&self) -> Vec<(&'static str, Value)> {
        let l = self.lora_config();
        let mut out: Vec<(&'static str, Value)> = vec![
            ("lora_r", Value::from(l.r)),
            ("lora_alpha", Value::from(f64::from(l.alpha))),
            ("scaling", Value::from(format!("{:?}", l.scaling).to_lowercase())),
            ("lora_dropout", Value::from(f64::from(l.dropout))),
            ("dora", Value::from(l.dora)),
            ("lora_bias", Value::from(l.bias)),
        ];
        if let Some(list) = self.config.target_modules.as_array() {
            out.push(("target_modules", Value::Array(list.clone())));
        }
        let patterns = self.lowrank.as_ref().map_or_else(|| self.config.patterns(), |x| x.patterns.clone());
        let json = |p: &crate::lora::LoraPatterns| serde_json::to_value(p).expect("serialisable");
        let p = json(&patterns);
        if !patterns.rank_pattern.is_empty() {
            out.push(("rank_pattern", Value::from(p["rank_pattern"].to_string())));
        }
        if !patterns.alpha_pattern.is_empty() {
            out.push(("alpha_pattern", Value::from(p["alpha_pattern"].to_string())));
        }
        if let Some(layers) = &patterns.layers_to_transform {
            out.push(("layers_to_transform", Value::from(layers.iter().map(usize::to_string).collect::<Vec<_>>().join(","))));
        }
        if let Some(names) = &patterns.layers_pattern {
            out.push(("layers_pattern", Value::from(names.join(","))));
        }
        if let Some(init) = self.config.residual_init() {
            out.push(("init", Value::from(init.to_string())));
        }
        out
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

/// One module's LoRA tensors in the file.
#[derive(Default)]
struct Parts<'a> {
    a: Option<(&'a String, &'a Tensor)>,
    b: Option<(&'a String, &'a Tensor)>,
    bias: Option<(&'a String, &'a Tensor)>,
    magnitude: Option<(&'a String, &'a Tensor)>,
}

fn shape_is(key: &str, t: &Tensor, expected: Vec<usize>) -> Result<()> {
    if t.shape != expected {
        return Err(Error::ShapeMismatch { name: key.to_string(), expected, got: t.shape.clone() });
    }
    Ok(())
}

/// Loads the adapter in `dir` onto `model`: LoRA tensors become (trainable) LoRA layers on
/// their modules, modules_to_save tensors replace the base weights.
pub fn load_into(dir: &Path, model: &mut Model) -> Result<()> {
    let files = read_adapter(dir)?;
    let cfg = &files.config;
    let lora_cfg = files.lora_config();
    let path = dir.join("adapter_model.safetensors");
    if !path.exists() {
        return Err(Error::Adapter { dir: dir.to_path_buf(), message: "no adapter_model.safetensors".into() });
    }
    let file = TensorFile::read(&path)?;
    let bad = |m: String| Error::Adapter { dir: dir.to_path_buf(), message: m };
    let examples: Vec<String> =
        model.linears().iter().take(3).map(|l| l.path.clone()).chain(std::iter::once("classifier".into())).collect();
    let mut modules: BTreeMap<String, Parts<'_>> = BTreeMap::new();
    let mut saved: Vec<(String, &Tensor, &String)> = Vec::new();
    for (key, t) in &file.tensors {
        let name = key
            .strip_prefix("base_model.model.")
            .ok_or_else(|| bad(format!("tensor {key} does not start with base_model.model. (not a PEFT adapter file)")))?
            .replace(".default.", ".");
        if name.contains(".lora_embedding_") {
            return Err(bad(format!("tensor {key} is LoRA on an embedding layer; lowrank puts LoRA and DoRA on linear layers only")));
        }
        let part = [".lora_A.weight", ".lora_B.weight", ".lora_B.bias", ".lora_magnitude_vector", ".lora_magnitude_vector.weight"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).map(|m| (m.to_string(), *suffix)));
        match part {
            Some((module, suffix)) => {
                let p = modules.entry(module).or_default();
                match suffix {
                    ".lora_A.weight" => p.a = Some((key, t)),
                    ".lora_B.weight" => p.b = Some((key, t)),
                    ".lora_B.bias" => p.bias = Some((key, t)),
                    _ => p.magnitude = Some((key, t)),
                }
            }
            None => saved.push((name, t, key)),
        }
    }
    let residual = cfg.residual_init();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    // LoRA tensors first: a wrong base model shows as a missing module rather than a head shape.
    for (module, parts) in &modules {
        let lin = model.linears_mut().into_iter().find(|l| &l.path == module).ok_or_else(|| {
            let key = parts.a.or(parts.b).or(parts.magnitude).map_or(module.as_str(), |(k, _)| k.as_str());
            bad(format!("LoRA tensor {key} targets module {module}, which this base model does not have (its modules are named like {}); is the adapter for another model or head?", examples.join(", ")))
        })?;
        let (Some((ka, ta)), Some((kb, tb))) = (parts.a, parts.b) else {
            return Err(bad(format!("module {module} has no {} tensor", if parts.a.is_none() { "lora_A" } else { "lora_B" })));
        };
        let (i, o) = (lin.in_dim(), lin.out_dim());
        let (r, scale) = cfg.module_rank_scale(module)?;
        shape_is(ka, ta, vec![r, i])?;
        shape_is(kb, tb, vec![o, r])?;
        let reuse = lin.lora.as_ref().is_some_and(|l| l.rank() == r && (residual.is_none() || l.start.is_some()));
        if !reuse {
            lin.remove_lora();
            let mut l = LoraLayer::new(&lin.path, i, o, &LoraConfig { r, bias: parts.bias.is_some(), ..lora_cfg }, &mut rng);
            if let Some(init) = residual {
                // PEFT re-runs PiSSA / OLoRA on the base before loading A and B: do the same.
                l.start = Some(initialise(init, &lin.path, &mut lin.weight.data, o, i, r, scale, &mut rng)?);
            }
            lin.lora = Some(l);
        }
        let lora = lin.lora.as_mut().expect("just set");
        lora.scale = scale;
        lora.dropout = lora_cfg.dropout;
        lora.a.data = transpose(&ta.f32, r, i);
        lora.b.data = transpose(&tb.f32, o, r);
        match (parts.bias, lora.bias.as_mut()) {
            (Some((k, t)), Some(p)) => {
                shape_is(k, t, vec![o])?;
                p.data.copy_from_slice(&t.f32);
            }
            (Some((k, t)), None) => {
                shape_is(k, t, vec![o])?;
                let mut p = crate::param::Param::zeros(format!("{}.lora_B.bias", lin.path), &[o]);
                p.data.copy_from_slice(&t.f32);
                p.set_trainable(true);
                lora.bias = Some(p);
            }
            (None, _) => lora.bias = None,
        }
        match parts.magnitude {
            Some((k, t)) => {
                shape_is(k, t, vec![o])?;
                let mut d = Dora::new(&lin.path, &lin.weight.data, lora);
                d.magnitude.data.copy_from_slice(&t.f32);
                lora.dora = Some(d);
            }
            None if cfg.use_dora => {
                return Err(bad(format!("use_dora is true (DoRA) but module {module} has no lora_magnitude_vector tensor")))
            }
            None => lora.dora = None,
        }
    }
    for (name, t, key) in saved {
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
    // Every LoRA layer the adapter lists by name must have received its tensors.
    for lin in model.linears() {
        if lin.lora.is_some()
            && !modules.contains_key(&lin.path)
            && cfg.target_modules.as_array().is_some_and(|a| a.iter().any(|t| t.as_str() == Some(&lin.path)))
        {
            return Err(bad(format!("adapter lists {} as a target but has no lora_A / lora_B tensor for it", lin.path)));
        }
    }
    Ok(())
}
