//! Golden parity with PyTorch: tiny random DistilBERT and BERT models with LoRA (non-zero B),
//! last-layers and full fine-tuning; logits, loss and every trainable gradient must match the
//! values transformers + PEFT computed (tests/fixtures/golden, made by scripts/golden/make_golden.py).

use lowrank::data::batch::Batch;
use lowrank::lora::{LoraConfig, Scaling, TargetModules};
use lowrank::model::LoadOptions;
use lowrank::model::{Activations, HeadKind, Model, Pass};
use lowrank::ops::loss::cross_entropy;
use lowrank::plan::{TrainMode, TrainPlan};
use lowrank::tensorfile::TensorFile;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// Largest |a - b| must be within `rtol` of the largest |b| (plus a tiny floor for all-zero
/// tensors); a NaN or infinity on either side fails ([`lowrank::ops::testing::compare`]).
use lowrank::ops::testing::assert_close;

fn run_case(case: &str) {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{case}.json"))).unwrap()).unwrap();
    let file = TensorFile::read(&fixtures().join(format!("{case}.safetensors"))).unwrap();
    let head: HeadKind = meta["head"].as_str().unwrap().parse().unwrap();
    let (mut model, _) =
        Model::from_pretrained(&fixtures().join(meta["model"].as_str().unwrap()), &LoadOptions { head: Some(head), ..Default::default() })
            .unwrap();
    for p in model.params_mut() {
        if let Some(t) = file.tensors.get(&format!("param.{}", p.name)) {
            p.data.copy_from_slice(&t.f32);
        }
    }
    let mode: TrainMode = meta["mode"].as_str().unwrap().parse().unwrap();
    let mut plan = TrainPlan { mode, ..Default::default() };
    if mode == TrainMode::Lora {
        let l = &meta["lora"];
        let scaling = match l["convention"].as_str().unwrap() {
            "raschka" => Scaling::Raschka,
            "peft" => Scaling::Peft,
            _ => Scaling::Rslora,
        };
        plan.lora =
            LoraConfig { r: l["r"].as_u64().unwrap() as usize, alpha: l["alpha"].as_f64().unwrap() as f32, scaling, ..Default::default() };
        plan.targets = match l.get("peft_target_modules") {
            Some(names) => TargetModules::Names(serde_json::from_value(names.clone()).unwrap()),
            None => TargetModules::Names(serde_json::from_value(l["modules"].clone()).unwrap()),
        };
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
    let types: Option<Vec<Vec<u32>>> = file
        .tensors
        .get("token_type_ids")
        .map(|tt| (0..b).map(|i| (0..rows[i].len()).map(|j| tt.i64[i * t + j] as u32).collect()).collect());
    let labels: Vec<usize> = file.tensors["labels"].i64.iter().map(|v| *v as usize).collect();
    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let type_refs: Option<Vec<&[u32]>> = types.as_ref().map(|t| t.iter().map(|r| r.as_slice()).collect());
    let batch = Batch::pack_with_types(&refs, type_refs.as_deref(), &labels, None, 0);

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
            assert_close(&format!("{case}: {key}"), g, &want.f32, 1e-4, 1e-6);
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
