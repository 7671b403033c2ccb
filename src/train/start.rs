//! Starting a run: the run folder is locked before anything is written; everything that can be
//! checked — the configuration, the inputs, the data, the tokenizer against the model's
//! vocabulary and position table, LoRA's rank against the layers, the memory the run will need,
//! finite base weights, an initial adapter's fit — is checked before the configuration and the
//! split are recorded; and a start that fails removes what it created, so the corrected command
//! starts cleanly (and a failed first start never turns into a run that `--resume` repeats).

use super::data::{Examples, TaskData};
use crate::error::{Error, Result};
use crate::fsutil::lock::Lock;
use crate::guard::{self, memory};
use crate::model::{HeadKind, LoadOptions, Model, ModelConfig};
use crate::run::{build_model, RunDir, Task, TrainConfig};
use crate::tokenize::Tokenizer;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The run folder during start-up: locked; on failure before [`Startup::finish`], what this start
/// created is removed (the folder too, when it made it).
pub(crate) struct Startup {
    dir: PathBuf,
    created_dir: bool,
    before: BTreeSet<OsString>,
    lock: Option<Lock>,
    armed: bool,
}

fn entries(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir).map(|it| it.filter_map(|e| e.ok().map(|e| e.file_name())).collect()).unwrap_or_default()
}

impl Startup {
    /// Creates the folder (new runs) and locks it; logs a stale lock taken over and stale
    /// temporary files removed.
    pub(crate) fn begin(dir: &Path, resume: bool, log: &dyn Fn(&str)) -> Result<Startup> {
        if resume && !dir.join("config.json").exists() {
            return Err(Error::InvalidOption(format!(
                "{} is not a run folder (no config.json): pass the --out folder of an earlier lowrank train",
                dir.display()
            )));
        }
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let lock = match Lock::folder(dir, "run folder") {
            Ok(l) => l,
            Err(e) => {
                if created_dir {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e);
            }
        };
        if let Some(o) = &lock.took_over {
            log(&format!("note: process {} ({}) held this run folder and no longer runs; taking it over", o.pid, o.command));
        }
        for p in crate::fsutil::clean_stale_temps(dir) {
            log(&format!("note: removed {}, left by an interrupted write", p.display()));
        }
        let lock_name = OsString::from(crate::fsutil::lock::FOLDER_LOCK);
        let before = entries(dir).into_iter().filter(|n| *n != lock_name).collect();
        Ok(Startup { dir: dir.to_path_buf(), created_dir, before, lock: Some(lock), armed: true })
    }

    /// The entries the folder held when this start began (the lock excepted).
    pub(crate) fn found(&self) -> &BTreeSet<OsString> {
        &self.before
    }

    /// Start-up succeeded: keep what it wrote; the lock is the caller's until the run ends.
    pub(crate) fn finish(mut self) -> Lock {
        self.armed = false;
        self.lock.take().expect("held until finish")
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let lock_name = OsString::from(crate::fsutil::lock::FOLDER_LOCK);
        for name in entries(&self.dir) {
            if name != lock_name && !self.before.contains(&name) {
                let p = self.dir.join(&name);
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
        drop(self.lock.take());
        if self.created_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// How far an existing run folder got, for the message that refuses to start over it.
fn state(dir: &RunDir) -> String {
    if dir.summary().exists() {
        "it finished: see summary.json".into()
    } else if dir.checkpoint().exists() {
        "it has a checkpoint".into()
    } else {
        "it has no checkpoint yet: it failed or was stopped before its first one; remove the folder to start over".into()
    }
}

/// The run's configuration: read back (resume) or checked (new run, with absolute paths);
/// refuses a folder that holds another run or files lowrank did not write.
pub(crate) fn configure(cfg: &TrainConfig, dir: &RunDir, resume: bool, startup: &Startup) -> Result<TrainConfig> {
    if resume {
        let cfg: TrainConfig = crate::fsutil::read_json(&dir.config(), "run config.json")?;
        cfg.check_inputs(&dir.0, !dir.labels().exists())?;
        return Ok(cfg);
    }
    if dir.config().exists() && crate::fsutil::read_json::<TrainConfig>(&dir.config(), "run config.json").is_err() {
        return Err(Error::OutputConflict {
            path: dir.0.clone(),
            message: "the folder already holds files, and its config.json is not a lowrank run's (a model folder?); lowrank never overwrites what it did not write: choose a new or empty folder".into(),
        });
    }
    if dir.config().exists() {
        return Err(Error::InvalidOption(format!(
            "{} already holds a run ({}); continue it with --resume {0}, or choose another --out",
            dir.0.display(),
            state(dir)
        )));
    }
    if !startup.found().is_empty() {
        let mut names: Vec<String> = startup.found().iter().map(|n| n.to_string_lossy().into_owned()).collect();
        names.sort();
        return Err(Error::OutputConflict {
            path: dir.0.clone(),
            message: format!(
                "the folder already holds files ({}) and no run; lowrank writes its run files there (config.json, train.csv, ...) and never overwrites what it did not write: choose a new or empty folder",
                names.join(", ")
            ),
        });
    }
    cfg.validate()?;
    let cfg = cfg.absolutized();
    cfg.check_inputs(&dir.0, true)?;
    Ok(cfg)
}

/// Everything a run needs, checked (the split is recorded in the run folder; a failed start
/// removes it with the rest of what it created).
pub(crate) struct Prepared {
    /// The configuration (max length clamped to the model's position table).
    pub cfg: TrainConfig,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The tokenised split, whichever the task.
    pub splits: TaskData,
    /// The model, with what trains and the initial adapter.
    pub model: Model,
}

/// Every token-id sequence of the split.
fn sequences(t: &TaskData) -> Vec<&[u32]> {
    [Some(&t.train), Some(&t.val), t.test.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(|e| -> Vec<&[u32]> {
            match e {
                Examples::Classes(c) => c.ids.iter().map(Vec::as_slice).collect(),
                Examples::Lm(l) => l.iter().map(|x| x.ids.as_slice()).collect(),
            }
        })
        .collect()
}

/// Loads and checks everything a run needs.
pub(crate) fn prepare(mut cfg: TrainConfig, run_dir: &Path, log: &dyn Fn(&str)) -> Result<Prepared> {
    let config = ModelConfig::load(&cfg.model)?;
    memory::check_config(&config, "the base model")?;
    let (max_length, note) = guard::clamp_max_length(cfg.max_length, &config, "--max-length");
    if let Some(n) = note {
        log(&n);
        cfg.max_length = max_length;
    }
    let tokenizer = Tokenizer::from_model_dir(&cfg.model, cfg.max_length)?;
    let min_train = if cfg.drop_last { cfg.batch_size } else { 0 };
    let splits = super::data::prepare(&cfg, run_dir, &tokenizer, min_train, log)?;
    let seqs = sequences(&splits);
    let ids: Vec<Vec<u32>> = seqs.iter().map(|s| s.to_vec()).collect();
    guard::check_token_ids(&ids, &config, &tokenizer.source.display().to_string())?;

    // A model of the configuration that is built but not yet trained on is enough to check the
    // plan and estimate the memory before the real one is built.
    let k = splits.labels.as_ref().map_or(0, |l| l.len());
    let head = match cfg.task {
        Task::Classification => cfg.head,
        Task::CausalLm => Some(HeadKind::Lm),
    };
    let config_file = if cfg.model.is_dir() { cfg.model.join("config.json") } else { cfg.model.clone() };
    let (zero, _) = Model::from_pretrained(&config_file, &LoadOptions { head, num_labels: Some(k), seed: cfg.seed })?;
    if let Some(w) = guard::check_lora_rank(&zero, &cfg.plan)? {
        log(&w);
    }
    let seq = if cfg.pad_to_max_length { cfg.max_length } else { seqs.iter().map(|s| s.len()).max().unwrap_or(0) };
    let estimate = memory::training(&zero, &cfg.plan, cfg.batch_size, seq.max(1), cfg.eval_batch_size)?;
    memory::check(
        "this run",
        &estimate,
        "lower --batch-size or --max-length, or train fewer parameters (--mode lora with a smaller --lora-r)",
    )?;
    if let Some(w) = memory::tight(&estimate) {
        log(&w);
    }
    if let Some(adapter) = &cfg.init_adapter {
        for w in guard::fit::check_adapter(adapter, &cfg.model, &zero, false)? {
            log(&w);
        }
    }
    drop(zero);
    let model = build_model(&cfg, k)?;
    guard::check_finite(&model, &format!("the base model {} (with its initial adapter, if any)", cfg.model.display()))?;
    Ok(Prepared { cfg, tokenizer, splits, model })
}
