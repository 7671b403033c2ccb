//! adapter_config.json as PEFT writes and reads it (unknown keys are kept and ignored), plus
//! lowrank's own extra block, and the checks of what lowrank can honour.

use crate::error::{Error, Result};
use crate::lora::Scaling;
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
    /// DoRA (not supported).
    #[serde(default)]
    pub use_dora: bool,
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
        if self.use_rslora {
            self.lora_alpha / (self.r as f32).sqrt()
        } else {
            self.lora_alpha / self.r as f32
        }
    }

    /// Refuses what lowrank cannot compute exactly.
    fn check(&self, dir: &Path) -> Result<()> {
        let refuse = |m: String| Err(Error::Adapter { dir: dir.to_path_buf(), message: m });
        if self.peft_type != "LORA" {
            return refuse(format!("peft_type is {:?}; lowrank loads LoRA adapters only (peft_type \"LORA\")", self.peft_type));
        }
        if self.use_dora {
            return refuse("use_dora is true; lowrank does not implement DoRA: retrain with use_dora=false".into());
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
        for key in ["layers_to_transform", "layers_pattern", "target_parameters"] {
            if self.other.get(key).is_some_and(|v| !v.is_null()) {
                return refuse(format!("{key} is set; lowrank cannot honour it: train the adapter without it"));
            }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if self.other.get(key).is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty())) {
                return refuse(format!("{key} is set; lowrank needs one rank and alpha for every module"));
            }
        }
        if self.other.get("lora_bias").is_some_and(|v| v.as_bool() == Some(true)) {
            return refuse("lora_bias is true; lowrank supports LoRA without bias only".into());
        }
        Ok(())
    }
}
