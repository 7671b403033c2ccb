//! `lowrank eval`: a trained run on another file — a classifier's accuracy, confusion matrix and
//! per-class precision / recall / F1, or a causal LM's loss and perplexity (also of a base model
//! with `--model`, e.g. before fine-tuning).

use crate::data::lm::{self, LmOptions};
use crate::data::{self, encode, ReadOptions};
use crate::infer::answers::{score_answers, AnswerScores};
use crate::infer::{evaluate_lm, Metrics};
use crate::model::{Activations, HeadKind, LoadOptions, Model};
use crate::run::{load_trained, Task};
use crate::tokenize::Tokenizer;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Causal-LM examples per forward pass.
const LM_BATCH: usize = 16;

/// Options of `lowrank eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run folder (of lowrank train).
    #[arg(long, value_name = "RUN_DIR", required_unless_present = "model")]
    pub run: Option<PathBuf>,
    /// Instead of a run: a base decoder (model folder or GGUF file) evaluated as a causal LM —
    /// its loss and perplexity on --data before any fine-tuning.
    #[arg(long, value_name = "DIR|FILE.gguf", conflicts_with = "run")]
    pub model: Option<String>,
    /// The data: labelled (labels by the run's class names or ids) for a classifier; JSON Lines
    /// conversations, prompt / completion pairs or texts for a causal LM.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Text column.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Label column.
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Causal LM: a Jinja chat template file (default: the run's, else the model's own).
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Causal LM: truncation length in tokens (default: the run's; 2048 with --model).
    #[arg(long, value_name = "N")]
    pub max_length: Option<usize>,
    /// Causal LM: the loss over every token, prompts included (default: the run's setting).
    #[arg(long)]
    pub train_on_prompt: bool,
    /// Causal LM: also generate (greedily) each record's answer — a conversation's last assistant
    /// turn, or a prompt's completion — and score exact match against it.
    #[arg(long)]
    pub generate: bool,
    /// With --generate: the most tokens generated per answer.
    #[arg(long, value_name = "N", default_value_t = 32, requires = "generate")]
    pub max_new_tokens: usize,
    /// Print the metrics as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where to write the metrics file (default: eval-<data name>.json in the run folder; if that
    /// cannot be written, a warning says so: the metrics are printed first either way).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `lowrank eval`.
pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!a.generate || a.max_new_tokens >= 1, "--max-new-tokens must be at least 1 (an answer of no tokens scores nothing)");
    let Some(run_dir) = &a.run else {
        let base = crate::hub::resolve_model(a.model.as_deref().expect("clap requires --model without --run"))?;
        super::require_decoder(
            &base,
            "eval --model scores a decoder language model on a JSON Lines file",
            "evaluate a classifier through its run (lowrank eval --run RUN_DIR --data FILE)",
        )?;
        let (model, _) = Model::from_pretrained(&base, &LoadOptions { head: Some(HeadKind::Lm), ..Default::default() })?;
        let max_length = a.max_length.unwrap_or(2048);
        let tokenizer = Tokenizer::from_model_dir(&base, max_length)?;
        let opts = LmOptions { max_length, train_on_prompt: a.train_on_prompt, drop_long_prompts: true };
        let m = eval_lm(&model, &tokenizer, &a.data, a.chat_template.as_deref(), &opts)?;
        let answers = generate_answers(&a, &model, &tokenizer, a.chat_template.as_deref())?;
        report_lm(&a, &m, answers.as_ref())?;
        if let Some(out) = &a.out {
            crate::fsutil::write_json(out, &metrics_file(&a, &m, answers.as_ref()))?;
            eprintln!("wrote {}", out.display());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut t = load_trained(run_dir)?;
    let stem = a.data.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let save = |m: &Metrics, answers: Option<&AnswerScores>| save_metrics(&a, run_dir, &stem, m, answers);
    if t.config.task == Task::CausalLm {
        let c = &t.config;
        let opts = LmOptions {
            max_length: a.max_length.unwrap_or(c.max_length),
            train_on_prompt: a.train_on_prompt || c.train_on_prompt,
            drop_long_prompts: true,
        };
        let template = a.chat_template.as_deref().or(c.chat_template.as_deref()).map(Path::to_path_buf);
        let m = eval_lm(&t.model, &t.tokenizer, &a.data, template.as_deref(), &opts)?;
        if a.generate {
            // Generation is faster on merged weights.
            t.model.merge_lora()?;
        }
        let answers = generate_answers(&a, &t.model, &t.tokenizer, template.as_deref())?;
        report_lm(&a, &m, answers.as_ref())?;
        save(&m, answers.as_ref())?;
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        !a.generate,
        "--generate applies to causal-LM runs (it generates answers); {} is a classification run: drop --generate",
        run_dir.display()
    );
    let classes = t.classes()?;
    let ds = data::load(
        &a.data,
        &ReadOptions {
            text_column: a.text_column.clone(),
            label_column: a.label_column.clone(),
            label_map: Some(classes.clone()),
            ..Default::default()
        },
    )?;
    let enc = encode(&ds, &t.tokenizer)?;
    let mut acts = Activations::default();
    let logits = crate::infer::predict_logits(&t.model, &mut acts, &enc.ids, 64, t.tokenizer.pad_id, &mut |_| {});
    crate::guard::check_logits(&logits, t.model.num_labels(), &a.data.display().to_string())?;
    let m = crate::infer::metrics(&logits, &enc.labels, classes.names());
    print_metrics(&a, &m, classes.names())?;
    save(&m, None)?;
    Ok(ExitCode::SUCCESS)
}

/// With --generate: every record's answer generated and scored (progress on stderr).
fn generate_answers(a: &EvalArgs, model: &Model, tokenizer: &Tokenizer, template: Option<&Path>) -> anyhow::Result<Option<AnswerScores>> {
    if !a.generate {
        return Ok(None);
    }
    let file = lm::read_jsonl(&a.data)?;
    let template = match file.shape {
        lm::LmShape::Chat => Some(lm::ChatTemplate::resolve(template, tokenizer)?),
        _ => None,
    };
    let t0 = std::time::Instant::now();
    let scores = score_answers(model, tokenizer, &file, template.as_ref(), a.max_new_tokens, &mut |done, total| {
        if done % 50 == 0 || done == total {
            super::log(&format!("generated {done}/{total} answers ({:.1} s)", t0.elapsed().as_secs_f64()));
        }
    })?;
    Ok(Some(scores))
}

/// The metrics file's contents: the data, the metrics and, with --generate, every answer.
fn metrics_file(a: &EvalArgs, m: &Metrics, answers: Option<&AnswerScores>) -> serde_json::Value {
    let mut v = serde_json::json!({"data": a.data, "metrics": m});
    if let Some(s) = answers {
        v["generation"] = serde_json::json!(s);
    }
    v
}

/// Writes the metrics file (--out, else eval-<stem>.json in the run folder, locked, never over an
/// input); a failure to write the default file is only a warning (the metrics were printed).
fn save_metrics(a: &EvalArgs, run_dir: &Path, stem: &str, m: &Metrics, answers: Option<&AnswerScores>) -> anyhow::Result<()> {
    let file = a.out.clone().unwrap_or_else(|| run_dir.join(format!("eval-{stem}.json")));
    let written = refuse_input_as_output(&file, a, run_dir).and_then(|()| {
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            std::fs::create_dir_all(parent).map_err(|e| crate::error::Error::io("create the folder of --out", parent, e))?;
        }
        crate::fsutil::lock::Lock::file(&file, "eval output")
            .and_then(|_lock| crate::fsutil::write_json(&file, &metrics_file(a, m, answers)))
    });
    match written {
        Ok(()) => eprintln!("wrote {}", file.display()),
        Err(e) if a.out.is_none() => eprintln!("warning: the metrics above were not saved ({e}); pass --out FILE to write them elsewhere"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
/// A causal LM's metrics on a JSON Lines file (truncation reported on stderr).
fn eval_lm(model: &Model, tokenizer: &Tokenizer, data: &Path, template: Option<&Path>, opts: &LmOptions) -> anyhow::Result<Metrics> {
    let enc = lm::load(data, tokenizer, template, opts)?;
    if enc.truncation.any() {
        super::log(&format!("warning: {}", enc.truncation));
    }
    Ok(evaluate_lm(model, &mut Activations::default(), &enc.examples, LM_BATCH))
}

fn report_lm(a: &EvalArgs, m: &Metrics, answers: Option<&AnswerScores>) -> anyhow::Result<ExitCode> {
    if a.json {
        match answers {
            // The metrics, and the scores without the answers (they are in the metrics file).
            Some(s) => {
                let summary = AnswerScores { answers: Vec::new(), ..s.clone() };
                outln!("{}", serde_json::to_string_pretty(&serde_json::json!({"metrics": m, "generation": summary}))?);
            }
            None => outln!("{}", serde_json::to_string_pretty(m)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(s) = answers {
        outln!(
            "{}: exact match {:.2}% ({:.2}% ignoring case) over {} generated answers (greedy, at most {} tokens each)",
            a.data.display(),
            100.0 * s.exact_match,
            100.0 * s.exact_match_ignoring_case,
            s.n,
            s.max_new_tokens
        );
    }
    {
        outln!(
            "{}: loss {:.4}, perplexity {:.3} over {} target tokens of {} examples (next-token accuracy {:.2}%)",
            a.data.display(),
            m.loss,
            m.perplexity.unwrap_or(f64::NAN),
            m.tokens.unwrap_or(0),
            m.n,
            100.0 * m.accuracy
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The metrics file may not be the data or a file of the run (other than an eval-*.json).
fn refuse_input_as_output(file: &std::path::Path, a: &EvalArgs, run_dir: &Path) -> crate::error::Result<()> {
    use crate::fsutil::out::resolve;
    let target = resolve(file);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let in_run = target.parent() == Some(resolve(run_dir).as_path());
    let clash = if target == resolve(&a.data) {
        Some("it is the --data file")
    } else if target.is_dir() {
        Some("it is a folder")
    } else if in_run && target.exists() && !(name.starts_with("eval-") && name.ends_with(".json")) {
        Some("it is one of the run's own files")
    } else {
        None
    };
    match clash {
        Some(why) => Err(crate::error::Error::OutputConflict {
            path: file.to_path_buf(),
            message: format!("{why}; writing the metrics there would replace it: choose another file"),
        }),
        None => Ok(()),
    }
}

fn print_metrics(a: &EvalArgs, m: &crate::infer::Metrics, names: &[String]) -> anyhow::Result<()> {
    if a.json {
        outln!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    outln!("{}: accuracy {:.2}% on {} examples (loss {:.4})", a.data.display(), 100.0 * m.accuracy, m.n, m.loss);
    let w = names.iter().map(String::len).max().unwrap_or(5).max(9);
    outln!("\nconfusion (rows: true, columns: predicted)");
    out!("{:>w$}", "");
    for n in names {
        out!(" {n:>w$}");
    }
    outln!();
    for (i, row) in m.confusion.iter().enumerate() {
        out!("{:>w$}", names[i]);
        for c in row {
            out!(" {c:>w$}");
        }
        outln!();
    }
    outln!("\n{:>w$} {:>9} {:>9} {:>9} {:>9}", "class", "precision", "recall", "f1", "support");
    for c in &m.per_class {
        outln!("{:>w$} {:>9.4} {:>9.4} {:>9.4} {:>9}", c.label, c.precision, c.recall, c.f1, c.support);
    }
    Ok(())
}
