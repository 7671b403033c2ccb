//! adapter_config.json as PEFT writes and reads it (unknown keys are kept and ignored), plus
//! lowrank's own extra block, and the checks of what lowrank can honour.

use crate::error::{Error, Result};
use crate::lora::pattern::{lookup, ordered};
use crate::lora::{Init, LoraPatterns, Scaling};
use crate::model::HeadKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// lowrank's own record of an adapter (lowrank.json beside adapter_config.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LowrankExtra {
    /// The classification head the adapter was trained with.
    pub head: HeadKind,
    /// The scaling convention it was trained with (PEFT's lora_alpha already encodes the scale).
    pub scaling: Scaling,
    /// alpha in that convention (the seed's alpha for raschka).
    pub alpha: f32,
    /// lowrank's version.
    pub version: String,
    /// The initialisation the adapter was trained from (PiSSA / OLoRA adapters are saved
    /// converted to plain LoRA relative to the untouched base, so this is informational).
    #[serde(default)]
    pub init: Option<Init>,
    /// The run's rank / alpha patterns in lowrank's convention (adapter_config.json holds the
    /// equivalent per-module PEFT values).
    #[serde(default)]
    pub patterns: LoraPatterns,
    /// The base model's shape (layers, width, heads, vocabulary), checked when the adapter is
    /// applied ([`crate::guard::fit`]); absent in adapters written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Value>,
}

/// The fields of adapter_config.json that matter to lowrank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Must be "LORA".
    pub peft_type: String,
    /// The base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Rank.
    pub r: usize,
    /// PEFT's alpha: scale = lora_alpha / r (or / √r with use_rslora).
    pub lora_alpha: f32,
    /// Target modules: a list of names/suffixes, or a regex string.
    #[serde(default)]
    pub target_modules: Value,
    /// Dropout on the LoRA input.
    #[serde(default)]
    pub lora_dropout: f32,
    /// Bias training: only "none" is supported.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Modules trained in full and saved whole.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// rsLoRA scaling.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA: a lora_magnitude_vector per module.
    #[serde(default)]
    pub use_dora: bool,
    /// How A and B were initialised (`true`, `false` or a string); PiSSA and OLoRA adapters
    /// need the base weight turned into the same residual on load.
    #[serde(default = "default_init")]
    pub init_lora_weights: Value,
    /// Per-module ranks, first matching key wins.
    #[serde(default, with = "ordered")]
    pub rank_pattern: Vec<(String, usize)>,
    /// Per-module PEFT alphas, first matching key wins.
    #[serde(default, with = "ordered")]
    pub alpha_pattern: Vec<(String, f32)>,
    /// A bias on every lora_B.
    #[serde(default)]
    pub lora_bias: bool,
    /// Layer indices LoRA was restricted to (an int or a list).
    #[serde(default)]
    pub layers_to_transform: Value,
    /// The layer list's name for `layers_to_transform` (a string or a list).
    #[serde(default)]
    pub layers_pattern: Value,
    /// Transposed weights (not supported).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// PEFT task type.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Every other key, kept as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn default_bias() -> String {
    "none".into()
}

fn default_init() -> Value {
    Value::Bool(true)
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).map(str::to_string).collect()),
        _ => None,
    }
}

impl PeftConfig {
    /// Reads and checks `dir/adapter_config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("adapter_config.json");
        if !path.exists() {
            return Err(Error::Adapter {
                dir: dir.to_path_buf(),
                message: "no adapter_config.json: is this a PEFT adapter folder?".into(),
            });
        }
        let cfg: PeftConfig = crate::fsutil::read_json(&path, "adapter_config.json")?;
        cfg.check(dir)?;
        Ok(cfg)
    }

    /// The scale PEFT applies: lora_alpha / r, or lora_alpha / √r with rsLoRA.
    pub fn scale(&self) -> f32 {
        Self::scale_of(self.use_rslora, self.r, self.lora_alpha)
    }

    fn scale_of(rslora: bool, r: usize, alpha: f32) -> f32 {
        if rslora {
            alpha / (r as f32).sqrt()
        } else {
            alpha / r as f32
        }
    }

    /// (rank, scale) of `module`, after rank_pattern and alpha_pattern.
    pub fn module_rank_scale(&self, module: &str) -> Result<(usize, f32)> {
        let r = lookup("rank_pattern", &self.rank_pattern, module)?.copied().unwrap_or(self.r);
        let alpha = lookup("alpha_pattern", &self.alpha_pattern, module)?.copied().unwrap_or(self.lora_alpha);
        Ok((r, Self::scale_of(self.use_rslora, r, alpha)))
    }

    /// The patterns in lowrank's form (PEFT's alphas: valid with the peft / rslora scaling).
    pub fn patterns(&self) -> LoraPatterns {
        let layers = match &self.layers_to_transform {
            Value::Number(n) => n.as_u64().map(|v| vec![v as usize]),
            Value::Array(a) => Some(a.iter().filter_map(Value::as_u64).map(|v| v as usize).collect()),
            _ => None,
        };
        LoraPatterns {
            rank_pattern: self.rank_pattern.clone(),
            alpha_pattern: self.alpha_pattern.clone(),
            layers_to_transform: layers,
            layers_pattern: strings(&self.layers_pattern).filter(|_| !self.layers_to_transform.is_null()),
        }
    }

    /// The initialisation whose base-weight residual loading must reproduce (PiSSA, OLoRA), if
    /// any; the others do not touch the base (their A and B are simply overwritten).
    pub fn residual_init(&self) -> Option<Init> {
        Init::from_peft(&self.init_lora_weights).ok().filter(|i| i.mutates_base())
    }

    /// Refuses what lowrank cannot compute exactly.
    fn check(&self, dir: &Path) -> Result<()> {
        let refuse = |m: String| Err(Error::Adapter { dir: dir.to_path_buf(), message: m });
        if self.peft_type != "LORA" {
            return refuse(format!("peft_type is {:?}; lowrank loads LoRA adapters only (peft_type \"LORA\")", self.peft_type));
        }
        if self.fan_in_fan_out {
            return refuse("fan_in_fan_out is true (Conv1D-style weights); lowrank's models use nn.Linear layouts".into());
        }
        if self.bias != "none" {
            return refuse(format!("bias is {:?}; lowrank supports bias=\"none\" only", self.bias));
        }
        if self.r == 0 {
            return refuse("r is 0".into());
        }
        if self.other.get("target_parameters").is_some_and(|v| !v.is_null()) {
            return refuse("target_parameters is set (LoRA on raw parameters); lowrank applies LoRA to linear modules only".into());
        }
        match self.init_lora_weights.as_str() {
            Some(s) if s.starts_with("pissa_niter_") => {
                return refuse(format!(
                    "init_lora_weights is {s:?}: its residual base weight came from a randomised SVD that cannot be recomputed; save the adapter with PEFT's path_initial_model_for_weight_conversion (a plain LoRA adapter) instead"
                ))
            }
            Some(s @ ("corda" | "loftq" | "lora_ga")) => {
                return refuse(format!("init_lora_weights is {s:?}, which changes the base weights in a way lowrank cannot reproduce; convert the adapter to plain LoRA with PEFT first"))
            }
            _ => {}
        }
        Ok(())
    }
}
