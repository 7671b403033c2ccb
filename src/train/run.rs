//! The training loop: batches → forward → cross-entropy → backward → clip → Adam, with
//! validation each epoch (keeping the best checkpoint, as the seed's ModelCheckpoint on val_acc
//! does), resumable checkpoints, a progress bar, and the run's summary.

use super::batches::Batching;
use super::config::TrainConfig;
use super::data::{prepare, RunData};
use super::evaluate::{metrics, predict_logits, Metrics};
use super::optim::{clip_grad_norm, Adam};
use super::state::{self, Progress, Record};
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::lora::Scaling;
use crate::model::load::LoadOptions;
use crate::model::{Activations, Mode, Model};
use crate::ops::loss::cross_entropy;
use crate::plan::TrainMode;
use crate::tokenize::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The result of a finished run (summary.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Accuracy (0..1) of the best checkpoint on the whole training split, in evaluation mode.
    pub train_acc: f64,
    /// Its validation accuracy.
    pub val_acc: f64,
    /// Its test accuracy (None without a test split).
    pub test_acc: Option<f64>,
    /// Epoch (1-based) of the best validation accuracy.
    pub best_epoch: u32,
    /// Step of the best validation accuracy.
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
    /// Mean tokens per training example.
    pub mean_train_tokens: f64,
    /// Full metrics of the best checkpoint on each split.
    pub splits: Vec<(String, Metrics)>,
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

/// Run-folder paths.
pub struct RunDir(pub PathBuf);

impl RunDir {
    /// config.json.
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    /// The resumable checkpoint.
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    /// The best-validation trainable weights.
    pub fn best(&self) -> PathBuf {
        self.0.join("best.safetensors")
    }
    /// metrics.jsonl.
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    /// summary.json.
    pub fn summary(&self) -> PathBuf {
        self.0.join("summary.json")
    }
}

/// Builds the run's model: base weights, head, what trains (and an initial adapter, if any).
pub fn build_model(cfg: &TrainConfig, num_labels: usize) -> Result<Model> {
    let (mut model, _) = Model::from_pretrained(&cfg.model, &LoadOptions { head: cfg.head, num_labels: Some(num_labels), seed: cfg.seed })?;
    cfg.plan.apply(&mut model)?;
    if let Some(dir) = &cfg.init_adapter {
        crate::adapter::load_into(dir, &mut model)?;
    }
    Ok(model)
}

/// Evaluates `model` on tokenised examples.
pub fn evaluate(
    model: &Model,
    acts: &mut Activations,
    ids: &[Vec<u32>],
    labels: &[usize],
    names: &[String],
    batch_size: usize,
    pad_id: u32,
) -> Metrics {
    let logits = predict_logits(model, acts, ids, batch_size, pad_id, &mut |_| {});
    metrics(&logits, labels, names)
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

/// Trains (or resumes) the run in `run_dir`. `log` receives human-readable lines; `stop` is
/// polled after every step (set it from a Ctrl-C handler).
pub fn train(cfg: &TrainConfig, run_dir: &Path, resume: bool, stop: &AtomicBool, log: &dyn Fn(&str)) -> Result<Outcome> {
    let start = Instant::now();
    let dir = RunDir(run_dir.to_path_buf());
    let cfg = if resume {
        crate::fsutil::read_json::<TrainConfig>(&dir.config(), "run config.json")?
    } else {
        cfg.validate()?;
        if dir.config().exists() {
            return Err(Error::InvalidOption(format!(
                "{} already holds a run; continue it with --resume {0}, or choose another --out",
                run_dir.display()
            )));
        }
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io("create directory", run_dir, e))?;
        write_json(&dir.config(), cfg)?;
        cfg.clone()
    };
    let tokenizer = Tokenizer::from_model_dir(&cfg.model, cfg.max_length)?;
    let RunData { labels, train, val, test, mean_train_tokens } = prepare(&cfg, run_dir, &tokenizer)?;
    let names = labels.names().to_vec();
    let mut model = build_model(&cfg, names.len())?;
    let (trainable, total) = model.param_counts();
    log(&format!(
        "{} train / {} val / {} test examples, {} classes; {} of {} parameters train",
        train.len(),
        val.len(),
        test.as_ref().map_or(0, |t| t.len()),
        names.len(),
        trainable,
        total
    ));
    warn_large_scale(&cfg, log);

    let mut opt = Adam::new(cfg.optimizer);
    let mut progress = Progress::default();
    if resume && dir.checkpoint().exists() {
        progress = state::load(&dir.checkpoint(), &mut model, Some(&mut opt))?.unwrap_or_default();
        log(&format!("resumed at step {} (epoch {}, batch {})", progress.step, progress.epoch + 1, progress.batch_in_epoch));
    }
    state::write_metrics(&dir.metrics(), &progress.history)?;
    let wall0 = progress.wall_seconds;

    let batching = Batching { batch_size: cfg.batch_size, drop_last: cfg.drop_last, bucket: cfg.bucket };
    let per_epoch = batching.batches_per_epoch(train.len()) as u64;
    let total_steps = per_epoch * cfg.epochs as u64;
    let lengths: Vec<usize> = train.ids.iter().map(Vec::len).collect();
    let pad_to = cfg.pad_to_max_length.then_some(cfg.max_length);
    let pad_id = tokenizer.pad_id;
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(total_steps) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_position(progress.step);
    let mut acts = Activations::default();
    let mut dlogits = Vec::new();
    let mut metrics_file = std::fs::OpenOptions::new().append(true).open(dir.metrics()).map_err(|e| Error::io("open", dir.metrics(), e))?;
    let mut last_log = Instant::now();
    let (mut window_loss, mut window_n) = (0.0f64, 0usize);

    let record = |progress: &mut Progress, r: Record, file: &mut std::fs::File| -> Result<()> {
        use std::io::Write;
        writeln!(file, "{}", serde_json::to_string(&r).expect("serialisable")).map_err(|e| Error::io("write", dir.metrics(), e))?;
        progress.history.push(r);
        Ok(())
    };

    while progress.epoch < cfg.epochs {
        let epoch = progress.epoch;
        let batches = batching.epoch(&lengths, cfg.seed, epoch as u64);
        while progress.batch_in_epoch < batches.len() {
            let t0 = Instant::now();
            let batch = train.batch(&batches[progress.batch_in_epoch], pad_to, pad_id);
            let mode = Mode::Train { seed: cfg.seed, step: progress.step };
            let k = names.len();
            let logits = model.forward(&batch, &mut acts, mode);
            dlogits.resize(batch.len() * k, 0.0);
            let loss = cross_entropy(&mut dlogits, logits, &batch.labels, k);
            if !loss.is_finite() {
                return Err(Error::NonFiniteLoss { loss, step: progress.step + 1 });
            }
            acts.grad.dlogits[..dlogits.len()].copy_from_slice(&dlogits);
            // Gradients are zero here: fresh, or zeroed by the previous optimizer step.
            model.backward(&batch, &mut acts, mode);
            let mut params = model.params_mut();
            if let Some(max) = cfg.clip_grad_norm {
                clip_grad_norm(&mut params, max);
            }
            let lr = cfg.optimizer.lr * cfg.schedule.factor(progress.step, total_steps);
            opt.step(&mut params, lr);
            drop(params);
            progress.step += 1;
            progress.batch_in_epoch += 1;
            progress.examples += batch.len() as u64;
            progress.train_seconds += t0.elapsed().as_secs_f64();
            let step = progress.step;
            record(&mut progress, Record::Step { step, epoch: epoch + 1, loss, lr }, &mut metrics_file)?;
            (window_loss, window_n) = (window_loss + loss as f64, window_n + 1);
            let rate = progress.examples as f64 / progress.train_seconds.max(1e-9);
            bar.set_message(format!("epoch {}/{} loss {:.4} {:.1} ex/s", epoch + 1, cfg.epochs, window_loss / window_n as f64, rate));
            bar.set_position(progress.step);
            if bar.is_hidden() && last_log.elapsed().as_secs() >= 30 {
                log(&format!(
                    "step {}/{} epoch {}/{} loss {:.4} {:.1} ex/s",
                    progress.step,
                    total_steps,
                    epoch + 1,
                    cfg.epochs,
                    window_loss / window_n as f64,
                    rate
                ));
                last_log = Instant::now();
                (window_loss, window_n) = (0.0, 0);
            }
            let end_of_epoch = progress.batch_in_epoch == batches.len();
            if end_of_epoch || cfg.eval_every.is_some_and(|n| progress.step % n == 0) {
                let m = evaluate(&model, &mut acts, &val.ids, &val.labels, &names, cfg.eval_batch_size, pad_id);
                let step = progress.step;
                record(
                    &mut progress,
                    Record::Eval { step, epoch: epoch + 1, split: "val".into(), accuracy: m.accuracy, loss: m.loss },
                    &mut metrics_file,
                )?;
                let majority = m.confusion.iter().map(|row| row.iter().sum::<usize>()).max().unwrap_or(0);
                let one_class = m
                    .confusion
                    .iter()
                    .flat_map(|r| r.iter().enumerate())
                    .filter(|(_, c)| **c > 0)
                    .map(|(j, _)| j)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
                    == 1;
                let line =
                    format!("step {} epoch {}: val accuracy {:.2}% (loss {:.4})", progress.step, epoch + 1, 100.0 * m.accuracy, m.loss);
                bar.suspend(|| log(&line));
                if one_class && m.n > 0 {
                    let warn = format!("warning: every validation example is predicted as one class ({:.2}% = the majority rate {:.2}%); training may have diverged: lower --lr or the LoRA scale", 100.0 * m.accuracy, 100.0 * majority as f64 / m.n as f64);
                    bar.suspend(|| log(&warn));
                }
                if progress.best_val.is_none_or(|b| m.accuracy > b) {
                    progress.best_val = Some(m.accuracy);
                    progress.best_epoch = epoch + 1;
                    progress.best_step = progress.step;
                    state::save(&dir.best(), &mut model, None, None)?;
                }
            }
            if end_of_epoch {
                progress.epoch += 1;
                progress.batch_in_epoch = 0;
            }
            if end_of_epoch || progress.step % cfg.checkpoint_every == 0 || stop.load(Ordering::SeqCst) {
                progress.wall_seconds = wall0 + start.elapsed().as_secs_f64();
                state::save(&dir.checkpoint(), &mut model, Some(&opt), Some(&progress))?;
            }
            if stop.load(Ordering::SeqCst) {
                bar.abandon();
                return Ok(Outcome::Interrupted { step: progress.step });
            }
            if end_of_epoch {
                break;
            }
        }
    }
    bar.finish_and_clear();

    // Report the best-validation checkpoint, as the seed does.
    state::load(&dir.best(), &mut model, None)?;
    let mut splits = Vec::new();
    for (name, enc) in [("train", Some(&train)), ("val", Some(&val)), ("test", test.as_ref())] {
        if let Some(enc) = enc {
            splits.push((name.to_string(), evaluate(&model, &mut acts, &enc.ids, &enc.labels, &names, cfg.eval_batch_size, pad_id)));
        }
    }
    let acc = |s: &str| splits.iter().find(|(n, _)| n == s).map(|(_, m)| m.accuracy);
    let summary = Summary {
        train_acc: acc("train").unwrap_or(0.0),
        val_acc: acc("val").unwrap_or(0.0),
        test_acc: acc("test"),
        best_epoch: progress.best_epoch,
        best_step: progress.best_step,
        trainable_params: trainable,
        total_params: total,
        steps: progress.step,
        train_seconds: progress.train_seconds,
        wall_seconds: wall0 + start.elapsed().as_secs_f64(),
        examples_per_s: progress.examples as f64 / progress.train_seconds.max(1e-9),
        mean_train_tokens,
        splits,
    };
    write_json(&dir.summary(), &summary)?;
    super::plot::curves(&progress.history, run_dir)?;
    if let Err(e) = crate::adapter::export_run(run_dir, &cfg, &model, &labels, &tokenizer) {
        log(&format!("warning: could not export the adapter: {e}"));
    }
    Ok(Outcome::Finished(Box::new(summary)))
}
