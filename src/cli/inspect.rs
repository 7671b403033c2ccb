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
    let mut cfg = TrainConfig { seed: 0, ..TrainConfig::default() };
    cfg.plan.seed = 0;
    apply_options(&mut cfg, &a.plan.0 .0)?;
    cfg.plan.lora.validate()?;
    // Count from the configuration alone (nothing allocated), check the rank against the layers,
    // and refuse what would not fit before building anything.
    let config = crate::model::ModelConfig::load(&path)?;
    crate::guard::memory::check_config(&config, "this model")?;
    let config_file = if path.is_dir() { path.join("config.json") } else { path.clone() };
    let opts = LoadOptions { head: a.model.head, num_labels: Some(a.num_labels), seed: 0 };
    let (zero, _) = Model::from_pretrained(&config_file, &opts)?;
    // Targets that match no linear are reported by plan.apply below, with its own message (e.g.
    // DoRA on an embedding); the up-front checks run on every plan whose targets resolve.
    if cfg.plan.targets.resolve(&zero.linear_modules()).is_ok() {
        if let Some(w) = crate::guard::check_lora_rank(&zero, &cfg.plan)? {
            eprintln!("{w}");
        }
        let (_, estimated_total) = crate::guard::memory::param_counts(&zero, &cfg.plan)?;
        let bytes = 16 * estimated_total as u64;
        let weights = crate::guard::memory::Estimate { bytes, parts: vec![("weights and LoRA, loading".into(), bytes)] };
        crate::guard::memory::check("inspecting this model", &weights, "check the model's config.json and --lora-r")?;
    }
    drop(zero);
    let (mut model, _) = Model::from_pretrained(&path, &opts)?;
    let injected = cfg.plan.apply(&mut model)?;
    // Exact counts of what was built (rank / alpha patterns, layers_to_transform, DoRA included).
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
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        out!("{}", model.module_tree());
        outln!(
            "\ntrainable params: {} || all params: {} || trainable%: {:.4}",
            group(trainable),
            group(total),
            100.0 * trainable as f64 / total as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}
