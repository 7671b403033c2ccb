//! LoRA hyperparameters: the scaling conventions that turn (r, alpha) into the factor on (xA)B,
//! the initialisations (PEFT's `init_lora_weights`), DoRA and the LoRA bias (PEFT's `use_dora`,
//! `lora_bias`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How `alpha` and `r` become the multiplier of the low-rank update, and how A is initialised
/// when no [`Init`] is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// The seed's code: A ~ N(0, 1/r), scale = alpha.
    #[default]
    Raschka,
    /// Hugging Face PEFT's default: A kaiming-uniform(a = √5), scale = alpha / r.
    Peft,
    /// rsLoRA: PEFT's initialisation, scale = alpha / √r.
    Rslora,
}

impl std::str::FromStr for Scaling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "raschka" => Ok(Scaling::Raschka),
            "peft" => Ok(Scaling::Peft),
            "rslora" => Ok(Scaling::Rslora),
            other => Err(Error::InvalidOption(format!("unknown LoRA scaling {other:?}; use raschka, peft or rslora"))),
        }
    }
}

/// How A and B start (PEFT's `init_lora_weights`, plus the seed's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// PEFT's `true`: A kaiming-uniform(a = √5) (bound 1/√in), B = 0.
    Kaiming,
    /// PEFT's `"gaussian"`: A ~ N(0, std 1/r), B = 0.
    Gaussian,
    /// The seed's: A ~ N(0, std 1/√r), B = 0.
    Raschka,
    /// PEFT's `"pissa"`: A, B from the top-r singular triplets of W₀ (exact SVD); W₀ becomes the
    /// residual W₀ − scale·(A·B)ᵀ, so the model starts where the base does.
    Pissa,
    /// PEFT's `"pissa_niter_K"`: PiSSA from a randomised SVD with K subspace iterations.
    PissaNiter(u32),
    /// PEFT's `"olora"`: A, B from the QR decomposition of W₀ (first r columns of Q, rows of R);
    /// W₀ becomes the residual.
    Olora,
}

impl Init {
    /// Whether the initialisation rewrites the base weight into a residual.
    pub fn mutates_base(self) -> bool {
        matches!(self, Init::Pissa | Init::PissaNiter(_) | Init::Olora)
    }

    /// The value PEFT writes as `init_lora_weights`: `true` or a string.
    pub fn peft_value(self) -> serde_json::Value {
        match self {
            Init::Kaiming | Init::Raschka => serde_json::Value::Bool(true),
            other => serde_json::Value::String(other.to_string()),
        }
    }

    /// Reads PEFT's `init_lora_weights` (`true`, `false` or a string); `false` (random A and B,
    /// a debugging setting) and the initialisations lowrank lacks are errors.
    pub fn from_peft(v: &serde_json::Value) -> Result<Self> {
        match v {
            serde_json::Value::Bool(true) | serde_json::Value::Null => Ok(Init::Kaiming),
            serde_json::Value::String(s) => s.parse(),
            other => Err(Error::InvalidOption(format!(
                "init_lora_weights {other} is not supported; use true, gaussian, pissa, pissa_niter_K or olora"
            ))),
        }
    }
}

impl std::fmt::Display for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Init::Kaiming => write!(f, "true"),
            Init::Gaussian => write!(f, "gaussian"),
            Init::Raschka => write!(f, "raschka"),
            Init::Pissa => write!(f, "pissa"),
            Init::PissaNiter(k) => write!(f, "pissa_niter_{k}"),
            Init::Olora => write!(f, "olora"),
        }
    }
}

impl std::str::FromStr for Init {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "true" | "kaiming" => Init::Kaiming,
            "gaussian" => Init::Gaussian,
            "raschka" => Init::Raschka,
            "pissa" => Init::Pissa,
            "olora" => Init::Olora,
            other => match other.strip_prefix("pissa_niter_").map(str::parse::<u32>) {
                Some(Ok(k)) => Init::PissaNiter(k),
                _ => {
                    return Err(Error::InvalidOption(format!(
                        "unknown --init {s:?}; use true, gaussian, raschka, pissa, pissa_niter_K (K a whole number) or olora"
                    )))
                }
            },
        })
    }
}

impl Serialize for Init {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Init {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// LoRA hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r of the update.
    pub r: usize,
    /// alpha, interpreted by `scaling`.
    pub alpha: f32,
    /// Scaling convention.
    pub scaling: Scaling,
    /// Dropout on the LoRA branch's input (PEFT's lora_dropout); 0 disables it.
    pub dropout: f32,
    /// How A and B start (None: the scaling convention's own, see [`LoraConfig::init_kind`]).
    #[serde(default)]
    pub init: Option<Init>,
    /// DoRA (PEFT's use_dora): a trainable magnitude per output row on top of the LoRA direction.
    #[serde(default)]
    pub dora: bool,
    /// A trainable bias on lora_B (PEFT's lora_bias).
    #[serde(default)]
    pub bias: bool,
}

impl Default for LoraConfig {
    /// The seed's defaults: r = 8, alpha = 16, raschka scaling, no dropout, plain LoRA.
    fn default() -> Self {
        LoraConfig { r: 8, alpha: 16.0, scaling: Scaling::Raschka, dropout: 0.0, init: None, dora: false, bias: false }
    }
}

impl LoraConfig {
    /// The factor multiplying (x·A)·B.
    pub fn scale(&self) -> f32 {
        match self.scaling {
            Scaling::Raschka => self.alpha,
            Scaling::Peft => self.alpha / self.r as f32,
            Scaling::Rslora => self.alpha / (self.r as f32).sqrt(),
        }
    }

    /// The `lora_alpha` that makes PEFT compute the same scale with its (non-rs) convention.
    pub fn peft_alpha(&self) -> f32 {
        match self.scaling {
            Scaling::Raschka => self.alpha * self.r as f32,
            Scaling::Peft | Scaling::Rslora => self.alpha,
        }
    }

    /// The initialisation in effect: the explicit one, else the seed's for raschka scaling and
    /// PEFT's default (kaiming A) for the others.
    pub fn init_kind(&self) -> Init {
        self.init.unwrap_or(match self.scaling {
            Scaling::Raschka => Init::Raschka,
            Scaling::Peft | Scaling::Rslora => Init::Kaiming,
        })
    }

    /// Rejects values that cannot work, and the combinations PEFT refuses.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::InvalidOption("--lora-r must be at least 1".into()));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::InvalidOption(format!("--lora-alpha must be a positive number, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidOption(format!("--lora-dropout must be in [0, 1), got {}", self.dropout)));
        }
        if self.bias && self.dora {
            return Err(Error::InvalidOption("--lora-bias is not supported with --dora (PEFT refuses lora_bias=True for DoRA)".into()));
        }
        if self.bias && !matches!(self.init_kind(), Init::Kaiming | Init::Raschka) {
            return Err(Error::InvalidOption(format!(
                "--lora-bias needs a zero-B initialisation (--init true or raschka), not --init {} (PEFT's rule)",
                self.init_kind()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_follow_each_convention() {
        let c = |scaling| LoraConfig { r: 4, alpha: 8.0, scaling, ..Default::default() };
        assert_eq!(c(Scaling::Raschka).scale(), 8.0);
        assert_eq!(c(Scaling::Peft).scale(), 2.0);
        assert_eq!(c(Scaling::Rslora).scale(), 4.0);
        // A raschka adapter written for PEFT: lora_alpha = alpha * r gives PEFT's alpha/r = alpha.
        assert_eq!(c(Scaling::Raschka).peft_alpha() / 4.0, c(Scaling::Raschka).scale());
    }

    #[test]
    fn rejects_nonsense() {
        assert!(LoraConfig { r: 0, ..Default::default() }.validate().is_err());
        assert!(LoraConfig { alpha: f32::NAN, ..Default::default() }.validate().is_err());
        assert!("dora".parse::<Scaling>().is_err());
        let e = LoraConfig { bias: true, dora: true, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(e.contains("--lora-bias") && e.contains("--dora"), "{e}");
        let e = LoraConfig { bias: true, init: Some(Init::Pissa), ..Default::default() }.validate().unwrap_err().to_string();
        assert!(e.contains("pissa"), "{e}");
    }

    #[test]
    fn init_names_are_peft_s() {
        for (s, want) in [
            ("true", Init::Kaiming),
            ("gaussian", Init::Gaussian),
            ("raschka", Init::Raschka),
            ("pissa", Init::Pissa),
            ("pissa_niter_16", Init::PissaNiter(16)),
            ("olora", Init::Olora),
        ] {
            let got: Init = s.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string().parse::<Init>().unwrap(), want);
        }
        assert!("pissa_niter_x".parse::<Init>().unwrap_err().to_string().contains("pissa_niter_K"));
        assert_eq!(Init::from_peft(&serde_json::json!(true)).unwrap(), Init::Kaiming);
        assert_eq!(Init::from_peft(&serde_json::json!("pissa_niter_4")).unwrap(), Init::PissaNiter(4));
        assert!(Init::from_peft(&serde_json::json!(false)).is_err());
        assert_eq!(Init::Olora.peft_value(), serde_json::json!("olora"));
        assert_eq!(Init::Raschka.peft_value(), serde_json::json!(true));
        // Old run folders (no init / dora / bias fields) still read.
        let old: LoraConfig = serde_json::from_str(r#"{"r": 4, "alpha": 8.0, "scaling": "peft", "dropout": 0.0}"#).unwrap();
        assert_eq!(old, LoraConfig { r: 4, alpha: 8.0, scaling: Scaling::Peft, ..Default::default() });
        assert_eq!(old.init_kind(), Init::Kaiming);
    }
}
