//! Starting, joining and reporting a sweep: the sweep folder's record (sweep.json: study, space,
//! storage, base configuration), the workers (in this process, as child processes on this
//! machine, or as one worker of a study shared between machines), and the report files.

use super::report::{leaderboard, pictures, rows_from_seed_grid, rows_from_trials, write_csv};
use super::runner::{work, WorkerOptions};
use super::space::Space;
use super::storage::{open_storage, redact_url, TrialState, DEFAULT_SQLITE_FILE};
use super::{Result, SweepError};
use crate::error::Error;
use crate::run::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// What a sweep folder records about its sweep (sweep.json).
#[derive(Serialize, Deserialize)]
pub struct SweepRecord {
    /// Study name.
    pub study: String,
    /// The search space, as JSON.
    pub space: String,
    /// The storage URL without password (None: SQLite in the folder).
    pub storage: Option<String>,
    /// The base configuration every trial starts from.
    pub base: TrainConfig,
}

/// Set in the environment of the worker processes a sweep starts: they work under its lock.
pub const PARENT_VAR: &str = "LOWRANK_SWEEP_PARENT";

/// sweep.json in a sweep folder.
pub fn record_path(dir: &Path) -> PathBuf {
    dir.join("sweep.json")
}

/// How to take part in a sweep.
pub struct Launch {
    /// The sweep folder.
    pub dir: PathBuf,
    /// `--storage` URL (None: SQLite in the folder).
    pub storage: Option<String>,
    /// Worker processes to start on this machine (1: work in this process).
    pub workers: usize,
    /// Be one worker only (of a study shared between machines): interrupted trials are not reset.
    pub worker_only: bool,
    /// A running trial whose heartbeat is older than this is handed to another worker.
    pub stale_after: Duration,
    /// How often to heartbeat.
    pub heartbeat: Duration,
}

/// The sweep's record: read from the folder when it exists (a `storage` that differs from the
/// recorded one is refused: the trials are where the record says); otherwise made from `new` (the
/// space argument, the base configuration and the study name, paths made absolute). A new record
/// is written by [`run`] only once its storage has opened, so a failed start leaves no record
/// naming a storage that does not work.
pub fn open_record(dir: &Path, storage: Option<&str>, new: impl FnOnce() -> Result<(Space, TrainConfig, String)>) -> Result<SweepRecord> {
    std::fs::create_dir_all(dir).map_err(|e| SweepError::Io { action: "create directory", path: dir.to_path_buf(), source: e })?;
    let path = record_path(dir);
    if path.exists() {
        let rec: SweepRecord = crate::fsutil::read_json(&path, "sweep.json")?;
        if let Some(given) = storage {
            let matches = rec.storage.as_deref() == Some(redact_url(given).as_str())
                || rec.storage.as_deref().is_some_and(|r| r.contains("***") && redact_url(given) == r);
            if !matches {
                return Err(Error::InvalidOption(format!(
                    "{} is a sweep whose trials are in {}, not {}; pass that --storage (or none, for SQLite in the folder), or start a new sweep with another --out",
                    dir.display(),
                    rec.storage.as_deref().unwrap_or("the folder's SQLite file (no --storage)"),
                    redact_url(given)
                ))
                .into());
            }
        }
        return Ok(rec);
    }
    let (space, base, study) = new()?;
    Ok(SweepRecord { study, space: space.to_json_string(), storage: storage.map(redact_url), base: base.absolutized() })
}

/// How the trials of a sweep ended: (failed, all, the first failure's error).
pub fn failures(dir: &Path, storage: Option<&str>) -> Result<(usize, usize, Option<String>)> {
    let rec: SweepRecord = crate::fsutil::read_json(&record_path(dir), "sweep.json")?;
    let space = Space::from_json_str(&rec.space, &record_path(dir).display().to_string())?;
    let url = storage.map(str::to_string).or(rec.storage.clone().filter(|s| !s.contains("***")));
    let mut st = open_storage(url.as_deref(), dir)?;
    let study = st.open_study(&rec.study, &rec.space, &space.trials()?)?;
    let trials = st.trials(study)?;
    let failed: Vec<_> = trials.iter().filter(|t| t.state == TrialState::Failed).collect();
    Ok((failed.len(), trials.len(), failed.first().and_then(|t| t.error.clone())))
}

/// Runs the sweep's trials as `launch` says until none is left; returns how many this process's
/// own worker recorded (0 when child processes did the work).
pub fn run(rec: &SweepRecord, launch: &Launch, stop: &Arc<AtomicBool>, log: &dyn Fn(&str)) -> Result<usize> {
    let path = record_path(&launch.dir);
    let space = Space::from_json_str(&rec.space, &path.display().to_string())?;
    let trials = space.trials()?;
    let mut storage = open_storage(launch.storage.as_deref(), &launch.dir)?;
    let study = storage.open_study(&rec.study, &rec.space, &trials)?;
    if !path.exists() {
        crate::fsutil::write_json(&path, rec)?;
    }
    let worker = format!("{}:{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()), std::process::id());
    let opts = WorkerOptions {
        sweep_dir: launch.dir.clone(),
        storage: launch.storage.clone(),
        study,
        worker,
        stale_after: launch.stale_after,
        heartbeat_every: launch.heartbeat.max(Duration::from_secs(1)),
    };
    if launch.worker_only {
        let n = work(&rec.base, &opts, stop, log)?;
        log(&format!("worker {} recorded {n} trials", opts.worker));
        return Ok(n);
    }
    if launch.storage.as_deref().is_none_or(|s| s.starts_with("sqlite:")) {
        // One machine: nothing else can be running this study's trials, so interrupted ones rerun.
        let n = storage.reset_running(study)?;
        if n > 0 {
            log(&format!("{n} interrupted trial(s) will run again (from their checkpoints)"));
        }
    }
    drop(storage);
    log(&format!("sweep {}: {} trials in {}", rec.study, trials.len(), launch.dir.display()));
    if launch.workers <= 1 {
        return work(&rec.base, &opts, stop, log);
    }
    spawn_workers(launch)?;
    Ok(0)
}

/// Starts `launch.workers` worker processes of this executable (threads split between them) and
/// waits for them.
fn spawn_workers(launch: &Launch) -> Result<()> {
    let threads = (rayon::current_num_threads() / launch.workers).max(1);
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "the lowrank executable", e))?;
    let mut children = Vec::new();
    for _ in 0..launch.workers {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["--threads", &threads.to_string(), "sweep", "--worker", "--out"]).arg(&launch.dir);
        // The parent holds the sweep folder's lock for its workers.
        cmd.env(PARENT_VAR, std::process::id().to_string());
        cmd.args(["--stale-after", &launch.stale_after.as_secs().to_string(), "--heartbeat", &launch.heartbeat.as_secs().to_string()]);
        if let Some(s) = &launch.storage {
            cmd.args(["--storage", s]);
        }
        children.push(cmd.spawn().map_err(|e| Error::io("start a worker process", &exe, e))?);
    }
    for mut c in children {
        c.wait().map_err(|e| Error::io("wait for a worker process", &exe, e))?;
    }
    Ok(())
}

/// Writes leaderboard.md, leaderboard.csv and the pictures of the sweep in `dir` (trials from
/// `storage`, or the folder's SQLite file), drawing the seed's grid beside it when given; returns
/// the text to print (a status line and the `top` best trials) and the PNG files written.
pub fn write_report(dir: &Path, storage: Option<&str>, seed_grid: Option<&Path>, top: usize) -> Result<(String, Vec<PathBuf>)> {
    let path = record_path(dir);
    if !path.exists() {
        return Err(Error::InvalidOption(format!(
            "{} is not a sweep folder (no sweep.json); pass the --out folder of lowrank sweep",
            dir.display()
        ))
        .into());
    }
    let rec: SweepRecord = crate::fsutil::read_json(&path, "sweep.json")?;
    let url = storage.map(str::to_string).or(rec.storage.clone().filter(|s| !s.contains("***")));
    if url.is_none() && rec.storage.is_some() && !dir.join(DEFAULT_SQLITE_FILE).exists() {
        return Err(Error::InvalidOption(format!(
            "this sweep's trials are in {}; pass --storage with the full URL",
            rec.storage.as_deref().unwrap_or_default()
        ))
        .into());
    }
    let space = Space::from_json_str(&rec.space, &path.display().to_string())?;
    let mut storage = open_storage(url.as_deref(), dir)?;
    let study = storage.open_study(&rec.study, &rec.space, &space.trials()?)?;
    let trials = storage.trials(study)?;
    let rows = rows_from_trials(&trials);
    let seed = seed_grid.map(rows_from_seed_grid).transpose()?;
    let count = |s: TrialState| trials.iter().filter(|t| t.state == s).count();
    let head = format!(
        "{} of {} trials done ({} running, {} pending, {} failed)\n\n",
        rows.len(),
        trials.len(),
        count(TrialState::Running),
        count(TrialState::Pending),
        count(TrialState::Failed)
    );
    crate::fsutil::write_atomic(&dir.join("leaderboard.md"), (head.clone() + &leaderboard(&rows, usize::MAX)).as_bytes())?;
    write_csv(&rows, &dir.join("leaderboard.csv"))?;
    let files = if rows.is_empty() { Vec::new() } else { pictures(&rows, seed.as_deref(), dir)? };
    let pngs = files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "png")).collect();
    Ok((head + &leaderboard(&rows, top), pngs))
}
