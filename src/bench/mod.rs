//! Benchmarks: a training step (or an inference batch) on a randomly initialised model built
//! from a config, timed forward / backward / optimizer, with the analytic FLOP count, and the
//! GEMM ceiling of the same machine and its fp32 arithmetic peak (`peak`), so the gap to the
//! physical limit is a number.

pub mod peak;

use crate::data::batch::{Batch, IGNORE};
use crate::error::{Error, Result};
use crate::lora::{LoraConfig, Role, Scaling, SeedFlags, TargetModules};
use crate::model::precision::{kernel_name, PrecisionChoice};
use crate::model::{Activations, Arch, HeadKind, Model, ModelConfig, Pass};
use crate::ops::gemm::{matmul, MatMut, MatRef, Threads};
use crate::optim::{Adam, OptimizerConfig};
use crate::plan::{TrainMode, TrainPlan};
use crate::train::Stepper;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::Serialize;
use std::time::Instant;

/// A built-in model shape, or a path to a config.json.
pub fn bench_config(name: &str) -> Result<ModelConfig> {
    let text = match name {
        "distilbert-base" => include_str!("../../bench/configs/distilbert-base.json").to_string(),
        "bert-base" => include_str!("../../bench/configs/bert-base.json").to_string(),
        "minilm-l6" => include_str!("../../bench/configs/minilm-l6.json").to_string(),
        "smollm2-135m" => include_str!("../../bench/configs/smollm2-135m.json").to_string(),
        path if !std::path::Path::new(path).exists() => {
            return Err(Error::InvalidOption(format!(
                "--config {path}: no such preset or file; the presets are distilbert-base, bert-base, minilm-l6 and smollm2-135m, or pass a config.json path"
            )))
        }
        path => std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?,
    };
    ModelConfig::from_json_str(&text)
}

/// What to time.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Config name or path.
    pub config: String,
    /// Examples per step.
    pub batch: usize,
    /// Tokens per example (every example full length).
    pub seq: usize,
    /// lora, last-layers or full.
    pub mode: TrainMode,
    /// "qv" or "all".
    pub targets: String,
    /// LoRA rank.
    pub lora_r: usize,
    /// LoRA alpha.
    pub lora_alpha: f32,
    /// fp32, bf16 or auto (as `--precision` of train).
    pub precision: String,
    /// Train a decoder's language-model head (next-token loss on every token) instead of a
    /// classification head.
    pub causal_lm: bool,
    /// Timed steps.
    pub steps: usize,
    /// Untimed warm-up steps.
    pub warmup: usize,
    /// Seed of the weights and inputs.
    pub seed: u64,
    /// Time inference (merged weights, no caches) instead of training.
    pub infer: bool,
    /// DoRA instead of plain LoRA (the magnitude trains too; row norms once per step per layer).
    pub dora: bool,
}

/// Median, min and max.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

fn stats(v: &[f64]) -> Stats {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let median = if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        0.5 * (s[s.len() / 2 - 1] + s[s.len() / 2])
    };
    Stats { median, min: *s.first().unwrap_or(&0.0), max: *s.last().unwrap_or(&0.0) }
}

/// Peak resident set size of this process in MiB (Linux VmHWM).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Analytic matrix-product FLOPs of one training step (or one inference forward): per layer
/// 2·N·C²·4 (q, k, v, o) + 2·N·C·F·2 (feed-forward) + 2·B·T²·C·2 (scores, context); the head
/// 2·B·(C² + C·K); LoRA 2·N·r·(in + out) per targeted linear. Backward costs 1× forward for
/// frozen linears (input gradient only), 2× for trained base linears, attention and LoRA; DoRA
/// adds its row norms (2·O·I·r + 2·I·r² per layer, forward only). Element-wise work is not counted.
pub fn analytic_flops(model: &Model, batch: usize, seq: usize, train: bool) -> f64 {
    let c = model.dim() as f64;
    let (b, t) = (batch as f64, seq as f64);
    let n = b * t;
    let mut fwd = 0.0;
    let mut bwd = 0.0;
    for lin in model.linears() {
        let rows = if matches!(lin.role, Role::HeadHidden | Role::Classifier) { b } else { n };
        let base = 2.0 * rows * lin.in_dim() as f64 * lin.out_dim() as f64;
        fwd += base;
        bwd += if lin.weight.trainable() { 2.0 * base } else { base };
        if let Some(l) = &lin.lora {
            let lf = 2.0 * rows * l.rank() as f64 * (lin.in_dim() + lin.out_dim()) as f64;
            fwd += lf;
            bwd += 2.0 * lf;
            if l.dora.is_some() {
                // DoRA's row norms: W₀·A [O, r] and AᵀA [r, r], once per forward.
                let (i, o, r) = (lin.in_dim() as f64, lin.out_dim() as f64, l.rank() as f64);
                fwd += 2.0 * o * i * r + 2.0 * i * r * r;
            }
        }
    }
    let attn = model.n_layers() as f64 * 2.0 * b * t * t * c * 2.0;
    fwd += attn;
    bwd += 2.0 * attn;
    if train {
        fwd + bwd
    } else {
        fwd
    }
}

/// The JSON printed by `lowrank bench`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// "lowrank".
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Version of lowrank.
    pub version: String,
    /// The workload.
    #[serde(flatten)]
    pub workload: Workload,
    /// Rayon threads.
    pub threads: usize,
    /// Seconds per step.
    pub step_s: Stats,
    /// Median forward seconds (loss included).
    pub forward_s: f64,
    /// Median backward seconds (None for inference).
    pub backward_s: Option<f64>,
    /// Median optimizer seconds (None for inference).
    pub optimizer_s: Option<f64>,
    /// Examples per second at the median.
    pub examples_per_s: f64,
    /// Tokens per second at the median.
    pub tokens_per_s: f64,
    /// Analytic GFLOP per step.
    pub gflop_per_step: f64,
    /// GFLOP/s at the median.
    pub gflops: f64,
    /// Peak resident memory, MiB.
    pub peak_rss_mb: f64,
    /// The kernel of the base weights' products ("fp32", "avx512bf16", "portable").
    pub kernel: String,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// All parameters.
    pub total_params: usize,
    /// Processor model.
    pub cpu: String,
    /// When.
    pub date: String,
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_default()
}

/// What trains in the workload: LoRA (PEFT scaling) on query + value or on every encoder linear,
/// or the mode's parameters.
pub fn bench_plan(w: &Workload) -> Result<TrainPlan> {
    let flags = match w.targets.as_str() {
        "qv" => SeedFlags::query_value(),
        "all" => SeedFlags { query: true, key: true, value: true, projection: true, mlp: true, head: false },
        other => return Err(Error::InvalidOption(format!("--targets {other:?}: use qv or all"))),
    };
    Ok(TrainPlan {
        mode: w.mode,
        lora: LoraConfig { r: w.lora_r, alpha: w.lora_alpha, scaling: Scaling::Peft, dora: w.dora, ..Default::default() },
        targets: TargetModules::Flags(flags),
        modules_to_save: vec![],
        seed: w.seed,
        patterns: Default::default(),
    })
}

/// The benchmark model's head: the architecture's classification head, or the causal-LM head.
pub fn bench_head(cfg: &ModelConfig, causal_lm: bool) -> HeadKind {
    match cfg {
        _ if causal_lm => HeadKind::Lm,
        ModelConfig::Encoder(e) if e.arch == Arch::Bert => HeadKind::Bert,
        ModelConfig::Encoder(_) => HeadKind::DistilBert,
        ModelConfig::Decoder(_) => HeadKind::Score,
    }
}

/// Builds the benchmark model: random N(0, 0.02) weights, LayerNorm γ = 1, what trains per the workload.
pub fn bench_model(w: &Workload) -> Result<Model> {
    let cfg = bench_config(&w.config)?;
    let mut model = Model::new(&cfg, bench_head(&cfg, w.causal_lm), 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(w.seed);
    let normal = Normal::new(0.0f32, 0.02).expect("valid");
    for p in model.base_params_mut() {
        let lower = p.name.to_lowercase();
        if !lower.contains("norm") && !lower.contains("ln_") {
            p.data.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
        }
    }
    let plan = bench_plan(w)?;
    plan.apply(&mut model)?;
    // Non-zero B, as after some training.
    for lin in model.linears_mut() {
        if let Some(l) = lin.lora.as_mut() {
            l.b.data.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
        }
    }
    Ok(model)
}

/// Runs the workload and returns its timings.
pub fn run(w: &Workload) -> Result<BenchResult> {
    let precision = w.precision.parse::<PrecisionChoice>()?.resolve()?;
    let mut model = bench_model(w)?;
    if w.infer {
        // Inference runs on merged weights: the LoRA layers are gone.
        model.merge_lora()?;
        for lin in model.linears_mut() {
            lin.lora = None;
        }
    }
    model.set_precision(precision, !w.infer);
    model.release_packed_weights(); // as `train` does
    let vocab = model.vocab_size();
    let mut rng = rand::rngs::StdRng::seed_from_u64(w.seed ^ 1);
    let seqs: Vec<Vec<u32>> =
        (0..w.batch).map(|_| (0..w.seq).map(|_| rng.random_range(1000.min(vocab as u32 - 1)..vocab as u32)).collect()).collect();
    let labels: Vec<usize> = (0..w.batch).map(|i| i % 2).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let batch = if w.causal_lm {
        let targets: Vec<Vec<u32>> = seqs.iter().map(|s| s[1..].iter().copied().chain(std::iter::once(IGNORE)).collect()).collect();
        let trefs: Vec<&[u32]> = targets.iter().map(Vec::as_slice).collect();
        Batch::pack_lm(&refs, &trefs)
    } else {
        Batch::pack(&refs, &labels, None, 0)
    };
    let mut acts = Activations::default();
    let mut stepper = Stepper::default();
    let mut opt = Adam::new(OptimizerConfig::default());
    let (mut total, mut fwd, mut bwd, mut optim) = (vec![], vec![], vec![], vec![]);
    for step in 0..w.warmup + w.steps {
        if w.infer {
            let t0 = Instant::now();
            if w.causal_lm {
                model.forward_loss(&batch, &mut acts, Pass::Infer);
            } else {
                model.forward(&batch, &mut acts, Pass::Infer);
            }
            let dt = t0.elapsed().as_secs_f64();
            if step >= w.warmup {
                total.push(dt);
                fwd.push(dt);
            }
            continue;
        }
        // The training step itself: the one `lowrank train` runs.
        let pass = Pass::Train { seed: w.seed, step: step as u64 };
        let r = stepper.step(&mut model, &batch, pass, &mut opt, 5e-5, None)?;
        if step >= w.warmup {
            fwd.push(r.forward_s);
            bwd.push(r.backward_s);
            optim.push(r.optimizer_s);
            total.push(r.forward_s + r.backward_s + r.optimizer_s);
        }
    }
    let s = stats(&total);
    let gflop = analytic_flops(&model, w.batch, w.seq, !w.infer) / 1e9;
    let (trainable, all) = model.param_counts();
    Ok(BenchResult {
        implementation: "lowrank".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        workload: w.clone(),
        threads: rayon::current_num_threads(),
        forward_s: stats(&fwd).median,
        backward_s: (!w.infer).then(|| stats(&bwd).median),
        optimizer_s: (!w.infer).then(|| stats(&optim).median),
        examples_per_s: w.batch as f64 / s.median,
        tokens_per_s: (w.batch * w.seq) as f64 / s.median,
        gflop_per_step: gflop,
        gflops: gflop / s.median,
        step_s: s,
        peak_rss_mb: peak_rss_mb(),
        kernel: kernel_name(precision).into(),
        trainable_params: trainable,
        total_params: all,
        cpu: cpu_name(),
        date: iso_now(),
    })
}

fn iso_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// GFLOP/s of one product shape, median of `reps` runs.
#[derive(Clone, Debug, Serialize)]
pub struct GemmPoint {
    /// What the shape is in the workload.
    pub what: String,
    /// Rows of the output.
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Median GFLOP/s.
    pub gflops: f64,
}

/// The GEMM ceiling for the shapes of a DistilBERT-base step at `rows` tokens.
pub fn gemm_ceiling(rows: usize, reps: usize) -> Vec<GemmPoint> {
    let shapes = [
        ("linear forward x·Wᵀ (768→768)", rows, 768, 768, false, true),
        ("ffn forward x·Wᵀ (768→3072)", rows, 3072, 768, false, true),
        ("ffn input gradient dy·W (3072→768)", rows, 768, 3072, false, false),
        ("weight gradient dyᵀ·x (768×768)", 768, 768, rows, true, false),
        ("LoRA down x·A (768→8)", rows, 8, 768, false, false),
        ("LoRA up h·B (8→768)", rows, 768, 8, false, false),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    shapes
        .iter()
        .map(|&(what, m, n, k, ta, tb)| {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut out = vec![0.0f32; m * n];
            let av = if ta { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
            let bv = if tb { MatRef::new(&b, n, k).t() } else { MatRef::new(&b, k, n) };
            let mut times = Vec::new();
            for _ in 0..reps + 1 {
                let t = Instant::now();
                matmul(MatMut::new(&mut out, m, n), av, bv, 1.0, 0.0, Threads::Pool);
                times.push(t.elapsed().as_secs_f64());
            }
            let med = stats(&times[1..]).median;
            GemmPoint { what: what.into(), m, n, k, gflops: 2.0 * (m * n * k) as f64 / med / 1e9 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_workload_runs_and_reports() {
        let w = Workload {
            config: "minilm-l6".into(),
            batch: 2,
            seq: 8,
            mode: TrainMode::Lora,
            targets: "qv".into(),
            lora_r: 4,
            lora_alpha: 8.0,
            precision: "fp32".into(),
            causal_lm: false,
            steps: 1,
            warmup: 0,
            seed: 0,
            infer: false,
            dora: false,
        };
        let r = run(&w).unwrap();
        assert!(r.step_s.median > 0.0 && r.gflop_per_step > 0.0 && r.backward_s.is_some());
        assert_eq!(r.trainable_params, 6 * 2 * (384 * 4 * 2));
        let inf = run(&Workload { infer: true, ..w.clone() }).unwrap();
        assert!(inf.backward_s.is_none());
        assert!(run(&Workload { precision: "fp16".into(), ..w }).is_err());
    }

    #[test]
    fn frozen_backward_costs_less_than_trained() {
        let w = Workload {
            config: "minilm-l6".into(),
            batch: 2,
            seq: 8,
            mode: TrainMode::Lora,
            targets: "qv".into(),
            lora_r: 8,
            lora_alpha: 16.0,
            precision: "fp32".into(),
            causal_lm: false,
            steps: 1,
            warmup: 0,
            seed: 0,
            infer: false,
            dora: false,
        };
        let lora = analytic_flops(&bench_model(&w).unwrap(), 8, 256, true);
        let full = analytic_flops(&bench_model(&Workload { mode: TrainMode::Full, ..w }).unwrap(), 8, 256, true);
        assert!(lora < full);
    }
}
