//! End to end: `lowrank train` on a slice of the real data with the real MiniLM — loss falls and
//! every output file exists and parses; a killed run resumes to the same final metrics; and each
//! bad input gets a clear error.

mod common;
use common::*;
use std::path::Path;

/// The first rows of the reference split's three files, written into a test folder.
struct Slice {
    train: String,
    val: String,
    test: String,
}

impl Slice {
    fn new(dir: &Path, train: usize, eval: usize) -> Slice {
        let (t, v, te) = (dir.join("train.csv"), dir.join("val.csv"), dir.join("test.csv"));
        head_csv(&rt("train"), &t, train);
        head_csv(&rt("val"), &v, eval);
        head_csv(&rt("test"), &te, eval);
        Slice { train: s(&t).to_string(), val: s(&v).to_string(), test: s(&te).to_string() }
    }

    /// `lowrank train` on the MiniLM with the seed's head, max length 64, on these files, then `extra`.
    fn train_args(&self, extra: &[&str]) -> Vec<String> {
        let model = minilm();
        let common = ["train", "--model", s(&model), "--head", "distilbert", "--max-length", "64"];
        let files = ["--train", &self.train, "--val", &self.val, "--test", &self.test];
        common.iter().chain(&files).chain(extra).map(|a| a.to_string()).collect()
    }
}

/// Runs the binary with owned arguments, expecting success; returns stdout.
fn run_ok(args: &[String]) -> String {
    lowrank_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn step_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn tiny_run_learns_and_writes_every_file() {
    let d = tempfile::tempdir().unwrap();
    let data = Slice::new(d.path(), 240, 60);
    let te = &data.test;
    let run = d.path().join("run");
    let out = run_ok(&data.train_args(&[
        "--epochs",
        "2",
        "--scaling",
        "peft",
        "--lr",
        "1e-3",
        "--lora-query",
        "--lora-value",
        "--lora-mlp",
        "--lora-head",
        "--out",
        s(&run),
    ]));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    // q+v+mlp (258,048) + the two head linears (6,144 + 3,088).
    assert_eq!(summary["trainable_params"], 267_280);
    assert_eq!(summary["steps"], 40);
    let losses = step_losses(&run);
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[losses.len() - 10..].iter().sum::<f64>() / 10.0;
    assert!(last < first - 0.05, "loss did not fall: first 10 steps {first:.4}, last 10 {last:.4}");
    assert!(summary["val_acc"].as_f64().unwrap() > 0.65, "above the majority rate (58%): {summary}");
    for f in ["config.json", "labels.json", "summary.json", "adapter/adapter_config.json", "adapter/labels.json"] {
        let _: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join(f)).unwrap()).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    for f in ["train.csv", "val.csv", "test.csv"] {
        assert!(csv::Reader::from_path(run.join(f)).unwrap().records().all(|r| r.is_ok()), "{f}");
    }
    for f in ["best.safetensors", "checkpoint.safetensors", "adapter/adapter_model.safetensors"] {
        lowrank::tensorfile::TensorFile::read(&run.join(f)).unwrap();
    }
    for f in ["loss.png", "accuracy.png"] {
        assert_eq!(&std::fs::read(run.join(f)).unwrap()[1..4], b"PNG", "{f}");
    }
    for f in ["loss.svg", "accuracy.svg"] {
        assert!(std::fs::read_to_string(run.join(f)).unwrap().contains("<svg"), "{f}");
    }
    let evals = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().filter(|l| l.contains("\"eval\"")).count();
    assert_eq!(evals, 2, "one validation per epoch");
    // The trained run evaluates on another file with per-class metrics.
    let eval = lowrank_ok(&["eval", "--run", s(&run), "--data", te, "--json"]);
    let m: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(m["n"], 60);
    assert!((m["accuracy"].as_f64().unwrap() - summary["test_acc"].as_f64().unwrap()).abs() < 1e-9);

    // Predict with the adapter (twice, under two names, on one base), then with the merged model.
    let adapter = run.join("adapter");
    let text = "A moving, beautifully acted film.";
    let two = lowrank_ok(&[
        "predict",
        "--model",
        s(&minilm()),
        "--adapter",
        &format!("a={}", s(&adapter)),
        "--adapter",
        &format!("b={}", s(&adapter)),
        "--text",
        text,
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = two.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["adapter"].as_str(), lines[1]["adapter"].as_str()), (Some("a"), Some("b")));
    assert_eq!(lines[0]["logits"], lines[1]["logits"], "the base is restored between adapters");
    assert!(["rotten", "fresh"].contains(&lines[0]["label"].as_str().unwrap()));
    let merged = d.path().join("merged");
    lowrank_ok(&["merge", "--model", s(&minilm()), "--adapter", s(&adapter), "--out", s(&merged)]);
    let m: serde_json::Value =
        serde_json::from_str(lowrank_ok(&["predict", "--model", s(&merged), "--text", text, "--json"]).trim()).unwrap();
    let (a, b) = (lines[0]["logits"].as_array().unwrap(), m["logits"].as_array().unwrap());
    for (x, y) in a.iter().zip(b) {
        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-4, "merged {b:?} vs adapter {a:?}");
    }
    assert_eq!(m["label"], lines[0]["label"]);

    // Training continues from the adapter: it starts where the first run ended.
    let more = d.path().join("more");
    run_ok(&data.train_args(&["--epochs", "1", "--lr", "1e-3", "--adapter", s(&adapter), "--out", s(&more)]));
    let cont: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(more.join("summary.json")).unwrap()).unwrap();
    assert_eq!(cont["trainable_params"], 258_048, "the adapter's LoRA layers train (its head is loaded, frozen)");
    let start: f64 = step_losses(&more)[..5].iter().sum::<f64>() / 5.0;
    assert!(start < first - 0.05, "continued training starts from the adapter: first losses {start:.4} vs a fresh run's {first:.4}");
}

#[test]
fn killed_run_resumes_to_the_same_final_metrics() {
    let d = tempfile::tempdir().unwrap();
    let data = Slice::new(d.path(), 96, 40);
    let args = |out: &Path| -> Vec<String> {
        data.train_args(&["--epochs", "2", "--batch-size", "6", "--checkpoint-every", "3", "--out", s(out)])
    };
    let whole = d.path().join("whole");
    run_ok(&args(&whole));

    let cut = d.path().join("cut");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lowrank"))
        .args(args(&cut))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let steps =
            std::fs::read_to_string(cut.join("metrics.jsonl")).map(|s| s.lines().filter(|l| l.contains("\"step\"")).count()).unwrap_or(0);
        if steps >= 10 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed().as_secs() < 300, "the run made no progress");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!cut.join("summary.json").exists(), "killed before the end");
    lowrank_ok(&["train", "--resume", s(&cut)]);

    let read = |p: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p.join("summary.json")).unwrap()).unwrap() };
    let (mut sa, mut sb) = (read(&whole), read(&cut));
    for s in [&mut sa, &mut sb] {
        for k in ["train_seconds", "wall_seconds", "examples_per_s", "tokens_per_s"] {
            s.as_object_mut().unwrap().remove(k);
        }
    }
    assert_eq!(sa, sb, "the summaries (timings aside) differ");
    let bytes = |p: &Path, f: &str| std::fs::read(p.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert_eq!(bytes(&whole, "metrics.jsonl"), bytes(&cut, "metrics.jsonl"), "metrics.jsonl differs");
    for f in ["train.csv", "val.csv", "test.csv", "labels.json", "adapter/adapter_config.json", "adapter/labels.json"] {
        assert_eq!(bytes(&whole, f), bytes(&cut, f), "{f} differs");
    }
    // Weights: every tensor and the metadata (safetensors' header order may vary between processes).
    for f in ["best.safetensors", "adapter/adapter_model.safetensors"] {
        let (a, b) =
            (lowrank::tensorfile::TensorFile::read(&whole.join(f)).unwrap(), lowrank::tensorfile::TensorFile::read(&cut.join(f)).unwrap());
        assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>(), "{f}: tensor names");
        for (k, t) in &a.tensors {
            assert_eq!((&t.shape, &t.f32), (&b.tensors[k].shape, &b.tensors[k].f32), "{f}: {k} differs");
        }
        assert_eq!(a.metadata, b.metadata, "{f}: metadata");
    }
    assert_eq!(step_losses(&whole), step_losses(&cut), "the resumed run took different steps");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    s(&p).to_string()
}

#[test]
fn bad_inputs_get_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_bert(d.path());
    let good = write(d.path(), "good.csv", b"text,label\nfine film,1\nawful,0\ngreat,1\nbad,0\n");
    let train = |data: &str, extra: &[&str]| {
        let out = d.path().join(format!("run-{}", rand::random::<u32>()));
        let mut a = vec!["train", "--model", s(&model), "--train", data, "--val", &good, "--batch-size", "2", "--out", s(&out)];
        a.extend_from_slice(extra);
        lowrank_err(&a)
    };
    let e = train(&write(d.path(), "empty.csv", b"text,label\n"), &[]);
    assert!(e.contains("no examples"), "{e}");
    let e = train(&write(d.path(), "nocol.csv", b"review,label\nok,1\nno,0\n"), &[]);
    assert!(e.contains("text") && e.contains("review"), "{e}");
    let e = train(&write(d.path(), "one.csv", b"text,label\na,1\nb,1\n"), &[]);
    assert!(e.contains("two classes"), "{e}");
    let e = train(&write(d.path(), "utf8.csv", b"text,label\nok,1\n\xff\xfe bad,0\n"), &[]);
    assert!(e.contains("UTF-8") && e.contains("utf8.csv:3"), "{e}");
    let val3 = write(d.path(), "val3.csv", b"text,label\nmeh,2\n");
    let out = d.path().join("run-val3");
    let e = lowrank_err(&["train", "--model", s(&model), "--train", &good, "--val", &val3, "--batch-size", "2", "--out", s(&out)]);
    assert!(e.contains("val3.csv:2: unknown label \"2\""), "the message names the file, the line and the label: {e}");
    let e = train(&good, &["--target-modules", "q_proj"]);
    assert!(e.contains("q_proj") && e.contains("attention.self.query"), "{e}");
    let e = train(&good, &["--lr", "1e30", "--mode", "full", "--epochs", "20"]);
    assert!(e.contains("loss became"), "{e}");
    let e = lowrank_err(&["train", "--model", "./no/such/model", "--train", &good, "--val", &good, "--out", s(&d.path().join("x"))]);
    assert!(e.contains("--model") || e.contains("fetch-assets"), "{e}");
    let broken = d.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{\"model_type\": \"bert\",").unwrap();
    let e = lowrank_err(&["inspect", "--model", s(&broken)]);
    assert!(e.contains("config.json"), "{e}");
    // Weights that do not fit the config name the tensor and both shapes.
    let shapes = d.path().join("shapes");
    std::fs::create_dir_all(&shapes).unwrap();
    std::fs::copy(model.join("model.safetensors"), shapes.join("model.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(model.join("config.json")).unwrap().replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(shapes.join("config.json"), cfg).unwrap();
    let e = lowrank_err(&["inspect", "--model", s(&shapes)]);
    assert!(e.contains("intermediate.dense") && e.contains("[48, 32]") && e.contains("[64, 32]"), "{e}");
    // An existing run folder is never overwritten.
    let run = d.path().join("done");
    lowrank_ok(&["train", "--model", s(&model), "--train", &good, "--val", &good, "--batch-size", "2", "--epochs", "1", "--out", s(&run)]);
    let e = lowrank_err(&["train", "--model", s(&model), "--train", &good, "--val", &good, "--out", s(&run)]);
    assert!(e.contains("--resume"), "{e}");
}
