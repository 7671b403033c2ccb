//! bf16 parity with PyTorch: the tiny golden models (DistilBERT, BERT, Llama classification and
//! causal LM, with LoRA) run in lowrank's bf16 mode, against the same cases run under
//! `torch.autocast("cpu", dtype=torch.bfloat16)` (tests/fixtures/golden/bf16-*, made by
//! scripts/golden/make_bf16_golden.py).
//!
//! The tolerance, tensor by tensor: lowrank's bf16 result may differ from the exact (fp32) one by
//! at most twice what PyTorch's bf16 result differs from it, plus 1e-4 of its scale. Both modes
//! round the operands of the linear products to bf16 (8 significant bits) and differ in what else
//! they round — autocast also rounds every product's output to bf16, lowrank keeps outputs in f32 —
//! so their errors are of the same order, and lowrank's should not be the larger one. The check
//! also requires lowrank's bf16 result to differ from fp32 at all (the bf16 path really ran). It
//! runs on every CPU: the native AVX512_BF16 kernel where the CPU has it, else the portable one.

mod common;

use common::golden::{build, gradients, max_diff, read_case};
use lowrank::model::precision::Precision;
use lowrank::model::{Activations, HeadKind, Model, Pass};
use lowrank::ops::bf16::Kernel;

fn scale(v: &[f32]) -> f32 {
    v.iter().map(|x| x.abs()).fold(0.0f32, f32::max)
}

/// Checks one tensor: |lowrank bf16 − fp32| ≤ 2·|torch bf16 − fp32| + 1e-4·max|fp32|.
fn check(case: &str, what: &str, ours: &[f32], torch_bf16: &[f32], fp32: &[f32], worst: &mut f32) {
    let (d_ours, d_torch, s) = (max_diff(ours, fp32), max_diff(torch_bf16, fp32), scale(fp32));
    let bound = 2.0 * d_torch + 1e-4 * s;
    assert!(d_ours <= bound, "{case}: {what}: lowrank bf16 differs from fp32 by {d_ours:e}, PyTorch bf16 by {d_torch:e} (bound {bound:e})");
    *worst = worst.max(d_ours / d_torch.max(1e-12));
}

fn run(bf16_case: &str) {
    let (meta, want) = read_case(bf16_case);
    let source = meta["source_case"].as_str().unwrap();
    let (mut model, batch, _, _) = build(source);
    model.set_precision(Precision::Bf16, true);
    let mut acts = Activations::default();
    model.zero_grad();
    let stats = model.forward_loss(&batch, &mut acts, Pass::Eval);
    let mut worst = 0.0f32;
    let t = &want.tensors;
    let _logits: Vec<f32> = match &model {
        Model::Decoder(d) if model.head_kind() == HeadKind::Lm => {
            // [N, V] at the real rows, laid out as the fixture's [B, T, V] for those rows.
            let v = d.config.vocab_size;
            let all: Vec<usize> = (0..batch.n_tokens()).collect();
            let l = d.lm_logits(acts.decoder_acts(), &all, true);
            let steps = t["input_ids"].shape[1];
            let pick = |src: &[f32]| -> Vec<f32> {
                batch
                    .seqs
                    .iter()
                    .enumerate()
                    .flat_map(|(i, s)| (0..s.valid).flat_map(move |j| src[(i * steps + j) * v..(i * steps + j + 1) * v].to_vec()))
                    .collect()
            };
            check(bf16_case, "logits", &l, &pick(&t["logits"].f32), &pick(&t["fp32.logits"].f32), &mut worst);
            l
        }
        _ => {
            let l = model.forward(&batch, &mut acts, Pass::Eval).to_vec();
            check(bf16_case, "logits", &l, &t["logits"].f32, &t["fp32.logits"].f32, &mut worst);
            l
        }
    };
    check(bf16_case, "loss", &[stats.loss], &t["loss"].f32, &t["fp32.loss"].f32, &mut worst);
    model.backward(&batch, &mut acts, Pass::Eval);
    for (key, g) in gradients(&model) {
        let (b, f) = (&t[&key].f32, &t[&format!("fp32.{key}")].f32);
        check(bf16_case, &key, &g, b, f, &mut worst);
    }
    // The bf16 path really ran: the loss is not the fp32 one.
    let fp32_loss = t["fp32.loss"].f32[0];
    assert!((stats.loss - fp32_loss).abs() > 0.0, "{bf16_case}: bf16 loss equals the fp32 loss exactly");
    eprintln!("{bf16_case}: kernel {}, worst |lowrank bf16 − fp32| / |PyTorch bf16 − fp32| = {worst:.2}", Kernel::active().name());
}

#[test]
fn distilbert_lora_bf16() {
    run("bf16-distilbert-lora-peft");
}

#[test]
fn bert_lora_bf16() {
    run("bf16-bert-lora-peft");
}

#[test]
fn llama_cls_lora_bf16() {
    run("bf16-llama-cls-lora");
}

#[test]
fn llama_lm_lora_bf16() {
    run("bf16-llama-lm-lora");
}

/// Memory of bf16 decoder training: each layer keeps its MLP pre-activations (the largest items
/// of its cache) as bf16 bits, no f32 copy; an fp32 model keeps f32. The bf16 parity cases above
/// check the gradients that backward computes from them.
#[test]
fn a_bf16_decoder_keeps_its_mlp_pre_activations_as_bf16() {
    for precision in [Precision::Fp32, Precision::Bf16] {
        let (mut model, batch, _, _) = build("llama-cls-lora");
        model.set_precision(precision, true);
        let mut acts = Activations::default();
        model.zero_grad();
        model.forward_loss(&batch, &mut acts, Pass::Eval);
        let f = model.config().decoder().expect("a decoder").ffn_dim;
        let n = batch.n_tokens();
        let layers = &acts.decoder_acts().layers;
        assert_eq!(layers.len(), model.n_layers());
        for (i, l) in layers.iter().enumerate() {
            for (what, kept) in [("gate", &l.f1), ("up", &l.f2)] {
                if precision == Precision::Bf16 {
                    assert!(kept.in_bf16 && kept.f32.is_empty() && kept.bf16.len() >= n * f, "layer {i} {what}: not kept as bf16 alone");
                } else {
                    assert!(!kept.in_bf16 && kept.bf16.is_empty() && kept.f32.len() >= n * f, "layer {i} {what}: not kept as f32");
                }
            }
        }
        model.backward(&batch, &mut acts, Pass::Eval);
        assert!(gradients(&model).iter().all(|(_, g)| g.iter().all(|v| v.is_finite())));
    }
}
