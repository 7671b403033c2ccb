//! `lowrank bench`: time a training step or inference batch on a random model; JSON on stdout.

use crate::bench::peak::fma_peak;
use crate::bench::{gemm_ceiling, run as run_bench, Workload};
use crate::plan::TrainMode;
use clap::Args;
use std::process::ExitCode;

/// Options of `lowrank bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model shape: distilbert-base, bert-base, minilm-l6, smollm2-135m, or a config.json path.
    #[arg(long, default_value = "distilbert-base")]
    pub config: String,
    /// Examples per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// lora, last-layers or full.
    #[arg(long, default_value = "lora")]
    pub mode: TrainMode,
    /// LoRA targets: qv (query + value) or all (every encoder linear).
    #[arg(long, default_value = "all")]
    pub targets: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f32,
    /// Precision: fp32, bf16 (needs AVX512_BF16) or auto.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Task: cls (sequence classification) or causal-lm (a decoder's next-token loss on every
    /// token, labels = the input ids, as bench/torch_reference.py --task causal-lm).
    #[arg(long, default_value = "cls", value_parser = ["cls", "causal-lm"])]
    pub task: String,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Warm-up steps.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Time inference (merged weights) instead of training.
    #[arg(long)]
    pub infer: bool,
    /// DoRA instead of plain LoRA (PEFT's use_dora): compare its step with LoRA's.
    #[arg(long)]
    pub dora: bool,
    /// Measure the GEMM ceiling for this workload's shapes, and the fp32 FMA peak, instead.
    #[arg(long)]
    pub gemm: bool,
}

/// Runs `lowrank bench`.
pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if a.gemm {
        let points = gemm_ceiling(a.batch * a.seq, a.steps.max(3));
        let peak = fma_peak(a.steps.max(3));
        let bf16 = crate::ops::bf16::bench::gemm_rates(a.batch * a.seq, a.steps.max(3));
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({
                "impl": "lowrank",
                "threads": rayon::current_num_threads(),
                "rows": a.batch * a.seq,
                "gemm": points,
                "fma_peak": peak,
                "bf16": bf16,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let w = Workload {
        config: a.config,
        batch: a.batch,
        seq: a.seq,
        mode: a.mode,
        targets: a.targets,
        lora_r: a.lora_r,
        lora_alpha: a.lora_alpha,
        precision: a.precision,
        causal_lm: a.task == "causal-lm",
        steps: a.steps,
        warmup: a.warmup,
        seed: a.seed,
        infer: a.infer,
        dora: a.dora,
    };
    println!("{}", serde_json::to_string(&run_bench(&w)?)?);
    Ok(ExitCode::SUCCESS)
}
