//! `lowrank compare`: the seed's comparison on one split and seed — last-layers, LoRA default
//! (r=8, alpha=16, q+v), LoRA best (r=8, alpha=1, q+v+mlp), full fine-tuning — as a Markdown
//! table, JSON and a bar chart. Finished runs are reused and interrupted ones resumed.

use super::args::{train_config, DataArgs, LoopArgs, ModelArgs, PlanArgs};
use crate::data::{self, LoadOptions};
use crate::model::Activations;
use crate::plan::TrainMode;
use crate::train::data::encode;
use crate::train::run::{evaluate, RunDir};
use crate::train::trained::load_trained;
use crate::train::{train, Outcome, Summary};
use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Options of `lowrank compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub lp: LoopArgs,
    /// Output folder (one run folder per configuration inside).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Which runs, comma-separated, from: last-layers, lora-default, lora-best, full.
    #[arg(long, default_value = "last-layers,lora-default,lora-best,full", value_delimiter = ',')]
    pub runs: Vec<String>,
    /// Also evaluate every run on this labelled file (e.g. a cross-domain test set).
    #[arg(long, value_name = "PATH")]
    pub eval_data: Option<PathBuf>,
}

/// The plan of one of the seed's runs.
pub fn seed_run(name: &str) -> anyhow::Result<(String, PlanArgs)> {
    let base = PlanArgs { mode: TrainMode::Lora, lora_r: 8, lora_alpha: 16.0, ..Default::default() };
    Ok(match name {
        "last-layers" => ("last-layers (pre_classifier + classifier)".into(), PlanArgs { mode: TrainMode::LastLayers, ..base }),
        "lora-default" => ("LoRA default: r=8, alpha=16, q+v".into(), PlanArgs { lora_query: true, lora_value: true, ..base }),
        "lora-best" => (
            "LoRA best (seed's article): r=8, alpha=1, q+v+mlp".into(),
            PlanArgs { lora_alpha: 1.0, lora_query: true, lora_value: true, lora_mlp: true, ..base },
        ),
        "full" => ("full fine-tuning".into(), PlanArgs { mode: TrainMode::Full, ..base }),
        other => bail!("unknown run {other:?}; choose from last-layers, lora-default, lora-best, full"),
    })
}

#[derive(Serialize)]
struct Row {
    run: String,
    label: String,
    summary: Summary,
    extra_accuracy: Option<f64>,
}

/// Runs `lowrank compare`.
pub fn run(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let stop = super::interrupt_flag();
    let model = a.model.resolve()?;
    let mut rows = Vec::new();
    for name in &a.runs {
        let (label, plan) = seed_run(name)?;
        let dir = a.out.join(name);
        let rd = RunDir(dir.clone());
        let summary: Summary = if rd.summary().exists() {
            super::log(&format!("== {label}: finished earlier, reusing {}", rd.summary().display()));
            crate::fsutil::read_json(&rd.summary(), "summary.json")?
        } else {
            super::log(&format!("== {label}"));
            let resume = rd.config().exists();
            let cfg = train_config(model.clone(), a.model.head, &a.data, &plan, &a.lp)?;
            match train(&cfg, &dir, resume, &stop, &super::log).with_context(|| format!("run {name}"))? {
                Outcome::Finished(s) => *s,
                Outcome::Interrupted { step } => {
                    super::log(&format!("stopped in {name} after step {step}; rerun the same command to continue"));
                    return Ok(ExitCode::from(130));
                }
            }
        };
        let extra_accuracy = match &a.eval_data {
            Some(p) => Some(eval_extra(&dir, p)?),
            None => None,
        };
        rows.push(Row { run: name.clone(), label, summary, extra_accuracy });
    }
    let extra_name = a.eval_data.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned());
    let table = markdown(&rows, extra_name.as_deref());
    crate::fsutil::write_atomic(&a.out.join("comparison.md"), table.as_bytes())?;
    crate::fsutil::write_json(&a.out.join("comparison.json"), &rows)?;
    chart(&a.out, &rows, extra_name.as_deref().unwrap_or("extra eval"))?;
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

fn eval_extra(run_dir: &Path, data_path: &Path) -> anyhow::Result<f64> {
    let t = load_trained(run_dir)?;
    let ds = data::load(data_path, &LoadOptions { label_map: Some(t.labels.clone()), ..Default::default() })?;
    let enc = encode(&ds, &t.tokenizer)?;
    let m = evaluate(&t.model, &mut Activations::default(), &enc.ids, &enc.labels, t.labels.names(), 64, t.tokenizer.pad_id);
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

fn chart(out: &Path, rows: &[Row], extra_name: &str) -> anyhow::Result<Vec<PathBuf>> {
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
    Ok(crate::plot::grouped_bars(
        &out.join("comparison"),
        "Accuracy by fine-tuning method",
        "accuracy (%)",
        &cats,
        &series,
        ((lo - 10.0).max(0.0).floor(), 100.0),
    )?)
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
}
