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

/// A decoder's last-layers run trains its last layer's norms and the final norm besides linears:
/// its adapter saves them whole (modules_to_save, as PEFT saves any module), and loading it onto
/// the untouched base gives the trained model's logits.
#[test]
fn a_last_layers_adapter_saves_the_trained_norms_and_reloads_exactly() {
    use lowrank::adapter::{load_into, save_adapter, AdapterInfo};
    let (mut trained, batch, meta, _) = common::golden::build("llama-cls-last-layers");
    // "Training": move every trainable parameter, so that a norm left out of the adapter shows.
    for (i, p) in trained.params_mut().into_iter().filter(|p| p.trainable()).enumerate() {
        p.data.iter_mut().enumerate().for_each(|(j, v)| *v += 0.01 * (((i * 31 + j) % 7) as f32 - 3.0));
    }
    let want = trained.forward(&batch, &mut Activations::default(), Pass::Eval).to_vec();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("adapter");
    let info = AdapterInfo { base_model: "tiny-llama".into(), labels: None, tokenizer_dir: d.path(), lora: None, patterns: None };
    save_adapter(&trained, &dir, &info).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    let saved: BTreeSet<String> = serde_json::from_value(cfg["modules_to_save"].clone()).unwrap();
    let last = trained.n_layers() - 1;
    for m in [format!("model.layers.{last}.input_layernorm"), format!("model.layers.{last}.post_attention_layernorm"), "model.norm".into()]
    {
        assert!(saved.contains(&m), "{m} is not in modules_to_save {saved:?}");
    }
    let opts = lowrank::model::LoadOptions {
        head: Some(HeadKind::Score),
        num_labels: meta["num_labels"].as_u64().map(|k| k as usize),
        ..Default::default()
    };
    let (mut fresh, _) = Model::from_pretrained(&common::golden::fixtures().join(meta["model"].as_str().unwrap()), &opts).unwrap();
    load_into(&dir, &mut fresh).unwrap();
    let got = fresh.forward(&batch, &mut Activations::default(), Pass::Eval).to_vec();
    assert_close("reloaded last-layers adapter", &got, &want, 0.0, 1e-6);
}
