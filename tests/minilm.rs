//! The real all-MiniLM-L6-v2 (fetched by scripts/fetch-assets.sh): token ids and the [CLS] hidden
//! state for three sentences must equal transformers' (tests/fixtures/minilm, made by
//! scripts/golden/make_minilm.py).

use lowrank::data::batch::Batch;
use lowrank::model::LoadOptions;
use lowrank::model::{Activations, Model, Pass};
use lowrank::tensorfile::TensorFile;
use lowrank::tokenize::Tokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn model_dir() -> PathBuf {
    let assets =
        std::env::var_os("LOWRANK_ASSETS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"));
    let dir = assets.join("all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run scripts/fetch-assets.sh first", dir.display());
    dir
}

fn fixture() -> (Value, TensorFile) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm");
    let meta = serde_json::from_str(&std::fs::read_to_string(dir.join("cls.json")).unwrap()).unwrap();
    (meta, TensorFile::read(&dir.join("cls.safetensors")).unwrap())
}

#[test]
fn token_ids_equal_transformers_with_tokenizer_json_and_with_vocab_txt() {
    let (meta, _) = fixture();
    let sentences: Vec<String> = serde_json::from_value(meta["sentences"].clone()).unwrap();
    let want: Vec<Vec<u32>> = serde_json::from_value(meta["token_ids"].clone()).unwrap();
    let from_json = Tokenizer::from_model_dir(&model_dir(), 128).unwrap();
    assert!(from_json.source.ends_with("tokenizer.json"));
    let from_vocab = Tokenizer::from_vocab(&model_dir().join("vocab.txt"), true, 128).unwrap();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    assert_eq!(from_json.encode_batch(&refs).unwrap(), want);
    assert_eq!(from_vocab.encode_batch(&refs).unwrap(), want);
}

#[test]
fn cls_hidden_state_equals_transformers() {
    let (meta, file) = fixture();
    let ids: Vec<Vec<u32>> = serde_json::from_value(meta["token_ids"].clone()).unwrap();
    let (model, report) = Model::from_pretrained(&model_dir(), &LoadOptions::default()).unwrap();
    assert!(report.ignored.iter().any(|n| n.ends_with("position_ids")));
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = Batch::pack(&refs, &[], None, 0);
    let mut acts = Activations::default();
    model.forward(&batch, &mut acts, Pass::Infer);
    let hidden = model.pooled_hidden(&acts, Pass::Infer);
    let want = &file.tensors["cls"];
    let c = want.shape[1];
    for i in 0..batch.len() {
        let got = &hidden[i * c..(i + 1) * c];
        lowrank::ops::testing::assert_close(&format!("sentence {i}: [CLS] hidden state"), got, &want.f32[i * c..(i + 1) * c], 0.0, 1e-4);
    }
}
