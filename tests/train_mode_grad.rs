//! The whole model's backward in training mode, dropout included, against central differences of
//! its own loss with the same dropout masks.
//!
//! Golden parity with PyTorch (tests/golden_parity.rs) runs in evaluation mode, where dropout is
//! off; this test covers what it cannot: every dropout site of the network (embeddings, attention
//! probabilities, attention output (BERT), feed-forward output, the head, LoRA's input) in the
//! backward pass. A training pass's masks are a pure function of (seed, step, site, index), so
//! the loss is a smooth function of the weights at fixed masks and can be differentiated
//! numerically: every trainable tensor, several coordinates each, Richardson-extrapolated central
//! differences (f64 arithmetic on the f32 forward) against the analytic gradient, within 1e-4 +
//! 1%. A wrong mask, scale or missing dropout in backward is off by 10–100% and fails; the f32
//! forward's rounding is ~3e-5. (The tight f64 checks of each layer's mathematics are the layer
//! tests, through `lowrank::ops::testing::check_gradient_f64`.)

use lowrank::data::batch::Batch;
use lowrank::lora::{LoraConfig, Scaling, SeedFlags, TargetModules};
use lowrank::model::{Activations, HeadKind, Model, ModelConfig, Pass};
use lowrank::ops::loss::cross_entropy;
use lowrank::ops::testing::within;
use lowrank::plan::{TrainMode, TrainPlan};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn config(model_type: &str) -> ModelConfig {
    let text = match model_type {
        "bert" => {
            r#"{"model_type": "bert", "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 16, "type_vocab_size": 2, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.25, "attention_probs_dropout_prob": 0.3, "classifier_dropout": 0.2, "layer_norm_eps": 1e-12}"#
        }
        _ => {
            r#"{"model_type": "distilbert", "vocab_size": 40, "dim": 16, "n_layers": 2, "n_heads": 2, "hidden_dim": 32,
            "max_position_embeddings": 16, "activation": "gelu", "dropout": 0.25, "attention_dropout": 0.3, "seq_classif_dropout": 0.2}"#
        }
    };
    ModelConfig::from_json_str(text).unwrap()
}

fn random_model(cfg: &ModelConfig, head: HeadKind, plan: &TrainPlan) -> Model {
    let mut m = Model::new(cfg, head, 3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let normal = Normal::new(0.0f32, 0.3).unwrap();
    for p in m.base_params_mut() {
        let ln = p.name.contains("LayerNorm") || p.name.contains("layer_norm");
        p.data.iter_mut().for_each(|v| {
            *v = if ln && p.name.ends_with("weight") { 1.0 + 0.2 * normal.sample(&mut rng) } else { normal.sample(&mut rng) }
        });
    }
    plan.apply(&mut m).unwrap();
    for lin in m.linears_mut() {
        if let Some(l) = lin.lora.as_mut() {
            l.b.data.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
        }
    }
    m
}

fn batch() -> Batch {
    let seqs: Vec<Vec<u32>> = vec![vec![2, 7, 9, 11, 3], vec![2, 15, 3], vec![2, 21, 5, 30, 8, 3]];
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let types: Vec<Vec<u32>> = seqs.iter().map(|s| (0..s.len()).map(|i| u32::from(i >= 2)).collect()).collect();
    let type_refs: Vec<&[u32]> = types.iter().map(Vec::as_slice).collect();
    Batch::pack_with_types(&refs, Some(&type_refs), &[2, 0, 1], None, 0)
}

fn loss(m: &Model, b: &Batch, pass: Pass) -> f64 {
    let logits = m.forward(b, &mut Activations::default(), pass).to_vec();
    let mut d = vec![0.0; logits.len()];
    cross_entropy(&mut d, &logits, &b.labels, m.num_labels()) as f64
}

/// (name, analytic gradient) of every trainable tensor at `pass`.
fn gradients(m: &mut Model, b: &Batch, pass: Pass) -> Vec<(String, Vec<f32>)> {
    let mut acts = Activations::default();
    let logits = m.forward(b, &mut acts, pass).to_vec();
    let mut d = vec![0.0; logits.len()];
    cross_entropy(&mut d, &logits, &b.labels, m.num_labels());
    m.dlogits_mut(&mut acts).copy_from_slice(&d);
    m.zero_grad();
    m.backward(b, &mut acts, pass);
    m.params().iter().filter_map(|p| p.grad.as_ref().map(|g| (p.name.clone(), g.clone()))).collect()
}

/// Compares every trainable tensor's gradient at `grad_pass` with differences of the loss at
/// `fd_pass`, at `per_tensor` coordinates each; returns the mismatches.
///
/// The forward runs in f32, so a difference quotient carries ~3e-5 of rounding noise (hence the
/// absolute floor of 1e-4), and DistilBERT's head has a ReLU, whose kink a step can cross. Each
/// coordinate is therefore differenced twice, Richardson-extrapolated at h and at h/2: where the
/// two estimates disagree the loss is not smooth at that scale there and the coordinate is not
/// used (a wrong backward does not make them disagree: they only see the forward). At most one
/// coordinate in ten may be set aside that way.
fn mismatches(m: &mut Model, grad_pass: Pass, fd_pass: Pass, per_tensor: usize) -> Vec<String> {
    let b = batch();
    let grads = gradients(m, &b, grad_pass);
    assert!(!grads.is_empty());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (h, atol, rtol) = (1e-2f32, 1e-4f64, 1e-2f64);
    let mut bad = Vec::new();
    let (mut checked, mut unsmooth) = (0, 0);
    for (t, (name, g)) in grads.iter().enumerate() {
        assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite gradient");
        let scale = g.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64;
        // The largest coordinate plus random ones.
        let mut coords: Vec<usize> =
            vec![g.iter().enumerate().fold((0, 0.0f32), |(bi, bv), (i, v)| if v.abs() > bv { (i, v.abs()) } else { (bi, bv) }).0];
        coords.extend((1..per_tensor).map(|_| rng.random_range(0..g.len())));
        for &i in &coords {
            let mut at = |delta: f32| {
                let mut params = m.params_mut();
                let p = params.iter_mut().filter(|p| p.grad.is_some()).nth(t).unwrap();
                let orig = p.data[i];
                p.data[i] = orig + delta;
                drop(params);
                let l = loss(m, &b, fd_pass);
                let mut params = m.params_mut();
                params.iter_mut().filter(|p| p.grad.is_some()).nth(t).unwrap().data[i] = orig;
                l
            };
            let mut richardson = |h: f32| {
                let (d1, d2) = (at(h) - at(-h), at(2.0 * h) - at(-2.0 * h));
                (8.0 * d1 - d2) / (12.0 * h as f64)
            };
            let (fd, fd_half) = (richardson(h), richardson(h / 2.0));
            if !within((fd - fd_half).abs(), 2.0 * atol + rtol * fd.abs()) {
                unsmooth += 1;
                continue;
            }
            let err = (fd - g[i] as f64).abs();
            if !within(err, atol + rtol * fd.abs().max(0.05 * scale)) {
                bad.push(format!("{name}[{i}]: analytic {} vs finite difference {fd:.6e}", g[i]));
            }
            checked += 1;
        }
    }
    assert!(checked >= 3 * grads.len().min(10), "only {checked} coordinates checked");
    assert!(unsmooth * 10 <= checked, "{unsmooth} coordinates set aside as not smooth, {checked} checked");
    bad
}

fn plans() -> Vec<(&'static str, TrainPlan)> {
    let every = TargetModules::Flags(SeedFlags { query: true, key: true, value: true, projection: true, mlp: true, head: true });
    vec![
        ("full", TrainPlan { mode: TrainMode::Full, ..Default::default() }),
        (
            "lora with input dropout",
            TrainPlan {
                lora: LoraConfig { r: 3, alpha: 4.0, scaling: Scaling::Peft, dropout: 0.35, ..Default::default() },
                targets: every,
                ..Default::default()
            },
        ),
        (
            // Frozen attention output and feed-forward: their inputs are not kept for backward.
            "lora on q and v",
            TrainPlan {
                lora: LoraConfig { r: 3, alpha: 4.0, scaling: Scaling::Peft, dropout: 0.2, ..Default::default() },
                targets: TargetModules::Flags(SeedFlags { query: true, value: true, head: true, ..Default::default() }),
                ..Default::default()
            },
        ),
    ]
}

#[test]
fn bf16_without_the_f32_copies_of_frozen_weights_computes_exactly_the_same() {
    use lowrank::ops::precision::Precision;
    let train = Pass::Train { seed: 11, step: 3 };
    for (arch, head) in [("bert", HeadKind::Bert), ("distilbert", HeadKind::DistilBert)] {
        for (what, plan) in plans() {
            let mut kept = random_model(&config(arch), head, &plan);
            kept.set_precision(Precision::Bf16, true);
            let mut released = kept.clone();
            let freed = released.release_packed_weights();
            let frozen = released.linears().iter().filter(|l| !l.weight.trainable()).count();
            assert_eq!(freed > 0, frozen > 0 && what != "full", "{arch} {what}: {freed} bytes freed");
            let b = batch();
            assert_eq!(loss(&kept, &b, train).to_bits(), loss(&released, &b, train).to_bits(), "{arch} {what}");
            let (g1, g2) = (gradients(&mut kept, &b, train), gradients(&mut released, &b, train));
            assert_eq!(g1.len(), g2.len());
            for ((n1, a), (_, b)) in g1.iter().zip(&g2) {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{arch} {what}: {n1} differs");
            }
            assert_eq!(kept.param_counts(), released.param_counts());
            if freed > 0 {
                let e = released.merge_lora().unwrap_err().to_string();
                assert!(e.contains("released") && e.contains("load the model again"), "{e}");
            }
        }
    }
}

#[test]
fn train_mode_backward_matches_finite_differences_with_fixed_masks() {
    let train = Pass::Train { seed: 11, step: 3 };
    for (arch, head) in [("bert", HeadKind::Bert), ("distilbert", HeadKind::DistilBert)] {
        for (what, plan) in plans() {
            let mut m = random_model(&config(arch), head, &plan);
            let b = batch();
            let (l_train, l_eval) = (loss(&m, &b, train), loss(&m, &b, Pass::Eval));
            assert!((l_train - l_eval).abs() > 1e-3, "{arch} {what}: dropout must change the loss ({l_train} vs {l_eval})");
            let bad = mismatches(&mut m, train, train, 8);
            assert!(bad.is_empty(), "{arch} {what}: {} mismatches:\n{}", bad.len(), bad.join("\n"));
        }
    }
}

#[test]
fn the_check_fails_when_backward_uses_other_masks() {
    // The same comparison with the gradient taken at another step's masks must fail: the check
    // sees the masks, so it would see a backward that regenerated them wrongly.
    let (what, plan) = plans().remove(0);
    let mut m = random_model(&config("bert"), HeadKind::Bert, &plan);
    let bad = mismatches(&mut m, Pass::Train { seed: 11, step: 4 }, Pass::Train { seed: 11, step: 3 }, 4);
    assert!(bad.len() > 10, "{what}: only {} mismatches with the wrong masks", bad.len());
    let bad = mismatches(&mut m, Pass::Eval, Pass::Train { seed: 11, step: 3 }, 4);
    assert!(bad.len() > 10, "{what}: only {} mismatches with no masks in backward", bad.len());
}
