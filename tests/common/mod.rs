//! Helpers shared by the end-to-end tests: where the fetched assets are, small data files cut
//! from the reference split, a tiny random BERT model folder, and running the binary.
#![allow(dead_code)]

pub mod golden;

use lowrank::model::ModelConfig;
use lowrank::model::{HeadKind, Model};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fetched assets folder (scripts/fetch-assets.sh), asserting it exists.
pub fn assets() -> PathBuf {
    let dir = std::env::var_os("LOWRANK_ASSETS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"));
    assert!(
        dir.join("all-MiniLM-L6-v2/model.safetensors").exists(),
        "{} has no fetched assets: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir
}

/// The packaged all-MiniLM-L6-v2.
pub fn minilm() -> PathBuf {
    assets().join("all-MiniLM-L6-v2")
}

/// The reference Rotten Tomatoes split file `part` (train, val or test).
pub fn rt(part: &str) -> PathBuf {
    assets().join(format!("rotten-tomatoes/split/{part}.csv"))
}

/// Writes the first `n` data rows of the CSV `src` (header kept) to `dst`.
pub fn head_csv(src: &Path, dst: &Path, n: usize) {
    let mut r = csv::Reader::from_path(src).unwrap();
    let mut w = csv::Writer::from_path(dst).unwrap();
    w.write_record(r.headers().unwrap()).unwrap();
    for rec in r.records().take(n) {
        w.write_record(&rec.unwrap()).unwrap();
    }
    w.flush().unwrap();
}

/// A tiny random BERT (2 layers, width 32) with MiniLM's vocabulary, as a model folder.
pub fn tiny_bert(dir: &Path) -> PathBuf {
    let cfg = ModelConfig::from_json_str(
        r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu"}"#,
    )
    .unwrap();
    let mut model = Model::new(&cfg, HeadKind::Bert, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 0.1).unwrap();
    for p in model.base_params_mut() {
        if !p.name.contains("LayerNorm") {
            p.data.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
        }
    }
    let out = dir.join("tiny-bert");
    lowrank::model::save::write_model_folder(&model, &out, &["negative".into(), "positive".into()], &minilm()).unwrap();
    out
}

/// Runs the lowrank binary with `args`.
pub fn lowrank(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lowrank")).args(args).output().expect("run lowrank")
}

/// Runs the binary and asserts success, returning stdout.
pub fn lowrank_ok(args: &[&str]) -> String {
    let out = lowrank(args);
    assert!(out.status.success(), "lowrank {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the binary expecting failure; returns stderr.
pub fn lowrank_err(args: &[&str]) -> String {
    let out = lowrank(args);
    assert!(!out.status.success(), "lowrank {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny random BERT like [`tiny_bert`] with `layers` layers, a `vocab`-row embedding table and
/// `max_pos` positions (MiniLM's tokenizer files beside it), as `dir/name`.
pub fn tiny_bert_with(dir: &Path, name: &str, layers: usize, vocab: usize, max_pos: usize) -> PathBuf {
    let cfg = ModelConfig::from_json_str(&format!(
        r#"{{"model_type": "bert", "vocab_size": {vocab}, "hidden_size": 32, "num_hidden_layers": {layers}, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": {max_pos}, "type_vocab_size": 2, "hidden_act": "gelu"}}"#
    ))
    .unwrap();
    let mut model = Model::new(&cfg, HeadKind::Bert, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 0.1).unwrap();
    for p in model.base_params_mut() {
        if !p.name.contains("LayerNorm") {
            p.data.iter_mut().for_each(|v| *v = normal.sample(&mut rng));
        }
    }
    let out = dir.join(name);
    lowrank::model::save::write_model_folder(&model, &out, &["negative".into(), "positive".into()], &minilm()).unwrap();
    out
}

/// Runs the binary expecting a clean failure (exit status 2, no panic); returns stderr.
pub fn lowrank_refuses(args: &[&str]) -> String {
    let out = lowrank(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "lowrank {args:?} should have failed with status 2:\n{err}");
    assert!(!err.contains("panicked"), "lowrank {args:?} panicked:\n{err}");
    err
}

/// Every file under `dir` (recursively, relative path → bytes), to show that a command changed
/// nothing.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `n` labelled rows of the reference training split as a CSV in `dir` (returns its path).
pub fn small_csv(dir: &Path, name: &str, n: usize) -> PathBuf {
    let p = dir.join(name);
    head_csv(&rt("train"), &p, n);
    p
}

/// The SmolLM2-135M-Instruct GGUF under the assets folder (`LOWRANK_ASSETS` or `assets/`); None,
/// after saying so (a failure under CI), when it was not fetched.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let root =
        std::env::var_os("LOWRANK_ASSETS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"));
    let p = root.join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        lowrank::ci::missing(&p.display().to_string(), "run scripts/fetch-assets.sh");
        None
    }
}

/// tests/fixtures/smollm2: transformers' figures on SmolLM2.
pub fn smollm2_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2")
}
