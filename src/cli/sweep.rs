//! `lowrank sweep` (run or join a hyperparameter sweep) and `lowrank sweep-report`.

use super::args::{train_config, DataArgs, LoopArgs, ModelArgs, PlanArgs};
use crate::fsutil::lock::Lock;
use crate::sweep::launch::{self, open_record, write_report, Launch};
use crate::sweep::space::Space;
use clap::Args;
use std::path::PathBuf;
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

/// Runs `lowrank sweep`.
pub fn run(a: SweepArgs) -> anyhow::Result<ExitCode> {
    let created = !a.out.exists();
    let result = run_locked(&a);
    if result.is_err() && created && !crate::sweep::launch::record_path(&a.out).exists() {
        // A failed first start leaves nothing behind (everything in the folder is this start's).
        let _ = std::fs::remove_dir_all(&a.out);
    }
    result
}

fn run_locked(a: &SweepArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.out).map_err(|e| crate::error::Error::io("create directory", &a.out, e))?;
    let _lock = if std::env::var_os(launch::PARENT_VAR).is_some() {
        None // a worker of a sweep whose process holds the lock
    } else if a.worker {
        Some(Lock::shared_folder(&a.out, "sweep folder")?)
    } else {
        Some(Lock::folder(&a.out, "sweep folder")?)
    };
    let existed = launch::record_path(&a.out).exists();
    let rec = open_record(&a.out, a.storage.as_deref(), || {
        let Some(space_arg) = &a.space else {
            return Err(crate::error::Error::InvalidOption(
                "--space is required to start a sweep (a .toml/.json file, or raschka-grid)".into(),
            )
            .into());
        };
        let space = Space::from_arg(space_arg)?;
        let base = train_config(a.model.resolve()?, a.model.head, &a.data, &a.plan, &a.lp)?;
        let study = a.study.clone().unwrap_or_else(|| a.out.file_name().map_or("sweep".into(), |n| n.to_string_lossy().into_owned()));
        Ok((space, base, study))
    })?;
    if existed {
        if let Some(space_arg) = &a.space {
            check_same_sweep(a, space_arg, &rec)?;
        }
    }
    let launch = Launch {
        dir: a.out.clone(),
        storage: a.storage.clone(),
        workers: a.workers,
        worker_only: a.worker,
        stale_after: Duration::from_secs(a.stale_after),
        heartbeat: Duration::from_secs(a.heartbeat),
    };
    let stop = super::interrupt_flag();
    launch::run(&rec, &launch, &stop, &super::log)?;
    if a.worker {
        return Ok(ExitCode::SUCCESS);
    }
    report(ReportArgs { sweep_dir: a.out.clone(), storage: a.storage.clone(), seed_grid: None, top: 10 })?;
    let (failed, all, first) = launch::failures(&a.out, a.storage.as_deref())?;
    let first = first.unwrap_or_default();
    if failed > 0 && failed == all {
        return Err(crate::error::Error::Other(format!(
            "every trial of the sweep failed ({all} of {all}); the first failure: {first}; fix the base options or the space, then start a new sweep (another --out)"
        ))
        .into());
    }
    if failed > 0 {
        super::log(&format!("warning: {failed} of {all} trials failed (see leaderboard.md); the first failure: {first}"));
    }
    Ok(ExitCode::SUCCESS)
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
    let (text, pngs) = write_report(&a.sweep_dir, a.storage.as_deref(), a.seed_grid.as_deref(), a.top)?;
    out!("{text}");
    for f in pngs {
        eprintln!("wrote {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A sweep folder continues only the sweep it was started with: `--space` (checked as for a new
/// sweep) and the base options given again must be the recorded ones (without `--space`, the
/// recorded sweep continues as it is).
fn check_same_sweep(a: &SweepArgs, space_arg: &str, rec: &launch::SweepRecord) -> anyhow::Result<()> {
    let space = Space::from_arg(space_arg)?;
    space.trials()?;
    let refuse = |what: String| {
        anyhow::anyhow!(
            "{} holds a sweep started with another {what}; a sweep folder continues only its own sweep (rerun without --space to continue it as recorded): choose another --out for the new sweep",
            a.out.display()
        )
    };
    if space.to_json_string() != rec.space {
        return Err(refuse(format!("search space (recorded: {})", rec.space)));
    }
    let base = train_config(a.model.resolve()?, a.model.head, &a.data, &a.plan, &a.lp)?;
    let recorded: serde_json::Value = serde_json::from_str(&serde_json::to_string(&rec.base)?)?;
    let diffs = base.differences_from(&recorded);
    if !diffs.is_empty() {
        return Err(refuse(format!("base configuration ({})", crate::run::config::describe_differences(&diffs))));
    }
    Ok(())
}
