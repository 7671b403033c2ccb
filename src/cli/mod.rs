//! The `lowrank` command line: one file per subcommand; parse, resolve into the library's
//! configuration types, run, print.

pub mod args;
pub mod bench;
pub mod compare;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod predict;
pub mod sweep;
pub mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// LoRA fine-tuning of transformer encoders (DistilBERT, BERT) on the CPU.
#[derive(Parser, Debug)]
#[command(name = "lowrank", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fine-tune a model on labelled text, or a decoder as a causal LM on conversations, prompt /
    /// completion pairs or texts (LoRA, last layers, or full); resumable.
    Train(train::TrainArgs),
    /// Evaluate a trained run on another file: a classifier's accuracy, a causal LM's loss and
    /// perplexity (also a base decoder's, with --model).
    Eval(eval::EvalArgs),
    /// The seed's comparison: last-layers, LoRA default, LoRA best, full fine-tuning.
    Compare(compare::CompareArgs),
    /// Show the module tree and parameter counts (a config.json is enough).
    Inspect(inspect::InspectArgs),
    /// Classify texts with a model and optional adapters.
    Predict(predict::PredictArgs),
    /// Generate text with a decoder (and adapters): greedy or sampled, streamed, with a KV cache.
    Generate(generate::GenerateArgs),
    /// Write a run's adapter (PEFT format) or full model to a folder.
    Export(export::ExportArgs),
    /// Merge an adapter into its base model and write a full Hugging Face model folder.
    Merge(export::MergeArgs),
    /// Time a training step (or inference) on a randomly initialised model; prints JSON.
    Bench(bench::BenchArgs),
    /// Hyperparameter sweep: every trial a train run; SQLite or PostgreSQL trial storage.
    Sweep(sweep::SweepArgs),
    /// Leaderboard, CSV and pictures of a sweep.
    SweepReport(sweep::ReportArgs),
}

/// A flag set by Ctrl-C (the first press asks the run to checkpoint and stop; a second exits).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("\nlowrank: interrupted again, exiting now");
            std::process::exit(130);
        }
        eprintln!("\nlowrank: interrupt received: writing a checkpoint and stopping (Ctrl-C again to exit at once)");
    });
    flag
}

/// Prints a line to stderr (progress and warnings; stdout is kept for results).
pub fn log(line: &str) {
    eprintln!("{line}");
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().map_err(|e| anyhow::anyhow!("cannot set --threads: {e}"))?;
    }
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Export(a) => export::run_export(a),
        Command::Merge(a) => export::run_merge(a),
        Command::Bench(a) => bench::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::SweepReport(a) => sweep::report(a),
    }
}
