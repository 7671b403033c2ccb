//! `lowrank sweep` (run or join a hyperparameter sweep) and `lowrank sweep-report`.

use super::args::{train_config, DataArgs, LoopArgs, ModelArgs, PlanArgs};
use crate::sweep::report::{leaderboard, pictures, rows_from_seed_grid, rows_from_trials, write_csv};
use crate::sweep::runner::{work, WorkerOptions};
use crate::sweep::space::Space;
use crate::sweep::storage::{open_storage, redact_url, DEFAULT_SQLITE_FILE};
use crate::train::TrainConfig;
use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Options of `lowrank sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub lp: LoopArgs,
    /// Search space: a .toml / .json file, or a preset (raschka-grid: the seed's 576 runs).
    #[arg(long, value_name = "SPACE")]
    pub space: Option<String>,
    /// The sweep folder (trial run folders, sweep.json, the default SQLite storage).
    #[arg(long, value_name = "SWEEP_DIR")]
    pub out: PathBuf,
    /// Trial storage: sqlite://PATH, or postgres://user@host/db to share a study between machines
    /// (default: SQLite in SWEEP_DIR).
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Worker processes to start on this machine (threads are split between them).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Be one worker only: claim and run trials until none is left (start one per machine with a
    /// shared --storage; interrupted trials are not reset, stale ones are taken over).
    #[arg(long)]
    pub worker: bool,
    /// Study name (default: the sweep folder's name).
    #[arg(long)]
    pub study: Option<String>,
    /// Seconds without a heartbeat after which a running trial is handed to another worker.
    #[arg(long, default_value_t = 120)]
    pub stale_after: u64,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat: u64,
}

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

fn record_path(dir: &Path) -> PathBuf {
    dir.join("sweep.json")
}

/// Runs `lowrank sweep`.
pub fn run(a: SweepArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let existing = record_path(&a.out);
    let rec: SweepRecord = if existing.exists() {
        crate::fsutil::read_json(&existing, "sweep.json")?
    } else {
        let Some(space_arg) = &a.space else { bail!("--space is required to start a sweep (a .toml/.json file, or raschka-grid)") };
        let space = Space::from_arg(space_arg)?;
        let base = train_config(a.model.resolve()?, a.model.head, &a.data, &a.plan, &a.lp)?;
        let study = a.study.clone().unwrap_or_else(|| a.out.file_name().map_or("sweep".into(), |n| n.to_string_lossy().into_owned()));
        let rec = SweepRecord { study, space: space.to_json_string(), storage: a.storage.as_deref().map(redact_url), base };
        crate::fsutil::write_json(&existing, &rec)?;
        rec
    };
    let space = Space::from_json_str(&rec.space, &existing.display().to_string())?;
    let trials = space.trials()?;
    let mut storage = open_storage(a.storage.as_deref(), &a.out)?;
    let study = storage.open_study(&rec.study, &rec.space, &trials)?;
    let worker_name = format!("{}:{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()), std::process::id());
    let opts = WorkerOptions {
        sweep_dir: a.out.clone(),
        storage: a.storage.clone(),
        study,
        worker: worker_name,
        stale_after: Duration::from_secs(a.stale_after),
        heartbeat_every: Duration::from_secs(a.heartbeat.max(1)),
    };
    let stop = super::interrupt_flag();
    if a.worker {
        let n = work(&rec.base, &opts, &stop, &super::log)?;
        super::log(&format!("worker {} recorded {n} trials", opts.worker));
        return Ok(ExitCode::SUCCESS);
    }
    if a.storage.is_none() || a.storage.as_deref().is_some_and(|s| s.starts_with("sqlite:")) {
        // One machine: nothing else can be running this study's trials, so interrupted ones rerun.
        let n = storage.reset_running(study)?;
        if n > 0 {
            super::log(&format!("{n} interrupted trial(s) will run again (from their checkpoints)"));
        }
    }
    drop(storage);
    super::log(&format!("sweep {}: {} trials in {}", rec.study, trials.len(), opts.sweep_dir.display()));
    if a.workers <= 1 {
        work(&rec.base, &opts, &stop, &super::log)?;
    } else {
        let threads = (rayon::current_num_threads() / a.workers).max(1);
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        for _ in 0..a.workers {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["--threads", &threads.to_string(), "sweep", "--worker", "--out"]).arg(&a.out);
            cmd.args(["--stale-after", &a.stale_after.to_string(), "--heartbeat", &a.heartbeat.to_string()]);
            if let Some(s) = &a.storage {
                cmd.args(["--storage", s]);
            }
            children.push(cmd.spawn().context("starting a worker process")?);
        }
        for mut c in children {
            c.wait()?;
        }
    }
    report(ReportArgs { sweep_dir: a.out, storage: a.storage, seed_grid: None, top: 10 })
}

/// Options of `lowrank sweep-report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The sweep folder.
    #[arg(value_name = "SWEEP_DIR")]
    pub sweep_dir: PathBuf,
    /// The storage URL, when it is not SQLite in the folder (sweep.json keeps it without password).
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Also draw the seed's own grid (../shared/reference/raschka_grid.csv) beside this sweep.
    #[arg(long, value_name = "CSV")]
    pub seed_grid: Option<PathBuf>,
    /// Rows of the printed leaderboard.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// Runs `lowrank sweep-report`.
pub fn report(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let path = record_path(&a.sweep_dir);
    if !path.exists() {
        bail!("{} is not a sweep folder (no sweep.json); pass the --out folder of lowrank sweep", a.sweep_dir.display());
    }
    let rec: SweepRecord = crate::fsutil::read_json(&path, "sweep.json")?;
    let url = a.storage.clone().or(rec.storage.clone().filter(|s| !s.contains("***")));
    if url.is_none() && rec.storage.is_some() && !a.sweep_dir.join(DEFAULT_SQLITE_FILE).exists() {
        bail!("this sweep's trials are in {}; pass --storage with the full URL", rec.storage.as_deref().unwrap_or_default());
    }
    let space = Space::from_json_str(&rec.space, &path.display().to_string())?;
    let mut storage = open_storage(url.as_deref(), &a.sweep_dir)?;
    let study = storage.open_study(&rec.study, &rec.space, &space.trials()?)?;
    let trials = storage.trials(study)?;
    let rows = rows_from_trials(&trials);
    let seed = a.seed_grid.as_deref().map(rows_from_seed_grid).transpose()?;
    let count = |s: crate::sweep::storage::TrialState| trials.iter().filter(|t| t.state == s).count();
    use crate::sweep::storage::TrialState::*;
    let board = leaderboard(&rows, a.top);
    let head = format!(
        "{} of {} trials done ({} running, {} pending, {} failed)\n\n",
        rows.len(),
        trials.len(),
        count(Running),
        count(Pending),
        count(Failed)
    );
    crate::fsutil::write_atomic(&a.sweep_dir.join("leaderboard.md"), (head.clone() + &leaderboard(&rows, usize::MAX)).as_bytes())?;
    write_csv(&rows, &a.sweep_dir.join("leaderboard.csv"))?;
    let files = if rows.is_empty() { Vec::new() } else { pictures(&rows, seed.as_deref(), &a.sweep_dir)? };
    print!("{head}{board}");
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "png")) {
        eprintln!("wrote {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
