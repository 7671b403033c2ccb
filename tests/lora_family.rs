//! LoRA's family against PEFT (fixtures from scripts/golden/make_lora_family.py): DoRA, PiSSA,
//! OLoRA, gaussian init, lora_bias, rank / alpha patterns, layers_to_transform and LoRA+ built by
//! lowrank itself from the same settings as PEFT's LoraConfig give PEFT's initial tensors,
//! logits (1e-5), every trainable gradient including lora_magnitude_vector's (1e-4 relative) and
//! optimizer steps; merged ≈ unmerged (1e-5); adapters written by PEFT give PEFT's logits, and
//! lowrank's own adapters of them reload exactly.

use lowrank::adapter::{load_into, save_adapter, AdapterInfo};
use lowrank::data::batch::Batch;
use lowrank::data::LabelMap;
use lowrank::lora::pattern::ordered;
use lowrank::lora::{Init, LoraConfig, LoraLayer, LoraPatterns, Scaling, TargetModules};
use lowrank::model::precision::Precision;
use lowrank::model::{Activations, HeadKind, LoadOptions, Model, Pass};
use lowrank::ops::loss::cross_entropy;
use lowrank::optim::{Adam, OptimizerConfig};
use lowrank::plan::{TrainMode, TrainPlan};
use lowrank::tensorfile::TensorFile;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Largest |got − want| within `rtol` of the largest |want| (plus `atol`).
fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(diff <= atol + rtol * scale, "{what}: max diff {diff:e} vs max |want| {scale:e}");
}

/// The PEFT LoraConfig fields a case was made with, read in file order (patterns are ordered).
#[derive(Deserialize)]
struct PeftSettings {
    r: usize,
    lora_alpha: f32,
    target_modules: Vec<String>,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    lora_bias: bool,
    #[serde(default)]
    init_lora_weights: Option<String>,
    #[serde(default, with = "ordered")]
    rank_pattern: Vec<(String, usize)>,
    #[serde(default, with = "ordered")]
    alpha_pattern: Vec<(String, f32)>,
    #[serde(default)]
    layers_to_transform: Option<Vec<usize>>,
    #[serde(default)]
    layers_pattern: Option<String>,
}

#[derive(Deserialize)]
struct Meta {
    base: String,
    head: String,
    #[serde(default)]
    num_labels: Option<usize>,
    peft_config: PeftSettings,
    modules: Vec<String>,
    scales: std::collections::BTreeMap<String, f32>,
    ranks: std::collections::BTreeMap<String, usize>,
    #[serde(default)]
    loraplus: Option<LoraPlus>,
    #[serde(default)]
    init_a_std: Option<f32>,
}

#[derive(Deserialize)]
struct LoraPlus {
    lr: f32,
    ratio: f32,
    steps: usize,
}

/// lowrank's plan for the same settings as PEFT's LoraConfig.
fn plan_of(p: &PeftSettings) -> TrainPlan {
    TrainPlan {
        mode: TrainMode::Lora,
        lora: LoraConfig {
            r: p.r,
            alpha: p.lora_alpha,
            scaling: Scaling::Peft,
            init: Some(p.init_lora_weights.as_deref().unwrap_or("true").parse().unwrap()),
            dora: p.use_dora,
            bias: p.lora_bias,
            ..Default::default()
        },
        targets: TargetModules::Names(p.target_modules.clone()),
        patterns: LoraPatterns {
            rank_pattern: p.rank_pattern.clone(),
            alpha_pattern: p.alpha_pattern.clone(),
            layers_to_transform: p.layers_to_transform.clone(),
            layers_pattern: p.layers_pattern.clone().map(|l| vec![l]),
        },
        ..Default::default()
    }
}

fn batch_of(file: &TensorFile, with_types: bool) -> (Batch, Vec<usize>) {
    let ids = &file.tensors["input_ids"];
    let mask = &file.tensors["attention_mask"].i64;
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let rows: Vec<Vec<u32>> =
        (0..b).map(|i| (0..t).filter(|j| mask[i * t + j] == 1).map(|j| ids.i64[i * t + j] as u32).collect()).collect();
    let types: Option<Vec<Vec<u32>>> = with_types.then(|| {
        let tt = &file.tensors["token_type_ids"];
        (0..b).map(|i| (0..rows[i].len()).map(|j| tt.i64[i * t + j] as u32).collect()).collect()
    });
    let labels: Vec<usize> = file.tensors.get("labels").map_or(vec![0; b], |l| l.i64.iter().map(|v| *v as usize).collect());
    let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let type_refs: Option<Vec<&[u32]>> = types.as_ref().map(|t| t.iter().map(Vec::as_slice).collect());
    (Batch::pack_with_types(&refs, type_refs.as_deref(), &labels, None, 0), labels)
}

fn base(name: &str, head: Option<HeadKind>) -> Model {
    base_with_labels(name, head, None)
}

fn base_with_labels(name: &str, head: Option<HeadKind>, num_labels: Option<usize>) -> Model {
    Model::from_pretrained(&fixtures().join("golden").join(name), &LoadOptions { head, num_labels, ..Default::default() }).unwrap().0
}

fn logits(model: &Model, batch: &Batch) -> Vec<f32> {
    model.forward(batch, &mut Activations::default(), Pass::Eval).to_vec()
}

/// A layer's tensors by the fixture's suffixes.
fn part<'a>(l: &'a mut LoraLayer, suffix: &str) -> &'a mut lowrank::param::Param {
    match suffix {
        "A" => &mut l.a,
        "B" => &mut l.b,
        "bias" => l.bias.as_mut().expect("a lora_B bias"),
        "magnitude" => &mut l.dora.as_mut().expect("a DoRA layer").magnitude,
        other => panic!("unknown part {other}"),
    }
}

const PARTS: [&str; 4] = ["A", "B", "bias", "magnitude"];

/// Flips lowrank's PiSSA components to PEFT's signs (an SVD's singular vector pairs are defined up
/// to a joint sign; A·B, the residual and the function do not depend on it).
fn align_signs(l: &mut LoraLayer, want_a: &[f32]) {
    let (i, r, o) = (l.a.shape[0], l.rank(), l.b.shape[1]);
    for t in 0..r {
        let dot: f32 = (0..i).map(|k| l.a.data[k * r + t] * want_a[k * r + t]).sum();
        if dot < 0.0 {
            (0..i).for_each(|k| l.a.data[k * r + t] *= -1.0);
            (0..o).for_each(|j| l.b.data[t * o + j] *= -1.0);
        }
    }
}

fn golden(case: &str) {
    let dir = fixtures().join("lora-family/golden");
    let meta: Meta = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap()).unwrap();
    let file = TensorFile::read(&dir.join(format!("{case}.safetensors"))).unwrap();
    let head: HeadKind = meta.head.parse().unwrap();
    let mut model = base_with_labels(&meta.base, Some(head), meta.num_labels);
    // A decoder's fresh score head, as PEFT's run had it.
    for p in model.params_mut() {
        if let Some(t) = file.tensors.get(&format!("param.{}", p.name)) {
            p.data.copy_from_slice(&t.f32);
        }
    }
    let plan = plan_of(&meta.peft_config);
    let injected = plan.apply(&mut model).unwrap();
    assert_eq!(injected.iter().collect::<BTreeSet<_>>(), meta.modules.iter().collect::<BTreeSet<_>>(), "{case}: LoRA modules");
    let init = plan.lora.init_kind();
    let mut a_values = Vec::new();
    for lin in model.linears_mut() {
        let path = lin.path.clone();
        let Some(l) = lin.lora.as_mut() else { continue };
        assert_eq!(l.rank(), meta.ranks[&path], "{case}: rank of {path}");
        assert!((l.scale - meta.scales[&path]).abs() < 1e-6, "{case}: scale of {path}");
        let key = |prefix: &str, s: &str| format!("{prefix}.{path}.{s}");
        if init.mutates_base() {
            // lowrank's own PiSSA / OLoRA: the same A, B (up to SVD signs) and residual as PEFT's.
            if matches!(init, Init::Pissa) {
                align_signs(l, &file.tensors[&key("init", "A")].f32);
            }
            assert_close(&format!("{case}: init A of {path}"), &l.a.data, &file.tensors[&key("init", "A")].f32, 1e-4, 1e-6);
            assert_close(&format!("{case}: init B of {path}"), &l.b.data, &file.tensors[&key("init", "B")].f32, 1e-4, 1e-6);
            assert_close(
                &format!("{case}: residual of {path}"),
                &lin.weight.data,
                &file.tensors[&format!("residual.{path}.weight")].f32,
                0.0,
                1e-5,
            );
        }
        if let Some(d) = &l.dora {
            assert_close(
                &format!("{case}: initial magnitude of {path}"),
                &d.magnitude.data,
                &file.tensors[&key("init", "magnitude")].f32,
                1e-5,
                0.0,
            );
        }
        a_values.extend_from_slice(&l.a.data);
        // From here on the adapter is PEFT's (moved away from its start as training would).
        for s in PARTS {
            if let Some(t) = file.tensors.get(&key("lora", s)) {
                let p = part(l, s);
                assert_eq!(p.numel(), t.f32.len(), "{case}: {s} of {path}");
                if !(init.mutates_base() && (s == "A" || s == "B")) {
                    p.data.copy_from_slice(&t.f32);
                }
            }
        }
    }
    if let Some(std) = meta.init_a_std {
        // gaussian: torch's and lowrank's random numbers differ; their spread must not.
        let ours = (a_values.iter().map(|v| v * v).sum::<f32>() / a_values.len() as f32).sqrt();
        assert!((ours - 1.0 / plan.lora.r as f32).abs() < 0.03 && (ours - std).abs() < 0.04, "{case}: A std {ours} vs PEFT's {std}");
    }
    let (batch, labels) = batch_of(&file, head == HeadKind::Bert);
    let k = model.num_labels();
    let mut acts = Activations::default();
    let got = model.forward(&batch, &mut acts, Pass::Eval).to_vec();
    assert_close(&format!("{case}: logits"), &got, &file.tensors["logits"].f32, 0.0, 1e-5);
    let mut dlogits = vec![0.0; got.len()];
    let loss = cross_entropy(&mut dlogits, &got, &labels, k);
    assert!((loss - file.tensors["loss"].f32[0]).abs() < 1e-5, "{case}: loss {loss}");
    model.dlogits_mut(&mut acts).copy_from_slice(&dlogits);
    model.zero_grad();
    model.backward(&batch, &mut acts, Pass::Eval);
    let mut checked = BTreeSet::new();
    for lin in model.linears_mut() {
        let path = lin.path.clone();
        let Some(l) = lin.lora.as_mut() else { continue };
        for s in PARTS {
            let key = format!("grad.{path}.{s}");
            if let Some(want) = file.tensors.get(&key) {
                assert_close(&format!("{case}: {key}"), part(l, s).grad.as_ref().unwrap(), &want.f32, 1e-4, 1e-7);
                checked.insert(key);
            }
        }
    }
    // Base tensors that train beside the adapter (a decoder's score, PEFT's modules_to_save).
    for p in model.base_params().into_iter().filter(|p| p.trainable()) {
        let key = format!("grad.{}", p.name);
        let want = file.tensors.get(&key).unwrap_or_else(|| panic!("{case}: {} trains but PEFT's did not", p.name));
        assert_close(&format!("{case}: {key}"), p.grad.as_ref().unwrap(), &want.f32, 1e-4, 1e-7);
        checked.insert(key);
    }
    let trainable: BTreeSet<String> = model.params().iter().filter(|p| p.trainable()).map(|p| p.name.clone()).collect();
    let expected: BTreeSet<String> = file.tensors.keys().filter(|k| k.starts_with("grad.")).cloned().collect();
    assert_eq!(checked, expected, "{case}: gradients checked");
    assert_eq!(trainable.len(), expected.len(), "{case}: the set of trainable tensors differs from PEFT's: {trainable:?}");

    if let Some(lp) = &meta.loraplus {
        // create_loraplus_optimizer(Adam, lr, loraplus_lr_ratio): the same parameters after each step.
        let mut opt = Adam::new(OptimizerConfig { lr: lp.lr, loraplus_lr_ratio: Some(lp.ratio), ..Default::default() });
        for step in 1..=lp.steps {
            if step > 1 {
                let out = model.forward(&batch, &mut acts, Pass::Eval).to_vec();
                cross_entropy(&mut dlogits, &out, &labels, k);
                model.dlogits_mut(&mut acts).copy_from_slice(&dlogits);
                model.backward(&batch, &mut acts, Pass::Eval);
            }
            opt.step(&mut model.params_mut(), lp.lr);
            for lin in model.linears_mut() {
                let path = lin.path.clone();
                let Some(l) = lin.lora.as_mut() else { continue };
                for s in PARTS {
                    if let Some(want) = file.tensors.get(&format!("step{step}.{path}.{s}")) {
                        assert_close(&format!("{case}: step {step} {s} of {path}"), &part(l, s).data, &want.f32, 1e-4, 1e-6);
                    }
                }
            }
        }
        return;
    }
    // Merged (PEFT's safe merge) equals unmerged, and unmerging gives the weights back.
    let weights: Vec<Vec<f32>> = model.base_params().iter().map(|p| p.data.clone()).collect();
    model.merge_lora().unwrap();
    let merged = logits(&model, &batch);
    assert_close(&format!("{case}: merged vs unmerged"), &merged, &got, 0.0, 1e-5);
    assert_close(&format!("{case}: merged vs PEFT's merged"), &merged, &file.tensors["merged_logits"].f32, 0.0, 1e-5);
    model.unmerge_lora();
    for (p, w) in model.base_params().iter().zip(&weights) {
        assert_close(&format!("{case}: {} after unmerge", p.name), &p.data, w, 0.0, 1e-5);
    }
}

macro_rules! golden {
    ($($name:ident => $case:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            golden($case);
        }
    )*};
}

golden! {
    dora_distilbert => "distilbert-dora",
    dora_with_rank_and_alpha_patterns_bert => "bert-dora-patterns",
    pissa_distilbert => "distilbert-pissa",
    olora_bert => "bert-olora",
    dora_on_pissa_distilbert => "distilbert-dora-pissa",
    lora_bias_distilbert => "distilbert-lora-bias",
    gaussian_init_and_layers_to_transform_bert => "bert-gaussian-layers",
    loraplus_steps_with_dora_distilbert => "distilbert-dora-loraplus",
    dora_on_llama_q_v_down => "llama-dora-qv-down",
    pissa_dora_with_patterns_on_llama => "llama-pissa-dora-patterns",
}

/// Logits and every trainable gradient of one forward / backward at `precision`.
fn logits_and_grads(model: &mut Model, batch: &Batch, labels: &[usize], precision: Precision) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    model.set_precision(precision, true);
    let mut acts = Activations::default();
    let out = model.forward(batch, &mut acts, Pass::Eval).to_vec();
    let mut dlogits = vec![0.0; out.len()];
    cross_entropy(&mut dlogits, &out, labels, model.num_labels());
    model.dlogits_mut(&mut acts).copy_from_slice(&dlogits);
    model.zero_grad();
    model.backward(batch, &mut acts, Pass::Eval);
    let grads = model.params().iter().filter(|p| p.trainable()).map(|p| (p.name.clone(), p.grad.clone().unwrap())).collect();
    (out, grads)
}

/// DoRA with bf16 products (the base products x·W₀ᵀ and the input gradient through W₀ in bf16;
/// norms, g and the branch in f32) on an encoder and a decoder: it runs, really differs from
/// fp32, and stays within bf16's rounding of it — logits and every gradient, the magnitude's
/// included — and merging in bf16 (weights repacked) keeps the outputs.
#[test]
fn dora_in_bf16_is_close_to_fp32() {
    for case in ["distilbert-dora", "llama-dora-qv-down"] {
        let dir = fixtures().join("lora-family/golden");
        let meta: Meta = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap()).unwrap();
        let file = TensorFile::read(&dir.join(format!("{case}.safetensors"))).unwrap();
        let head: HeadKind = meta.head.parse().unwrap();
        let mut model = base_with_labels(&meta.base, Some(head), meta.num_labels);
        for p in model.params_mut() {
            if let Some(t) = file.tensors.get(&format!("param.{}", p.name)) {
                p.data.copy_from_slice(&t.f32);
            }
        }
        plan_of(&meta.peft_config).apply(&mut model).unwrap();
        for lin in model.linears_mut() {
            let path = lin.path.clone();
            let Some(l) = lin.lora.as_mut() else { continue };
            for s in PARTS {
                if let Some(t) = file.tensors.get(&format!("lora.{path}.{s}")) {
                    part(l, s).data.copy_from_slice(&t.f32);
                }
            }
        }
        let (batch, labels) = batch_of(&file, head == HeadKind::Bert);
        let (l32, g32) = logits_and_grads(&mut model, &batch, &labels, Precision::Fp32);
        assert_close(&format!("{case}: fp32 logits"), &l32, &file.tensors["logits"].f32, 0.0, 1e-5);
        let (l16, g16) = logits_and_grads(&mut model, &batch, &labels, Precision::Bf16);
        let moved = l16.iter().zip(&l32).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved > 0.0, "{case}: bf16 gave the fp32 logits exactly (did it run?)");
        assert_close(&format!("{case}: bf16 logits"), &l16, &l32, 2e-2, 1e-4);
        assert_eq!(g16.len(), g32.len());
        assert!(g32.iter().any(|(n, _)| n.ends_with("lora_magnitude_vector")), "{case}: a magnitude trains");
        for ((name, a), (_, b)) in g16.iter().zip(&g32) {
            assert_close(&format!("{case}: bf16 gradient of {name}"), a, b, 5e-2, 1e-6);
        }
        model.merge_lora().unwrap();
        let merged = logits(&model, &batch);
        assert_close(&format!("{case}: bf16 merged vs unmerged"), &merged, &l16, 2e-2, 1e-4);
        model.unmerge_lora();
    }
}

/// Adapters written by PEFT give PEFT's logits; lowrank's re-save of them reloads exactly (PiSSA
/// and OLoRA converted to plain LoRA of twice the rank), and merging changes nothing.
#[test]
fn adapters_written_by_peft_load_and_round_trip() {
    let cases = ["distilbert-dora", "bert-pissa", "bert-pissa-converted", "distilbert-olora-dora", "bert-patterns-bias", "llama-dora"];
    for case in cases {
        let dir = fixtures().join("lora-family/peft").join(case);
        let expected = TensorFile::read(&dir.join("expected.safetensors")).unwrap();
        let (batch, _) = batch_of(&expected, false);
        // The tiny Llama: a 3-class SEQ_CLS adapter whose fresh score head comes from the adapter
        // (modules_to_save), so its base logits are not PEFT's.
        let (name, head, num_labels) = match case.split('-').next() {
            Some("bert") => ("tiny-bert", None, None),
            Some("llama") => ("tiny-llama", Some(HeadKind::Score), Some(3)),
            _ => ("tiny-distilbert", None, None),
        };
        let mut m = base_with_labels(name, head, num_labels);
        let before = logits(&m, &batch);
        load_into(&dir, &mut m).unwrap();
        let got = logits(&m, &batch);
        assert_close(&format!("{case}: lowrank vs PEFT"), &got, &expected.tensors["logits"].f32, 0.0, 1e-5);
        if head.is_none() {
            assert_close(&format!("{case}: PEFT's own base"), &before, &expected.tensors["base_logits"].f32, 0.0, 1e-5);
        }
        assert!(before.iter().zip(&got).any(|(a, b)| (a - b).abs() > 0.1), "{case}: the adapter changed nothing");

        let tmp = tempfile::tempdir().unwrap();
        let labels = LabelMap::new((0..m.num_labels()).map(|i| format!("c{i}")).collect()).unwrap();
        let info = AdapterInfo {
            base_model: name.into(),
            labels: Some(&labels),
            tokenizer_dir: tmp.path(),
            lora: Some(lowrank::adapter::read_adapter(&dir).unwrap().lora_config()),
            patterns: None,
        };
        if head.is_some() {
            // As after `train`: the decoder's score head trains beside LoRA, so it is saved whole.
            // (A head that only came in through the loaded adapter's modules_to_save is not.)
            m.head_linears_mut().into_iter().for_each(|l| l.set_base_trainable(true));
        }
        save_adapter(&m, &tmp.path().join("a"), &info).unwrap();
        let mut again = base_with_labels(name, head, num_labels);
        load_into(&tmp.path().join("a"), &mut again).unwrap();
        assert_close(&format!("{case}: lowrank's re-save"), &logits(&again, &batch), &got, 0.0, 1e-5);
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join("a/adapter_config.json")).unwrap()).unwrap();
        let peft: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
        assert_eq!(saved["use_dora"], peft["use_dora"], "{case}");
        if case == "bert-pissa" || case == "distilbert-olora-dora" {
            assert_eq!(saved["r"], 8, "{case}: converted to plain LoRA of rank 2r");
            assert_eq!(saved["init_lora_weights"], true, "{case}");
        }
        m.merge_lora().unwrap();
        assert_close(&format!("{case}: merged"), &logits(&m, &batch), &got, 0.0, 1e-5);
    }
}

#[test]
fn trainable_counts_include_the_magnitudes() {
    let cfg = lowrank::model::ModelConfig::load(&fixtures().join("distilbert-base-uncased.config.json")).unwrap();
    let mut m = Model::new(&cfg, HeadKind::DistilBert, 2);
    let mut plan = TrainPlan { lora: LoraConfig { dora: true, ..Default::default() }, ..Default::default() };
    plan.apply(&mut m).unwrap();
    assert_eq!(m.param_counts().0, 147_456 + 12 * 768, "LoRA q+v plus one magnitude per output row");
    plan.lora = LoraConfig { bias: true, ..Default::default() };
    plan.patterns.rank_pattern = vec![("q_lin".into(), 16)];
    plan.apply(&mut m).unwrap();
    assert_eq!(m.param_counts().0, 6 * 16 * 1536 + 6 * 8 * 1536 + 12 * 768);
    let tree = m.module_tree();
    assert!(tree.contains("LoRALayer(rank=16, scale=16, lora_bias=True)"), "{tree}");
}

mod common;
use common::{head_csv, lowrank_err, lowrank_ok, minilm, rt, s};

/// `lowrank inspect` on the tiny BERT with `flags`: the error it prints.
fn inspect_err(flags: &[&str]) -> String {
    let model = fixtures().join("golden/tiny-bert");
    let args: Vec<&str> = ["inspect", "--model", s(&model), "--num-labels", "3"].iter().copied().chain(flags.iter().copied()).collect();
    lowrank_err(&args)
}

#[test]
fn bad_family_inputs_are_clear_errors() {
    let e = inspect_err(&["--dora", "--target-modules", "word_embeddings"]);
    assert!(e.contains("bert.embeddings.word_embeddings") && e.contains("an embedding") && e.contains("DoRA"), "{e}");
    let e = inspect_err(&["--target-modules", "query", "--rank-pattern", "qeury=4"]);
    assert!(e.contains("--rank-pattern qeury") && e.contains("attention.self.query"), "{e}");
    let e = inspect_err(&["--init", "pissa", "--lora-r", "40", "--lora-query"]);
    // The up-front rank check (r above every layer size) answers before PiSSA's own one.
    assert!(e.contains("--lora-r 40") && e.contains("min(in, out) = 32"), "{e}");
    let e = inspect_err(&["--dora", "--lora-bias"]);
    assert!(e.contains("--lora-bias") && e.contains("--dora"), "{e}");
    let e = inspect_err(&["--lora-query", "--layers-to-transform", "7"]);
    assert!(e.contains("names no layer") && e.contains("0, 1"), "{e}");
    let e = inspect_err(&["--target-modules", "re:.*query", "--layers-to-transform", "1"]);
    assert!(e.contains("regex"), "{e}");
    let e = inspect_err(&["--init", "svd"]);
    assert!(e.contains("pissa_niter_K"), "{e}");
    // An adapter whose residual came from a randomised SVD cannot be reproduced.
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("lora-family/peft/bert-pissa");
    std::fs::copy(src.join("adapter_model.safetensors"), tmp.path().join("adapter_model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
    cfg["init_lora_weights"] = "pissa_niter_4".into();
    std::fs::write(tmp.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    let e = load_into(tmp.path(), &mut base("tiny-bert", None)).unwrap_err().to_string();
    assert!(e.contains("pissa_niter_4") && e.contains("path_initial_model_for_weight_conversion"), "{e}");
}

#[test]
fn inspect_shows_dora_and_counts_its_magnitudes() {
    let model = fixtures().join("golden/tiny-bert");
    let out = lowrank_ok(&["inspect", "--model", s(&model), "--num-labels", "3", "--dora", "--lora-r", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // q and v of 2 layers: 2·(32 + 32) LoRA + 32 magnitude each.
    assert_eq!(v["trainable_params"], 4 * (2 * 64 + 32));
    assert!(v["trainable_tensors"].as_array().unwrap().iter().any(|t| t.as_str().unwrap().ends_with("query.lora_magnitude_vector")), "{v}");
    let tree = lowrank_ok(&["inspect", "--model", s(&model), "--num-labels", "3", "--dora", "--init", "olora", "--lora-r", "2"]);
    assert!(tree.contains("DoRALayer(rank=2, scale=16, magnitude=[32], base=residual)"), "{tree}");
}

/// A real run with DoRA on PiSSA, a rank pattern and LoRA+: its adapter is PEFT's converted form,
/// the run folder rebuilds the same model (the SVD is recomputed identically), the merged folder
/// predicts what the adapter does, and training continues from the adapter.
#[test]
fn dora_pissa_run_saves_reloads_merges_and_continues() {
    let d = tempfile::tempdir().unwrap();
    let (t, v) = (d.path().join("train.csv"), d.path().join("val.csv"));
    head_csv(&rt("train"), &t, 48);
    head_csv(&rt("val"), &v, 24);
    let model = minilm();
    let run = d.path().join("run");
    let family = ["--dora", "--init", "pissa", "--scaling", "peft", "--lora-r", "4", "--lora-alpha", "8", "--rank-pattern", "q_lin=2"];
    let mut args = vec!["train", "--model", s(&model), "--head", "distilbert", "--max-length", "48", "--train", s(&t), "--val", s(&v)];
    args.extend(["--test", s(&v), "--epochs", "1", "--lr", "1e-3", "--loraplus-lr-ratio", "4", "--out", s(&run)]);
    args.extend(family);
    let summary: serde_json::Value = serde_json::from_str(&lowrank_ok(&args)).unwrap();
    let inspect: Vec<&str> = ["inspect", "--model", s(&model), "--head", "distilbert", "--json"].into_iter().chain(family).collect();
    let counted: serde_json::Value = serde_json::from_str(&lowrank_ok(&inspect)).unwrap();
    assert_eq!(summary["trainable_params"], counted["trainable_params"]);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!((cfg["use_dora"].as_bool(), cfg["r"].as_u64(), cfg["init_lora_weights"].as_bool()), (Some(true), Some(8), Some(true)));
    assert_eq!(cfg["rank_pattern"].as_object().unwrap().values().next().unwrap(), 4, "q_lin's rank 2, converted to 4");

    let eval: serde_json::Value = serde_json::from_str(&lowrank_ok(&["eval", "--run", s(&run), "--data", s(&v), "--json"])).unwrap();
    assert_eq!(eval["accuracy"].as_f64(), summary["test_acc"].as_f64(), "the rebuilt run gives the run's own metrics");

    let text = "A gorgeous, witty, seductive movie.";
    let pred = |model: &Path, adapter: Option<&Path>| -> Vec<f64> {
        let mut a = vec!["predict", "--model", s(model), "--text", text, "--json"];
        if let Some(ad) = adapter {
            a.extend(["--adapter", s(ad)]);
        }
        let v: serde_json::Value = serde_json::from_str(lowrank_ok(&a).trim()).unwrap();
        v["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    };
    let with_adapter = pred(&model, Some(&run.join("adapter")));
    let merged = d.path().join("merged");
    lowrank_ok(&["merge", "--model", s(&model), "--adapter", s(&run.join("adapter")), "--out", s(&merged)]);
    let from_merged = pred(&merged, None);
    for (a, b) in with_adapter.iter().zip(&from_merged) {
        assert!((a - b).abs() < 1e-4, "{with_adapter:?} vs {from_merged:?}");
    }
    let more = d.path().join("more");
    let args = [
        "train",
        "--model",
        s(&model),
        "--head",
        "distilbert",
        "--max-length",
        "48",
        "--train",
        s(&t),
        "--val",
        s(&v),
        "--epochs",
        "1",
        "--adapter",
    ];
    lowrank_ok(&args.into_iter().chain([s(&run.join("adapter")), "--out", s(&more)]).collect::<Vec<_>>());
    let cont: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(more.join("config.json")).unwrap()).unwrap();
    assert_eq!((cont["plan"]["lora"]["dora"].as_bool(), cont["plan"]["lora"]["r"].as_u64()), (Some(true), Some(8)));
}
