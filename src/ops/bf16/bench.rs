//! GEMM rates of the engine's shapes in fp32 (`ops::gemm::matmul`, faer) and in bf16 (against a
//! packed weight and packed on the fly), beside the fp32 and bf16 arithmetic peaks, for
//! `lowrank bench --gemm` and `examples/bf16_gemm.rs`.
//!
//! Dimensions: `rows` tokens of a batch (batch × seq), `m`, `n`, `k` of each product; attention
//! products are per head (seq = 256, head dim 64), all heads of the batch run at once on the rayon
//! pool, each on one thread (`Threads::One`), as the engine runs them.

use super::{matmul, matmul_packed, Kernel, PackedB};
use crate::bench::peak::{fma_peak, FmaPeak};
use crate::ops::bf16::peak::{bf16_peak, Bf16Peak};
use crate::ops::gemm::{self, MatMut, MatRef, Threads};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// One product shape measured three ways.
#[derive(Clone, Debug, Serialize)]
pub struct GemmPoint {
    /// Model the shape comes from ("distilbert-base" or "smollm2-135m").
    pub model: &'static str,
    /// What the product is in the engine.
    pub what: &'static str,
    /// Rows of the output (per head for attention).
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Independent products run at once, each on one thread (attention heads); 1 = one product
    /// split over the pool.
    pub products: usize,
    /// fp32 GFLOP/s (faer through `ops::gemm::matmul`).
    pub fp32_gflops: f64,
    /// bf16 GFLOP/s against a right-hand operand packed beforehand (weights only).
    pub bf16_packed_gflops: Option<f64>,
    /// bf16 GFLOP/s with both operands packed on the fly.
    pub bf16_gflops: f64,
}

/// Everything `gemm_rates` measured.
#[derive(Clone, Debug, Serialize)]
pub struct GemmReport {
    /// The bf16 kernel that ran ("avx512bf16" or "portable").
    pub kernel: &'static str,
    /// rayon threads.
    pub threads: usize,
    /// Timed runs per rate (the median is reported), after one warm-up.
    pub reps: usize,
    /// fp32 FMA peak of the same threads.
    pub fp32_peak: Option<FmaPeak>,
    /// bf16 dot-product peak (None without AVX512_BF16).
    pub bf16_peak: Option<Bf16Peak>,
    /// The shapes.
    pub points: Vec<GemmPoint>,
}

/// A product shape: `a` stored transposed (`ta`: [k, m] in memory), `b` stored transposed (`tb`:
/// [n, k], a weight used as Wᵀ), whether `b` is a weight that can be packed at load time, and the
/// number of independent per-head products (0 = one product on the pool).
struct Shape {
    model: &'static str,
    what: &'static str,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    weight: bool,
    heads: usize,
}

fn shapes(rows: usize) -> Vec<Shape> {
    let heads = (rows / 256).max(1) * 12;
    let s = |model, what, m, n, k, ta, tb, weight| Shape { model, what, m, n, k, ta, tb, weight, heads: 0 };
    let (d, s2) = ("distilbert-base", "smollm2-135m");
    vec![
        s(d, "linear forward x·Wᵀ (768→768)", rows, 768, 768, false, true, true),
        s(d, "ffn forward x·Wᵀ (768→3072)", rows, 3072, 768, false, true, true),
        s(d, "ffn input gradient dy·W (3072→768)", rows, 768, 3072, false, false, true),
        s(d, "weight gradient dyᵀ·x (768×768)", 768, 768, rows, true, false, false),
        Shape { heads, ..s(d, "attention scores Q·Kᵀ per head", 256, 256, 64, false, true, false) },
        Shape { heads, ..s(d, "attention context P·V per head", 256, 64, 256, false, false, false) },
        s(d, "LoRA down x·Aᵀ (768→8)", rows, 8, 768, false, true, true),
        s(d, "LoRA up h·Bᵀ (8→768)", rows, 768, 8, false, true, true),
        s(s2, "attention x·Wᵀ (576→576)", rows, 576, 576, false, true, true),
        s(s2, "k/v projection x·Wᵀ (576→192)", rows, 192, 576, false, true, true),
        s(s2, "mlp up/gate x·Wᵀ (576→1536)", rows, 1536, 576, false, true, true),
        s(s2, "mlp down x·Wᵀ (1536→576)", rows, 576, 1536, false, true, true),
        s(s2, "LM head x·Wᵀ (576→49152), 512 rows", 512, 49152, 576, false, true, true),
    ]
}

/// Median seconds of `reps` timed calls of `f` after one warm-up call.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    t[t.len() / 2]
}

/// `data` as [rows, cols], stored transposed ([cols, rows] row-major) when `t`.
fn view(data: &[f32], rows: usize, cols: usize, t: bool) -> MatRef<'_> {
    if t {
        MatRef::new(data, cols, rows).t()
    } else {
        MatRef::new(data, rows, cols)
    }
}

fn random(n: usize, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Measures every shape (DistilBERT-base and SmolLM2-135M at `rows` tokens, the LM head at 512)
/// `reps` times each way on the current rayon pool, plus both peaks.
pub fn gemm_rates(rows: usize, reps: usize) -> GemmReport {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let points = shapes(rows).iter().map(|s| measure(s, reps, &mut rng)).collect();
    GemmReport {
        kernel: Kernel::active().name(),
        threads: rayon::current_num_threads(),
        reps,
        fp32_peak: fma_peak(reps),
        bf16_peak: bf16_peak(reps),
        points,
    }
}

fn measure(s: &Shape, reps: usize, rng: &mut rand::rngs::StdRng) -> GemmPoint {
    let (m, n, k) = (s.m, s.n, s.k);
    let flop = 2.0 * (m * n * k) as f64 * s.heads.max(1) as f64;
    let rate = |secs: f64| flop / secs / 1e9;
    let mut point = GemmPoint {
        model: s.model,
        what: s.what,
        m,
        n,
        k,
        products: s.heads.max(1),
        fp32_gflops: 0.0,
        bf16_packed_gflops: None,
        bf16_gflops: 0.0,
    };
    if s.heads == 0 {
        let (a, b) = (random(m * k, rng), random(k * n, rng));
        let (av, bv) = (view(&a, m, k, s.ta), view(&b, k, n, s.tb));
        let mut out = vec![0.0f32; m * n];
        point.fp32_gflops = rate(median_secs(reps, || gemm::matmul(MatMut::new(&mut out, m, n), av, bv, 1.0, 0.0, Threads::Pool)));
        point.bf16_gflops = rate(median_secs(reps, || matmul(MatMut::new(&mut out, m, n), av, bv, 1.0, 0.0, Threads::Pool)));
        if s.weight {
            let packed = PackedB::new_with(bv, Threads::Pool);
            let secs = median_secs(reps, || matmul_packed(MatMut::new(&mut out, m, n), av, &packed, 1.0, 0.0, Threads::Pool));
            point.bf16_packed_gflops = Some(rate(secs));
        }
        return point;
    }
    // Per-head products: operands are head-column blocks of [seq, heads_per_batch·64] activations
    // (Q, K, V as the projections leave them) or a dense [seq, seq] probability matrix per head.
    let (seq, dh, hpb) = (256usize, 64usize, 12usize);
    let batches = s.heads / hpb;
    let width = hpb * dh;
    let act = random(batches * seq * width, rng);
    let probs = random(s.heads * seq * seq, rng);
    let mut outs: Vec<Vec<f32>> = (0..s.heads).map(|_| vec![0.0f32; m * n]).collect();
    let head_block = |h: usize| MatRef::cols_of(&act[(h / hpb) * seq * width..], seq, width, (h % hpb) * dh, dh);
    let operands = |h: usize| -> (MatRef<'_>, MatRef<'_>) {
        if s.k == dh {
            (head_block(h), head_block((h + 1) % s.heads).t()) // Q·Kᵀ
        } else {
            (MatRef::new(&probs[h * seq * seq..(h + 1) * seq * seq], seq, seq), head_block(h))
            // P·V
        }
    };
    let mut run = |f: &(dyn Fn(MatMut<'_>, MatRef<'_>, MatRef<'_>) + Sync)| {
        median_secs(reps, || {
            outs.par_iter_mut().enumerate().for_each(|(h, o)| {
                let (a, b) = operands(h);
                f(MatMut::new(o, m, n), a, b)
            })
        })
    };
    point.fp32_gflops = rate(run(&|o, a, b| gemm::matmul(o, a, b, 1.0, 0.0, Threads::One)));
    point.bf16_gflops = rate(run(&|o, a, b| matmul(o, a, b, 1.0, 0.0, Threads::One)));
    point
}
