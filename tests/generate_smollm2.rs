//! Generation on the real SmolLM2-135M-Instruct (GGUF Q4_1): greedy continuations of the three
//! chat prompts of tests/fixtures/smollm2/generate.json equal transformers'
//! `generate(do_sample=False, max_new_tokens=32)` token for token, without and with the PEFT
//! adapter adapter-qv (prompt ids from the GGUF's own chat template included); the key/value
//! cache gives the logits of the full forward pass; and `lowrank generate` does the same from
//! the command line (--json, several adapters chosen per request, bad names refused).

mod common;

use lowrank::data::lm::{generation_prompt, ChatTemplate, Message};
use lowrank::infer::generate::{full_logits, step, AdapterSet, GenerateOptions, Generator, KvCache, Rows, StepBuffers};
use lowrank::model::{Activations, HeadKind, LoadOptions, Model};
use lowrank::tokenize::Tokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn asset() -> Option<PathBuf> {
    common::smollm2_gguf()
}

fn fixtures() -> PathBuf {
    common::smollm2_fixtures()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_generation_equals_transformers_with_and_without_the_adapter() {
    let Some(gguf) = asset() else { return };
    let want: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("generate.json")).unwrap()).unwrap();
    let tok = Tokenizer::from_model_dir(&gguf, 1 << 20).unwrap();
    let template = ChatTemplate::from_tokenizer(&tok).expect("SmolLM2's GGUF has a chat template");
    let (model, _) = Model::from_pretrained(&gguf, &LoadOptions { head: Some(HeadKind::Lm), num_labels: None, seed: 0 }).unwrap();
    let adapter = fixtures().join("adapter-qv");
    let mut set = AdapterSet::new(model, vec![("qv".into(), adapter)]).unwrap();
    let opts = GenerateOptions { max_new_tokens: 32, eos: vec![want["eos_token_id"].as_u64().unwrap() as u32], ..Default::default() };
    let mut gen = Generator::new();
    for (key, adapter) in [("base", "base"), ("adapter_outputs", "qv")] {
        set.select(Some(adapter)).unwrap();
        gen.reset();
        for case in want[key].as_array().unwrap() {
            let q = case["question"].as_str().unwrap();
            let rendered = generation_prompt(&template, &[Message::user(q)]).unwrap();
            let ids = tok.encode_raw(&rendered).unwrap();
            assert_eq!(ids, u32s(&case["prompt_ids"]), "{q}: prompt ids");
            let mut streamed = String::new();
            let g = gen.generate(set.model(), &tok, &ids, &opts, &mut |p| streamed.push_str(p)).unwrap();
            assert_eq!(g.ids, u32s(&case["new_ids"]), "{adapter} {q:?}: generated ids ({:?})", g.text);
            assert_eq!(g.text, case["text"].as_str().unwrap());
            assert_eq!(streamed, g.text);
            assert_eq!(g.stopped.name(), case["stopped"].as_str().unwrap());
            eprintln!("{adapter} {q:?}: {} tokens, {:.1} tokens/s: {:?}", g.ids.len(), g.tokens_per_s(), g.text);
        }
    }
}

#[test]
fn the_cache_gives_the_logits_of_the_full_forward_pass() {
    let Some(gguf) = asset() else { return };
    let want: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("generate.json")).unwrap()).unwrap();
    let (model, _) = Model::from_pretrained(&gguf, &LoadOptions { head: Some(HeadKind::Lm), num_labels: None, seed: 0 }).unwrap();
    let Model::Decoder(d) = &model else { panic!("a decoder") };
    // The haiku prompt and its 32 generated tokens: prefill in two chunks, then one by one.
    let case = &want["base"][2];
    let mut seq = u32s(&case["prompt_ids"]);
    seq.extend(u32s(&case["new_ids"]));
    let mut cache = KvCache::new(d.layers.len(), d.config.kv_dim(), seq.len());
    let mut buf = StepBuffers::default();
    let mut acts = Activations::default();
    let mut at = 0;
    let mut worst = 0.0f32;
    for n in [20, 17].into_iter().chain(std::iter::repeat(1)) {
        if at + n > seq.len() {
            break;
        }
        let got = step(d, &mut cache, &seq[at..at + n], Rows::Last, &mut buf).unwrap().to_vec();
        at += n;
        // Every fifth position against the full recomputation (it costs a whole forward pass).
        if at % 5 == 0 || at == seq.len() || n > 1 {
            let full = full_logits(&model, &seq[..at], &mut acts).unwrap();
            let scale = full.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
            let diff = got.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff <= 1e-5 * scale.max(1.0) * 10.0, "position {at}: max |Δlogit| {diff:e} (max |logit| {scale})");
            worst = worst.max(diff);
        }
    }
    eprintln!("cached vs full recompute over {} positions: max |Δlogit| {worst:.2e}", seq.len());
}

#[test]
fn the_command_line_generates_with_adapters_chosen_per_request() {
    let Some(gguf) = asset() else { return };
    let want: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("generate.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.jsonl");
    let q = want["base"][1]["question"].as_str().unwrap();
    let msgs = serde_json::json!([{"role": "user", "content": q}]);
    std::fs::write(
        &file,
        format!("{}\n{}\n", serde_json::json!({"messages": msgs, "adapter": "qv"}), serde_json::json!({"messages": msgs})),
    )
    .unwrap();
    let adapter = format!("qv={}", fixtures().join("adapter-qv").display());
    let other = format!("other={}", Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft-decoder/llama-lm-all").display());
    let g = common::s(&gguf);
    let out = common::lowrank_ok(&[
        "generate",
        "--model",
        g,
        "--adapter",
        &adapter,
        "--adapter",
        &other,
        "--adapter-name",
        "base",
        "--file",
        common::s(&file),
        "--max-new-tokens",
        "32",
        "--json",
    ]);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["adapter"], "qv");
    assert_eq!(u32s(&lines[0]["ids"]), u32s(&want["adapter_outputs"][1]["new_ids"]));
    assert_eq!(lines[1]["adapter"], Value::Null);
    assert_eq!(u32s(&lines[1]["ids"]), u32s(&want["base"][1]["new_ids"]));
    assert_eq!(lines[1]["text"], want["base"][1]["text"]);
    assert!(lines[1]["tokens_per_s"].as_f64().unwrap() > 0.0);
    // Streamed text with --chat --prompt, and tokens per second on stderr.
    let out = common::lowrank(&["generate", "--model", g, "--chat", "--prompt", q, "--max-new-tokens", "32"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), want["base"][1]["text"].as_str().unwrap());
    assert!(String::from_utf8(out.stderr).unwrap().contains("tokens/s"));
    // Bad input: an unknown adapter name, an adapter for another base.
    let e = common::lowrank_err(&["generate", "--model", g, "--adapter", &adapter, "--adapter-name", "qvv", "--prompt", "Hi"]);
    assert!(e.contains("unknown adapter name \"qvv\"") && e.contains("qv, base"), "{e}");
    let e = common::lowrank_err(&["generate", "--model", g, "--adapter", &other, "--prompt", "Hi"]);
    assert!(e.contains("does not fit") && e.contains("tiny-llama"), "{e}");
    let long = "word ".repeat(9000);
    let e = common::lowrank_err(&["generate", "--model", g, "--prompt", &long, "--max-new-tokens", "1"]);
    assert!(e.contains("context holds 8192") && e.contains("shorten the prompt"), "{e}");
}
