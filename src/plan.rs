//! Choosing what trains: LoRA on chosen linear layers (base frozen), the seed's "last layers"
//! baseline (only the two head linears), or full fine-tuning; plus PEFT's `modules_to_save`.

use crate::error::{Error, Result};
use crate::lora::{targets::name_matches, LoraConfig, LoraLayer, SeedFlags, TargetModules};
use crate::model::{HeadKind, Model};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// The three ways of fine-tuning the seed compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TrainMode {
    /// Frozen base, LoRA on the target modules.
    #[default]
    Lora,
    /// Only the head's two linears train (pre_classifier + classifier, or pooler dense + classifier).
    LastLayers,
    /// Every parameter trains.
    Full,
}

impl std::str::FromStr for TrainMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lora" => Ok(TrainMode::Lora),
            "last-layers" => Ok(TrainMode::LastLayers),
            "full" => Ok(TrainMode::Full),
            other => Err(Error::InvalidOption(format!("unknown mode {other:?}; use lora, last-layers or full"))),
        }
    }
}

/// What trains, resolved from the command line or a run's config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    /// The fine-tuning mode.
    pub mode: TrainMode,
    /// LoRA hyperparameters (used in `lora` mode).
    pub lora: LoraConfig,
    /// Which linears get LoRA (used in `lora` mode).
    pub targets: TargetModules,
    /// Modules trained in full beside LoRA (PEFT's modules_to_save), matched as name suffixes.
    pub modules_to_save: Vec<String>,
    /// Seed of the LoRA initialisation.
    pub seed: u64,
}

impl Default for TrainPlan {
    /// The seed's default: LoRA r = 8, alpha = 16 on query and value, raschka scaling.
    fn default() -> Self {
        TrainPlan {
            mode: TrainMode::Lora,
            lora: LoraConfig::default(),
            targets: TargetModules::Flags(SeedFlags::query_value()),
            modules_to_save: Vec::new(),
            seed: 123,
        }
    }
}

impl TrainPlan {
    /// Freezes the model, then makes trainable what the plan says (injecting fresh LoRA layers).
    /// Returns the module paths that got LoRA.
    pub fn apply(&self, model: &mut Model) -> Result<Vec<String>> {
        for p in model.params_mut() {
            p.set_trainable(false);
        }
        for lin in model.linears_mut() {
            lin.lora = None;
        }
        let mut injected = Vec::new();
        match self.mode {
            TrainMode::Full => model.base_params_mut().into_iter().for_each(|p| p.set_trainable(true)),
            TrainMode::LastLayers => model.set_last_layers_trainable(),
            TrainMode::Lora => {
                self.lora.validate()?;
                let picked = self.targets.resolve(&model.linear_modules())?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
                for (lin, pick) in model.linears_mut().into_iter().zip(picked) {
                    if pick {
                        lin.lora = Some(LoraLayer::new(&lin.path, lin.in_dim(), lin.out_dim(), &self.lora, &mut rng));
                        injected.push(lin.path.clone());
                    }
                }
                // A decoder's classification head is new: it trains in full beside LoRA, as PEFT's
                // SEQ_CLS task adds `score` to modules_to_save by itself.
                if model.head_kind() == HeadKind::Score {
                    model.head_linears_mut().into_iter().filter(|l| l.lora.is_none()).for_each(|l| l.set_base_trainable(true));
                }
            }
        }
        for entry in &self.modules_to_save {
            let mut found = false;
            for lin in model.linears_mut().into_iter().filter(|l| name_matches(&l.path, entry)) {
                lin.set_base_trainable(true);
                found = true;
            }
            if !found {
                return Err(Error::UnknownTargetModule {
                    pattern: entry.clone(),
                    examples: "classifier, pre_classifier, bert.pooler.dense".into(),
                });
            }
        }
        Ok(injected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HeadKind;
    use crate::model::ModelConfig;
    use std::path::Path;

    fn distilbert_base() -> Model {
        let cfg =
            ModelConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/distilbert-base-uncased.config.json")).unwrap();
        Model::new(&cfg, HeadKind::DistilBert, 2)
    }

    fn trainable(plan: TrainPlan) -> usize {
        let mut m = distilbert_base();
        plan.apply(&mut m).unwrap();
        m.param_counts().0
    }

    #[test]
    fn trainable_counts_equal_the_seed_s() {
        assert_eq!(trainable(TrainPlan::default()), 147_456);
        let mlp = TargetModules::Flags(SeedFlags { query: true, value: true, mlp: true, ..Default::default() });
        assert_eq!(trainable(TrainPlan { targets: mlp, ..Default::default() }), 516_096);
        assert_eq!(trainable(TrainPlan { mode: TrainMode::LastLayers, ..Default::default() }), 592_130);
        assert_eq!(trainable(TrainPlan { mode: TrainMode::Full, ..Default::default() }), 66_955_010);
        let mut m = distilbert_base();
        TrainPlan { mode: TrainMode::Full, ..Default::default() }.apply(&mut m).unwrap();
        assert_eq!(m.param_counts().1, 66_955_010);
    }

    #[test]
    fn modules_to_save_train_beside_lora_and_unknown_ones_are_errors() {
        let plan = TrainPlan { modules_to_save: vec!["classifier".into()], ..Default::default() };
        assert_eq!(trainable(plan), 147_456 + 768 * 2 + 2);
        let mut m = distilbert_base();
        let e = TrainPlan { modules_to_save: vec!["score".into()], ..Default::default() }.apply(&mut m).unwrap_err();
        assert!(e.to_string().contains("score"), "{e}");
    }
}
