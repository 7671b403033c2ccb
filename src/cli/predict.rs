//! `lowrank predict`: classify texts with a base model and zero or more adapters (one base in
//! memory; each adapter is loaded, merged for speed, used, and removed again).

use crate::adapter::{load_into, read_adapter};
use crate::model::load::LoadOptions;
use crate::model::{Linear, Model};
use crate::predict::{classify, read_texts, Prediction};
use crate::tokenize::Tokenizer;
use anyhow::bail;
use clap::Args;
use indicatif::ProgressBar;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `lowrank predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Base model folder (or a merged / fully fine-tuned model folder).
    #[arg(long, value_name = "DIR|ID")]
    pub model: String,
    /// Adapter folder, as DIR or NAME=DIR; repeat to compare several adapters on one base.
    #[arg(long, value_name = "[NAME=]DIR")]
    pub adapter: Vec<String>,
    /// Classification head (default: the adapter's, else the checkpoint's own).
    #[arg(long)]
    pub head: Option<crate::model::HeadKind>,
    /// A text to classify (repeatable).
    #[arg(long, value_name = "TEXT", required_unless_present = "file")]
    pub text: Vec<String>,
    /// A file of texts: .txt (one per line), .csv/.tsv (see --text-column) or .jsonl.
    #[arg(long, value_name = "PATH", conflicts_with = "text")]
    pub file: Option<PathBuf>,
    /// Column / field holding the text.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// One JSON object per line: text, label, probability, logits (and adapter).
    #[arg(long)]
    pub json: bool,
    /// Texts per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Truncation length.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
}

/// Runs `lowrank predict`.
pub fn run(a: PredictArgs) -> anyhow::Result<ExitCode> {
    let texts: Vec<String> = match &a.file {
        Some(p) => read_texts(p, &a.text_column)?,
        None => a.text.clone(),
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let base_dir = crate::hub::resolve_model(&a.model)?;
    let adapters: Vec<(Option<String>, PathBuf)> = a
        .adapter
        .iter()
        .map(|s| match s.split_once('=') {
            Some((n, d)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), PathBuf::from(d)),
            _ => (None, PathBuf::from(s)),
        })
        .collect();
    let first = adapters.first().map(|(_, d)| read_adapter(d)).transpose()?;
    let head = a.head.or(first.as_ref().and_then(|f| f.head()));
    let labels_of = |f: &Option<crate::adapter::load::AdapterFiles>| f.as_ref().and_then(|f| f.labels.clone());
    let num_labels = labels_of(&first).map(|l| l.len());
    let (mut model, _) = Model::from_pretrained(&base_dir, &LoadOptions { head, num_labels, seed: 0 })?;
    let tok_dir = adapters
        .first()
        .map(|(_, d)| d.clone())
        .filter(|d| d.join("tokenizer.json").exists() || d.join("vocab.txt").exists())
        .unwrap_or(base_dir.clone());
    let tokenizer = Tokenizer::from_model_dir(&tok_dir, a.max_length)?;
    let base_head = (model.head.hidden.clone(), model.head.classifier.clone());
    let runs: Vec<(Option<String>, Option<PathBuf>)> = if adapters.is_empty() {
        vec![(None, None)]
    } else {
        adapters.into_iter().map(|(n, d)| (n.or_else(|| Some(d.display().to_string())), Some(d))).collect()
    };
    let multi = runs.len() > 1;
    let mut out = std::io::stdout().lock();
    for (name, dir) in runs {
        let mut saved: Vec<(String, Vec<f32>)> = Vec::new();
        let mut names: Vec<String> = model.config.id2label.as_ref().map(|m| m.values().cloned().collect()).unwrap_or_default();
        if let Some(dir) = &dir {
            let files = read_adapter(dir)?;
            if files.head().is_some_and(|h| h != model.head.kind) {
                bail!(
                    "adapter {} was trained with the {:?} head but the base is loaded with {:?}; predict with it separately",
                    dir.display(),
                    files.head().unwrap(),
                    model.head.kind
                );
            }
            let k = files.labels.as_ref().map_or(model.num_labels(), |l| l.len());
            if k != model.num_labels() {
                let c = model.head.classifier.in_dim();
                model.head.classifier = Linear::new(model.head.classifier.path.clone(), model.head.classifier.role, c, k);
            }
            saved = snapshot_replaced(dir, &model)?;
            load_into(dir, &mut model)?;
            model.merge_lora();
            if let Some(l) = &files.labels {
                names = l.names().to_vec();
            }
        }
        let bar = if std::io::stderr().is_terminal() && texts.len() > a.batch_size {
            ProgressBar::new(texts.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        let preds = classify(&model, &tokenizer, &names, &refs, a.batch_size, &mut |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        print_predictions(&mut out, &texts, &preds, a.json, multi.then_some(name.as_deref().unwrap_or("")))?;
        // Back to the plain base for the next adapter.
        model.unmerge_lora();
        for l in model.linears_mut() {
            l.lora = None;
        }
        for p in model.base_params_mut() {
            if let Some((_, data)) = saved.iter().find(|(n, _)| *n == p.name) {
                if data.len() == p.data.len() {
                    p.data.copy_from_slice(data);
                }
            }
        }
        model.head.hidden = base_head.0.clone();
        model.head.classifier = base_head.1.clone();
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies of the base tensors an adapter's modules_to_save will overwrite.
fn snapshot_replaced(dir: &std::path::Path, model: &Model) -> anyhow::Result<Vec<(String, Vec<f32>)>> {
    let file = crate::checkpoint::TensorFile::read(&dir.join("adapter_model.safetensors"))?;
    let names: Vec<String> = file
        .tensors
        .keys()
        .filter(|k| !k.contains(".lora_"))
        .filter_map(|k| k.strip_prefix("base_model.model."))
        .map(str::to_string)
        .collect();
    Ok(model.base_params().into_iter().filter(|p| names.contains(&p.name)).map(|p| (p.name.clone(), p.data.clone())).collect())
}

fn print_predictions(
    out: &mut impl std::io::Write,
    texts: &[String],
    preds: &[Prediction],
    json: bool,
    adapter: Option<&str>,
) -> anyhow::Result<()> {
    for (t, p) in texts.iter().zip(preds) {
        if json {
            let mut v =
                serde_json::json!({"text": t, "label": p.label, "label_id": p.label_id, "probability": p.probability, "logits": p.logits});
            if let Some(a) = adapter {
                v["adapter"] = a.into();
            }
            writeln!(out, "{v}")?;
        } else {
            let prefix = adapter.map(|a| format!("{a}\t")).unwrap_or_default();
            writeln!(out, "{prefix}{}\t{:.4}\t{}", p.label, p.probability, t)?;
        }
    }
    Ok(())
}
