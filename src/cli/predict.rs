//! `lowrank predict`: classify texts with a base model and zero or more adapters (one base in
//! memory, adapters applied in turn by [`AdapterSwitch`]).

use crate::adapter::read_adapter;
use crate::infer::{classify, read_texts, AdapterSwitch, Prediction};
use crate::model::{HeadKind, LoadOptions, Model};
use crate::tokenize::Tokenizer;
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
    /// A file of texts: .txt (one per line), .csv/.tsv (see --text-column), .jsonl, or .json (an
    /// array of strings or of objects).
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
    /// Truncation length (default: 512, or the model's max_position_embeddings when smaller).
    #[arg(long)]
    pub max_length: Option<usize>,
}

/// Runs `lowrank predict`.
pub fn run(a: PredictArgs) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        return Err(crate::error::Error::InvalidOption("--batch-size must be at least 1".into()).into());
    }
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
    for (i, (name, _)) in adapters.iter().enumerate() {
        if let Some(n) = name {
            anyhow::ensure!(
                !adapters[..i].iter().any(|(m, _)| m.as_deref() == Some(n.as_str())),
                "--adapter name {n} is given twice; give each adapter its own NAME (NAME=DIR)"
            );
        }
    }
    let files = adapters.iter().map(|(_, d)| read_adapter(d)).collect::<Result<Vec<_>, _>>()?;
    let first = files.first();
    for ((_, dir), f) in adapters.iter().zip(&files) {
        if f.head() == Some(HeadKind::Lm) {
            return Err(crate::error::Error::InvalidOption(format!(
                "{} is a causal-LM adapter (task_type CAUSAL_LM: it trains a language model, not a classifier), and predict classifies texts: generate with it (lowrank generate --model {} --adapter {0} --prompt TEXT), or score the run it came from on a file (lowrank eval --run RUN_DIR --data FILE)",
                dir.display(),
                a.model
            ))
            .into());
        }
    }
    let head = a.head.or(first.and_then(|f| f.head()));
    if head == Some(HeadKind::Lm) {
        return Err(crate::error::Error::InvalidOption(
            "--head lm is a language-model head, and predict classifies texts: use lowrank generate to continue texts with it".into(),
        )
        .into());
    }
    let num_labels = first.and_then(|f| f.labels.as_ref()).map(|l| l.len());
    let config = crate::model::ModelConfig::load(&base_dir)?;
    crate::guard::memory::check_config(&config, "the base model")?;
    let max_length = match a.max_length {
        Some(n) => {
            let (n, note) = crate::guard::clamp_max_length(n, &config, "--max-length");
            note.inspect(|n| eprintln!("{n}"));
            n
        }
        None => crate::guard::clamp_max_length(512, &config, "--max-length").0,
    };
    let (model, _) = Model::from_pretrained(&base_dir, &LoadOptions { head, num_labels, seed: 0 })?;
    crate::guard::check_finite(&model, &format!("the base model {}", base_dir.display()))?;
    if adapters.is_empty() && !model.initialised().is_empty() {
        return Err(crate::error::Error::InvalidOption(format!(
            "{} has no trained classification head ({} are not in its model.safetensors), so predictions would come from a randomly initialised head; pass --adapter DIR (a trained adapter), or a model folder with a head (from lowrank merge, lowrank export of a full run, or a *ForSequenceClassification checkpoint)",
            base_dir.display(),
            model.initialised().join(", ")
        ))
        .into());
    }
    for (_, dir) in &adapters {
        for w in crate::guard::fit::check_adapter(dir, &base_dir, &model, true)? {
            eprintln!("{w}");
        }
    }
    let estimate = crate::guard::memory::inference(&model, a.batch_size, max_length);
    crate::guard::memory::check("this prediction", &estimate, "lower --batch-size or --max-length")?;
    let tok_dir = adapters
        .first()
        .map(|(_, d)| d.clone())
        .filter(|d| d.join("tokenizer.json").exists() || d.join("vocab.txt").exists())
        .unwrap_or(base_dir.clone());
    let tokenizer = Tokenizer::from_model_dir(&tok_dir, max_length)?;
    let mut switch = AdapterSwitch::new(model);
    let runs: Vec<(Option<String>, Option<PathBuf>)> = if adapters.is_empty() {
        vec![(None, None)]
    } else {
        adapters.into_iter().map(|(n, d)| (n.or_else(|| Some(d.display().to_string())), Some(d))).collect()
    };
    let multi = runs.len() > 1;
    let mut out = crate::cli::stdout();
    for (name, dir) in runs {
        let names = match &dir {
            Some(dir) => switch.apply(dir)?,
            None => switch.base_labels(),
        };
        let bar = if std::io::stderr().is_terminal() && texts.len() > a.batch_size {
            ProgressBar::new(texts.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        let preds = classify(&switch.model, &tokenizer, &names, &refs, a.batch_size, &mut |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        print_predictions(&mut out, &texts, &preds, a.json, multi.then_some(name.as_deref().unwrap_or("")))?;
    }
    Ok(ExitCode::SUCCESS)
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
            // One line a text: its own line breaks and tabs written as \n, \r and \t.
            let prefix = adapter.map(|a| format!("{a}\t")).unwrap_or_default();
            let flat = t.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r").replace('\t', "\\t");
            writeln!(out, "{prefix}{}\t{:.4}\t{flat}", p.label, p.probability)?;
        }
    }
    Ok(())
}
