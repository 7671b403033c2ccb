//! Where a decoding step's time goes: one token through SmolLM2 (or any decoder) with the key/value
//! cache, split into the layers' linear products, the output projection (the vocabulary-sized
//! product) and the rest (attention over the cache, norms, rotary, SwiGLU, embedding, thread
//! hand-offs). Prints one JSON object.
//!
//! Usage: `cargo run --release --example generate_profile -- MODEL [fp32|bf16 [STEPS [THREADS]]]`
//! (defaults fp32, 64 steps after a 37-token prefill, 2 threads).

use lowrank::infer::generate::{decoder_of, step, KvCache, Rows, StepBuffers};
use lowrank::model::precision::Precision;
use lowrank::model::{HeadKind, LoadOptions, Model};
use lowrank::ops::dropout::Dropout;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model_path = args.get(1).expect("usage: generate_profile MODEL [fp32|bf16 [STEPS [THREADS]]]");
    let precision = match args.get(2).map(String::as_str) {
        Some("bf16") => Precision::Bf16,
        _ => Precision::Fp32,
    };
    let steps: usize = args.get(3).map_or(64, |s| s.parse().expect("a number"));
    let threads: usize = args.get(4).map_or(2, |s| s.parse().expect("a number"));
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("rayon pool");
    let opts = LoadOptions { head: Some(HeadKind::Lm), num_labels: None, seed: 0 };
    let (mut model, _) = Model::from_pretrained(std::path::Path::new(model_path), &opts).expect("model");
    model.set_precision(precision, false);
    let d = decoder_of(&model).expect("a decoder");
    let (c, v) = (d.config.dim, d.config.vocab_size);
    let prompt: Vec<u32> = (0..37).map(|i| (i * 131 + 7) % v as u32).collect();
    let mut cache = KvCache::new(d.layers.len(), d.config.kv_dim(), prompt.len() + steps + 1);
    let mut buf = StepBuffers::default();
    step(d, &mut cache, &prompt, Rows::Last, &mut buf).expect("prefill");
    // Whole steps.
    let t = Instant::now();
    let mut id = 1u32;
    for _ in 0..steps {
        let logits = step(d, &mut cache, &[id], Rows::Last, &mut buf).expect("step");
        id = lowrank::infer::generate::argmax(logits);
    }
    let step_s = t.elapsed().as_secs_f64() / steps as f64;
    // The output projection alone.
    let x = vec![0.01f32; c];
    let mut logits = vec![0.0f32; v];
    let t = Instant::now();
    for _ in 0..steps {
        d.lm_head_forward(&mut logits, &x, 1);
    }
    let head_s = t.elapsed().as_secs_f64() / steps as f64;
    // Every layer's linear products alone, one row each.
    let (mut h, mut xd) = (Vec::new(), Vec::new());
    let lins: Vec<_> = d.layers.iter().flat_map(|l| l.linears()).collect();
    let inputs: Vec<Vec<f32>> = lins.iter().map(|l| vec![0.01f32; l.in_dim()]).collect();
    let mut outs: Vec<Vec<f32>> = lins.iter().map(|l| vec![0.0f32; l.out_dim()]).collect();
    let t = Instant::now();
    for _ in 0..steps {
        for ((l, x), y) in lins.iter().zip(&inputs).zip(outs.iter_mut()) {
            l.forward(y, &mut h, x, &mut xd, 1, Dropout::OFF);
        }
    }
    let linear_s = t.elapsed().as_secs_f64() / steps as f64;
    let bytes = |n: usize| n * if precision == Precision::Bf16 { 2 } else { 4 };
    let layer_params: usize = lins.iter().map(|l| l.in_dim() * l.out_dim()).sum();
    let report = serde_json::json!({
        "model": model_path, "precision": format!("{precision:?}").to_lowercase(), "threads": threads,
        "steps": steps, "context_after": cache.len(),
        "step_ms": step_s * 1e3, "tokens_per_s": 1.0 / step_s,
        "layer_linears_ms": linear_s * 1e3, "output_projection_ms": head_s * 1e3,
        "rest_ms": (step_s - linear_s - head_s) * 1e3,
        "layer_linears_gb_per_s": bytes(layer_params) as f64 / linear_s / 1e9,
        "output_projection_gb_per_s": bytes(v * c) as f64 / head_s / 1e9,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
}
