//! Building the model and batch of a golden case (tests/fixtures/golden/<case>.{json,safetensors},
//! made by scripts/golden/make_golden.py and make_decoder_golden.py), for the parity tests.
#![allow(dead_code)]

use lowrank::data::batch::{Batch, IGNORE};
use lowrank::lora::{LoraConfig, Scaling, TargetModules};
use lowrank::model::{HeadKind, LoadOptions, Model};
use lowrank::plan::{TrainMode, TrainPlan};
use lowrank::tensorfile::TensorFile;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The golden fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// A case's description and tensors.
pub fn read_case(case: &str) -> (Value, TensorFile) {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{case}.json"))).unwrap()).unwrap();
    (meta, TensorFile::read(&fixtures().join(format!("{case}.safetensors"))).unwrap())
}

/// Largest |a - b| within `atol + rtol · max|b|`; NaN anywhere fails.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite values");
    let diff = max_diff(got, want);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(diff <= atol + rtol * scale, "{what}: max diff {diff:e} vs max |want| {scale:e}");
}

/// Largest |a - b| (NaN when any is NaN, so that comparisons with it fail).
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, |m, d| if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) })
}

/// The model of a case with the case's parameters and LoRA tensors, what trains per its plan,
/// and the batch (with labels or next-token targets); `case` names the fp32 case whose model and
/// inputs are used (a bf16 case's `source_case`).
pub fn build(case: &str) -> (Model, Batch, Value, TensorFile) {
    let (meta, file) = read_case(case);
    let head = match meta["head"].as_str() {
        Some(h) => h.parse::<HeadKind>().unwrap(),
        None if meta["task"] == "lm" => HeadKind::Lm,
        None => HeadKind::Score,
    };
    let num_labels = meta["num_labels"].as_u64().map(|k| k as usize);
    let opts = LoadOptions { head: Some(head), num_labels, ..Default::default() };
    let (mut model, _) = Model::from_pretrained(&fixtures().join(meta["model"].as_str().unwrap()), &opts).unwrap();
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
        plan.lora = LoraConfig { r: l["r"].as_u64().unwrap() as usize, alpha: l["alpha"].as_f64().unwrap() as f32, scaling, dropout: 0.0 };
        let names = l.get("peft_target_modules").unwrap_or(&l["modules"]).clone();
        plan.targets = TargetModules::Names(serde_json::from_value(names).unwrap());
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
    let batch = batch_of(&file, head);
    (model, batch, meta, file)
}

/// The case's batch: rows with attention_mask 1, token types when present, labels or (for a
/// language-model head) next-token targets from transformers' unshifted labels (−100: no loss).
pub fn batch_of(file: &TensorFile, head: HeadKind) -> Batch {
    let ids = &file.tensors["input_ids"];
    let mask = &file.tensors["attention_mask"].i64;
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let rows: Vec<Vec<u32>> =
        (0..b).map(|i| (0..t).filter(|j| mask[i * t + j] == 1).map(|j| ids.i64[i * t + j] as u32).collect()).collect();
    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    if head == HeadKind::Lm {
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
        return Batch::pack_lm(&refs, &trefs);
    }
    let labels: Vec<usize> = file.tensors["labels"].i64.iter().map(|v| *v as usize).collect();
    let types: Option<Vec<Vec<u32>>> = file
        .tensors
        .get("token_type_ids")
        .map(|tt| (0..b).map(|i| (0..rows[i].len()).map(|j| tt.i64[i * t + j] as u32).collect()).collect());
    let type_refs: Option<Vec<&[u32]>> = types.as_ref().map(|t| t.iter().map(|r| r.as_slice()).collect());
    Batch::pack_with_types(&refs, type_refs.as_deref(), &labels, None, 0)
}

/// Every trainable gradient as (fixture key, values in the fixture's layout): LoRA tensors as
/// `grad.<module>.A` / `.B`, base tensors as `grad.<name>` (GPT-2's Conv1D weights transposed
/// back to [in, out]).
pub fn gradients(model: &Model) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for lin in model.linears() {
        if let Some(lora) = &lin.lora {
            for (p, suffix) in [(&lora.a, "A"), (&lora.b, "B")] {
                out.push((format!("grad.{}.{suffix}", lin.path), p.grad.clone().unwrap()));
            }
        }
    }
    for p in model.base_params() {
        if let Some(g) = &p.grad {
            let stored = lowrank::model::decoder::save::stored_layout(model, p).map(|_| transpose(g, p.shape[0], p.shape[1]));
            out.push((format!("grad.{}", p.name), stored.unwrap_or_else(|| g.clone())));
        }
    }
    out
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
