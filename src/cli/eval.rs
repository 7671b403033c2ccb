//! `lowrank eval`: a trained run on another labelled file: accuracy, confusion matrix and
//! per-class precision / recall / F1.

use crate::data::{self, encode, ReadOptions};
use crate::model::Activations;
use crate::run::load_trained;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `lowrank eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run folder (of lowrank train).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// Labelled data (labels by the run's class names or ids).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Text column.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Label column.
    #[arg(long, default_value = "label")]
    pub label_column: String,
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
    let t = load_trained(&a.run)?;
    let ds = data::load(
        &a.data,
        &ReadOptions {
            text_column: a.text_column.clone(),
            label_column: a.label_column.clone(),
            label_map: Some(t.labels.clone()),
            ..Default::default()
        },
    )?;
    let enc = encode(&ds, &t.tokenizer)?;
    crate::guard::check_token_ids(&enc.ids, &t.model.config(), &t.tokenizer.source.display().to_string())?;
    let longest = enc.ids.iter().map(Vec::len).max().unwrap_or(1);
    let estimate = crate::guard::memory::inference(&t.model, 64, longest);
    crate::guard::memory::check("this evaluation", &estimate, "lower the run's max_length")?;
    let mut acts = Activations::default();
    let logits = crate::infer::predict_logits(&t.model, &mut acts, &enc.ids, 64, t.tokenizer.pad_id, &mut |_| {});
    crate::guard::check_logits(&logits, t.model.num_labels(), &a.data.display().to_string())?;
    let m = crate::infer::metrics(&logits, &enc.labels, t.labels.names());
    print_metrics(&a, &m, t.labels.names())?;
    let stem = a.data.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let file = a.out.clone().unwrap_or_else(|| a.run.join(format!("eval-{stem}.json")));
    let written = refuse_input_as_output(&file, &a).and_then(|()| {
        crate::fsutil::lock::Lock::file(&file, "eval output")
            .and_then(|_lock| crate::fsutil::write_json(&file, &serde_json::json!({"data": a.data, "metrics": m})))
    });
    match written {
        Ok(()) => eprintln!("wrote {}", file.display()),
        Err(e) if a.out.is_none() => eprintln!("warning: the metrics above were not saved ({e}); pass --out FILE to write them elsewhere"),
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The metrics file may not be the data or a file of the run (other than an eval-*.json).
fn refuse_input_as_output(file: &std::path::Path, a: &EvalArgs) -> crate::error::Result<()> {
    use crate::fsutil::out::resolve;
    let target = resolve(file);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let in_run = target.parent() == Some(resolve(&a.run).as_path());
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
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    println!("{}: accuracy {:.2}% on {} examples (loss {:.4})", a.data.display(), 100.0 * m.accuracy, m.n, m.loss);
    let w = names.iter().map(String::len).max().unwrap_or(5).max(9);
    println!("\nconfusion (rows: true, columns: predicted)");
    print!("{:>w$}", "");
    for n in names {
        print!(" {n:>w$}");
    }
    println!();
    for (i, row) in m.confusion.iter().enumerate() {
        print!("{:>w$}", names[i]);
        for c in row {
            print!(" {c:>w$}");
        }
        println!();
    }
    println!("\n{:>w$} {:>9} {:>9} {:>9} {:>9}", "class", "precision", "recall", "f1", "support");
    for c in &m.per_class {
        println!("{:>w$} {:>9.4} {:>9.4} {:>9.4} {:>9}", c.label, c.precision, c.recall, c.f1, c.support);
    }
    Ok(())
}
