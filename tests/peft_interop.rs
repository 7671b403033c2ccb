//! lowrank → PEFT, kept honest in CI without torch. scripts/golden/make_peft_interop.py (part B)
//! trains tiny lowrank runs on all-MiniLM-L6-v2, has PEFT load each adapter and compute logits,
//! and records the exact files PEFT loaded with those logits (tests/fixtures/peft/lowrank-made).
//! This test trains the same runs again with this build of lowrank and requires that it writes
//! the same files — byte for byte when the CPU has the same vector features as the machine that
//! recorded them; otherwise the same tensors by name and shape, the logits then taken with the
//! recorded adapter — and that its logits are PEFT's within 1e-5. A change to the adapter writer
//! or to the numerics fails here until the script is rerun, so what PEFT checked is what lowrank
//! writes. The same for causal-LM adapters on the tiny Llama
//! (scripts/golden/make_peft_interop_lm.py, tests/fixtures/peft-decoder/lowrank-made).

mod common;
use common::*;
use lowrank::tensorfile::TensorFile;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft/lowrank-made")
}

fn cpu_features() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info.lines().find(|l| l.starts_with("flags")).and_then(|l| l.split(':').nth(1)).unwrap_or("");
    let wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_bf16"];
    let mut v: Vec<String> = flags.split_whitespace().filter(|f| wanted.contains(f)).map(str::to_string).collect();
    v.sort();
    v
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The adapter lowrank wrote in `adapter` is the one PEFT checked in `case`: adapter_config.json
/// identical but for the base path (this machine's; it must end with `base`), and
/// adapter_model.safetensors the same bytes (`exact`: same vector features as the recording
/// machine) or the same tensors within 1e-3 of their scale. `script` re-records them.
fn same_adapter(name: &str, adapter: &Path, case: &Path, exact: bool, base: &str, script: &str) {
    let strip = |mut v: Value| {
        let b = v["base_model_name_or_path"].as_str().unwrap_or("").to_string();
        assert!(b.ends_with(base), "{name}: base_model_name_or_path {b:?}");
        v.as_object_mut().unwrap().remove("base_model_name_or_path");
        v
    };
    assert_eq!(
        strip(json(&adapter.join("adapter_config.json"))),
        strip(json(&case.join("adapter_config.json"))),
        "{name}: adapter_config.json"
    );
    let (got_bytes, want_bytes) =
        (std::fs::read(adapter.join("adapter_model.safetensors")).unwrap(), std::fs::read(case.join("adapter_model.safetensors")).unwrap());
    if exact {
        assert!(
            got_bytes == want_bytes,
            "{name}: adapter_model.safetensors differs from the one PEFT checked; if the change is intended, rerun scripts/golden/{script}"
        );
    } else {
        // Other vector widths round the sums differently, and through the run's Adam steps (each
        // moving a weight by up to lr, in a direction a near-zero gradient can flip) the values
        // drift by more than any tight tolerance: here the regenerated file must have the same
        // tensors (names, shapes, metadata), and the logits are checked on the recorded adapter.
        eprintln!("{name}: this CPU's vector features differ from the recording machine's: comparing the tensors' names and shapes, and PEFT's logits with the adapter PEFT checked");
        let (g, w) = (
            TensorFile::read(&adapter.join("adapter_model.safetensors")).unwrap(),
            TensorFile::read(&case.join("adapter_model.safetensors")).unwrap(),
        );
        assert_eq!(g.tensors.keys().collect::<Vec<_>>(), w.tensors.keys().collect::<Vec<_>>(), "{name}: tensor names");
        assert_eq!(g.metadata, w.metadata, "{name}: metadata");
        for (k, t) in &w.tensors {
            assert_eq!(g.tensors[k].shape, t.shape, "{name}: {k}");
            assert!(g.tensors[k].f32.iter().all(|v| v.is_finite()), "{name}: {k}");
        }
    }
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect()
}

/// Same features as the machine that recorded `want` (LOWRANK_TEST_OTHER_CPU=1 takes the other
/// CPU's path here, to check it).
fn exact(want: &Value) -> bool {
    if std::env::var_os("LOWRANK_TEST_OTHER_CPU").is_some() {
        return false;
    }
    want["cpu_features"].as_array().is_some_and(|f| f.iter().filter_map(Value::as_str).eq(cpu_features().iter().map(String::as_str)))
}

#[test]
fn lowrank_regenerates_the_causal_lm_adapters_peft_checked_and_gives_peft_s_logits() {
    // scripts/golden/make_peft_interop_lm.py: seeded causal-LM LoRA runs on the tiny Llama with a
    // character tokenizer; PEFT loaded each adapter onto LlamaForCausalLM and recorded the last
    // position's logits of three sequences.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft-decoder/lowrank-made");
    let model = dir.join("model");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/golden/make_peft_interop_lm.py", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").exists())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 2, "the script records two runs");
    let d = tempfile::tempdir().unwrap();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let want = json(&case.join("expected.json"));
        let run = d.path().join(&name);
        let mut args: Vec<String> =
            ["train", "--model", s(&model), "--data", s(&dir.join("chats.jsonl"))].iter().map(|a| a.to_string()).collect();
        args.extend(want["train_args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
        args.extend(["--out".to_string(), s(&run).to_string()]);
        lowrank_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let adapter = run.join("adapter");
        same_adapter(&name, &adapter, &case, exact(&want), "lowrank-made/model", "make_peft_interop_lm.py");
        assert_eq!(json(&adapter.join("adapter_config.json"))["task_type"], "CAUSAL_LM");

        // lowrank's logits with its adapter are PEFT's (last position of each sequence).
        use lowrank::infer::generate::{full_logits, AdapterSet};
        use lowrank::model::{Activations, HeadKind, LoadOptions, Model};
        let (base, _) = Model::from_pretrained(&model, &LoadOptions { head: Some(HeadKind::Lm), num_labels: None, seed: 0 }).unwrap();
        // The regenerated adapter where it is the one PEFT checked, else that one.
        let scored = if exact(&want) { adapter.clone() } else { case.clone() };
        let mut set = AdapterSet::new(base, vec![(name.clone(), scored)]).unwrap();
        set.select(Some(&name)).unwrap();
        let mut acts = Activations::default();
        let ids: Vec<Vec<u32>> = serde_json::from_value(want["input_ids"].clone()).unwrap();
        let got: Vec<f32> = ids.iter().flat_map(|ids| full_logits(set.model(), ids, &mut acts).unwrap()).collect();
        lowrank::ops::testing::assert_close(&format!("{name}: lowrank vs PEFT logits"), &got, &f32s(&want["peft_logits"]), 0.0, 1e-5);
        // The adapter matters: the base model's logits are far from them.
        let base_delta = got.iter().zip(f32s(&want["base_logits"])).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(base_delta > 1e-2, "{name}: {base_delta}");
    }
}

#[test]
fn lowrank_regenerates_the_adapters_peft_checked_and_gives_peft_s_logits() {
    let dir = fixtures();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/golden/make_peft_interop.py --part b", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "the script records five runs; found {}", cases.len());
    let d = tempfile::tempdir().unwrap();
    let (val, test) = (d.path().join("val.csv"), d.path().join("test.csv"));
    head_csv(&rt("val"), &val, 50);
    head_csv(&rt("test"), &test, 50);
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let want = json(&case.join("expected.json"));
        let run = d.path().join(&name);
        let mut args: Vec<String> = ["train", "--model", s(&minilm()), "--train", s(&rt("train")), "--val", s(&val), "--test", s(&test)]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(want["train_args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
        args.extend(["--out".to_string(), s(&run).to_string()]);
        lowrank_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let adapter = run.join("adapter");

        same_adapter(&name, &adapter, &case, exact(&want), "all-MiniLM-L6-v2", "make_peft_interop.py --part b");
        assert_eq!(json(&adapter.join("labels.json")), json(&case.join("labels.json")), "{name}: labels.json");
        let mut lr = json(&adapter.join("lowrank.json"));
        let mut lw = json(&case.join("lowrank.json"));
        lr.as_object_mut().unwrap().remove("version");
        lw.as_object_mut().unwrap().remove("version");
        assert_eq!(lr, lw, "{name}: lowrank.json");

        // lowrank's logits with the regenerated adapter (another CPU: the one PEFT checked) are PEFT's.
        let texts: Vec<String> = serde_json::from_value(want["texts"].clone()).unwrap();
        let scored = if exact(&want) { adapter.clone() } else { case.clone() };
        let mut pargs =
            vec!["predict".to_string(), "--model".into(), s(&minilm()).into(), "--adapter".into(), s(&scored).into(), "--json".into()];
        for t in &texts {
            pargs.extend(["--text".to_string(), t.clone()]);
        }
        let out = lowrank_ok(&pargs.iter().map(String::as_str).collect::<Vec<_>>());
        let got: Vec<f32> = out
            .lines()
            .flat_map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        let peft: Vec<f32> = want["peft_logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
            .collect();
        lowrank::ops::testing::assert_close(&format!("{name}: lowrank vs PEFT logits"), &got, &peft, 0.0, 1e-5);
    }
}
