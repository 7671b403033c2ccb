//! `lowrank train`: one fine-tuning run into a run folder.

use super::args::{train_config, DataArgs, LoopArgs, ModelArgs, PlanArgs};
use crate::run::TrainConfig;
use crate::train::{train, Outcome};
use clap::Args;
use serde_json::Value;
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
    if let Some(dir) = &a.adapter {
        let files = crate::adapter::read_adapter(dir)?;
        let l = files.lora_config();
        let scaling = format!("{:?}", l.scaling).to_lowercase();
        let mut from_adapter: Vec<(&str, Value)> = vec![
            ("lora_r", Value::from(l.r)),
            ("lora_alpha", Value::from(f64::from(l.alpha))),
            ("scaling", Value::from(scaling)),
            ("lora_dropout", Value::from(f64::from(l.dropout))),
        ];
        if let Some(list) = files.config.target_modules.as_array() {
            from_adapter.push(("target_modules", Value::Array(list.clone())));
        }
        for (name, value) in &from_adapter {
            crate::options::apply(&mut cfg, name, value)?;
        }
        cfg.validate()?;
    }
    cfg.init_adapter = a.adapter.clone();
    Ok(cfg)
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
            println!("{}", serde_json::to_string_pretty(&*s)?);
            super::log(&format!(
                "done: train {:.2}% / val {:.2}% / test {} (best epoch {}), {} trainable parameters, {:.1} examples/s; results in {}",
                100.0 * s.train_acc,
                100.0 * s.val_acc,
                s.test_acc.map_or("-".into(), |t| format!("{:.2}%", 100.0 * t)),
                s.best_epoch,
                s.trainable_params,
                s.examples_per_s,
                dir.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted { step } => {
            super::log(&format!("stopped after step {step}; continue with: lowrank train --resume {}", dir.display()));
            Ok(ExitCode::from(130))
        }
    }
}
