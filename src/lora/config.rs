//! LoRA hyperparameters and the scaling conventions that turn (r, alpha) into the factor on (xA)B.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How `alpha` and `r` become the multiplier of the low-rank update, and how A is initialised.
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
}

impl Default for LoraConfig {
    /// The seed's defaults: r = 8, alpha = 16, raschka scaling, no dropout.
    fn default() -> Self {
        LoraConfig { r: 8, alpha: 16.0, scaling: Scaling::Raschka, dropout: 0.0 }
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

    /// Rejects values that cannot work.
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_follow_each_convention() {
        let c = |scaling| LoraConfig { r: 4, alpha: 8.0, scaling, dropout: 0.0 };
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
    }
}
