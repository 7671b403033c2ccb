//! Where an exported model comes from: a finished training run (`lowrank export --run`), or a
//! base model plus a PEFT adapter folder (`lowrank export --model --adapter`, `lowrank merge`).
//! The base is loaded with a language-model head, the only head llama.cpp runs.

use super::{write_adapter, write_merged, AdapterSummary, ExportError, GgufDtype, MergedSummary, Result};
use crate::gguf::GgufFile;
use crate::model::{HeadKind, LoadOptions, Model};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The LoRA adapter of the finished run in `run_dir` (its best checkpoint), written to `out` as
/// a GGUF adapter.
pub fn export_run_adapter(run_dir: &Path, out: &Path) -> Result<AdapterSummary> {
    let t = crate::run::load_trained(run_dir)?;
    write_adapter(&t.model, out)
}

/// Refuses adapters whose features llama.cpp does not implement (DoRA, LoRA biases, trained
/// base biases), or whose head it cannot run (sequence classification); with `adapter_only`,
/// also modules saved whole (modules_to_save), which a GGUF adapter cannot carry.
fn check_adapter_config(dir: &Path, adapter_only: bool) -> Result<()> {
    let path = dir.join("adapter_config.json");
    // A missing or malformed file is reported by the adapter reader, with its own message.
    let Some(cfg) = std::fs::read_to_string(&path).ok().and_then(|s| serde_json::from_str::<Value>(&s).ok()) else {
        return Ok(());
    };
    let refuse = |feature: String| Err(ExportError::UnsupportedAdapter { dir: dir.to_path_buf(), feature });
    if cfg.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return refuse("use_dora is true (DoRA's magnitude vector has no place in llama.cpp's adapter)".into());
    }
    if cfg.get("lora_bias").and_then(Value::as_bool) == Some(true) {
        return refuse("lora_bias is true (lora_B has a bias)".into());
    }
    if let Some(bias) = cfg.get("bias").and_then(Value::as_str).filter(|b| *b != "none") {
        return refuse(format!("bias is {bias:?} (trained biases of the base layers)"));
    }
    if cfg.get("task_type").and_then(Value::as_str) == Some("SEQ_CLS") {
        return Err(ExportError::ClassificationHead { head: "sequence-classification", module: "score".into() });
    }
    let to_save = cfg.get("modules_to_save").and_then(Value::as_array).filter(|a| !a.is_empty());
    if let (true, Some(m)) = (adapter_only, to_save) {
        let names: Vec<&str> = m.iter().filter_map(Value::as_str).collect();
        return Err(ExportError::TrainedBaseTensor { tensor: format!("modules_to_save {names:?}") });
    }
    Ok(())
}

/// The base at `base` with a language-model head and the PEFT adapter in `adapter_dir` loaded.
fn load_lm_with_adapter(base: &Path, adapter_dir: &Path) -> Result<Model> {
    let files = crate::adapter::read_adapter(adapter_dir)?;
    if let Some(head) = files.head().filter(|h| *h != HeadKind::Lm) {
        return Err(ExportError::ClassificationHead { head: head.name(), module: "the adapter's head (lowrank.json)".into() });
    }
    let (mut model, _) = Model::from_pretrained(base, &LoadOptions { head: Some(HeadKind::Lm), num_labels: None, seed: 0 })?;
    crate::adapter::load_into(adapter_dir, &mut model)?;
    Ok(model)
}

/// The PEFT adapter in `adapter_dir`, trained on `base` (a GGUF file or a Hugging Face folder,
/// which gives the module shapes and head counts), written to `out` as a GGUF adapter.
pub fn export_peft_adapter(base: &Path, adapter_dir: &Path, out: &Path) -> Result<AdapterSummary> {
    check_adapter_config(adapter_dir, true)?;
    let model = load_lm_with_adapter(base, adapter_dir)?;
    write_adapter(&model, out)
}

/// The PEFT adapter in `adapter_dir` merged into the GGUF model `base`, written to `out` as a
/// full GGUF of `dtype` with `base`'s metadata.
pub fn merge_to_gguf(base: &Path, adapter_dir: &Path, out: &Path, dtype: GgufDtype) -> Result<MergedSummary> {
    if !crate::model::config::is_gguf(base) {
        return Err(ExportError::NeedsGgufBase { path: base.to_path_buf() });
    }
    check_adapter_config(adapter_dir, false)?;
    let model = load_lm_with_adapter(base, adapter_dir)?;
    let source = GgufFile::open(base)?;
    write_merged(&model, &source, out, dtype)
}

/// Refuses an `--out` that is an existing folder: a GGUF export is one file.
/// Checks the one file `out` against the inputs ([`crate::fsutil::out::check_out_file`]), makes
/// its folder and locks it (a lock file beside it) for the command's lifetime.
fn claim_out_file(out: &Path, inputs: &[(&str, &Path)], force: bool) -> anyhow::Result<crate::fsutil::lock::Lock> {
    crate::fsutil::out::check_out_file(out, inputs, force)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| crate::error::Error::io("create directory", parent, e))?;
    }
    Ok(crate::fsutil::lock::Lock::file(out, "output file")?)
}

/// `lowrank export --format gguf`: the adapter of the run `run`, or of the PEFT folder `adapter`
/// on the base `model`, written to `out`; prints what it wrote.
pub fn cli_export(
    run: Option<&Path>,
    adapter: Option<&Path>,
    model: Option<&str>,
    out: &Path,
    force: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let s = match (adapter, run) {
        (Some(dir), _) => {
            let model = model.ok_or_else(|| anyhow::anyhow!("--adapter needs --model, the base the adapter was trained on"))?;
            let base = crate::hub::resolve_model(model)?;
            let _lock = claim_out_file(out, &[("adapter", dir), ("base model", base.as_path())], force)?;
            export_peft_adapter(&base, dir, out)?
        }
        (None, Some(_)) if model.is_some() => {
            anyhow::bail!("--model is the base of --adapter; a run (--run) knows its base, so drop --model")
        }
        (None, Some(run)) => {
            let mut inputs: Vec<(&str, PathBuf)> = vec![("run folder", run.to_path_buf())];
            if let Ok(c) = crate::fsutil::read_json::<crate::run::TrainConfig>(&run.join("config.json"), "run config.json") {
                inputs.push(("base model", c.model.clone()));
                if let Some(d) = c.init_adapter {
                    inputs.push(("initial adapter", d));
                }
            }
            let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(w, p)| (*w, p.as_path())).collect();
            let _lock = claim_out_file(out, &inputs, force)?;
            export_run_adapter(run, out)?
        }
        (None, None) => anyhow::bail!("pass --run RUN_DIR, or --adapter DIR with --model BASE"),
    };
    eprintln!(
        "wrote {} (llama.cpp LoRA adapter, architecture {}: {} modules, rank {}, adapter.lora.alpha {} = scale {} x rank); apply it with llama-completion -m BASE.gguf --lora {}",
        out.display(),
        s.arch,
        s.modules.len(),
        s.rank,
        s.alpha,
        s.scale,
        out.display()
    );
    if !s.scale_exact {
        eprintln!("note: no f32 adapter.lora.alpha gives the scale exactly; llama.cpp's factor {} is one f32 step from lowrank's", s.scale);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `lowrank merge --format gguf`: the PEFT adapter `adapter` merged into the GGUF `base`, written
/// to `out` as `dtype`; prints what it wrote.
pub fn cli_merge(base: &Path, adapter: &Path, out: &Path, dtype: GgufDtype, force: bool) -> anyhow::Result<std::process::ExitCode> {
    let _lock = claim_out_file(out, &[("base model", base), ("adapter", adapter)], force)?;
    let s = merge_to_gguf(base, adapter, out, dtype)?;
    eprintln!(
        "wrote {} (merged GGUF, {} {}: {} tensors, {} metadata keys from {}; LoRA merged into {} modules)",
        out.display(),
        s.arch,
        s.dtype.name(),
        s.tensors,
        s.metadata,
        base.display(),
        s.merged_modules.len()
    );
    Ok(std::process::ExitCode::SUCCESS)
}
