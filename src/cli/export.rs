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

/// Output format of `lowrank export` / `lowrank merge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Hugging Face PEFT adapter folder / model folder.
    Peft,
    /// llama.cpp GGUF: a LoRA adapter file (`--lora`), or a merged F16 / F32 model.
    Gguf,
}

/// Options of `lowrank export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run folder.
    #[arg(long, value_name = "RUN_DIR", required_unless_present = "adapter")]
    pub run: Option<PathBuf>,
    /// Where to write the adapter (LoRA / last-layers runs) or model folder (full runs); with
    /// --format gguf, the adapter file.
    #[arg(long, value_name = "DIR|FILE")]
    pub out: PathBuf,
    /// peft (default) or gguf (llama.cpp's LoRA adapter file).
    #[arg(long, value_enum, default_value = "peft")]
    pub format: Format,
    /// With --format gguf, a PEFT adapter folder to convert instead of a run (needs --model).
    #[arg(long, value_name = "DIR", conflicts_with = "run", requires = "model")]
    pub adapter: Option<PathBuf>,
    /// The base model of --adapter.
    #[arg(long, value_name = "DIR|FILE.gguf|ID")]
    pub model: Option<String>,
    /// Write into a folder that already holds files, replacing only the files it writes
    /// (everything else in it is left as it is); with --format gguf, replace an existing file
    /// (never an input's).
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
    /// The model folder to write (with --format gguf, the .gguf file).
    #[arg(long, value_name = "DIR|FILE")]
    pub out: PathBuf,
    /// peft (default: a Hugging Face model folder) or gguf (needs a GGUF base).
    #[arg(long, value_enum, default_value = "peft")]
    pub format: Format,
    /// Element type of the merged GGUF's matrices (--format gguf).
    #[arg(long, value_enum)]
    pub dtype: Option<crate::gguf::export::GgufDtype>,
    /// Write into a folder that already holds files, replacing only the files it writes
    /// (everything else in it is left as it is); with --format gguf, replace an existing file
    /// (never an input's).
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
    if a.format == Format::Gguf {
        return crate::gguf::export::cli_export(a.run.as_deref(), a.adapter.as_deref(), a.model.as_deref(), &a.out, a.force);
    }
    let Some(run) = a.run.as_ref().filter(|_| a.adapter.is_none()) else {
        anyhow::bail!("--adapter converts a PEFT adapter to --format gguf; for --format peft pass --run RUN_DIR");
    };
    anyhow::ensure!(a.model.is_none(), "--model is the base of --adapter (--format gguf); a run (--run) knows its base, so drop --model");
    let config: crate::run::TrainConfig = crate::fsutil::read_json(&run.join("config.json"), "run config.json").map_err(|_| {
        crate::error::Error::InvalidOption(format!(
            "{} is not a run folder (no readable config.json): pass the --out folder of lowrank train",
            run.display()
        ))
    })?;
    let writes = if config.plan.mode == crate::plan::TrainMode::Full { MODEL_FILES } else { ADAPTER_FILES };
    let mut inputs = vec![("run folder", run.as_path()), ("base model", config.model.as_path())];
    if let Some(d) = &config.init_adapter {
        inputs.push(("initial adapter", d.as_path()));
    }
    let _lock = claim_out(&a.out, &inputs, a.force, writes)?;
    let t = load_trained(run)?;
    export(run, &t.config, &t.model, t.labels.as_ref(), &t.tokenizer, Some(&a.out))?;
    eprintln!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs `lowrank merge`.
pub fn run_merge(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let base = crate::hub::resolve_model(&a.model)?;
    if a.format == Format::Gguf {
        return crate::gguf::export::cli_merge(&base, &a.adapter, &a.out, a.dtype.unwrap_or_default(), a.force);
    }
    anyhow::ensure!(a.dtype.is_none(), "--dtype applies to --format gguf; a --format peft merge keeps f32 weights");
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
