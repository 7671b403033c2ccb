//! `lowrank train`: one fine-tuning run into a run folder.

use super::args::{train_config, DataArgs, LoopArgs, ModelArgs, PlanArgs};
use crate::data::DataSource;
use crate::run::{Task, TrainConfig};
use crate::train::{train, Outcome};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `lowrank train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub lp: LoopArgs,
    /// What to learn: classification (labelled texts) or causal-lm (a decoder learns the replies
    /// of conversations, the completions of prompts, or texts). Default: causal-lm when the JSON
    /// Lines data has "messages", "prompt" / "completion", or "text" without a label; else
    /// classification.
    #[arg(long, value_name = "TASK")]
    pub task: Option<Task>,
    /// A Jinja chat template file for the conversations (causal-lm; default: the model's own,
    /// from tokenizer_config.json or the GGUF file).
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Causal-lm: train on every token (system and user turns, prompts and the template's markup
    /// too), not only on the assistant replies / completions.
    #[arg(long)]
    pub train_on_prompt: bool,
    /// Start from this adapter (PEFT folder): its LoRA layers and saved modules train further.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// The run folder to create.
    #[arg(long, value_name = "RUN_DIR", required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run (every other option is read from its config.json).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
}

/// Resolves the options into a run configuration. With `--adapter`, the adapter decides where
/// LoRA sits and its hyperparameters (applied through the option catalogue).
pub fn config(a: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let model = a.model.resolve()?;
    let mut cfg = train_config(model, a.model.head, &a.data, &a.plan, &a.lp)?;
    cfg.task = match a.task {
        Some(t) => t,
        None => detect_task(&cfg.data, &cfg.label_column)?,
    };
    cfg.chat_template = a.chat_template.clone();
    cfg.train_on_prompt = a.train_on_prompt;
    cfg.validate()?;
    if let Some(dir) = &a.adapter {
        let files = crate::adapter::read_adapter(dir)?;
        let overrides = files.overrides();
        let clash: Vec<String> = a
            .plan
            .0
             .0
            .iter()
            .filter(|(n, _)| overrides.iter().any(|(o, _)| o == n))
            .map(|(n, _)| format!("--{}", n.replace('_', "-")))
            .collect();
        anyhow::ensure!(
            clash.is_empty(),
            "{} would be replaced by the adapter's own setting (its adapter_config.json decides where LoRA sits and its r, alpha and scaling): drop {}, or train a new adapter without --adapter",
            clash.join(", "),
            if clash.len() == 1 { "it" } else { "them" }
        );
        for (name, value) in &overrides {
            crate::options::apply(&mut cfg, name, value)?;
        }
        cfg.validate()?;
    }
    cfg.init_adapter = a.adapter.clone();
    Ok(cfg)
}

/// The task the data calls for: causal-lm when the (training) file's first record is causal-LM
/// data (see [`crate::data::lm::causal_lm_shape`]), else classification.
pub fn detect_task(data: &DataSource, label_column: &str) -> anyhow::Result<Task> {
    let path = match data {
        DataSource::Split { path, .. } => path,
        DataSource::Files { train, .. } => train,
    };
    Ok(match crate::data::lm::causal_lm_shape(path, label_column)? {
        Some(shape) => {
            super::log(&format!("--task causal-lm: the first record is {}", shape.describe()));
            Task::CausalLm
        }
        None => Task::Classification,
    })
}

/// Runs `lowrank train`.
pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let stop = super::interrupt_flag();
    let (cfg, dir, resume) = match &a.resume {
        Some(dir) => {
            let mut ignored: Vec<String> =
                [&a.plan.0 .0, &a.lp.0 .0].iter().flat_map(|g| g.iter()).map(|(n, _)| format!("--{}", n.replace('_', "-"))).collect();
            for (flag, given) in [
                ("--model", a.model.model.is_some()),
                ("--data", a.data.data.is_some()),
                ("--train", a.data.train.is_some()),
                ("--adapter", a.adapter.is_some()),
            ] {
                if given {
                    ignored.push(flag.into());
                }
            }
            if !ignored.is_empty() {
                return Err(crate::error::Error::InvalidOption(format!(
                    "--resume continues the run exactly as its config.json says, so {} would be ignored: drop {}, or start a new run with --out",
                    ignored.join(", "),
                    if ignored.len() == 1 { "it" } else { "them" }
                ))
                .into());
            }
            (TrainConfig::default(), dir.clone(), true)
        }
        None => (config(&a)?, a.out.clone().expect("clap requires --out"), false),
    };
    let result = train(&cfg, &dir, resume, &stop, &super::log).map_err(|e| {
        // An I/O failure after start-up (a full disk while checkpointing, say) loses nothing the
        // last checkpoint holds: say how to go on.
        let io = matches!(e, crate::error::Error::Io { .. } | crate::error::Error::Data(crate::error::DataError::Write { .. }));
        let hint = if io && dir.join("config.json").exists() {
            format!("; the run folder keeps its last checkpoint: once fixed, continue with lowrank train --resume {}", dir.display())
        } else {
            String::new()
        };
        anyhow::Error::new(e).context(format!("training run {}{hint}", dir.display()))
    });
    match result? {
        Outcome::Finished(s) => {
            outln!("{}", serde_json::to_string_pretty(&*s)?);
            let result = match s.val_perplexity {
                Some(p) => format!(
                    "val loss {:.4} / perplexity {p:.3}{} (best epoch {}), {} trainable parameters, {:.0} tokens/s",
                    s.val_loss,
                    s.test_perplexity.map_or(String::new(), |t| format!(", test perplexity {t:.3}")),
                    s.best_epoch,
                    s.trainable_params,
                    s.tokens_per_s
                ),
                None => format!(
                    "train {:.2}% / val {:.2}% / test {} (best epoch {}), {} trainable parameters, {:.1} examples/s",
                    100.0 * s.train_acc,
                    100.0 * s.val_acc,
                    s.test_acc.map_or("-".into(), |t| format!("{:.2}%", 100.0 * t)),
                    s.best_epoch,
                    s.trainable_params,
                    s.examples_per_s
                ),
            };
            super::log(&format!("done: {result}; results in {}", dir.display()));
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted { step } => {
            super::log(&format!("stopped after step {step}; continue with: lowrank train --resume {}", dir.display()));
            Ok(ExitCode::from(130))
        }
    }
}
