//! `lowrank compare`: the seed's comparison ([`crate::compare`]) from the command line.

use super::args::{train_config, DataArgs, LoopArgs, ModelArgs, PlanArgs};
use crate::compare::{compare, Compared};
use clap::Args;
use std::path::PathBuf;
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

/// Runs `lowrank compare`.
pub fn run(a: CompareArgs) -> anyhow::Result<ExitCode> {
    for (i, r) in a.runs.iter().enumerate() {
        anyhow::ensure!(!a.runs[..i].contains(r), "--runs names {r} twice; name each run once");
    }
    if let Some(p) = &a.eval_data {
        // Checked before the first run trains for minutes, not after.
        anyhow::ensure!(p.is_file(), "--eval-data {} is not a readable file; check the path", p.display());
    }
    let stop = super::interrupt_flag();
    let model = a.model.resolve()?;
    let decoder = crate::model::ModelConfig::load(&model)?.decoder().is_some();
    let config = |opts: &[(&'static str, serde_json::Value)]| {
        train_config(model.clone(), a.model.head, &a.data, &PlanArgs::default().with(opts), &a.lp)
    };
    match compare(&a.runs, decoder, &a.out, &config, a.eval_data.as_deref(), &stop, &super::log)? {
        Compared::Done(_, table) => {
            outln!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Compared::Interrupted { run, step } => {
            super::log(&format!("stopped in {run} after step {step}; rerun the same command to continue"));
            Ok(ExitCode::from(130))
        }
    }
}
