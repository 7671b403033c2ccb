//! Adapters in Hugging Face PEFT's format (adapter_config.json + adapter_model.safetensors):
//! saving what a run trained ([`save`]), loading adapters PEFT or lowrank wrote ([`load`]), and
//! writing full model folders with the update merged in ([`merge`]).

pub mod config;
pub mod load;
pub mod merge;
pub mod save;

pub use config::PeftConfig;
pub use load::{load_into, read_adapter};
pub use merge::write_model_folder;
pub use save::save_adapter;

use crate::data::LabelMap;
use crate::error::Result;
use crate::model::Model;
use crate::plan::TrainMode;
use crate::tokenize::Tokenizer;
use crate::train::TrainConfig;
use std::path::Path;

/// Writes a finished run's result beside it: `adapter/` (PEFT format) for LoRA and last-layers
/// runs, `model/` (a full Hugging Face model folder) for full fine-tuning.
pub fn export_run(run_dir: &Path, cfg: &TrainConfig, model: &Model, labels: &LabelMap, tokenizer: &Tokenizer) -> Result<()> {
    export(run_dir, cfg, model, labels, tokenizer, None)
}

/// Like [`export_run`], into `out` when given.
pub fn export(
    run_dir: &Path,
    cfg: &TrainConfig,
    model: &Model,
    labels: &LabelMap,
    tokenizer: &Tokenizer,
    out: Option<&Path>,
) -> Result<()> {
    let tok_dir = tokenizer.source.parent().unwrap_or(Path::new("."));
    match cfg.plan.mode {
        TrainMode::Full => {
            write_model_folder(model, &out.map_or_else(|| run_dir.join("model"), Path::to_path_buf), labels.names(), tok_dir)
        }
        TrainMode::Lora | TrainMode::LastLayers => {
            let info = save::AdapterInfo {
                base_model: cfg.model.display().to_string(),
                labels,
                tokenizer_dir: tok_dir,
                lora: (cfg.plan.mode == TrainMode::Lora).then_some(cfg.plan.lora),
            };
            save_adapter(model, &out.map_or_else(|| run_dir.join("adapter"), Path::to_path_buf), &info)
        }
    }
}

/// Copies the tokenizer files of a model folder into `dir` (those that exist).
pub(crate) fn copy_tokenizer_files(from: &Path, dir: &Path) -> Result<()> {
    for name in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        let src = from.join(name);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(|e| crate::error::Error::io("read", &src, e))?;
            crate::fsutil::write_atomic(&dir.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// Writes a folder atomically: `fill` writes into a temporary sibling, which then replaces `dir`.
pub(crate) fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    use crate::error::Error;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = dir.with_file_name(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(|e| Error::io("replace", dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| Error::io("write", dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| Error::io("write", dir, e))?;
    }
    Ok(())
}
