//! Causal-LM data against transformers, with the real SmolLM2-135M-Instruct tokenizer (read from
//! its GGUF file): the rendered text, token ids and loss mask of conversations under SmolLM2's chat
//! template and under Llama-3-style and Qwen2-style templates, TRL's prompt / completion and text
//! examples, and the generation prompt, all equal to tests/fixtures/lm-data/parity.json (made by
//! scripts/golden/make_lm_data_fixtures.py); and every chitchat conversation masked to exactly its
//! assistant replies.

use lowrank::data::lm::{self, ChatTemplate, LmOptions, LmSample, Message, Role};
use lowrank::tokenize::Tokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn assets() -> PathBuf {
    std::env::var_os("LOWRANK_ASSETS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"))
}

fn tokenizer() -> Option<Tokenizer> {
    let p = assets().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !p.exists() {
        lowrank::ci::missing(&p.display().to_string(), "run scripts/fetch-assets.sh");
        return None;
    }
    Some(Tokenizer::from_model_dir(&p, 8192).unwrap())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm-data")
}

fn parity() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("parity.json")).unwrap()).unwrap()
}

fn template_file(name: &str) -> Option<PathBuf> {
    (name != "smollm2").then(|| fixtures().join(format!("{name}.jinja")))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn mask(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() == 1).collect()
}

/// Writes `records` as a JSON Lines file, then reads it and loads it (read, rendered, tokenised).
fn load(tok: &Tokenizer, records: &[Value], template: Option<&Path>) -> (lm::LmFile, lm::LmEncoded) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    std::fs::write(&path, records.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let encoded =
        lm::load(&path, tok, template, &LmOptions { max_length: 8192, train_on_prompt: false, drop_long_prompts: false }).unwrap();
    (lm::read_jsonl(&path).unwrap(), encoded)
}

#[test]
fn conversations_render_tokenise_and_mask_as_transformers() {
    let Some(tok) = tokenizer() else { return };
    let want = parity();
    let chats = want["chats"].as_array().unwrap();
    for name in ["smollm2", "llama3", "qwen2"] {
        let cases: Vec<&Value> = chats.iter().filter(|c| c["template"] == name).collect();
        assert!(cases.len() >= 6, "{name}: {} cases", cases.len());
        let file = template_file(name);
        let records: Vec<Value> = cases.iter().map(|c| serde_json::json!({"messages": c["messages"]})).collect();
        let (read, got) = load(&tok, &records, file.as_deref());
        let template = ChatTemplate::resolve(file.as_deref(), &tok).unwrap();
        for ((case, example), record) in cases.iter().zip(&got.examples).zip(&read.records) {
            let LmSample::Chat { messages } = &record.sample else { panic!() };
            let rendered = lm::render_chat(&template, messages).unwrap();
            assert_eq!(rendered.text, case["rendered"].as_str().unwrap(), "{name}: rendered text");
            assert_eq!(example.ids, ids(&case["ids"]), "{name}: ids of {}", case["rendered"]);
            assert_eq!(example.loss, mask(&case["loss"]), "{name}: loss mask of {}", case["rendered"]);
        }
    }
}

#[test]
fn generation_tagged_smollm2_template_renders_as_the_builtin_one() {
    let Some(tok) = tokenizer() else { return };
    let builtin = ChatTemplate::from_tokenizer(&tok).unwrap();
    let tagged = ChatTemplate::from_file(&fixtures().join("smollm2-generation.jinja"), &tok).unwrap();
    let conversations = [
        vec![Message::user("What is LoRA?")],
        vec![Message::new(Role::System, "Be brief."), Message::user("Hi"), Message::new(Role::Assistant, "Hello!")],
    ];
    for messages in &conversations {
        for generation in [false, true] {
            assert_eq!(tagged.render(messages, generation).unwrap(), builtin.render(messages, generation).unwrap());
        }
    }
}

#[test]
fn prompt_completion_and_text_equal_trl() {
    let Some(tok) = tokenizer() else { return };
    let want = parity();
    for (key, n) in [("prompt_completions", 3), ("texts", 2)] {
        let cases = want[key].as_array().unwrap();
        assert_eq!(cases.len(), n);
        let records: Vec<Value> = cases
            .iter()
            .map(|c| {
                let mut r = c.clone();
                let o = r.as_object_mut().unwrap();
                o.remove("ids");
                o.remove("loss");
                r
            })
            .collect();
        let (_, got) = load(&tok, &records, None);
        for (case, example) in cases.iter().zip(&got.examples) {
            assert_eq!(example.ids, ids(&case["ids"]), "{case}");
            assert_eq!(example.loss, mask(&case["loss"]), "{case}");
        }
    }
    assert_eq!(tok.eos_ids, [want["tokenizer"]["eos_id"].as_u64().unwrap() as u32]);
}

#[test]
fn generation_prompt_equals_transformers() {
    let Some(tok) = tokenizer() else { return };
    for case in parity()["generation_prompts"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let template = ChatTemplate::resolve(template_file(name).as_deref(), &tok).unwrap();
        let messages = [Message::user("What is LoRA?")];
        assert_eq!(lm::generation_prompt(&template, &messages).unwrap(), case["text"].as_str().unwrap(), "{name}");
        assert_eq!(lm::generation_prompt_ids(&template, &tok, &messages).unwrap(), ids(&case["ids"]), "{name}");
    }
}

/// Every chitchat conversation: the loss runs, decoded, are its assistant replies, each with its
/// <|im_end|>, in order (a run may start with whitespace the tokenizer merged into the reply's
/// first token).
#[test]
fn chitchat_loss_is_exactly_the_assistant_replies() {
    let Some(tok) = tokenizer() else { return };
    let path = assets().join("chitchat/chitchat.jsonl");
    if !path.exists() {
        lowrank::ci::missing(&path.display().to_string(), "run scripts/fetch-assets.sh");
        return;
    }
    let file = lm::read_jsonl(&path).unwrap();
    let got = lm::load(&path, &tok, None, &LmOptions { max_length: 32768, train_on_prompt: false, drop_long_prompts: false }).unwrap();
    assert_eq!(got.examples.len(), file.records.len());
    assert!(got.examples.len() > 4000, "{}", got.examples.len());
    assert_eq!(got.truncation.truncated, 0, "{}", got.truncation);
    for (record, example) in file.records.iter().zip(&got.examples) {
        let LmSample::Chat { messages } = &record.sample else { panic!() };
        let replies: Vec<String> =
            messages.iter().filter(|m| m.role == Role::Assistant).map(|m| format!("{}<|im_end|>", m.content)).collect();
        let mut runs: Vec<Vec<u32>> = Vec::new();
        for (t, (&id, &on)) in example.ids.iter().zip(&example.loss).enumerate() {
            if on && (t == 0 || !example.loss[t - 1]) {
                runs.push(Vec::new());
            }
            if on {
                runs.last_mut().unwrap().push(id);
            }
        }
        let runs: Vec<String> = runs.iter().map(|r| tok.decode(r, false).unwrap()).collect();
        assert_eq!(runs.len(), replies.len(), "line {}", record.line);
        for (run, reply) in runs.iter().zip(&replies) {
            let extra = run.strip_suffix(reply.as_str()).unwrap_or_else(|| panic!("line {}: {run:?} is not {reply:?}", record.line));
            assert!(extra.chars().all(char::is_whitespace), "line {}: {run:?}", record.line);
        }
    }
}
