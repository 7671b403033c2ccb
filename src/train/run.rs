//! The training loop: batches → [`Stepper::step`] → validation each epoch (keeping the best
//! checkpoint, as the seed's ModelCheckpoint on val_acc does; the lowest validation loss for a
//! causal LM), resumable checkpoints, a progress bar, and the run's summary. The same loop trains
//! both tasks; [`super::data`] gives it the task's examples.

use super::data::{Examples, TaskData};
use super::step::Stepper;
use crate::data::batch::Batching;
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::infer::Metrics;
use crate::lora::Scaling;
use crate::model::precision::{kernel_name, Precision};
use crate::model::{Model, Pass};
use crate::optim::Adam;
use crate::plan::TrainMode;
use crate::run::checkpoint::{self, Progress, Record};
use crate::run::{RunDir, Task, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The result of a finished run (summary.json). For a causal LM the accuracies are next-token
/// accuracies over the target tokens, and the best checkpoint is the lowest validation loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// What the run learnt.
    #[serde(default)]
    pub task: Task,
    /// Accuracy (0..1) of the best checkpoint on the whole training split, in evaluation mode.
    pub train_acc: f64,
    /// Its validation accuracy.
    pub val_acc: f64,
    /// Its test accuracy (None without a test split).
    pub test_acc: Option<f64>,
    /// Its validation loss.
    #[serde(default)]
    pub val_loss: f64,
    /// Its validation perplexity (causal LM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_perplexity: Option<f64>,
    /// Its test perplexity (causal LM with a test split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_perplexity: Option<f64>,
    /// Epoch (1-based) of the best validation result.
    pub best_epoch: u32,
    /// Step of the best validation result.
    pub best_step: u64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// All parameters (LoRA included).
    pub total_params: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Seconds spent in training steps.
    pub train_seconds: f64,
    /// Seconds from start to summary (evaluations included), all sessions.
    pub wall_seconds: f64,
    /// Training examples per second.
    pub examples_per_s: f64,
    /// Training tokens (real, not padding) per second.
    #[serde(default)]
    pub tokens_per_s: f64,
    /// Mean tokens per training example.
    pub mean_train_tokens: f64,
    /// Full metrics of the best checkpoint on each split.
    pub splits: Vec<(String, Metrics)>,
    /// The precision the run trained in ("fp32", or "bf16 (KERNEL)").
    #[serde(default)]
    pub precision: String,
}

/// How a call to [`train`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// Training finished; the summary is in the run folder.
    Finished(Box<Summary>),
    /// Stopped by the stop flag (Ctrl-C) after writing a checkpoint; resume to continue.
    Interrupted {
        /// Steps done.
        step: u64,
    },
}

fn warn_large_scale(cfg: &TrainConfig, log: &dyn Fn(&str)) {
    let l = &cfg.plan.lora;
    if cfg.plan.mode == TrainMode::Lora && l.scaling == Scaling::Raschka && l.alpha >= 16.0 {
        log(&format!(
            "warning: LoRA scale = alpha = {} (raschka scaling); in the seed's own 570-run grid, runs with alpha >= 16 collapsed to chance accuracy 40% of the time. Consider --lora-alpha 1..8, or --scaling peft.",
            l.alpha
        ));
    }
}

/// The warning for an evaluation that predicts one class for every example (a diverged run).
fn collapse_warning(m: &Metrics) -> Option<String> {
    let predicted: std::collections::BTreeSet<usize> =
        m.confusion.iter().flat_map(|r| r.iter().enumerate()).filter(|(_, c)| **c > 0).map(|(j, _)| j).collect();
    if predicted.len() != 1 || m.n == 0 {
        return None;
    }
    let only = *predicted.iter().next()?;
    let (majority, majority_n) =
        m.confusion.iter().map(|row| row.iter().sum::<usize>()).enumerate().max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))?;
    let name = |i: usize| m.per_class.get(i).map_or(format!("class {i}"), |c| format!("\"{}\"", c.label));
    let majority_note = if only == majority {
        "the majority class's rate".to_string()
    } else {
        format!("the majority class {} would score {:.2}%", name(majority), 100.0 * majority_n as f64 / m.n as f64)
    };
    Some(format!(
        "warning: every validation example is predicted as {}: accuracy {:.2}% ({majority_note}); training may have diverged: lower --lr or the LoRA scale",
        name(only),
        100.0 * m.accuracy
    ))
}

fn progress_bar(total_steps: u64, done: u64) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(total_steps) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_position(done);
    bar
}

/// A run in progress: everything the loop needs between steps.
struct Session<'a> {
    cfg: TrainConfig,
    dir: RunDir,
    model: Model,
    opt: Adam,
    progress: Progress,
    stepper: Stepper,
    names: Vec<String>,
    pad_id: u32,
    metrics: std::fs::File,
    log: &'a dyn Fn(&str),
}

impl Session<'_> {
    /// Appends a record to metrics.jsonl and the history.
    fn record(&mut self, r: Record) -> Result<()> {
        // One write per line, so that a kill leaves whole lines (resume rewrites the file anyway).
        let mut line = serde_json::to_string(&r).expect("serialisable");
        line.push('\n');
        self.metrics.write_all(line.as_bytes()).map_err(|e| Error::io("write", self.dir.metrics(), e))?;
        self.progress.history.push(r);
        Ok(())
    }

    /// Evaluates on validation, logs, and keeps the weights when they are the best so far.
    fn validate(&mut self, val: &Examples, epoch: u32, bar: &ProgressBar) -> Result<()> {
        let m = val.evaluate(&self.model, &mut self.stepper.acts, &self.names, self.cfg.eval_batch_size, self.pad_id);
        let step = self.progress.step;
        let perplexity = m.perplexity;
        self.record(Record::Eval { step, epoch: epoch + 1, split: "val".into(), accuracy: m.accuracy, loss: m.loss, perplexity })?;
        let line = match perplexity {
            Some(p) => format!(
                "step {step} epoch {}: val loss {:.4}, perplexity {p:.3} (next-token accuracy {:.2}%)",
                epoch + 1,
                m.loss,
                100.0 * m.accuracy
            ),
            None => format!("step {step} epoch {}: val accuracy {:.2}% (loss {:.4})", epoch + 1, 100.0 * m.accuracy, m.loss),
        };
        bar.suspend(|| (self.log)(&line));
        if let Some(warn) = collapse_warning(&m) {
            bar.suspend(|| (self.log)(&warn));
        }
        if self.cfg.task.improves(&m, self.progress.best_val) {
            self.progress.best_val = Some(self.cfg.task.criterion(&m));
            self.progress.best_epoch = epoch + 1;
            self.progress.best_step = step;
            checkpoint::save(&self.dir.best(), &mut self.model, None, None)?;
        }
        Ok(())
    }

    /// Metrics of the best checkpoint on every split.
    fn final_metrics(&mut self, splits: &TaskData) -> Result<Vec<(String, Metrics)>> {
        checkpoint::load(&self.dir.best(), &mut self.model, None)?;
        let mut out = Vec::new();
        for (name, enc) in [("train", Some(&splits.train)), ("val", Some(&splits.val)), ("test", splits.test.as_ref())] {
            if let Some(enc) = enc {
                let m = enc.evaluate(&self.model, &mut self.stepper.acts, &self.names, self.cfg.eval_batch_size, self.pad_id);
                out.push((name.to_string(), m));
            }
        }
        Ok(out)
    }
}

/// Trains (or resumes) the run in `run_dir`. `log` receives human-readable lines; `stop` is
/// polled after every step (set it from a Ctrl-C handler).
pub fn train(cfg: &TrainConfig, run_dir: &Path, resume: bool, stop: &AtomicBool, log: &dyn Fn(&str)) -> Result<Outcome> {
    let start_time = Instant::now();
    let dir = RunDir(run_dir.to_path_buf());
    if !resume {
        // Before the folder exists: a precision this CPU cannot run leaves nothing behind.
        cfg.precision.resolve()?;
    }
    let startup = super::start::Startup::begin(run_dir, resume, log)?;
    let cfg = super::start::configure(cfg, &dir, resume, &startup)?;
    let precision = cfg.precision.resolve()?;
    let super::start::Prepared { cfg, tokenizer, splits, mut model } = super::start::prepare(cfg, run_dir, log)?;
    if !resume {
        write_json(&dir.config(), &cfg)?;
    }
    let names = splits.names().to_vec();
    model.set_precision(precision, true);
    // In bf16 the frozen layers are read through their packs only: their f32 copies can go.
    model.release_packed_weights();
    let (trainable, total) = model.param_counts();
    log(&format!("{}; {} of {} parameters train", splits.describe(), trainable, total));
    warn_large_scale(&cfg, log);
    if precision == Precision::Bf16 {
        log(&format!(
            "precision bf16 (kernel {}): bf16 products of the base weights, f32 sums and everything else f32",
            kernel_name(precision)
        ));
    }

    let mut opt = Adam::new(cfg.optimizer);
    let mut progress = Progress::default();
    if resume && dir.checkpoint().exists() {
        progress = checkpoint::load(&dir.checkpoint(), &mut model, Some(&mut opt))?.unwrap_or_default();
        log(&format!("resumed at step {} (epoch {}, batch {})", progress.step, progress.epoch + 1, progress.batch_in_epoch));
    }
    checkpoint::write_metrics(&dir.metrics(), &progress.history)?;
    let wall0 = progress.wall_seconds;
    let metrics = std::fs::OpenOptions::new().append(true).open(dir.metrics()).map_err(|e| Error::io("open", dir.metrics(), e))?;
    let _lock = startup.finish();
    let pad_id = tokenizer.pad_id;
    let mut s = Session { cfg, dir, model, opt, progress, stepper: Stepper::default(), names, pad_id, metrics, log };

    let cfg = s.cfg.clone();
    let batching = Batching { batch_size: cfg.batch_size, drop_last: cfg.drop_last, bucket: cfg.bucket };
    let total_steps = batching.batches_per_epoch(splits.train.len()) as u64 * cfg.epochs as u64;
    let lengths = splits.train.lengths();
    let pad_to = cfg.pad_to_max_length.then_some(cfg.max_length);
    let bar = progress_bar(total_steps, s.progress.step);
    let mut last_log = Instant::now();
    let (mut window_loss, mut window_n) = (0.0f64, 0usize);

    while s.progress.epoch < cfg.epochs {
        let epoch = s.progress.epoch;
        let batches = batching.epoch(&lengths, cfg.seed, epoch as u64);
        while s.progress.batch_in_epoch < batches.len() {
            let t0 = Instant::now();
            let batch = splits.train.batch(&batches[s.progress.batch_in_epoch], pad_to, pad_id);
            let pass = Pass::Train { seed: cfg.seed, step: s.progress.step };
            let lr = cfg.optimizer.lr * cfg.schedule.factor(s.progress.step, total_steps);
            let report = s.stepper.step(&mut s.model, &batch, pass, &mut s.opt, lr, cfg.clip_grad_norm).map_err(|e| {
                match e {
                    // Before the first checkpoint the folder holds only the start: say how to begin again.
                    Error::NonFiniteLoss { .. } if !s.dir.checkpoint().exists() => Error::Other(format!(
                        "{e}. Nothing was saved yet ({} has no checkpoint): remove that folder and start again with the lower setting",
                        s.dir.0.display()
                    )),
                    e => e,
                }
            })?;
            let p = &mut s.progress;
            p.step += 1;
            p.batch_in_epoch += 1;
            p.examples += batch.len() as u64;
            p.tokens += batch.real_tokens() as u64;
            p.train_seconds += t0.elapsed().as_secs_f64();
            let step = p.step;
            let rate = p.examples as f64 / p.train_seconds.max(1e-9);
            let tok_rate = p.tokens as f64 / p.train_seconds.max(1e-9);
            s.record(Record::Step { step, epoch: epoch + 1, loss: report.loss, lr })?;
            (window_loss, window_n) = (window_loss + report.loss as f64, window_n + 1);
            let mean = window_loss / window_n as f64;
            bar.set_message(format!("epoch {}/{} loss {mean:.4} {rate:.1} ex/s {tok_rate:.0} tok/s", epoch + 1, cfg.epochs));
            bar.set_position(step);
            if bar.is_hidden() && last_log.elapsed().as_secs() >= 30 {
                log(&format!(
                    "step {step}/{total_steps} epoch {}/{} loss {mean:.4} {rate:.1} ex/s {tok_rate:.0} tok/s",
                    epoch + 1,
                    cfg.epochs
                ));
                last_log = Instant::now();
                (window_loss, window_n) = (0.0, 0);
            }
            let end_of_epoch = s.progress.batch_in_epoch == batches.len();
            if end_of_epoch || cfg.eval_every.is_some_and(|n| step.is_multiple_of(n)) {
                s.validate(&splits.val, epoch, &bar)?;
            }
            if end_of_epoch {
                s.progress.epoch += 1;
                s.progress.batch_in_epoch = 0;
            }
            let stopping = stop.load(Ordering::SeqCst);
            if end_of_epoch || step.is_multiple_of(cfg.checkpoint_every) || stopping {
                s.progress.wall_seconds = wall0 + start_time.elapsed().as_secs_f64();
                checkpoint::save(&s.dir.checkpoint(), &mut s.model, Some(&s.opt), Some(&s.progress))?;
            }
            if stopping {
                bar.abandon();
                return Ok(Outcome::Interrupted { step });
            }
            if end_of_epoch {
                break;
            }
        }
    }
    bar.finish_and_clear();

    // Report the best-validation checkpoint, as the seed does.
    let metrics = s.final_metrics(&splits)?;
    let split = |name: &str| metrics.iter().find(|(n, _)| n == name).map(|(_, m)| m);
    let acc = |name: &str| split(name).map(|m| m.accuracy);
    let p = &s.progress;
    let summary = Summary {
        task: cfg.task,
        train_acc: acc("train").unwrap_or(0.0),
        val_acc: acc("val").unwrap_or(0.0),
        test_acc: acc("test"),
        val_loss: split("val").map_or(0.0, |m| m.loss),
        val_perplexity: split("val").and_then(|m| m.perplexity),
        test_perplexity: split("test").and_then(|m| m.perplexity),
        best_epoch: p.best_epoch,
        best_step: p.best_step,
        trainable_params: trainable,
        total_params: total,
        steps: p.step,
        train_seconds: p.train_seconds,
        wall_seconds: wall0 + start_time.elapsed().as_secs_f64(),
        examples_per_s: p.examples as f64 / p.train_seconds.max(1e-9),
        tokens_per_s: p.tokens as f64 / p.train_seconds.max(1e-9),
        mean_train_tokens: splits.mean_train_tokens,
        splits: metrics,
        precision: match precision {
            Precision::Fp32 => "fp32".into(),
            Precision::Bf16 => format!("bf16 ({})", kernel_name(precision)),
        },
    };
    let what = if cfg.plan.mode == TrainMode::Full { "model/ folder" } else { "adapter/" };
    // summary.json last: a folder with it has its charts and its adapter / model too (what
    // `lowrank compare` takes as a finished run).
    super::plot::curves(&s.progress.history, run_dir)
        .and_then(|()| super::export::export_run(run_dir, &cfg, &s.model, splits.labels.as_ref(), &tokenizer))
        .and_then(|()| write_json(&s.dir.summary(), &summary))
        .map_err(|e| {
            Error::Other(format!(
                "the run finished training but writing its results (summary.json, charts, {what}) failed: {e}; free the space or fix the folder, then run `lowrank train --resume {}` (it writes them again without training)",
                run_dir.display()
            ))
        })?;
    Ok(Outcome::Finished(Box::new(summary)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_is_one_predicted_class() {
        let m = |confusion: Vec<Vec<usize>>| Metrics {
            accuracy: 0.6,
            loss: 0.0,
            n: 10,
            confusion,
            per_class: vec![],
            perplexity: None,
            tokens: None,
        };
        assert!(collapse_warning(&m(vec![vec![6, 0], vec![4, 0]])).unwrap().contains("60.00%"));
        assert!(collapse_warning(&m(vec![vec![5, 1], vec![2, 2]])).is_none());
        // Collapsed onto the minority class: the warning says so, with the majority class's rate.
        let w = collapse_warning(&m(vec![vec![0, 4], vec![0, 2]])).unwrap();
        assert!(w.contains("predicted as class 1: accuracy 60.00%") && w.contains("class 0 would score 40.00%"), "{w}");
    }
}
