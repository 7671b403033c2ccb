//! Golden parity of the decoders with transformers + PEFT: tiny random Llama (GQA, llama3 rope),
//! Qwen2 (q/k/v biases, tied embeddings) and GPT-2 (Conv1D, fused c_attn, learned positions)
//! models with LoRA (non-zero B), last-layers and full fine-tuning; logits, loss and every
//! trainable gradient must match the values PyTorch computed (tests/fixtures/golden, made by
//! scripts/golden/make_decoder_golden.py).

use lowrank::data::batch::{Batch, IGNORE};
use lowrank::lora::{LoraConfig, Scaling, TargetModules};
use lowrank::model::decoder::names::is_conv1d;
use lowrank::model::{Activations, DecoderArch, HeadKind, LoadOptions, Model, Pass};
use lowrank::ops::loss::cross_entropy;
use lowrank::plan::{TrainMode, TrainPlan};
use lowrank::tensorfile::TensorFile;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// Largest |a - b| within `atol + rtol · max|b|`; NaN anywhere fails.
fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite values");
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(diff <= atol + rtol * scale, "{what}: max diff {diff:e} vs max |want| {scale:e}");
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = data[i * cols + j];
        }
    }
    out
}

fn run_case(case: &str) {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{case}.json"))).unwrap()).unwrap();
    let file = TensorFile::read(&fixtures().join(format!("{case}.safetensors"))).unwrap();
    let head = if meta["task"] == "cls" { HeadKind::Score } else { HeadKind::Lm };
    let num_labels = meta["num_labels"].as_u64().map(|k| k as usize);
    let opts = LoadOptions { head: Some(head), num_labels, seed: 0 };
    let (mut model, _) = Model::from_pretrained(&fixtures().join(meta["model"].as_str().unwrap()), &opts).unwrap();
    let arch = match &model {
        Model::Decoder(d) => d.config.arch,
        _ => panic!("{case}: not a decoder"),
    };
    for p in model.params_mut() {
        if let Some(t) = file.tensors.get(&format!("param.{}", p.name)) {
            p.data.copy_from_slice(&t.f32);
        }
    }
    let mode: TrainMode = meta["mode"].as_str().unwrap().parse().unwrap();
    let mut plan = TrainPlan { mode, ..Default::default() };
    if mode == TrainMode::Lora {
        let l = &meta["lora"];
        plan.lora = LoraConfig {
            r: l["r"].as_u64().unwrap() as usize,
            alpha: l["alpha"].as_f64().unwrap() as f32,
            scaling: Scaling::Peft,
            dropout: 0.0,
        };
        plan.targets = TargetModules::Names(serde_json::from_value(l["peft_target_modules"].clone()).unwrap());
        let injected = plan.apply(&mut model).unwrap();
        let want: Vec<String> = serde_json::from_value(l["modules"].clone()).unwrap();
        assert_eq!(injected.iter().collect::<BTreeSet<_>>(), want.iter().collect::<BTreeSet<_>>(), "{case}: LoRA modules");
        for lin in model.linears_mut() {
            if let Some(lora) = lin.lora.as_mut() {
                assert!((lora.scale - l["scale"].as_f64().unwrap() as f32).abs() < 1e-6, "{case}: scale");
                lora.a.data.copy_from_slice(&file.tensors[&format!("lora.{}.A", lin.path)].f32);
                lora.b.data.copy_from_slice(&file.tensors[&format!("lora.{}.B", lin.path)].f32);
            }
        }
    } else {
        plan.apply(&mut model).unwrap();
    }

    let ids = &file.tensors["input_ids"];
    let mask = &file.tensors["attention_mask"].i64;
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let rows: Vec<Vec<u32>> =
        (0..b).map(|i| (0..t).filter(|j| mask[i * t + j] == 1).map(|j| ids.i64[i * t + j] as u32).collect()).collect();
    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let mut acts = Activations::default();
    let labels: Vec<usize>;
    let loss;
    if head == HeadKind::Score {
        labels = file.tensors["labels"].i64.iter().map(|v| *v as usize).collect();
        let batch = Batch::pack(&refs, &labels, None, 0);
        let logits = model.forward(&batch, &mut acts, Pass::Eval).to_vec();
        let k = model.num_labels();
        assert_close(&format!("{case}: logits"), &logits, &file.tensors["logits"].f32, 0.0, 1e-5);
        let mut dlogits = vec![0.0; b * k];
        loss = cross_entropy(&mut dlogits, &logits, &labels, k);
        model.dlogits_mut(&mut acts).copy_from_slice(&dlogits);
        model.zero_grad();
        model.backward(&batch, &mut acts, Pass::Eval);
    } else {
        // transformers' labels [B, T] (−100: no loss) are shifted inside the model: the row at
        // position t predicts labels[t + 1].
        let lab = &file.tensors["labels"].i64;
        let targets: Vec<Vec<u32>> = (0..b)
            .map(|i| {
                (0..rows[i].len())
                    .map(|j| match lab.get(i * t + j + 1) {
                        Some(&l) if j + 1 < rows[i].len() && l >= 0 => l as u32,
                        _ => IGNORE,
                    })
                    .collect()
            })
            .collect();
        let trefs: Vec<&[u32]> = targets.iter().map(|r| r.as_slice()).collect();
        let batch = Batch::pack_lm(&refs, &trefs);
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
    for lin in model.linears() {
        if let Some(lora) = &lin.lora {
            for (p, suffix) in [(&lora.a, "A"), (&lora.b, "B")] {
                let key = format!("grad.{}.{suffix}", lin.path);
                assert_close(&format!("{case}: {key}"), p.grad.as_ref().unwrap(), &file.tensors[&key].f32, 1e-4, 1e-7);
                checked.insert(key);
            }
        }
    }
    for p in model.base_params() {
        if let Some(g) = &p.grad {
            let key = format!("grad.{}", p.name);
            let want = file.tensors.get(&key).unwrap_or_else(|| panic!("{case}: {key} trains here but not in PyTorch"));
            let module = p.name.trim_end_matches(".weight");
            let g = if arch == DecoderArch::Gpt2 && is_conv1d(arch, module) && p.shape.len() == 2 {
                transpose(g, p.shape[0], p.shape[1])
            } else {
                g.clone()
            };
            assert_close(&format!("{case}: {key}"), &g, &want.f32, 1e-4, 1e-6);
            checked.insert(key);
        }
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
