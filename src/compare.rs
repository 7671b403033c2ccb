//! The seed's comparison on one split and seed — last-layers, LoRA default (r=8, alpha=16, q+v),
//! LoRA best (r=8, alpha=1, q+v+mlp), full fine-tuning — as a Markdown table, JSON and a bar
//! chart. Finished runs are reused and interrupted ones resumed.

use crate::data::{self, ReadOptions};
use crate::error::{Error, Result};
use crate::infer::evaluate;
use crate::model::Activations;
use crate::plan::TrainMode;
use crate::run::{load_trained, RunDir, TrainConfig};
use crate::train::{train, Outcome, Summary};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The names of the seed's runs, in the comparison's order.
pub const SEED_RUNS: [&str; 4] = ["last-layers", "lora-default", "lora-best", "full"];

/// One of the seed's runs: its label and the training options that make it (applied on top of
/// the defaults, which are the seed's: LoRA r = 8, alpha = 16, raschka scaling). `decoder`: the
/// model is a decoder, whose last-layers mode trains more than an encoder's head.
pub fn seed_run(name: &str, decoder: bool) -> Result<(&'static str, Vec<(&'static str, Value)>)> {
    let on = || Value::Bool(true);
    let last_layers =
        if decoder { "last-layers (score + last decoder layer + final norm)" } else { "last-layers (pre_classifier + classifier)" };
    Ok(match name {
        "last-layers" => (last_layers, vec![("mode", Value::from("last-layers"))]),
        "lora-default" => ("LoRA default: r=8, alpha=16, q+v", vec![("lora_query", on()), ("lora_value", on())]),
        "lora-best" => (
            "LoRA best (seed's article): r=8, alpha=1, q+v+mlp",
            vec![("lora_alpha", Value::from(1.0)), ("lora_query", on()), ("lora_value", on()), ("lora_mlp", on())],
        ),
        "full" => ("full fine-tuning", vec![("mode", Value::from("full"))]),
        other => {
            return Err(Error::InvalidOption(format!("unknown run {other:?}; choose from {}", SEED_RUNS.join(", "))));
        }
    })
}

/// Training options as (catalogue name, value), e.g. a seed run's settings.
pub type Overrides = [(&'static str, Value)];

/// One row of the comparison.
#[derive(Serialize)]
pub struct Row {
    /// The run's name (e.g. `lora-best`).
    pub run: String,
    /// Its label in the table.
    pub label: String,
    /// Its summary.
    pub summary: Summary,
    /// Accuracy on the extra evaluation file, when one was given.
    pub extra_accuracy: Option<f64>,
}

/// How [`compare`] ended.
pub enum Compared {
    /// Every run finished: the rows, and the Markdown table (also written to the output folder).
    Done(Vec<Row>, String),
    /// Interrupted in `run` after `step` steps (checkpointed; rerun to continue).
    Interrupted {
        /// The run that was interrupted.
        run: String,
        /// Its steps done.
        step: u64,
    },
}

/// Runs (or reuses, or resumes) each of `runs` in `out/<run>`, with `config(run options)` giving
/// each run's configuration; evaluates each on `eval_data` too when given. `decoder`: the model
/// is a decoder (it names the last-layers run).
pub fn compare(
    runs: &[String],
    decoder: bool,
    out: &Path,
    config: &dyn Fn(&Overrides) -> Result<TrainConfig>,
    eval_data: Option<&Path>,
    stop: &AtomicBool,
    log: &dyn Fn(&str),
) -> Result<Compared> {
    let mut rows = Vec::new();
    for name in runs {
        let (label, opts) = seed_run(name, decoder)?;
        let dir = out.join(name);
        let rd = RunDir(dir.clone());
        let cfg = config(&opts)?;
        if rd.config().exists() {
            check_same_settings(&dir, &cfg)?;
        }
        // The run's exported result (written atomically, before summary.json).
        let result = dir.join(if cfg.plan.mode == TrainMode::Full { "model" } else { "adapter" });
        let summary: Summary = if rd.summary().exists() && result.is_dir() {
            log(&format!("== {label}: finished earlier, reusing {}", rd.summary().display()));
            crate::fsutil::read_json(&rd.summary(), "summary.json")?
        } else {
            if rd.summary().exists() {
                // An older run whose export failed after its summary was written: resuming
                // evaluates its best checkpoint and writes the results again, without training.
                log(&format!("== {label}: finished earlier but {} is missing: writing its results again", result.display()));
            } else {
                log(&format!("== {label}"));
            }
            match train(&cfg, &dir, rd.config().exists(), stop, log)? {
                Outcome::Finished(s) => *s,
                Outcome::Interrupted { step } => return Ok(Compared::Interrupted { run: name.clone(), step }),
            }
        };
        let extra_accuracy = eval_data.map(|p| eval_extra(&dir, p)).transpose()?;
        rows.push(Row { run: name.clone(), label: label.to_string(), summary, extra_accuracy });
    }
    let extra_name = eval_data.and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned());
    let table = markdown(&rows, extra_name.as_deref());
    crate::fsutil::write_atomic(&out.join("comparison.md"), table.as_bytes())?;
    crate::fsutil::write_json(&out.join("comparison.json"), &rows)?;
    chart(out, &rows, extra_name.as_deref().unwrap_or("extra eval"))?;
    Ok(Compared::Done(rows, table))
}

/// Refuses to reuse (or resume) the run in `dir` when it was started with other settings than
/// `requested`: its results would be reported as the new settings'.
fn check_same_settings(dir: &Path, requested: &TrainConfig) -> Result<()> {
    let recorded: Value = crate::fsutil::read_json(&dir.join("config.json"), "run config.json")?;
    let diffs = requested.differences_from(&recorded);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidOption(format!(
        "{} was trained with other settings than these ({}); compare reuses a finished run (and resumes an interrupted one) only with the settings it was started with: choose another --out for the new settings, or remove {0} to train it again",
        dir.display(),
        crate::run::config::describe_differences(&diffs)
    )))
}

/// Evaluates a finished run on a labelled file; writes `eval-<stem>.json` into the run folder.
pub fn eval_extra(run_dir: &Path, data_path: &Path) -> Result<f64> {
    let t = load_trained(run_dir)?;
    let classes = t.classes()?;
    let ds = data::load(data_path, &ReadOptions { label_map: Some(classes.clone()), ..Default::default() })?;
    let enc = data::encode(&ds, &t.tokenizer)?;
    crate::guard::check_token_ids(&enc.ids, &t.model.config(), &t.tokenizer.source.display().to_string())?;
    let m = evaluate(&t.model, &mut Activations::default(), &enc.ids, &enc.labels, classes.names(), 64, t.tokenizer.pad_id);
    let stem = data_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    crate::fsutil::write_json(&run_dir.join(format!("eval-{stem}.json")), &serde_json::json!({"data": data_path, "metrics": m}))?;
    Ok(m.accuracy)
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

fn markdown(rows: &[Row], extra: Option<&str>) -> String {
    let mut s = String::from("| run | trainable | train | val | test |");
    if let Some(e) = extra {
        s += &format!(" {e} |");
    }
    s += " best epoch | train ex/s | time |\n|---|---|---|---|---|";
    if extra.is_some() {
        s += "---|";
    }
    s += "---|---|---|\n";
    for r in rows {
        let m = &r.summary;
        s += &format!(
            "| {} | {} | {} | {} | {} |",
            r.label,
            group(m.trainable_params),
            pct(m.train_acc),
            pct(m.val_acc),
            m.test_acc.map_or("-".into(), pct)
        );
        if extra.is_some() {
            s += &format!(" {} |", r.extra_accuracy.map_or("-".into(), pct));
        }
        s += &format!(" {} | {:.1} | {:.1} min |\n", m.best_epoch, m.examples_per_s, m.wall_seconds / 60.0);
    }
    s
}

/// 1234567 → "1,234,567".
pub fn group(n: usize) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn chart(out: &Path, rows: &[Row], extra_name: &str) -> Result<Vec<PathBuf>> {
    let cats: Vec<String> = rows.iter().map(|r| r.run.clone()).collect();
    let mut series = vec![
        ("train".to_string(), rows.iter().map(|r| 100.0 * r.summary.train_acc).collect::<Vec<_>>()),
        ("val".to_string(), rows.iter().map(|r| 100.0 * r.summary.val_acc).collect()),
        ("test".to_string(), rows.iter().map(|r| 100.0 * r.summary.test_acc.unwrap_or(0.0)).collect()),
    ];
    if rows.iter().all(|r| r.extra_accuracy.is_some()) {
        series.push((extra_name.to_string(), rows.iter().map(|r| 100.0 * r.extra_accuracy.unwrap_or(0.0)).collect()));
    }
    let lo = series.iter().flat_map(|s| s.1.iter()).cloned().fold(100.0f64, f64::min);
    crate::plot::grouped_bars(
        &out.join("comparison"),
        "Accuracy by fine-tuning method",
        "accuracy (%)",
        &cats,
        &series,
        ((lo - 10.0).max(0.0).floor(), 100.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(66_955_010), "66,955,010");
        assert_eq!(group(148_610), "148,610");
        assert_eq!(group(12), "12");
    }

    #[test]
    fn every_seed_run_is_known_and_others_are_errors() {
        for r in SEED_RUNS {
            assert!(seed_run(r, false).is_ok());
        }
        assert!(seed_run("dora", false).unwrap_err().to_string().contains("lora-best"));
        assert!(seed_run("last-layers", true).unwrap().0.contains("score"));
        assert!(seed_run("last-layers", false).unwrap().0.contains("classifier"));
    }
}
