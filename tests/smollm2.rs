//! The real SmolLM2-135M-Instruct, loaded from its GGUF file (Q4_1, dequantized at load) through
//! lowrank's own decoder: token ids and the last token's final hidden state for three prompts
//! must equal what transformers computes from the same file (tests/fixtures/smollm2/hidden.*,
//! made by scripts/golden/make_smollm2_golden.py).

mod common;

use lowrank::data::batch::Batch;
use lowrank::model::{Activations, HeadKind, LoadOptions, Model, Pass};
use lowrank::tensorfile::TensorFile;
use lowrank::tokenize::Tokenizer;
use serde_json::Value;
use std::path::PathBuf;

fn asset() -> Option<PathBuf> {
    common::smollm2_gguf()
}

fn fixtures() -> PathBuf {
    common::smollm2_fixtures()
}

#[test]
fn last_token_hidden_states_and_token_ids_equal_transformers() {
    let Some(gguf) = asset() else { return };
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("hidden.json")).unwrap()).unwrap();
    let want = TensorFile::read(&fixtures().join("hidden.safetensors")).unwrap();
    let tokenizer = Tokenizer::from_model_dir(&gguf, 8192).unwrap();
    // Two classes: the head is not compared, only the final hidden state that reaches it.
    let (model, report) =
        Model::from_pretrained(&gguf, &LoadOptions { head: Some(HeadKind::Score), num_labels: Some(2), seed: 0 }).unwrap();
    assert_eq!(report.initialised, ["score.weight"]);
    assert_eq!(model.param_counts().1 - 2 * 576, 134_515_008, "SmolLM2-135M's parameter count");
    for p in meta["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let text = p["rendered"].as_str().or(p["text"].as_str()).unwrap();
        let ids = tokenizer.encode(text).unwrap();
        let want_ids: Vec<u32> = p["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want_ids, "{name}: token ids");
        let batch = Batch::pack(&[&ids], &[], None, tokenizer.pad_id);
        let mut acts = Activations::default();
        model.forward(&batch, &mut acts, Pass::Infer);
        let hidden = model.pooled_hidden(&acts, Pass::Infer);
        let expected = &want.tensors[&format!("{name}.hidden")].f32;
        let scale = expected.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let diff = hidden.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(hidden.iter().all(|v| v.is_finite()), "{name}: non-finite hidden state");
        assert!(diff <= 1e-4 * scale.max(1.0), "{name}: max |Δhidden| {diff:e} (max |hidden| {scale:e})");
        eprintln!("{name}: {} tokens, max |Δhidden| = {diff:.2e} (max |hidden| {scale:.2})", ids.len());
    }
}
