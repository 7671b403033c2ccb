//! Regression tests of issue 15's classes that concern what a user points lowrank at: no panic,
//! abort or out-of-memory kill on any input (3), and no silently wrong answer (4). Every command
//! runs the real binary and must end with exit status 2 and a message naming the problem and the
//! fix (or, where the user may mean it, succeed with a warning).

mod common;
use common::*;
use lowrank::model::{HeadKind, LoadOptions, Model, ModelConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The golden tiny BERT (the PEFT fixtures' base; vocabulary 100) with a synthetic vocab.txt
/// (token "w<i>" has id i), or a random one like it with `layers` layers.
fn peft_base(dir: &Path, name: &str, layers: Option<usize>) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let vocab: Vec<String> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).chain((5..100).map(|i| format!("w{i}"))).collect();
    std::fs::write(out.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let src = golden().join("golden/tiny-bert");
    match layers {
        None => {
            for f in ["config.json", "model.safetensors"] {
                std::fs::copy(src.join(f), out.join(f)).unwrap();
            }
        }
        Some(n) => {
            let text = std::fs::read_to_string(src.join("config.json"))
                .unwrap()
                .replace("\"num_hidden_layers\": 2", &format!("\"num_hidden_layers\": {n}"));
            let cfg = ModelConfig::from_json_str(&text).unwrap();
            let mut m = Model::new(&cfg, HeadKind::Bert, 3);
            for (i, p) in m.base_params_mut().into_iter().enumerate() {
                p.data.iter_mut().enumerate().for_each(|(j, v)| *v = (((i * 31 + j * 17) % 23) as f32 - 11.0) * 0.01);
            }
            let names: Vec<String> = (0..3).map(|i| format!("LABEL_{i}")).collect();
            lowrank::model::save::write_model_folder(&m, &out, &names, &out).unwrap();
        }
    }
    out
}

/// A copy of the PEFT fixture `case` with its adapter_config.json edited.
fn edited_fixture(dir: &Path, case: &str, edit: &dyn Fn(&mut serde_json::Value)) -> PathBuf {
    let out = dir.join(format!("{case}-edited"));
    std::fs::create_dir_all(&out).unwrap();
    let src = golden().join("peft").join(case);
    std::fs::copy(src.join("adapter_model.safetensors"), out.join("adapter_model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(out.join("adapter_config.json"), cfg.to_string()).unwrap();
    out
}

fn train(model: &Path, train: &Path, val: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["train", "--model", s(model), "--train", s(train), "--val", s(val), "--batch-size", "4", "--epochs", "1", "--out", s(out)];
    args.extend_from_slice(extra);
    lowrank(&args)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn class3_tokens_beyond_the_vocabulary_and_lengths_beyond_the_positions() {
    let d = tempfile::tempdir().unwrap();
    let (tr, va) = (small_csv(d.path(), "train.csv", 16), small_csv(d.path(), "val.csv", 8));
    // MiniLM's tokenizer (30,522 tokens) on a model with 1,000 embeddings.
    let small_vocab = tiny_bert_with(d.path(), "small-vocab", 2, 1000, 512);
    let o = train(&small_vocab, &tr, &va, &d.path().join("r1"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("beyond this model's vocabulary of 1000") && stderr(&o).contains("tokenizer"), "{}", stderr(&o));
    assert!(!d.path().join("r1").exists());
    let e = lowrank_refuses(&["predict", "--model", s(&small_vocab), "--text", "an unbelievably moving film"]);
    assert!(e.contains("beyond this model's vocabulary"), "{e}");

    // A position table of 16: --max-length 64 is clamped, with a note, up front.
    let short = tiny_bert_with(d.path(), "short", 2, 30522, 16);
    let run = d.path().join("r2");
    let o = train(&short, &tr, &va, &run, &["--max-length", "64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("max_position_embeddings (16)"), "{}", stderr(&o));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["max_length"], 16);
    let long = "a long and winding review of a film that goes on and on ".repeat(20);
    for extra in [&["--max-length", "600"][..], &[]] {
        let mut args = vec!["predict", "--model", s(&short), "--text", &long, "--json"];
        args.extend_from_slice(extra);
        let out = lowrank_ok(&args);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(v["logits"][0].as_f64().unwrap().is_finite(), "{v}");
    }
    lowrank_ok(&["eval", "--run", s(&run), "--data", s(&va)]);
}

#[test]
fn class3_sizes_are_checked_before_anything_is_allocated() {
    let d = tempfile::tempdir().unwrap();
    let distil = golden().join("distilbert-base-uncased.config.json");
    let t = Instant::now();
    let e = lowrank_refuses(&["inspect", "--model", s(&distil), "--lora-r", "100000000"]);
    assert!(e.contains("--lora-r 100000000") && e.contains("768 → 768"), "{e}");
    assert!(t.elapsed().as_secs() < 20, "inspect must count, not allocate");
    let counted = lowrank_ok(&["inspect", "--model", s(&distil), "--lora-r", "768", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&counted).unwrap();
    assert_eq!(v["trainable_params"], 6 * 2 * 768 * (768 + 768), "r = 768 on q and v of 6 layers");
    // A config.json whose sizes cannot fit anywhere: refused with the figure, not an abort.
    let huge = d.path().join("huge.json");
    std::fs::write(&huge, std::fs::read_to_string(&distil).unwrap().replace("\"vocab_size\": 30522", "\"vocab_size\": 1000000000000"))
        .unwrap();
    let e = lowrank_refuses(&["inspect", "--model", s(&huge)]);
    assert!(e.contains("needs about") && e.contains("TiB") && e.contains("vocab_size"), "{e}");
    for (args, want) in [
        (&["bench", "--config", "minilm-l6", "--seq", "0"][..], "--seq must be at least 1"),
        (&["bench", "--config", "minilm-l6", "--batch", "0"], "--batch must be at least 1"),
        (&["bench", "--config", "minilm-l6", "--steps", "0"], "--steps must be at least 1"),
        (&["bench", "--config", "minilm-l6", "--seq", "4096"], "max_position_embeddings (512)"),
        (&["bench", "--config", "minilm-l6", "--seq", "512", "--batch", "1000000"], "needs about"),
        (&["bench", "--config", "minilm-l6", "--lora-r", "100000"], "--lora-r 100000"),
        (&["bench", "--gemm", "--seq", "512", "--batch", "100000000"], "needs about"),
        (&["bench", "--config", "minilm-l6", "--seq", "18446744073709551615", "--batch", "2"], "overflows"),
    ] {
        let e = lowrank_refuses(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // Training and prediction refuse what the machine cannot hold, with both figures.
    let model = tiny_bert(d.path());
    let (tr, va) = (small_csv(d.path(), "train.csv", 16), small_csv(d.path(), "val.csv", 8));
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank"))
        .env("LOWRANK_MEMORY_LIMIT", "3M")
        .args(["predict", "--model", s(&model), "--text", "fine"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("this machine has 3.0 MiB"), "{}", stderr(&out));
    let o = lowrank(&[
        "train",
        "--model",
        s(&model),
        "--train",
        s(&tr),
        "--val",
        s(&va),
        "--batch-size",
        "100000000",
        "--keep-last",
        "--out",
        s(&d.path().join("r")),
    ]);
    assert!(stderr(&o).contains("needs about") && stderr(&o).contains("lower --batch-size"), "{}", stderr(&o));
}

#[test]
fn class4_non_finite_weights_and_missing_heads_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_bert(d.path());
    let (mut m, _) = Model::from_pretrained(&model, &LoadOptions::default()).unwrap();
    m.base_params_mut()[4].data[7] = f32::NAN;
    let nan = d.path().join("nan-model");
    lowrank::model::save::write_model_folder(&m, &nan, &["negative".into(), "positive".into()], &model).unwrap();
    let e = lowrank_refuses(&["predict", "--model", s(&nan), "--text", "fine", "--json"]);
    assert!(e.contains("non-finite") && !e.contains("null"), "{e}");
    let (tr, va) = (small_csv(d.path(), "train.csv", 16), small_csv(d.path(), "val.csv", 8));
    let o = train(&nan, &tr, &va, &d.path().join("r"), &[]);
    assert!(stderr(&o).contains("non-finite"), "{}", stderr(&o));
    // A base model without a trained classification head predicts nothing without an adapter.
    let e = lowrank_refuses(&["predict", "--model", s(&minilm()), "--text", "fine"]);
    assert!(e.contains("no trained classification head") && e.contains("--adapter"), "{e}");
    // An adapter whose saved head holds NaN.
    let run = d.path().join("run");
    assert!(train(&model, &tr, &va, &run, &[]).status.success());
    let bad = d.path().join("bad-adapter");
    std::fs::create_dir(&bad).unwrap();
    for e in std::fs::read_dir(run.join("adapter")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let f = lowrank::tensorfile::TensorFile::read(&bad.join("adapter_model.safetensors")).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        f.tensors.iter().map(|(k, t)| (k.clone(), t.shape.clone(), t.f32.clone())).collect();
    let b = tensors.iter_mut().find(|(k, _, _)| k.contains("lora_B")).unwrap();
    b.2[0] = f32::INFINITY;
    let out: Vec<lowrank::tensorfile::OutTensor> =
        tensors.iter().map(|(n, s, d)| lowrank::tensorfile::OutTensor { name: n.clone(), shape: s.clone(), data: d }).collect();
    lowrank::tensorfile::write(&bad.join("adapter_model.safetensors"), &out, &[("format", "pt")]).unwrap();
    let e = lowrank_refuses(&["predict", "--model", s(&model), "--adapter", s(&bad), "--text", "fine"]);
    assert!(e.contains("non-finite") && e.contains("bad-adapter"), "{e}");
    let e = lowrank_refuses(&["merge", "--model", s(&model), "--adapter", s(&bad), "--out", s(&d.path().join("m"))]);
    assert!(e.contains("non-finite"), "{e}");
}

#[test]
fn class4_adapters_for_another_base_are_errors_or_warnings() {
    let d = tempfile::tempdir().unwrap();
    // lowrank's own adapter records its base's shape: on a deeper model it is refused.
    let model = tiny_bert(d.path());
    let (tr, va) = (small_csv(d.path(), "train.csv", 16), small_csv(d.path(), "val.csv", 8));
    let run = d.path().join("run");
    assert!(train(&model, &tr, &va, &run, &[]).status.success());
    let deeper = tiny_bert_with(d.path(), "deeper", 3, 30522, 512);
    for args in [
        vec!["predict", "--model", s(&deeper), "--adapter", s(&run.join("adapter")), "--text", "fine"],
        vec!["merge", "--model", s(&deeper), "--adapter", s(&run.join("adapter")), "--out", s(&d.path().join("m"))],
    ] {
        let e = lowrank_refuses(&args);
        assert!(e.contains("another base model") && e.contains("n_layers 2 (adapter) vs 3 (base)"), "{e}");
    }
    let e = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_lowrank"))
            .args([
                "train",
                "--model",
                s(&deeper),
                "--train",
                s(&tr),
                "--val",
                s(&va),
                "--adapter",
                s(&run.join("adapter")),
                "--out",
                s(&d.path().join("r3")),
            ])
            .output()
            .unwrap()
            .stderr,
    )
    .unwrap();
    assert!(e.contains("n_layers 2 (adapter) vs 3 (base)"), "train --adapter: {e}");

    // A PEFT adapter names its base by path: a local folder of another shape is an error.
    let base2 = peft_base(d.path(), "tiny2", None);
    let base3 = peft_base(d.path(), "tiny3", Some(3));
    let fixture = golden().join("peft/bert-all");
    let e = lowrank_refuses(&["predict", "--model", s(&base3), "--adapter", s(&fixture), "--text", "w5 w6 w7"]);
    assert!(e.contains("a different model") && e.contains("n_layers"), "{e}");
    // By a hub name that does not match: a warning; with layers 0-1 of a 3-layer base: a second.
    let renamed = edited_fixture(d.path(), "bert-all", &|c| c["base_model_name_or_path"] = "someone/other-model".into());
    let out = lowrank(&["predict", "--model", s(&base3), "--adapter", s(&renamed), "--text", "w5 w6 w7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"someone/other-model\"") && stderr(&out).contains("layers 0-1") && stderr(&out).contains("3 such layers"),
        "{}",
        stderr(&out)
    );
    let out = lowrank(&["predict", "--model", s(&base2), "--adapter", s(&fixture), "--text", "w5 w6 w7"]);
    assert!(out.status.success() && !stderr(&out).contains("warning"), "the right base: no warning: {}", stderr(&out));
    // target_modules that disagree with the tensors.
    let narrowed = edited_fixture(d.path(), "bert-all", &|c| c["target_modules"] = serde_json::json!(["query"]));
    let e = lowrank_refuses(&["predict", "--model", s(&base2), "--adapter", s(&narrowed), "--text", "w5"]);
    assert!(e.contains("disagree") && e.contains("does not select") && e.contains("attention.self.key"), "{e}");
    let widened = edited_fixture(d.path(), "bert-rslora", &|c| c["target_modules"] = serde_json::json!(["query", "key", "value"]));
    let e = lowrank_refuses(&["predict", "--model", s(&base2), "--adapter", s(&widened), "--text", "w5"]);
    assert!(e.contains("with no LoRA tensors") && e.contains("key"), "{e}");
}

#[test]
fn class4_labels_headers_flags_and_failed_sweeps() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_bert(d.path());
    let va = small_csv(d.path(), "val.csv", 8);
    let nan = d.path().join("nan.csv");
    std::fs::write(&nan, "text,label\nfine,1\nawful,0\ngreat,NaN\nbad,0\nok,1\n").unwrap();
    let e = stderr(&train(&model, &nan, &va, &d.path().join("r1"), &[]));
    assert!(e.contains("nan.csv:4") && e.contains("missing value"), "{e}");
    let dup = d.path().join("dup.csv");
    std::fs::write(&dup, "text,label,text\nfine,1,x\nawful,0,y\ngreat,1,z\nbad,0,w\n").unwrap();
    let e = stderr(&train(&model, &dup, &va, &d.path().join("r2"), &[]));
    assert!(e.contains("2 columns named \"text\"") && e.contains("columns 1, 3"), "{e}");
    let tr = small_csv(d.path(), "train.csv", 16);
    let e = stderr(&train(&model, &tr, &va, &d.path().join("r3"), &["--mode", "full", "--lora-r", "16", "--lora-mlp"]));
    assert!(e.contains("--lora-r, --lora-mlp apply only to --mode lora"), "{e}");
    let e = lowrank_refuses(&[
        "train",
        "--model",
        s(&model),
        "--train",
        s(&tr),
        "--val",
        s(&va),
        "--lr",
        "-0.001",
        "--out",
        s(&d.path().join("r4")),
    ]);
    assert!(e.contains("--lr") && e.contains("-0.001 is not valid"), "a negative value with a space is parsed as a number: {e}");

    // A sweep whose every trial fails does not exit 0.
    let space = d.path().join("space.json");
    std::fs::write(&space, r#"{"method": "grid", "params": {"lora_r": [100000, 200000]}}"#).unwrap();
    let sweep = d.path().join("sweep");
    let out = lowrank(&[
        "sweep",
        "--model",
        s(&model),
        "--train",
        s(&tr),
        "--val",
        s(&va),
        "--batch-size",
        "4",
        "--space",
        s(&space),
        "--out",
        s(&sweep),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("every trial of the sweep failed (2 of 2)") && stderr(&out).contains("--lora-r 100000"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read_to_string(sweep.join("leaderboard.md")).unwrap().contains("2 failed"));
}

#[test]
fn survey2_threads_are_bounded_and_a_closed_pipe_is_not_a_panic() {
    use std::process::Stdio;
    let d = tempfile::tempdir().unwrap();
    let model = tiny_bert(d.path());
    let t = std::time::Instant::now();
    let e = lowrank_refuses(&["--threads", "100000", "inspect", "--model", s(&model)]);
    assert!(e.contains("--threads 100000") && e.contains("at most"), "{e}");
    assert!(t.elapsed().as_secs() < 30, "refused without starting the threads");
    lowrank_ok(&["--threads", "0", "inspect", "--model", s(&model)]);

    // `lowrank inspect | head -c 0`: the reader is gone before the model has loaded, so the
    // first write meets a closed pipe.
    for _ in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lowrank"))
            .args(["inspect", "--model", s(&model), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
        assert!(out.status.success(), "{:?}: {err}", out.status);
    }
}
