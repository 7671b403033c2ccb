//! The `lowrank` command line: one file per subcommand; parse, resolve into the library's
//! configuration types, run, print.

/// `print!` to [`stdout`]: a closed pipe is an error returned with `?`, never a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!($crate::cli::stdout(), $($arg)*)?;
    }};
}

/// `println!` to [`stdout`]: a closed pipe is an error returned with `?`, never a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!($crate::cli::stdout(), $($arg)*)?;
    }};
}

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

/// LoRA fine-tuning on the CPU: encoders (BERT, DistilBERT) and decoders (Llama, Qwen2, Mistral,
/// GPT-2; Hugging Face folders or GGUF files), with PEFT-compatible adapters.
#[derive(Parser, Debug)]
#[command(name = "lowrank", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads (default, or 0: all cores).
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

/// A flag set by Ctrl-C, and by SIGTERM and SIGHUP (`kill`, `timeout`, `docker stop`, a closed
/// terminal): the first signal asks the run to checkpoint and stop; a second exits at once.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("\nlowrank: interrupted again, exiting now");
            std::process::exit(130);
        }
        eprintln!("\nlowrank: interrupt or termination signal received: writing a checkpoint and stopping (Ctrl-C again to exit at once)");
    });
    flag
}

/// Standard output, where results go: a write to a closed pipe (`lowrank inspect | head`) fails
/// with an error marked [`StdoutClosed`] (which `main` ends on quietly) instead of the panic of
/// `print!`.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// Locked standard output whose broken-pipe errors carry [`StdoutClosed`].
pub struct Stdout(std::io::StdoutLock<'static>);

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

fn mark_closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

/// The reader of lowrank's standard output went away (`| head`): not a failure of the command.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether `e` comes from writing to a closed standard output.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).is_some_and(|inner| inner.is::<StdoutClosed>()))
}

/// Prints a line to stderr (progress and warnings; stdout is kept for results).
pub fn log(line: &str) {
    eprintln!("{line}");
}

/// The most worker threads `--threads` takes: 8 per core, at least 64 (more only slows the
/// products down, and a huge count would spend minutes starting threads).
pub fn max_threads() -> usize {
    (8 * std::thread::available_parallelism().map_or(1, |n| n.get())).max(64)
}

fn check_threads(n: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        n <= max_threads(),
        "--threads {n} is far more than this machine's {cores} cores: give at most {} (leave it out to use all cores)",
        max_threads()
    );
    Ok(())
}

/// Refuses an encoder where a command needs a decoder language model: "`what` (llama, qwen2,
/// mistral, gpt2); BASE is a bert encoder: `instead`".
fn require_decoder(base: &std::path::Path, what: &str, instead: &str) -> anyhow::Result<()> {
    let config = crate::model::ModelConfig::load(base)?;
    anyhow::ensure!(
        config.decoder().is_some(),
        "{what} (llama, qwen2, mistral, gpt2); {} is a {} encoder: {instead}",
        base.display(),
        config.model_type()
    );
    Ok(())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(n) = cli.threads.filter(|&n| n != 0) {
        check_threads(n)?;
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| anyhow::anyhow!("cannot set --threads: {e}"))?;
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
