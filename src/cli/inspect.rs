//! `lowrank inspect`: the module tree with LoRA where the options put it, and the trainable /
//! total parameter counts (a bare config.json is enough).

use super::args::{apply_options, ModelArgs, PlanArgs};
use crate::compare::group;
use crate::model::{LoadOptions, Model};
use crate::run::TrainConfig;
use clap::Args;
use std::process::ExitCode;

/// Options of `lowrank inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Number of classes of the head.
    #[arg(long, default_value_t = 2)]
    pub num_labels: usize,
    /// Print a JSON object (trainable_params, total_params, lora_modules, trainable_tensors).
    #[arg(long)]
    pub json: bool,
}

/// Runs `lowrank inspect`.
pub fn run(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let path = a.model.resolve()?;
    let (mut model, _) = Model::from_pretrained(&path, &LoadOptions { head: a.model.head, num_labels: Some(a.num_labels), seed: 0 })?;
    let mut cfg = TrainConfig { seed: 0, ..TrainConfig::default() };
    cfg.plan.seed = 0;
    apply_options(&mut cfg, &a.plan.0 .0)?;
    let injected = cfg.plan.apply(&mut model)?;
    let (trainable, total) = model.param_counts();
    if a.json {
        let tensors: Vec<&str> = model.params().into_iter().filter(|p| p.trainable()).map(|p| p.name.as_str()).collect();
        let out = serde_json::json!({
            "model_type": model.model_type(),
            "head": model.head_kind(),
            "trainable_params": trainable,
            "total_params": total,
            "trainable_percent": 100.0 * trainable as f64 / total as f64,
            "lora_modules": injected,
            "trainable_tensors": tensors,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", model.module_tree());
        println!(
            "\ntrainable params: {} || all params: {} || trainable%: {:.4}",
            group(trainable),
            group(total),
            100.0 * trainable as f64 / total as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}
