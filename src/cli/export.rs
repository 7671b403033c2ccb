//! `lowrank export` (a run's adapter or full model, on demand) and `lowrank merge` (an adapter
//! folded into its base, written as a full Hugging Face model folder).

use crate::adapter::{load_into, read_adapter};
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
    /// Where to write the adapter (LoRA / last-layers runs) or model folder (full runs).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
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
    /// The model folder to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs `lowrank export`.
pub fn run_export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let t = load_trained(&a.run)?;
    export(&a.run, &t.config, &t.model, t.labels.as_ref(), &t.tokenizer, Some(&a.out))?;
    eprintln!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs `lowrank merge`.
pub fn run_merge(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let base = crate::hub::resolve_model(&a.model)?;
    let files = read_adapter(&a.adapter)?;
    let num_labels = files.labels.as_ref().map(|l| l.len());
    let (mut model, _) = Model::from_pretrained(&base, &LoadOptions { head: files.head(), num_labels, seed: 0 })?;
    load_into(&a.adapter, &mut model)?;
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
