//! Whether an adapter belongs to the base model it is about to be applied to. An adapter trained
//! on another base often still loads (the module names exist, the shapes happen to agree) and then
//! gives wrong answers without a word; these checks catch what the files can tell:
//!
//! - lowrank's own adapters record the base's shape (`lowrank.json`: layers, width, heads,
//!   vocabulary): a different shape is an error;
//! - `base_model_name_or_path`: a local folder whose config.json has another shape is an error;
//!   a name that matches neither the base folder nor its `_name_or_path` is a warning;
//! - `adapter_config.json`'s `target_modules` must select exactly the modules that
//!   `adapter_model.safetensors` has LoRA tensors for (an edited or mixed-up folder otherwise);
//! - a PEFT adapter whose LoRA covers layers 0..k of a module while the base has more such layers
//!   was probably trained on a shallower model: a warning;
//! - a base without a trained classification head needs the adapter to carry one, or predictions
//!   come from a random head (an error where the head is used as is: predict, merge).

use crate::adapter::read_adapter;
use crate::error::{Error, Result};
use crate::lora::targets::name_matches;
use crate::model::{Model, ModelConfig};
use crate::tensorfile::TensorFile;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The shape of a base model, as lowrank records it beside an adapter and compares it on load.
pub fn base_shape(config: &ModelConfig) -> Value {
    serde_json::json!({
        "vocab_size": config.vocab_size(),
        "dim": config.dim(),
        "n_layers": config.n_layers(),
        "n_heads": config.n_heads(),
        "ffn_dim": config.ffn_dim(),
    })
}

/// The keys of two shapes that both have and that differ, as "key a vs b".
fn shape_differences(recorded: &Value, base: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (recorded.as_object(), base.as_object()) else { return Vec::new() };
    a.iter().filter_map(|(k, va)| b.get(k).filter(|vb| *vb != va).map(|vb| format!("{k} {va} (adapter) vs {vb} (base)"))).collect()
}

/// A test of a module name.
type Matcher = Box<dyn Fn(&str) -> bool>;

/// Which of the base's linear modules `target_modules` (PEFT's list, regex or "all-linear"
/// semantics) selects, minus `exclude_modules`.
fn selected(target: &Value, exclude: &Value, modules: &[(String, crate::lora::Role)]) -> Option<BTreeSet<String>> {
    let matcher = |spec: &Value| -> Option<Matcher> {
        match spec {
            Value::Array(list) => {
                let names: Vec<String> = list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
                Some(Box::new(move |m: &str| names.iter().any(|n| name_matches(m, n))))
            }
            Value::String(s) if s == "all-linear" => None,
            Value::String(s) => {
                let re = regex::Regex::new(&format!("^(?:{s})$")).ok()?;
                Some(Box::new(move |m: &str| re.is_match(m)))
            }
            _ => Some(Box::new(|_: &str| false)),
        }
    };
    let all_linear = target.as_str() == Some("all-linear");
    let include = if all_linear { None } else { Some(matcher(target)?) };
    let exclude = matcher(exclude);
    Some(
        modules
            .iter()
            .filter(|(m, role)| match &include {
                Some(f) => f(m),
                None => !matches!(role, crate::lora::Role::HeadHidden | crate::lora::Role::Classifier),
            })
            .filter(|(m, _)| !exclude.as_ref().is_some_and(|f| f(m)))
            .map(|(m, _)| m.clone())
            .collect(),
    )
}

/// The module path with its layer number replaced by `*`, and the number (e.g.
/// `bert.encoder.layer.*.attention.self.query`, 3).
fn layer_pattern(path: &str) -> Option<(String, usize)> {
    let at = path.find(".layer.")? + ".layer.".len();
    let (head, rest) = path.split_at(at);
    let (num, tail) = rest.split_once('.').unwrap_or((rest, ""));
    Some((format!("{head}*.{tail}"), num.parse().ok()?))
}

/// Checks the adapter in `dir` against `model`, the base loaded from `base` (before the adapter is
/// applied). With `needs_head`, a base whose head was initialised here must get it from the
/// adapter. Returns warnings; errors name what does not fit.
pub fn check_adapter(dir: &Path, base: &Path, model: &Model, needs_head: bool) -> Result<Vec<String>> {
    let files = read_adapter(dir)?;
    let bad = |message: String| Error::Adapter { dir: dir.to_path_buf(), message };
    let path = dir.join("adapter_model.safetensors");
    if !path.exists() {
        return Err(bad("no adapter_model.safetensors".into()));
    }
    let tensors = TensorFile::read(&path)?;
    let mut warnings = Vec::new();
    let modules = model.linear_modules();
    let known: BTreeSet<&str> = modules.iter().map(|(m, _)| m.as_str()).collect();
    let mut with_lora = BTreeSet::new();
    let mut saved = BTreeSet::new();
    for key in tensors.tensors.keys() {
        let name = key.strip_prefix("base_model.model.").unwrap_or(key).replace(".default.", ".");
        match name.strip_suffix(".lora_A.weight").or_else(|| name.strip_suffix(".lora_B.weight")) {
            Some(m) => with_lora.insert(m.to_string()),
            None => saved.insert(name),
        };
    }

    // 1. The base's shape lowrank recorded.
    let shape = base_shape(&model.config());
    let recorded = files.lowrank.as_ref().and_then(|l| l.base.clone());
    if let Some(rec) = &recorded {
        let diff = shape_differences(rec, &shape);
        if !diff.is_empty() {
            return Err(bad(format!(
                "it was trained on another base model: {}; apply it to the base it was trained on ({})",
                diff.join(", "),
                files.config.base_model_name_or_path.as_deref().unwrap_or("see adapter_config.json")
            )));
        }
    }

    // 2. base_model_name_or_path.
    if let Some(name) = files.config.base_model_name_or_path.as_deref().filter(|n| !n.trim().is_empty()) {
        let recorded_dir = Path::new(name);
        if recorded_dir.join("config.json").exists() {
            if let Ok(cfg) = ModelConfig::load(recorded_dir) {
                let diff = shape_differences(&base_shape(&cfg), &shape);
                if !diff.is_empty() {
                    return Err(bad(format!("it was trained on {name}, a different model ({}); apply it to that base", diff.join(", "))));
                }
            }
        } else if !name_refers_to(name, base, &model.config()) {
            warnings.push(format!(
                "warning: adapter {} was trained on {name:?}, and the base here is {}: if that is not the same model, its predictions are wrong",
                dir.display(),
                base.display()
            ));
        }
    }

    // 3. target_modules against the tensors.
    let target = &files.config.target_modules;
    let exclude = files.config.other.get("exclude_modules").cloned().unwrap_or(Value::Null);
    if target.as_str() != Some("dummy-target-modules") && !target.is_null() {
        if let Some(sel) = selected(target, &exclude, &modules) {
            let sel: BTreeSet<String> = sel.into_iter().filter(|m| !saved.contains(&format!("{m}.weight"))).collect();
            let extra: Vec<&String> = with_lora.iter().filter(|m| known.contains(m.as_str()) && !sel.contains(*m)).collect();
            // Modules of layers the adapter has no LoRA on at all are a deeper base (warned about
            // below; PEFT leaves them at zero too), not a disagreement.
            let covered: BTreeSet<usize> = with_lora.iter().filter_map(|m| layer_pattern(m).map(|(_, i)| i)).collect();
            let missing: Vec<&String> = sel
                .iter()
                .filter(|m| !with_lora.contains(*m))
                .filter(|m| layer_pattern(m).is_none_or(|(_, i)| covered.contains(&i)))
                .collect();
            if !extra.is_empty() || !missing.is_empty() {
                let list = |v: &[&String]| v.iter().take(4).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                let mut parts = Vec::new();
                if !extra.is_empty() {
                    parts.push(format!(
                        "adapter_model.safetensors has LoRA tensors for {} module(s) target_modules does not select ({})",
                        extra.len(),
                        list(&extra)
                    ));
                }
                if !missing.is_empty() {
                    parts.push(format!("target_modules select {} module(s) with no LoRA tensors ({})", missing.len(), list(&missing)));
                }
                return Err(bad(format!(
                    "adapter_config.json and adapter_model.safetensors disagree: {}; target_modules is {target}. The folder was edited or mixed from two adapters: use the files as PEFT or lowrank wrote them",
                    parts.join("; ")
                )));
            }
        }
    }

    // 4. Layer coverage (PEFT adapters, which record no shape).
    if recorded.is_none() {
        let mut by_pattern: BTreeMap<String, (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
        for m in &with_lora {
            if let Some((p, i)) = layer_pattern(m) {
                by_pattern.entry(p).or_default().0.insert(i);
            }
        }
        for (m, _) in &modules {
            if let Some((p, i)) = layer_pattern(m) {
                if let Some(e) = by_pattern.get_mut(&p) {
                    e.1.insert(i);
                }
            }
        }
        if let Some((p, (a, b))) = by_pattern.iter().find(|(_, (a, b))| a.iter().copied().eq(0..a.len()) && b.iter().any(|i| *i >= a.len()))
        {
            warnings.push(format!(
                "warning: adapter {} has LoRA on layers 0-{} of {p} but this base has {} such layers: was it trained on a model with {} layers?",
                dir.display(),
                a.len() - 1,
                b.len(),
                a.len()
            ));
        }
    }

    // 5. The head.
    if needs_head {
        let missing: Vec<&String> = model.initialised().iter().filter(|n| !saved.contains(n.as_str())).collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "the base model has no trained classification head ({} missing from {}) and the adapter does not carry one, so predictions would come from a randomly initialised head; use an adapter saved with its head (lowrank's always are; in PEFT, modules_to_save=[\"classifier\"]), or a model folder with a trained head",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                base.display()
            )));
        }
    }
    Ok(warnings)
}

/// Whether a recorded base name (a hub id or a path that does not exist here) plausibly names the
/// base folder: its last component equals the folder's name or the end of config.json's
/// `_name_or_path`.
fn name_refers_to(name: &str, base: &Path, config: &ModelConfig) -> bool {
    let last = |s: &str| s.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
    let want = last(name);
    if want.is_empty() {
        return true;
    }
    let folder = base.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let own = config.raw().get("_name_or_path").and_then(Value::as_str).map(last);
    folder.as_deref() == Some(want.as_str()) || own.as_deref() == Some(want.as_str()) || base.to_string_lossy().contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_patterns_and_shape_differences() {
        assert_eq!(
            layer_pattern("bert.encoder.layer.11.attention.self.query"),
            Some(("bert.encoder.layer.*.attention.self.query".into(), 11))
        );
        assert_eq!(layer_pattern("classifier"), None);
        let a = serde_json::json!({"n_layers": 6, "dim": 384});
        let b = serde_json::json!({"n_layers": 12, "dim": 384, "vocab_size": 1});
        assert_eq!(shape_differences(&a, &b), ["n_layers 6 (adapter) vs 12 (base)"]);
    }
}
