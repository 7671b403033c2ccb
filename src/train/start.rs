//! Starting a run: the run folder is locked before anything is written; everything that can be
//! checked — the configuration, the inputs, the data, the tokenizer against the model's
//! vocabulary and position table, LoRA's rank against the layers, the memory the run will need,
//! finite base weights, an initial adapter's fit — is checked before the configuration and the
//! split are recorded; and a start that fails removes what it created, so the corrected command
//! starts cleanly (and a failed first start never turns into a run that `--resume` repeats).
//! A start killed outright (SIGKILL, power loss) cannot clean up after itself, so a new run's
//! start first records which entries the folder already held ([`START_RECORD`]); the next start
//! in that folder removes what the killed one created and begins again.

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

/// The start record: written (atomically) before anything else of a new run, removed once the
/// start succeeds or fails cleanly; holds the names the folder held before that start.
pub(crate) const START_RECORD: &str = ".lowrank-start.json";

/// What [`START_RECORD`] holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct StartRecord {
    /// The folder's entries before the start (lock and record excepted), as written by
    /// `to_string_lossy`.
    before: Vec<String>,
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
        if dir.exists() && !dir.is_dir() {
            return Err(Error::OutputConflict {
                path: dir.to_path_buf(),
                message: "it is a file, and a run is a folder: choose a new folder path for --out".into(),
            });
        }
        if !resume {
            // A folder of someone else's files (a model folder, a data folder) is refused before
            // anything is written into it, even the lock: a lowrank folder has its config.json,
            // a start record or a lock.
            let found = entries(dir);
            let ours = ["config.json", START_RECORD, crate::fsutil::lock::FOLDER_LOCK];
            if !found.is_empty() && !found.iter().any(|n| ours.iter().any(|o| n == o)) {
                return Err(foreign_files(dir, &found));
            }
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
        let ours = [OsString::from(crate::fsutil::lock::FOLDER_LOCK), OsString::from(START_RECORD)];
        let record = dir.join(START_RECORD);
        if record.exists() {
            // The last start here was killed before it finished: what it created goes, unless it
            // recorded its configuration (then the run is whole enough for --resume).
            if !dir.join("config.json").exists() {
                let earlier: StartRecord = crate::fsutil::read_json(&record, "the start record of an interrupted start")?;
                let removed = remove_created(dir, &earlier.before.iter().cloned().collect(), &ours);
                if !removed.is_empty() {
                    log(&format!("note: removed {}, left by a start that was interrupted", removed.join(", ")));
                }
            }
            std::fs::remove_file(&record).map_err(|e| Error::io("remove", &record, e))?;
        }
        let before: BTreeSet<OsString> = entries(dir).into_iter().filter(|n| !ours.contains(n)).collect();
        if !resume {
            let names = before.iter().map(|n| n.to_string_lossy().into_owned()).collect();
            crate::fsutil::write_json(&record, &StartRecord { before: names })?;
        }
        Ok(Startup { dir: dir.to_path_buf(), created_dir, before, lock: Some(lock), armed: true })
    }

    /// The entries the folder held when this start began (the lock excepted).
    pub(crate) fn found(&self) -> &BTreeSet<OsString> {
        &self.before
    }

    /// Start-up succeeded: keep what it wrote; the lock is the caller's until the run ends.
    pub(crate) fn finish(mut self) -> Lock {
        self.armed = false;
        let _ = std::fs::remove_file(self.dir.join(START_RECORD));
        self.lock.take().expect("held until finish")
    }
}

/// Removes the entries of `dir` whose names (lossy) are not in `keep` nor in `ours`; returns the
/// names removed.
fn remove_created(dir: &Path, keep: &BTreeSet<String>, ours: &[OsString]) -> Vec<String> {
    let mut removed = Vec::new();
    for name in entries(dir) {
        let lossy = name.to_string_lossy().into_owned();
        if ours.contains(&name) || keep.contains(&lossy) {
            continue;
        }
        let p = dir.join(&name);
        let gone = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        if gone.is_ok() {
            removed.push(lossy);
        }
    }
    removed
}

impl Drop for Startup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let lock_name = OsString::from(crate::fsutil::lock::FOLDER_LOCK);
        let keep: BTreeSet<String> = self.before.iter().map(|n| n.to_string_lossy().into_owned()).collect();
        remove_created(&self.dir, &keep, &[lock_name]);
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

/// The refusal of a folder that holds files and no run.
fn foreign_files(dir: &Path, found: &BTreeSet<OsString>) -> Error {
    let mut names: Vec<String> = found.iter().map(|n| n.to_string_lossy().into_owned()).collect();
    names.sort();
    let shown = if names.len() > 6 { format!("{}, … ({} entries)", names[..6].join(", "), names.len()) } else { names.join(", ") };
    Error::OutputConflict {
        path: dir.to_path_buf(),
        message: format!(
            "the folder already holds files ({shown}) and no run; lowrank writes its run files there (config.json, train.csv, ...) and never overwrites what it did not write: choose a new or empty folder"
        ),
    }
}

/// The run's configuration: read back (resume) or checked (new run, with absolute paths);
/// refuses a folder that holds another run or files lowrank did not write.
pub(crate) fn configure(cfg: &TrainConfig, dir: &RunDir, resume: bool, startup: &Startup) -> Result<TrainConfig> {
    if resume {
        let cfg: TrainConfig = crate::fsutil::read_json(&dir.config(), "run config.json").map_err(|e| {
            let model_config = std::fs::read_to_string(dir.config())
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v.get("model_type").is_some());
            if model_config {
                Error::InvalidOption(format!(
                    "{} is a model folder (its config.json is a Hugging Face model config), not a run folder: --resume takes the --out folder of an earlier lowrank train",
                    dir.0.display()
                ))
            } else {
                e
            }
        })?;
        cfg.check_inputs(&dir.0, !dir.labels().exists(), true)?;
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
        return Err(foreign_files(&dir.0, startup.found()));
    }
    cfg.validate()?;
    let cfg = cfg.absolutized();
    cfg.check_inputs(&dir.0, true, false)?;
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
    if let crate::data::DataSource::Files { train, val, test } = &cfg.data {
        let same = |a: &Path, b: &Path| crate::fsutil::out::resolve(a) == crate::fsutil::out::resolve(b);
        if same(train, val) {
            log(&format!("warning: the validation file is the training file ({}): validation accuracy will not show overfitting, and the best checkpoint is chosen on training data", val.display()));
        }
        if test.as_deref().is_some_and(|t| same(t, train)) {
            log("warning: the test file is the training file: its accuracy is not a test of generalisation");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = entries(dir).iter().map(|n| n.to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_new_start_records_what_was_there_and_finish_removes_the_record() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        let s = Startup::begin(&run, false, &|_| {}).unwrap();
        assert!(s.found().is_empty());
        let rec: StartRecord = crate::fsutil::read_json(&run.join(START_RECORD), "record").unwrap();
        assert!(rec.before.is_empty());
        std::fs::write(run.join("config.json"), "{}").unwrap();
        drop(s.finish());
        assert_eq!(names(&run), ["config.json"]);
    }

    #[test]
    fn a_failed_start_removes_what_it_created_and_its_record() {
        let d = tempfile::tempdir().unwrap();
        let s = Startup::begin(d.path(), false, &|_| {}).unwrap();
        std::fs::write(d.path().join("labels.json"), "[]").unwrap();
        drop(s);
        assert!(names(d.path()).is_empty());
    }

    #[test]
    fn a_folder_of_foreign_files_or_a_file_is_refused_before_anything_is_written() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("mine.txt"), "x").unwrap();
        let e = Startup::begin(d.path(), false, &|_| {}).err().unwrap().to_string();
        assert!(e.contains("already holds files (mine.txt) and no run"), "{e}");
        assert_eq!(names(d.path()), ["mine.txt"], "not even a lock file was made");
        let e = Startup::begin(&d.path().join("mine.txt"), false, &|_| {}).err().unwrap().to_string();
        assert!(e.contains("it is a file"), "{e}");
    }

    #[test]
    fn the_next_start_removes_what_a_killed_start_left_and_keeps_what_was_there_before() {
        let d = tempfile::tempdir().unwrap();
        // What a start killed after recording the split but before config.json leaves behind.
        std::fs::write(d.path().join("mine.txt"), "x").unwrap();
        crate::fsutil::write_json(&d.path().join(START_RECORD), &StartRecord { before: vec!["mine.txt".into()] }).unwrap();
        for f in ["labels.json", "train.csv", "val.csv"] {
            std::fs::write(d.path().join(f), "a").unwrap();
        }
        let logged = std::cell::RefCell::new(Vec::new());
        let s = Startup::begin(d.path(), false, &|l| logged.borrow_mut().push(l.to_string())).unwrap();
        assert_eq!(s.found().iter().map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>(), ["mine.txt"]);
        assert_eq!(names(d.path()), [START_RECORD, crate::fsutil::lock::FOLDER_LOCK, "mine.txt"]);
        let log = logged.borrow().join("\n");
        assert!(log.contains("labels.json, train.csv, val.csv") && log.contains("interrupted"), "{log}");
    }

    #[test]
    fn a_start_killed_after_recording_its_configuration_is_left_for_resume() {
        let d = tempfile::tempdir().unwrap();
        crate::fsutil::write_json(&d.path().join(START_RECORD), &StartRecord { before: vec![] }).unwrap();
        for f in ["config.json", "labels.json", "train.csv"] {
            std::fs::write(d.path().join(f), "{}").unwrap();
        }
        let s = Startup::begin(d.path(), true, &|_| {}).unwrap();
        drop(s.finish());
        assert_eq!(names(d.path()), ["config.json", "labels.json", "train.csv"]);
    }
}
