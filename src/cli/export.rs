//! `lowrank export` (a run's adapter or full model, on demand) and `lowrank merge` (an adapter
//! folded into its base, written as a full Hugging Face model folder).

use crate::adapter::{load_into, read_adapter};
use crate::fsutil::lock::Lock;
use crate::fsutil::out::check_out;
use crate::model::save::write_model_folder;
use crate::model::{LoadOptions, Model};
use crate::run::load_trained;
use crate::train::export::export;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `lowrank export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run folder.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// Where to write the adapter (LoRA / last-layers runs) or model folder (full runs): a new or
    /// empty folder, never the run folder or a folder containing it.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write into a folder that already holds files, replacing only the files export writes
    /// (everything else in it is left as it is).
    #[arg(long)]
    pub force: bool,
}

/// Options of `lowrank merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base model folder.
    #[arg(long, value_name = "DIR|ID")]
    pub model: String,
    /// The adapter folder (PEFT format).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// The model folder to write: a new or empty folder, never the base model's or the adapter's
    /// folder or a folder containing them.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write into a folder that already holds files, replacing only the files merge writes
    /// (config.json, model.safetensors, tokenizer files; everything else is left as it is).
    #[arg(long)]
    pub force: bool,
}

/// The files a written adapter folder holds (for messages).
const ADAPTER_FILES: &str = "adapter_config.json, adapter_model.safetensors, lowrank.json, labels.json, tokenizer files";
/// The files a written model folder holds (for messages).
const MODEL_FILES: &str = "config.json, model.safetensors, tokenizer files";

/// Locks `out` (beside it) after checking it against the inputs.
fn claim_out(out: &std::path::Path, inputs: &[(&str, &std::path::Path)], force: bool, writes: &str) -> anyhow::Result<Lock> {
    check_out(out, inputs, force, writes)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| crate::error::Error::io("create directory", parent, e))?;
    }
    Ok(Lock::file(out, "output folder")?)
}

/// Runs `lowrank export`.
pub fn run_export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let config: crate::run::TrainConfig = crate::fsutil::read_json(&a.run.join("config.json"), "run config.json").map_err(|_| {
        crate::error::Error::InvalidOption(format!(
            "{} is not a run folder (no readable config.json): pass the --out folder of lowrank train",
            a.run.display()
        ))
    })?;
    let writes = if config.plan.mode == crate::plan::TrainMode::Full { MODEL_FILES } else { ADAPTER_FILES };
    let mut inputs = vec![("run folder", a.run.as_path()), ("base model", config.model.as_path())];
    if let Some(d) = &config.init_adapter {
        inputs.push(("initial adapter", d.as_path()));
    }
    let _lock = claim_out(&a.out, &inputs, a.force, writes)?;
    let t = load_trained(&a.run)?;
    export(&a.run, &t.config, &t.model, &t.labels, &t.tokenizer, Some(&a.out))?;
    eprintln!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs `lowrank merge`.
pub fn run_merge(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let base = crate::hub::resolve_model(&a.model)?;
    let files = read_adapter(&a.adapter)?;
    let _lock = claim_out(&a.out, &[("base model", base.as_path()), ("adapter", a.adapter.as_path())], a.force, MODEL_FILES)?;
    let num_labels = files.labels.as_ref().map(|l| l.len());
    let config = crate::model::ModelConfig::load(&base)?;
    crate::guard::memory::check_config(&config, "the base model")?;
    let (mut model, _) = Model::from_pretrained(&base, &LoadOptions { head: files.head(), num_labels, seed: 0 })?;
    crate::guard::check_finite(&model, &format!("the base model {}", base.display()))?;
    for w in crate::guard::fit::check_adapter(&a.adapter, &base, &model, true)? {
        eprintln!("{w}");
    }
    load_into(&a.adapter, &mut model)?;
    crate::guard::check_finite(&model, &format!("the adapter {}", a.adapter.display()))?;
    let names: Vec<String> = match &files.labels {
        Some(l) => l.names().to_vec(),
        None => (0..model.num_labels()).map(|i| format!("LABEL_{i}")).collect(),
    };
    let tok =
        if a.adapter.join("tokenizer.json").exists() || a.adapter.join("vocab.txt").exists() { a.adapter.clone() } else { base.clone() };
    model.merge_lora()?;
    write_model_folder(&model, &a.out, &names, &tok)?;
    eprintln!("wrote {} (LoRA merged: {} modules)", a.out.display(), model.linears().iter().filter(|l| l.lora.is_some()).count());
    Ok(ExitCode::SUCCESS)
}
