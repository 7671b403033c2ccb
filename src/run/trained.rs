//! A finished (or best-so-far) run loaded back from its folder: configuration, labels,
//! tokenizer, and the model with its best-validation weights.

use super::checkpoint;
use super::config::{Task, TrainConfig};
use super::RunDir;
use crate::data::LabelMap;
use crate::error::{Error, Result};
use crate::model::{HeadKind, LoadOptions, Model, ModelConfig};
use crate::tokenize::Tokenizer;
use std::path::Path;

/// A trained run, ready to evaluate, predict or export.
pub struct Trained {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Its classes (None for a causal-LM run).
    pub labels: Option<LabelMap>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The model with the best-validation weights.
    pub model: Model,
}

impl Trained {
    /// The classes of a classification run; an error naming the fix for a causal-LM run.
    pub fn classes(&self) -> Result<&LabelMap> {
        self.labels.as_ref().ok_or_else(|| {
            Error::InvalidOption(
                "this run is a causal language model (--task causal-lm): it has no classes; evaluate it with lowrank eval --run RUN --data FILE.jsonl".into(),
            )
        })
    }
}

/// Loads `run_dir`'s best checkpoint.
pub fn load_trained(run_dir: &Path) -> Result<Trained> {
    let dir = RunDir(run_dir.to_path_buf());
    if !dir.config().exists() {
        return Err(Error::InvalidOption(format!(
            "{} is not a run folder (no config.json); pass the --out folder of lowrank train",
            run_dir.display()
        )));
    }
    let config: TrainConfig = crate::fsutil::read_json(&dir.config(), "run config.json")?;
    let labels: Option<LabelMap> = match config.task {
        Task::Classification => Some(crate::fsutil::read_json(&dir.labels(), "labels.json")?),
        Task::CausalLm => None,
    };
    if !dir.best().exists() {
        return Err(Error::InvalidOption(if dir.summary().exists() {
            format!(
                "{} finished (it has summary.json) but its best.safetensors is missing: restore the file, or train the run again in a new folder",
                run_dir.display()
            )
        } else {
            format!("{} has no best.safetensors yet: the run has not finished an evaluation", run_dir.display())
        }));
    }
    config.check_inputs(run_dir, false, true)?;
    let model_config = crate::model::ModelConfig::load(&config.model)?;
    crate::guard::memory::check_config(&model_config, "the run's base model")?;
    let (max_length, _) = crate::guard::clamp_max_length(config.max_length, &model_config, "max_length");
    let tokenizer = Tokenizer::from_model_dir(&config.model, max_length)?;
    let mut model = build_model(&config, labels.as_ref().map_or(0, LabelMap::len))?;
    checkpoint::load(&dir.best(), &mut model, None)?;
    crate::guard::check_finite(&model, &format!("run {} (its base model and best checkpoint)", run_dir.display()))?;
    model.set_precision(config.precision.for_inference(), false);
    Ok(Trained { config, labels, tokenizer, model })
}

/// Builds a run's model: base weights, head (the language-model head for a causal-LM run, whose
/// `num_labels` is unused), what trains (and an initial adapter, if any).
pub fn build_model(cfg: &TrainConfig, num_labels: usize) -> Result<Model> {
    let head = match cfg.task {
        Task::Classification => cfg.head,
        Task::CausalLm => {
            if let ModelConfig::Encoder(c) = ModelConfig::load(&cfg.model)? {
                return Err(Error::InvalidOption(format!(
                    "--task causal-lm needs a decoder (Llama, Qwen2, Mistral, GPT-2), but {} is a {} encoder; pass a decoder's --model, or train a classifier with --task classification",
                    cfg.model.display(),
                    c.arch.model_type()
                )));
            }
            Some(HeadKind::Lm)
        }
    };
    let opts = LoadOptions { head, num_labels: Some(num_labels), seed: cfg.seed };
    let (mut model, _) = Model::from_pretrained(&cfg.model, &opts)?;
    cfg.plan.apply(&mut model)?;
    if let Some(dir) = &cfg.init_adapter {
        crate::adapter::load_into(dir, &mut model)?;
    }
    Ok(model)
}
