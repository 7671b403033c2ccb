//! How much memory a job will need, estimated before it starts from the model's configuration and
//! the batch shape, and how much the machine has: a job that cannot fit is refused with both
//! figures instead of being killed by the kernel hours later.
//!
//! The estimate follows the buffer plan of [`crate::model`] (every activation a training step keeps
//! for backward, per token and layer, plus the attention probabilities, which grow with the square
//! of the sequence length), the parameters, their gradients and Adam moments, the copies made while
//! loading a checkpoint and while writing one. It is an upper bound of the steady state within a
//! small factor, meant to catch sizes that are off by orders of magnitude (a mistyped `--lora-r`,
//! `--max-length` or `--batch-size`, a corrupt config.json), not to pack a machine to the last byte.

use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};
use crate::plan::{TrainMode, TrainPlan};

/// The environment variable that caps what lowrank assumes the machine has (bytes, or with a
/// K / M / G / T suffix): for containers whose limit the kernel does not report, and for tests.
pub const LIMIT_VAR: &str = "LOWRANK_MEMORY_LIMIT";

/// Bytes as a short human figure ("18.7 GiB").
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    let units = [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in units {
        if bytes >= size {
            return format!("{:.1} {name}", b / size as f64);
        }
    }
    format!("{bytes} B")
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult as f64) as u64)
}

fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn cgroup_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let v1 = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok().and_then(|s| s.trim().parse::<u64>().ok());
    v2.or(v1).filter(|&l| l < (1 << 60))
}

/// The memory this machine (or container) has: the smallest of `LOWRANK_MEMORY_LIMIT`, the
/// cgroup limit and MemTotal. None when none can be read (the check is then skipped).
pub fn machine_memory() -> Option<u64> {
    let configured = std::env::var(LIMIT_VAR).ok().and_then(|s| parse_size(&s));
    [configured, cgroup_limit(), meminfo("MemTotal:")].into_iter().flatten().min()
}

/// Memory that is free now (MemAvailable), for a warning when a job fits the machine but not what
/// other processes leave.
pub fn available_now() -> Option<u64> {
    meminfo("MemAvailable:")
}

/// An estimate: the total and its parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Estimated peak bytes.
    pub bytes: u64,
    /// (part, bytes), for the message.
    pub parts: Vec<(String, u64)>,
}

impl Estimate {
    fn from_parts(parts: Vec<(String, f64)>) -> Estimate {
        let total: f64 = parts.iter().map(|(_, b)| b).sum();
        Estimate { bytes: to_u64(total), parts: parts.into_iter().map(|(n, b)| (n, to_u64(b))).collect() }
    }

    /// "weights 87.2 MiB, activations 1.2 GiB, ..."
    pub fn detail(&self) -> String {
        self.parts.iter().filter(|(_, b)| *b > 0).map(|(n, b)| format!("{n} {}", human(*b))).collect::<Vec<_>>().join(", ")
    }
}

fn to_u64(v: f64) -> u64 {
    if v.is_finite() && v < u64::MAX as f64 {
        v.max(0.0) as u64
    } else {
        u64::MAX
    }
}

/// Parameters of a model of this configuration, computed in f64 so that absurd configurations
/// cannot overflow (embeddings, every layer's linears and norms, a head of width C).
pub fn config_params(c: &ModelConfig) -> f64 {
    let (v, p, t) = (c.vocab_size() as f64, c.max_positions() as f64, c.type_vocab_size() as f64);
    let (d, l, f) = (c.dim() as f64, c.n_layers() as f64, c.ffn_dim() as f64);
    let layer = 4.0 * d * d + 4.0 * d + 2.0 * d * f + f + d + 4.0 * d;
    (v + p + t + 2.0) * d + l * layer + d * d + 4.0 * d
}

/// Refuses a configuration whose weights alone cannot fit, before anything is allocated.
pub fn check_config(c: &ModelConfig, what: &str) -> Result<()> {
    let weights = 4.0 * config_params(c);
    check(
        what,
        &Estimate::from_parts(vec![("weights".into(), weights)]),
        "check config.json (vocab_size, hidden size, layers, max_position_embeddings): is it the model's own?",
    )
}

/// Activation floats per token of one layer's forward caches, and of the attention probabilities
/// at sequence length `seq`.
fn per_token_layer(c: &ModelConfig, seq: f64) -> f64 {
    let (d, f, h) = (c.dim() as f64, c.ffn_dim() as f64, c.n_heads().max(1) as f64);
    8.0 * d + 2.0 * f + 4.0 + h * seq
}

/// LoRA parameters the plan would inject into `model` (which may be a zero model without LoRA),
/// and the sum of ranks over targeted layers (for the per-token cache x·A).
fn lora_size(model: &Model, plan: &TrainPlan) -> Result<(f64, f64)> {
    if plan.mode != TrainMode::Lora {
        return Ok((0.0, 0.0));
    }
    let picked = plan.targets.resolve(&model.linear_modules())?;
    let r = plan.lora.r as f64;
    let (mut params, mut ranks) = (0.0, 0.0);
    for (lin, pick) in model.linears().iter().zip(picked) {
        if pick {
            // A, B; DoRA's magnitude vector and lora_bias add one value per output.
            let per_out = plan.lora.dora as usize + plan.lora.bias as usize;
            params += r * (lin.in_dim() + lin.out_dim()) as f64 + (per_out * lin.out_dim()) as f64;
            ranks += r;
        }
    }
    Ok((params, ranks))
}

/// Trainable parameters (LoRA included) and all parameters the plan gives, counted without
/// allocating anything (as PyTorch counts them after injection).
pub fn param_counts(model: &Model, plan: &TrainPlan) -> Result<(f64, f64)> {
    let (lora, _) = lora_size(model, plan)?;
    let base: f64 = model.base_params().iter().map(|p| p.numel() as f64).sum();
    let head: f64 = match plan.mode {
        TrainMode::Full => base,
        TrainMode::LastLayers => model
            .linears()
            .iter()
            .filter(|l| matches!(l.role, crate::lora::Role::HeadHidden | crate::lora::Role::Classifier))
            .map(|l| l.base_params().map(|p| p.numel() as f64).sum::<f64>())
            .sum(),
        TrainMode::Lora => 0.0,
    };
    let saved: f64 = model
        .linears()
        .iter()
        .filter(|l| plan.mode != TrainMode::Full && plan.modules_to_save.iter().any(|m| crate::lora::targets::name_matches(&l.path, m)))
        .filter(|l| plan.mode != TrainMode::LastLayers || !matches!(l.role, crate::lora::Role::HeadHidden | crate::lora::Role::Classifier))
        .map(|l| l.base_params().map(|p| p.numel() as f64).sum::<f64>())
        .sum();
    Ok((lora + head + saved, base + lora))
}

/// The peak memory of a training run of `model` (a zero model without LoRA is enough) under
/// `plan`, with `batch` sequences of up to `seq` tokens, evaluation batches of `eval_batch`.
pub fn training(model: &Model, plan: &TrainPlan, batch: usize, seq: usize, eval_batch: usize) -> Result<Estimate> {
    let c = model.config();
    let (trainable, total) = param_counts(model, plan)?;
    let (_, ranks) = lora_size(model, plan)?;
    let (d, f, h, l, s) = (c.dim() as f64, c.ffn_dim() as f64, c.n_heads().max(1) as f64, c.n_layers() as f64, seq as f64);
    let train_tokens = batch as f64 * s;
    let per_token = l * per_token_layer(&c, s) + 2.0 * d + 2.0 + 8.0 * d + f + 2.0 * h * s + ranks + d.max(f);
    let train_acts = 4.0 * train_tokens * per_token;
    let eval_acts = 4.0 * eval_batch as f64 * s * (per_token_layer(&c, s) + 3.0 * d + 2.0 + h * s);
    let weights = 4.0 * total;
    Ok(Estimate::from_parts(vec![
        ("weights".into(), weights),
        ("loading".into(), (12.0 * total - weights).max(0.0)),
        ("gradients and Adam moments".into(), 12.0 * trainable),
        ("checkpoint writing".into(), 24.0 * trainable),
        (format!("activations for {batch} × {seq} tokens"), train_acts.max(eval_acts)),
    ]))
}

/// The peak memory of inference with `model` on batches of `batch` sequences of up to `seq` tokens.
pub fn inference(model: &Model, batch: usize, seq: usize) -> Estimate {
    let c = model.config();
    let total: f64 = model.params().iter().map(|p| p.numel() as f64).sum();
    let (d, h, s) = (c.dim() as f64, c.n_heads().max(1) as f64, seq as f64);
    let acts = 4.0 * batch as f64 * s * (per_token_layer(&c, s) + 3.0 * d + 2.0 + h * s);
    Estimate::from_parts(vec![
        ("weights".into(), 4.0 * total),
        ("loading".into(), 8.0 * total),
        (format!("activations for {batch} × {seq} tokens"), acts),
    ])
}

/// Refuses `estimate` when it exceeds the machine's memory, naming both figures and `fix`.
pub fn check(what: &str, estimate: &Estimate, fix: &str) -> Result<()> {
    let Some(have) = machine_memory() else { return Ok(()) };
    if estimate.bytes > have {
        return Err(Error::OutOfMemory {
            what: what.to_string(),
            needed: estimate.bytes,
            available: have,
            detail: estimate.detail(),
            fix: fix.to_string(),
        });
    }
    Ok(())
}

/// A warning when `estimate` fits the machine but not the memory free right now.
pub fn tight(estimate: &Estimate) -> Option<String> {
    let free = available_now()?;
    (estimate.bytes > free).then(|| {
        format!(
            "warning: this job needs about {} of memory and only {} is free now; it may be slow or killed if other processes keep theirs",
            human(estimate.bytes),
            human(free)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{SeedFlags, TargetModules};
    use crate::model::HeadKind;

    fn distilbert() -> Model {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/distilbert-base-uncased.config.json");
        Model::new(&ModelConfig::load(&p).unwrap(), HeadKind::DistilBert, 2)
    }

    #[test]
    fn counts_equal_those_after_injection_without_allocating() {
        let model = distilbert();
        let mlp = TargetModules::Flags(SeedFlags { query: true, value: true, mlp: true, ..Default::default() });
        let plans = [
            TrainPlan::default(),
            TrainPlan { targets: mlp, ..Default::default() },
            TrainPlan { mode: TrainMode::LastLayers, ..Default::default() },
            TrainPlan { mode: TrainMode::Full, ..Default::default() },
            TrainPlan { modules_to_save: vec!["classifier".into()], ..Default::default() },
        ];
        for plan in plans {
            let mut m = model.clone();
            plan.apply(&mut m).unwrap();
            let (t, n) = m.param_counts();
            assert_eq!(param_counts(&model, &plan).unwrap(), (t as f64, n as f64), "{plan:?}");
        }
        assert!((config_params(&model.config()) - model.params().iter().map(|p| p.numel()).sum::<usize>() as f64).abs() < 1e3 * 768.0);
    }

    #[test]
    fn estimates_grow_with_the_batch_and_the_square_of_the_length() {
        let model = distilbert();
        let plan = TrainPlan::default();
        let a = training(&model, &plan, 8, 128, 64).unwrap().bytes as f64;
        let b = training(&model, &plan, 16, 128, 64).unwrap().bytes as f64;
        assert!(b > a);
        // PyTorch measures 1.1 GB for DistilBERT, LoRA, batch 8 × 256 (README's table): same order.
        let c = training(&model, &plan, 8, 256, 64).unwrap().bytes;
        assert!(c > 500 << 20 && c < 8 << 30, "{}", human(c));
        let huge = TrainPlan { lora: crate::lora::LoraConfig { r: 100_000_000, ..Default::default() }, ..Default::default() };
        assert!(training(&model, &huge, 8, 128, 64).unwrap().bytes > 1 << 40);
    }

    #[test]
    fn refusal_names_both_figures() {
        let est = Estimate { bytes: u64::MAX / 2, parts: vec![("activations for 1 × 1 tokens".into(), u64::MAX / 2)] };
        let e = check("training", &est, "lower --batch-size").unwrap_err().to_string();
        assert!(e.contains("TiB") && e.contains("this machine has") && e.contains("lower --batch-size"), "{e}");
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1500"), Some(1500));
        assert_eq!(parse_size("x"), None);
        assert_eq!(human(1536), "1.5 KiB");
    }
}
