//! `lowrank bench`: time a training step or inference batch on a random model; JSON on stdout.

use crate::bench::peak::fma_peak;
use crate::bench::{bench_config, gemm_ceiling, run as run_bench, Workload};
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

/// Refuses sizes that cannot run (zero, beyond the model's position table, more memory than the
/// machine has) before anything is allocated.
fn validate(a: &BenchArgs, w: &Workload) -> anyhow::Result<()> {
    let bad = |m: String| -> anyhow::Result<()> { Err(crate::error::Error::InvalidOption(m).into()) };
    for (flag, v) in [("--batch", a.batch), ("--seq", a.seq), ("--steps", a.steps)] {
        if v == 0 {
            return bad(format!("{flag} must be at least 1"));
        }
    }
    let big = |m: &str| format!("{m}; lower --batch / --seq");
    let rows = a.batch.checked_mul(a.seq).ok_or_else(|| crate::error::Error::InvalidOption(big("--batch × --seq overflows")))?;
    let memory = crate::guard::memory::check;
    if a.gemm {
        // Three matrices of up to rows × 3072 floats.
        let bytes = (rows as f64 * (768.0 + 3072.0) * 4.0 * 3.0).min(u64::MAX as f64) as u64;
        let est = crate::guard::memory::Estimate { bytes, parts: vec![(format!("GEMM operands for {rows} rows"), bytes)] };
        return Ok(memory("the GEMM benchmark", &est, "lower --batch / --seq")?);
    }
    let cfg = bench_config(&a.config)?;
    crate::guard::memory::check_config(&cfg, "the benchmark model")?;
    if cfg.vocab_size() < 2 {
        return bad(format!("the config's vocab_size is {}; a model needs at least 2 tokens", cfg.vocab_size()));
    }
    if a.task == "causal-lm" && cfg.decoder().is_none() {
        return bad(format!(
            "--task causal-lm times a decoder language model; --config {} is a {} encoder: drop --task, or use --config smollm2-135m",
            a.config,
            cfg.model_type()
        ));
    }
    if a.seq > cfg.max_positions() {
        return bad(format!(
            "--seq {} is more than the model's max_position_embeddings ({}): use --seq {} or less",
            a.seq,
            cfg.max_positions(),
            cfg.max_positions()
        ));
    }
    let zero = crate::model::Model::new(&cfg, crate::bench::bench_head(&cfg, a.task == "causal-lm"), 2);
    let plan = crate::bench::bench_plan(w)?;
    plan.lora.validate()?;
    if let Some(warning) = crate::guard::check_lora_rank(&zero, &plan)? {
        eprintln!("{warning}");
    }
    let est = if a.infer {
        crate::guard::memory::inference(&zero, a.batch, a.seq)
    } else {
        crate::guard::memory::training(&zero, &plan, a.batch, a.seq, 0)?
    };
    Ok(memory("this benchmark", &est, "lower --batch / --seq (or --lora-r)")?)
}

/// Runs `lowrank bench`.
pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let w = Workload {
        config: a.config.clone(),
        batch: a.batch,
        seq: a.seq,
        mode: a.mode,
        targets: a.targets.clone(),
        lora_r: a.lora_r,
        lora_alpha: a.lora_alpha,
        precision: a.precision.clone(),
        causal_lm: a.task == "causal-lm",
        steps: a.steps,
        warmup: a.warmup,
        seed: a.seed,
        infer: a.infer,
        dora: a.dora,
    };
    validate(&a, &w)?;
    if a.gemm {
        let points = gemm_ceiling(a.batch * a.seq, a.steps.max(3));
        let peak = fma_peak(a.steps.max(3));
        let bf16 = crate::ops::bf16::bench::gemm_rates(a.batch * a.seq, a.steps.max(3));
        outln!(
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
    outln!("{}", serde_json::to_string(&run_bench(&w)?)?);
    Ok(ExitCode::SUCCESS)
}
