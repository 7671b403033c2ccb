//! Exporting a run's result: the adapter (PEFT format) of a LoRA or last-layers run, or the full
//! Hugging Face model folder of a full fine-tuning run.

use crate::adapter::{save_adapter, AdapterInfo};
use crate::data::LabelMap;
use crate::error::Result;
use crate::model::save::write_model_folder;
use crate::model::Model;
use crate::plan::TrainMode;
use crate::run::TrainConfig;
use crate::tokenize::Tokenizer;
use std::path::Path;

/// Writes a finished run's result beside it: `adapter/` for LoRA and last-layers runs, `model/`
/// for full fine-tuning.
/// `labels` are a classifier's classes (None for a causal LM).
pub fn export_run(run_dir: &Path, cfg: &TrainConfig, model: &Model, labels: Option<&LabelMap>, tokenizer: &Tokenizer) -> Result<()> {
    export(run_dir, cfg, model, labels, tokenizer, None)
}

/// Like [`export_run`], into `out` when given.
pub fn export(
    run_dir: &Path,
    cfg: &TrainConfig,
    model: &Model,
    labels: Option<&LabelMap>,
    tokenizer: &Tokenizer,
    out: Option<&Path>,
) -> Result<()> {
    let tok_dir = tokenizer.source.parent().unwrap_or(Path::new("."));
    match cfg.plan.mode {
        TrainMode::Full => write_model_folder(
            model,
            &out.map_or_else(|| run_dir.join("model"), Path::to_path_buf),
            labels.map_or(&[], LabelMap::names),
            tok_dir,
        ),
        TrainMode::Lora | TrainMode::LastLayers => {
            let info = AdapterInfo {
                base_model: cfg.model.display().to_string(),
                labels,
                tokenizer_dir: tok_dir,
                lora: (cfg.plan.mode == TrainMode::Lora).then_some(cfg.plan.lora),
                patterns: Some(&cfg.plan.patterns),
            };
            save_adapter(model, &out.map_or_else(|| run_dir.join("adapter"), Path::to_path_buf), &info)
        }
    }
}
