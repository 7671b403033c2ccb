//! Golden parity of the decoders with transformers + PEFT: tiny random Llama (GQA, llama3 rope),
//! Qwen2 (q/k/v biases, tied embeddings) and GPT-2 (Conv1D, fused c_attn, learned positions)
//! models with LoRA (non-zero B), last-layers and full fine-tuning; logits, loss and every
//! trainable gradient must match the values PyTorch computed (tests/fixtures/golden, made by
//! scripts/golden/make_decoder_golden.py).

use lowrank::model::{Activations, HeadKind, Model, Pass};
use lowrank::ops::loss::cross_entropy;
use std::collections::BTreeSet;

mod common;

use common::golden::assert_close;

fn run_case(case: &str) {
    // The model with the case's weights, LoRA tensors and plan, and the case's batch: the same
    // builder the bf16 parity tests use.
    let (mut model, batch, _, file) = common::golden::build(case);
    let head = model.head_kind();
    let (b, t) = (file.tensors["input_ids"].shape[0], file.tensors["input_ids"].shape[1]);
    let mut acts = Activations::default();
    let labels: Vec<usize>;
    let loss;
    if head == HeadKind::Score {
        labels = file.tensors["labels"].i64.iter().map(|v| *v as usize).collect();
        let logits = model.forward(&batch, &mut acts, Pass::Eval).to_vec();
        let k = model.num_labels();
        assert_close(&format!("{case}: logits"), &logits, &file.tensors["logits"].f32, 0.0, 1e-5);
        let mut dlogits = vec![0.0; b * k];
        loss = cross_entropy(&mut dlogits, &logits, &labels, k);
        model.dlogits_mut(&mut acts).copy_from_slice(&dlogits);
        model.zero_grad();
        model.backward(&batch, &mut acts, Pass::Eval);
    } else {
        // common::golden::batch_of turned transformers' labels [B, T] into next-token targets.
        model.zero_grad();
        let stats = model.forward_loss(&batch, &mut acts, Pass::Eval);
        loss = stats.loss;
        // Logits at every real position, against transformers' [B, T, V].
        let Model::Decoder(d) = &model else { unreachable!() };
        let v = d.config.vocab_size;
        let all: Vec<usize> = (0..batch.n_tokens()).collect();
        let logits = d.lm_logits(acts.decoder_acts(), &all, true);
        let want = &file.tensors["logits"].f32;
        for (i, s) in batch.seqs.iter().enumerate() {
            for j in 0..s.valid {
                let got = &logits[(s.start + j) * v..(s.start + j + 1) * v];
                assert_close(&format!("{case}: logits[{i}, {j}]"), got, &want[(i * t + j) * v..(i * t + j + 1) * v], 0.0, 1e-5);
            }
        }
        labels = Vec::new();
        model.backward(&batch, &mut acts, Pass::Eval);
    }
    let _ = &labels;
    let want_loss = file.tensors["loss"].f32[0];
    assert!((loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0), "{case}: loss {loss} vs {want_loss}");

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
    llama_cls_lora => "llama-cls-lora",
    llama_cls_last_layers => "llama-cls-last-layers",
    llama_cls_full => "llama-cls-full",
    qwen2_cls_lora => "qwen2-cls-lora",
    gpt2_cls_lora => "gpt2-cls-lora",
    gpt2_cls_full => "gpt2-cls-full",
    llama_lm_lora => "llama-lm-lora",
    llama_lm_full => "llama-lm-full",
    qwen2_lm_lora => "qwen2-lm-lora",
    gpt2_lm_lora => "gpt2-lm-lora",
    gpt2_lm_full => "gpt2-lm-full",
}
