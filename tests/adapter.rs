//! Adapters: PEFT-written adapters give PEFT's logits in lowrank (fixtures from
//! scripts/golden/make_peft_interop.py); lowrank's own adapters round-trip; merging and unmerging
//! are exact; a merged model folder reloads with the same logits; mismatches are clear errors.

use lowrank::adapter::{load_into, save_adapter, AdapterInfo};
use lowrank::data::batch::Batch;
use lowrank::data::LabelMap;
use lowrank::lora::{LoraConfig, Scaling, SeedFlags, TargetModules};
use lowrank::model::save::write_model_folder;
use lowrank::model::LoadOptions;
use lowrank::model::{Activations, Model, Pass};
use lowrank::plan::{TrainMode, TrainPlan};
use lowrank::tensorfile::TensorFile;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn batch_of(file: &TensorFile) -> Batch {
    let ids = &file.tensors["input_ids"];
    let mask = &file.tensors["attention_mask"].i64;
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let rows: Vec<Vec<u32>> =
        (0..b).map(|i| (0..t).filter(|j| mask[i * t + j] == 1).map(|j| ids.i64[i * t + j] as u32).collect()).collect();
    let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    Batch::pack(&refs, &[], None, 0)
}

fn logits(model: &Model, batch: &Batch) -> Vec<f32> {
    model.forward(batch, &mut Activations::default(), Pass::Eval).to_vec()
}

/// Largest |a - b|; NaN when either side is not finite, so every `max_diff(..) < tol` fails on it.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    lowrank::ops::testing::max_abs_diff(a, b)
}

fn base(name: &str) -> Model {
    Model::from_pretrained(&fixtures().join("golden").join(name), &LoadOptions::default()).unwrap().0
}

#[test]
fn adapters_written_by_peft_give_peft_s_logits() {
    for (case, model) in [("distilbert-qv", "tiny-distilbert"), ("bert-all", "tiny-bert"), ("bert-rslora", "tiny-bert")] {
        let dir = fixtures().join("peft").join(case);
        let expected = TensorFile::read(&dir.join("expected.safetensors")).unwrap();
        let batch = batch_of(&expected);
        let mut m = base(model);
        let before = logits(&m, &batch);
        load_into(&dir, &mut m).unwrap();
        let after = logits(&m, &batch);
        let d = max_diff(&after, &expected.tensors["logits"].f32);
        assert!(d < 1e-5, "{case}: max |lowrank - PEFT| = {d}");
        assert!(max_diff(&before, &after) > 0.1, "{case}: the adapter changed nothing");
    }
}

/// tiny-bert with LoRA (raschka, q+v+head) and random non-zero B.
fn lora_model() -> Model {
    let mut m = base("tiny-bert");
    let plan = TrainPlan {
        mode: TrainMode::Lora,
        lora: LoraConfig { r: 4, alpha: 2.0, scaling: Scaling::Raschka, ..Default::default() },
        targets: TargetModules::Flags(SeedFlags { query: true, value: true, mlp: true, ..Default::default() }),
        modules_to_save: vec!["classifier".into()],
        seed: 5,
        ..Default::default()
    };
    plan.apply(&mut m).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let normal = Normal::new(0.0f32, 0.3).unwrap();
    for lin in m.linears_mut() {
        if let Some(l) = lin.lora.as_mut() {
            l.b.data.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
        }
    }
    let classifier = m.head_linears_mut().pop().unwrap();
    classifier.weight.data.iter_mut().for_each(|v| *v += normal.sample(&mut rng));
    m
}

fn labels() -> LabelMap {
    LabelMap::new(vec!["a".into(), "b".into(), "c".into()]).unwrap()
}

#[test]
fn save_load_merge_unmerge_round_trip() {
    let batch = batch_of(&TensorFile::read(&fixtures().join("peft/bert-all/expected.safetensors")).unwrap());
    let mut m = lora_model();
    let want = logits(&m, &batch);
    let d = tempfile::tempdir().unwrap();
    let adapter = d.path().join("adapter");
    let labels = labels();
    let info = AdapterInfo {
        base_model: "tiny-bert".into(),
        labels: Some(&labels),
        tokenizer_dir: d.path(),
        lora: Some(LoraConfig { r: 4, alpha: 2.0, scaling: Scaling::Raschka, ..Default::default() }),
        patterns: None,
    };
    save_adapter(&m, &adapter, &info).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        (cfg["peft_type"].as_str(), cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()),
        (Some("LORA"), Some(4), Some(8.0)),
        "raschka alpha 2 at r 4 is PEFT's lora_alpha 8"
    );
    assert_eq!(
        TensorFile::read(&adapter.join("adapter_model.safetensors")).unwrap().metadata.get("format").map(String::as_str),
        Some("pt")
    );

    let mut fresh = base("tiny-bert");
    load_into(&adapter, &mut fresh).unwrap();
    assert!(max_diff(&logits(&fresh, &batch), &want) < 1e-6, "reloaded adapter");

    let originals: Vec<Vec<f32>> = m.base_params().iter().map(|p| p.data.clone()).collect();
    m.merge_lora().unwrap();
    assert!(max_diff(&logits(&m, &batch), &want) < 1e-5, "merged");
    m.unmerge_lora();
    for (p, o) in m.base_params().iter().zip(&originals) {
        assert!(max_diff(&p.data, o) < 1e-6, "{} after unmerge", p.name);
    }
    let merged = d.path().join("merged");
    write_model_folder(&m, &merged, labels.names(), d.path()).unwrap();
    let (back, report) = Model::from_pretrained(&merged, &LoadOptions::default()).unwrap();
    assert!(report.initialised.is_empty(), "the merged folder carries its head");
    assert_eq!(back.id2label().map(|l| l.len()), Some(3));
    assert!(max_diff(&logits(&back, &batch), &want) < 1e-5, "merged model folder");
}

#[test]
fn mismatched_adapters_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    // A DistilBERT adapter on a BERT base: the module path does not exist.
    let mut bert = base("tiny-bert");
    let e = load_into(&fixtures().join("peft/distilbert-qv"), &mut bert).unwrap_err().to_string();
    assert!(e.contains("q_lin") && e.contains("does not have"), "{e}");
    // Wrong rank in the config: the tensors' shapes no longer fit.
    let copy = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let dir = d.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let src = fixtures().join("peft/bert-rslora");
        std::fs::copy(src.join("adapter_model.safetensors"), dir.join("adapter_model.safetensors")).unwrap();
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
        edit(&mut cfg);
        std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
        dir
    };
    let e = load_into(&copy("rank", &|c| c["r"] = 8.into()), &mut base("tiny-bert")).unwrap_err().to_string();
    assert!(e.contains("lora_A") && e.contains("[8, 32]") && e.contains("[4, 32]"), "{e}");
    let e = load_into(&copy("type", &|c| c["peft_type"] = "PREFIX_TUNING".into()), &mut base("tiny-bert")).unwrap_err().to_string();
    assert!(e.contains("PREFIX_TUNING"), "{e}");
    let e = load_into(&copy("dora", &|c| c["use_dora"] = true.into()), &mut base("tiny-bert")).unwrap_err().to_string();
    assert!(e.contains("DoRA"), "{e}");
    let e = load_into(&copy("bias", &|c| c["bias"] = "all".into()), &mut base("tiny-bert")).unwrap_err().to_string();
    assert!(e.contains("bias"), "{e}");
    let e = load_into(d.path(), &mut base("tiny-bert")).unwrap_err().to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
}
