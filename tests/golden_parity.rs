//! Golden parity with PyTorch: tiny random DistilBERT and BERT models with LoRA (non-zero B),
//! last-layers and full fine-tuning; logits, loss and every trainable gradient must match the
//! values transformers + PEFT computed (tests/fixtures/golden, made by scripts/golden/make_golden.py).

mod common;

use lowrank::model::{Activations, Pass};
use lowrank::ops::loss::cross_entropy;
use std::collections::BTreeSet;

/// Largest |a - b| must be within `rtol` of the largest |b| (plus a tiny floor for all-zero
/// tensors); a NaN or infinity on either side fails ([`lowrank::ops::testing::compare`]).
use lowrank::ops::testing::assert_close;

fn run_case(case: &str) {
    // The model with the case's weights, LoRA tensors and plan, and its batch (tests/common/golden).
    let (mut model, batch, _, file) = common::golden::build(case);
    let b = file.tensors["input_ids"].shape[0];
    let labels: Vec<usize> = file.tensors["labels"].i64.iter().map(|v| *v as usize).collect();

    let mut acts = Activations::default();
    let logits = model.forward(&batch, &mut acts, Pass::Eval).to_vec();
    let k = model.num_labels();
    assert_close(&format!("{case}: logits"), &logits, &file.tensors["logits"].f32, 0.0, 1e-5);
    let mut dlogits = vec![0.0; b * k];
    let loss = cross_entropy(&mut dlogits, &logits, &labels, k);
    assert_close(&format!("{case}: loss"), &[loss], &file.tensors["loss"].f32, 0.0, 1e-5);
    model.dlogits_mut(&mut acts).copy_from_slice(&dlogits);
    model.zero_grad();
    model.backward(&batch, &mut acts, Pass::Eval);

    let mut checked = BTreeSet::new();
    for (key, g) in common::golden::gradients(&model) {
        let want = file.tensors.get(&key).unwrap_or_else(|| panic!("{case}: {key} trains here but not in PyTorch"));
        let atol = if key.ends_with(".A") || key.ends_with(".B") { 1e-7 } else { 1e-6 };
        assert_close(&format!("{case}: {key}"), &g, &want.f32, 1e-4, atol);
        checked.insert(key);
    }
    let expected: BTreeSet<String> = file.tensors.keys().filter(|k| k.starts_with("grad.")).cloned().collect();
    assert_eq!(checked, expected, "{case}: the set of trainable tensors differs from PyTorch's");
}

macro_rules! golden {
    ($($name:ident => $case:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            run_case($case);
        }
    )*};
}

golden! {
    distilbert_lora_raschka => "distilbert-lora-raschka",
    distilbert_lora_peft => "distilbert-lora-peft",
    distilbert_lora_rslora => "distilbert-lora-rslora",
    distilbert_last_layers => "distilbert-last-layers",
    distilbert_full => "distilbert-full",
    bert_lora_peft => "bert-lora-peft",
    bert_lora_raschka => "bert-lora-raschka",
    bert_last_layers => "bert-last-layers",
    bert_full => "bert-full",
    bert_as_distilbert_lora_raschka => "bert-as-distilbert-lora-raschka",
}
