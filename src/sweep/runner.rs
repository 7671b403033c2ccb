//! Running a sweep: every trial is a normal training run (its own run folder, the same split and
//! seed unless the space varies them); workers claim trials from the shared storage, heartbeat
//! while training, resume a trial's checkpoint when they take over an interrupted one, and
//! record each result exactly once.

use super::space::TrialParams;
use super::storage::{open_storage, Claim, Storage};
use super::Result;
use crate::error::Error;
use crate::run::TrainConfig;
use crate::train::{train, Outcome};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where and how a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The sweep folder (trial run folders live in `trials/`).
    pub sweep_dir: PathBuf,
    /// `--storage` URL (None: SQLite in the sweep folder).
    pub storage: Option<String>,
    /// The study's id in storage.
    pub study: i64,
    /// This worker's name (host:pid).
    pub worker: String,
    /// A running trial whose heartbeat is older than this is handed out again.
    pub stale_after: Duration,
    /// How often to heartbeat.
    pub heartbeat_every: Duration,
}

/// The run configuration of one trial: the sweep's base configuration with the trial's values
/// applied through the option catalogue.
pub fn trial_config(base: &TrainConfig, p: &TrialParams) -> Result<TrainConfig> {
    let mut c = base.clone();
    for (name, value) in p {
        crate::options::apply(&mut c, name, value)?;
    }
    c.validate()?;
    Ok(c)
}

/// The run folder of a trial (stable across attempts, so a takeover resumes its checkpoint).
pub fn trial_dir(sweep_dir: &Path, claim: &Claim) -> PathBuf {
    sweep_dir.join("trials").join(format!("trial-{:04}", claim.trial_id))
}

/// Runs one claimed trial to its end; returns the result to record, or None when the trial was
/// taken over (or the worker was interrupted) and must not be recorded by this worker.
fn run_trial(base: &TrainConfig, claim: &Claim, opts: &WorkerOptions, stop: &Arc<AtomicBool>, log: &dyn Fn(&str)) -> Result<Option<Value>> {
    let cfg = trial_config(base, &claim.params)?;
    let dir = trial_dir(&opts.sweep_dir, claim);
    let resume = dir.join("config.json").exists();
    if resume && dir.join("summary.json").exists() {
        // Finished by an earlier attempt whose worker died before recording it.
        let s: crate::train::Summary = crate::fsutil::read_json(&dir.join("summary.json"), "summary.json")?;
        return Ok(Some(result_json(&s, &dir)));
    }
    // Heartbeat from a separate thread with its own connection; a lost trial stops the run.
    let lost = Arc::new(AtomicBool::new(false));
    let trial_stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let hb = {
        let (lost, trial_stop, done, stop) = (lost.clone(), trial_stop.clone(), done.clone(), stop.clone());
        let (url, dir0, every, id, attempt) =
            (opts.storage.clone(), opts.sweep_dir.clone(), opts.heartbeat_every, claim.trial_id, claim.attempt);
        std::thread::spawn(move || -> Result<()> {
            let mut storage = open_storage(url.as_deref(), &dir0)?;
            while !done.load(Ordering::SeqCst) {
                if stop.load(Ordering::SeqCst) {
                    trial_stop.store(true, Ordering::SeqCst);
                }
                if !storage.heartbeat(id, attempt)? {
                    lost.store(true, Ordering::SeqCst);
                    trial_stop.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                let t = std::time::Instant::now();
                while t.elapsed() < every && !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    if stop.load(Ordering::SeqCst) {
                        trial_stop.store(true, Ordering::SeqCst);
                    }
                }
            }
            Ok(())
        })
    };
    log(&format!("trial {} (attempt {}): {}", claim.trial_id, claim.attempt, claim.key));
    let outcome = train(&cfg, &dir, resume, &trial_stop, log);
    done.store(true, Ordering::SeqCst);
    let hb_result = hb.join().map_err(|_| Error::Other("heartbeat thread panicked".into()))?;
    let outcome = outcome?;
    hb_result?;
    match outcome {
        Outcome::Finished(s) if !lost.load(Ordering::SeqCst) => Ok(Some(result_json(&s, &dir))),
        _ => Ok(None),
    }
}

fn result_json(s: &crate::train::Summary, dir: &Path) -> Value {
    serde_json::json!({
        "train_acc": s.train_acc,
        "val_acc": s.val_acc,
        "test_acc": s.test_acc,
        "best_epoch": s.best_epoch,
        "trainable_params": s.trainable_params,
        "total_params": s.total_params,
        "train_seconds": s.train_seconds,
        "wall_seconds": s.wall_seconds,
        "examples_per_s": s.examples_per_s,
        "run_dir": dir,
    })
}

/// A worker: claims and runs trials until none is left (or `stop` is set). Returns how many
/// trials it recorded.
pub fn work(base: &TrainConfig, opts: &WorkerOptions, stop: &Arc<AtomicBool>, log: &dyn Fn(&str)) -> Result<usize> {
    let mut storage: Box<dyn Storage> = open_storage(opts.storage.as_deref(), &opts.sweep_dir)?;
    let mut recorded = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some(claim) = storage.claim(opts.study, &opts.worker, opts.stale_after)? else {
            // Nothing to claim: done, unless other workers still run trials (if one of them dies,
            // its trial goes stale and this worker takes it over).
            if storage.trials(opts.study)?.iter().any(|t| t.state == super::storage::TrialState::Running) {
                std::thread::sleep(opts.heartbeat_every.min(Duration::from_secs(5)));
                continue;
            }
            break;
        };
        match run_trial(base, &claim, opts, stop, log) {
            Ok(Some(result)) => {
                if storage.complete(claim.trial_id, claim.attempt, &result)? {
                    recorded += 1;
                    log(&format!("trial {} done: val {:.2}%", claim.trial_id, 100.0 * result["val_acc"].as_f64().unwrap_or(0.0)));
                } else {
                    log(&format!("trial {} was taken over by another worker; its result is theirs", claim.trial_id));
                }
            }
            Ok(None) => log(&format!("trial {} stopped before the end (interrupted or taken over)", claim.trial_id)),
            Err(e) => {
                log(&format!("trial {} failed: {e}", claim.trial_id));
                storage.fail(claim.trial_id, claim.attempt, &e.to_string())?;
            }
        }
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{Scaling, SeedFlags, TargetModules};

    #[test]
    fn trial_values_override_the_base() {
        let base = TrainConfig::default();
        let p: TrialParams = serde_json::from_str(
            r#"{"lora_r": 4, "lora_alpha": 1.0, "lora_mlp": true, "lora_key": false, "lr": 0.001, "scaling": "peft", "epochs": 2}"#,
        )
        .unwrap();
        let c = trial_config(&base, &p).unwrap();
        assert_eq!((c.plan.lora.r, c.plan.lora.alpha, c.plan.lora.scaling, c.epochs), (4, 1.0, Scaling::Peft, 2));
        assert_eq!(c.plan.targets, TargetModules::Flags(SeedFlags { query: true, value: true, mlp: true, ..Default::default() }));
        assert!((c.optimizer.lr - 0.001).abs() < 1e-9);
        let bad: TrialParams = serde_json::from_str(r#"{"scaling": "dora"}"#).unwrap();
        assert!(trial_config(&base, &bad).is_err());
    }
}
