//! End to end: `lowrank train` as a causal LM on the tiny random Llama (tests/fixtures/golden/
//! tiny-llama) with a character-level ChatML tokenizer made here and a small JSON Lines file of
//! conversations: the task is chosen from the data, the validation perplexity falls below the
//! base model's (`lowrank eval --model`), the run writes a CAUSAL_LM adapter and its curves,
//! `lowrank eval --run` reproduces the validation loss, a killed run resumes to the same result,
//! full fine-tuning writes a *ForCausalLM folder, and bad inputs get clear errors.

mod common;
use common::{lowrank, lowrank_err, lowrank_ok, s};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The tiny Llama (vocabulary 97, 64 positions) copied into `dir` with a character-level
/// tokenizer: a-z, space, newline, digits and `.,?!'` are one token each, then <|im_start|>,
/// <|im_end|> (eos) and <|endoftext|>, decoded by concatenation; the ChatML template in
/// tokenizer_config.json.
fn tiny_llama(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/tiny-llama");
    let out = dir.join("tiny-llama");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    let chars: Vec<String> = "abcdefghijklmnopqrstuvwxyz \n0123456789.,?!'".chars().map(String::from).collect();
    let vocab: serde_json::Map<String, Value> = chars.iter().enumerate().map(|(i, c)| (c.clone(), json!(i))).collect();
    let n = chars.len();
    let special = |id: usize, content: &str| json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(n, "<|im_start|>"), special(n + 1, "<|im_end|>"), special(n + 2, "<|endoftext|>")],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(out.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let config = json!({"eos_token": "<|im_end|>", "bos_token": "<|endoftext|>", "chat_template": CHATML});
    std::fs::write(out.join("tokenizer_config.json"), config.to_string()).unwrap();
    out
}

/// 120 conversations: the user names a word, the assistant spells it backwards.
fn conversations(dir: &Path) -> PathBuf {
    let words = ["cat", "dog", "sun", "map", "red", "box", "pen", "cup", "hat", "key", "owl", "jam"];
    let lines: String = (0..120)
        .map(|i| {
            let w = words[i % words.len()];
            let w = if i % 2 == 0 { w.to_string() } else { format!("{w} {}", words[(i / 2) % words.len()]) };
            let reply: String = w.chars().rev().collect();
            format!("{}\n", json!({"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": reply}]}))
        })
        .collect();
    let path = dir.join("chats.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn step_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// `lowrank train` on the conversations (task from the data), then `extra`.
fn train_args(model: &Path, data: &Path, extra: &[&str]) -> Vec<String> {
    let common = ["train", "--model", s(model), "--data", s(data), "--max-length", "64", "--batch-size", "8", "--seed", "5"];
    common.iter().chain(extra).map(|a| a.to_string()).collect()
}

fn run_ok(args: &[String]) -> String {
    lowrank_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `lowrank eval --json` as metrics.
fn eval(args: &[&str]) -> Value {
    let mut a = vec!["eval", "--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&lowrank_ok(&a)).unwrap()
}

#[test]
fn chat_lora_run_lowers_validation_perplexity_and_exports_a_causal_lm_adapter() {
    let d = tempfile::tempdir().unwrap();
    let (model, data) = (tiny_llama(d.path()), conversations(d.path()));
    let run = d.path().join("run");
    let targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
    let args = train_args(
        &model,
        &data,
        &[
            "--epochs",
            "4",
            "--scaling",
            "peft",
            "--lora-r",
            "8",
            "--lora-alpha",
            "16",
            "--target-modules",
            targets,
            "--lr",
            "1e-2",
            "--out",
            s(&run),
        ],
    );
    let out = lowrank(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("--task causal-lm"), "the task comes from the data: {log}");
    assert!(log.contains("perplexity"), "{log}");

    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["task"], "causal-lm");
    let val_ppl = summary["val_perplexity"].as_f64().unwrap();
    assert!(summary["tokens_per_s"].as_f64().unwrap() > 0.0);
    let config = read_json(&run.join("config.json"));
    assert_eq!(config["task"], "causal-lm");
    let val = run.join("val.jsonl");
    assert_eq!(std::fs::read_to_string(&val).unwrap().lines().count(), 12, "the seeded 0.7/0.1/0.2 split is recorded");

    // Before: the base model on the same validation file; after: the run.
    let base = eval(&["--model", s(&model), "--data", s(&val), "--max-length", "64"]);
    let after = eval(&["--run", s(&run), "--data", s(&val)]);
    let (base_ppl, after_ppl) = (base["perplexity"].as_f64().unwrap(), after["perplexity"].as_f64().unwrap());
    assert!(base_ppl > 20.0, "a random model is close to uniform over 46 tokens: {base_ppl}");
    assert!(after_ppl < 0.5 * base_ppl, "training lowers the validation perplexity: {base_ppl} -> {after_ppl}");
    assert!((after_ppl - val_ppl).abs() < 1e-6 * val_ppl, "eval --run reproduces the run's validation perplexity");
    assert_eq!(base["tokens"], after["tokens"]);
    // Targets are the replies and their <|im_end|> only; --train-on-prompt counts every token.
    let all = eval(&["--model", s(&model), "--data", s(&val), "--max-length", "64", "--train-on-prompt"]);
    assert!(all["tokens"].as_u64().unwrap() > 3 * base["tokens"].as_u64().unwrap(), "{all} vs {base}");

    let evals: Vec<Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["kind"] == "eval")
        .collect();
    assert_eq!(evals.len(), 4);
    assert!(evals.iter().all(|e| e["perplexity"].as_f64().is_some()));
    let best = evals.iter().map(|e| e["loss"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert!((summary["val_loss"].as_f64().unwrap() - best).abs() < 1e-9, "the best checkpoint has the lowest validation loss");
    for f in ["perplexity.png", "perplexity.svg", "loss.png", "best.safetensors", "adapter/adapter_model.safetensors"] {
        assert!(run.join(f).exists(), "{f}");
    }
    let adapter = read_json(&run.join("adapter/adapter_config.json"));
    assert_eq!(adapter["task_type"], "CAUSAL_LM");
    assert_eq!(adapter["target_modules"].as_array().unwrap().len(), 14, "{adapter}");
    assert!(!run.join("adapter/labels.json").exists());

    // A GGUF export never replaces an input, and an existing file only with --force.
    let config_bytes = std::fs::read(run.join("config.json")).unwrap();
    for victim in [run.join("config.json"), model.join("model.safetensors")] {
        let e = lowrank_err(&["export", "--run", s(&run), "--format", "gguf", "--out", s(&victim), "--force"]);
        assert!(e.contains("writing there would replace it"), "{e}");
    }
    assert_eq!(std::fs::read(run.join("config.json")).unwrap(), config_bytes);
    let gguf = d.path().join("adapter.gguf");
    lowrank_ok(&["export", "--run", s(&run), "--format", "gguf", "--out", s(&gguf)]);
    let e = lowrank_err(&["export", "--run", s(&run), "--format", "gguf", "--out", s(&gguf)]);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    lowrank_ok(&["export", "--run", s(&run), "--format", "gguf", "--out", s(&gguf), "--force"]);

    // predict classifies: a causal-LM adapter is a clear error, not a panic.
    let out = lowrank(&["predict", "--model", s(&model), "--adapter", s(&run.join("adapter")), "--text", "cat"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("causal-LM adapter") && e.contains("lowrank generate"), "{e}");

    // generate --file of plain lines continues them as text, as --prompt does (no chat template
    // without --chat).
    let prompts = d.path().join("prompts.txt");
    std::fs::write(&prompts, "cat\n").unwrap();
    let common = ["generate", "--model", s(&model), "--max-new-tokens", "2", "--json"];
    let from_file: Value = serde_json::from_str(&lowrank_ok(&[&common[..], &["--file", s(&prompts)]].concat())).unwrap();
    let from_arg: Value = serde_json::from_str(&lowrank_ok(&[&common[..], &["--prompt", "cat"]].concat())).unwrap();
    assert_eq!(from_file["prompt_ids"], from_arg["prompt_ids"]);
    let chat: Value = serde_json::from_str(&lowrank_ok(&[&common[..], &["--prompt", "cat", "--chat"]].concat())).unwrap();
    assert!(chat["prompt_ids"].as_array().unwrap().len() > from_arg["prompt_ids"].as_array().unwrap().len());
}

/// 120 conversations: the user names a word, the assistant answers "positive" or "negative" by
/// the word (a sentiment task as chat, as the README's SmolLM2 experiment poses it).
fn sentiment_chats(dir: &Path) -> PathBuf {
    let good = ["good", "fine", "great", "nice", "fun", "warm"];
    let bad = ["bad", "dull", "poor", "sad", "weak", "cold"];
    let lines: String = (0..120)
        .map(|i| {
            let (w, answer) = if i % 2 == 0 { (good[(i / 2) % 6], "positive") } else { (bad[(i / 2) % 6], "negative") };
            format!(
                "{}\n",
                json!({"messages": [{"role": "user", "content": format!("it was {w}")}, {"role": "assistant", "content": answer}]})
            )
        })
        .collect();
    let path = dir.join("sentiment.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn eval_generate_scores_exact_match_before_and_after_training() {
    let d = tempfile::tempdir().unwrap();
    let (model, data) = (tiny_llama(d.path()), sentiment_chats(d.path()));
    let run = d.path().join("run");
    run_ok(&train_args(&model, &data, &["--epochs", "6", "--mode", "full", "--lr", "3e-3", "--out", s(&run)]));
    let test = run.join("test.jsonl");
    let n = std::fs::read_to_string(&test).unwrap().lines().count();
    // The random base model does not answer; the trained one does, and the file keeps each answer.
    let before = eval(&["--model", s(&model), "--data", s(&test), "--max-length", "64", "--generate", "--max-new-tokens", "12"]);
    assert_eq!(before["generation"]["n"], n);
    assert_eq!(before["generation"]["exact_match"], 0.0, "{before}");
    let after = eval(&["--run", s(&run), "--data", s(&test), "--generate", "--max-new-tokens", "12"]);
    let em = after["generation"]["exact_match"].as_f64().unwrap();
    let file = read_json(&run.join("eval-test.json"));
    let answers = file["generation"]["answers"].as_array().unwrap();
    assert!(em >= 0.9, "training teaches the answers: exact match {em}: {}", json!(answers[..3]));
    assert!(after["metrics"]["perplexity"].as_f64().unwrap() > 0.0);
    assert_eq!(answers.len(), n);
    assert!(answers.iter().all(|a| a["reference"] == "positive" || a["reference"] == "negative"), "{file}");
    let right = answers.iter().filter(|a| a["exact"] == true).count();
    assert!((right as f64 / n as f64 - em).abs() < 1e-12);
    // Texts have no reference answer.
    let texts = d.path().join("texts.jsonl");
    std::fs::write(&texts, "{\"text\": \"it was good\"}\n").unwrap();
    let e = lowrank_err(&["eval", "--run", s(&run), "--data", s(&texts), "--generate"]);
    assert!(e.contains("texts.jsonl:1") && e.contains("--generate needs reference answers"), "{e}");
}

#[test]
fn killed_causal_lm_run_resumes_to_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let (model, data) = (tiny_llama(d.path()), conversations(d.path()));
    let args =
        |out: &Path| train_args(&model, &data, &["--task", "causal-lm", "--epochs", "30", "--checkpoint-every", "3", "--out", s(out)]);
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
        if steps >= 20 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed().as_secs() < 300, "the run made no progress");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!cut.join("summary.json").exists(), "killed before the end");
    lowrank_ok(&["train", "--resume", s(&cut)]);
    let (a, b) = (read_json(&whole.join("summary.json")), read_json(&cut.join("summary.json")));
    for k in ["val_loss", "val_perplexity", "test_perplexity", "val_acc", "best_epoch", "best_step", "steps"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    assert_eq!(step_losses(&whole), step_losses(&cut), "the resumed run took different steps");
}

#[test]
fn full_fine_tuning_writes_a_causal_lm_model_folder() {
    let d = tempfile::tempdir().unwrap();
    let (model, data) = (tiny_llama(d.path()), conversations(d.path()));
    let run = d.path().join("run");
    run_ok(&train_args(&model, &data, &["--mode", "full", "--epochs", "2", "--lr", "3e-3", "--out", s(&run)]));
    let config = read_json(&run.join("model/config.json"));
    assert_eq!(config["architectures"], json!(["LlamaForCausalLM"]));
    assert!(config.get("id2label").is_none());
    // The written folder is a base model again: its perplexity is the run's.
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(model.join(f), run.join("model").join(f)).unwrap();
    }
    let val = run.join("val.jsonl");
    let written = eval(&["--model", s(&run.join("model")), "--data", s(&val), "--max-length", "64"]);
    let summary = read_json(&run.join("summary.json"));
    let (w, r) = (written["perplexity"].as_f64().unwrap(), summary["val_perplexity"].as_f64().unwrap());
    assert!((w - r).abs() < 1e-4 * r, "{w} vs {r}");
}

#[test]
fn bad_causal_lm_inputs_get_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_llama(d.path());
    let write = |name: &str, text: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let train = |data: &Path, extra: &[&str]| {
        let out = d.path().join(format!("run-{}", rand::random::<u32>()));
        let mut a = train_args(&model, data, &["--out", s(&out)]);
        a.extend(extra.iter().map(|x| x.to_string()));
        lowrank_err(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let chat = |user: &str| json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "ok"}]}).to_string();
    let good: String = (0..20).map(|i| chat(&format!("hi {i}")) + "\n").collect();
    let no_reply = write("no-reply.jsonl", &format!("{good}{}\n", json!({"messages": [{"role": "user", "content": "hello"}]})));
    let e = train(&no_reply, &[]);
    assert!(e.contains("no-reply.jsonl:21") && e.contains("no \"assistant\" message"), "{e}");

    let good_file = write("good.jsonl", &good);
    let broken = write("broken.jinja", "{% for m in messages %}{{ m.content }");
    let e = train(&good_file, &["--chat-template", s(&broken)]);
    assert!(e.contains("broken.jinja"), "{e}");

    let long: String = (0..20).map(|_| chat(&"long ".repeat(20)) + "\n").collect();
    let e = train(&write("long.jsonl", &long), &[]);
    assert!(e.contains("--max-length"), "a prompt longer than the context names the fix: {e}");

    let e = train(&good_file, &["--task", "causal-lm", "--head", "score"]);
    assert!(e.contains("drop --head score"), "{e}");
    let labelled = write("labelled.jsonl", "{\"text\": \"fine\", \"label\": 1}\n");
    let e = train(&labelled, &["--train-on-prompt"]);
    assert!(e.contains("add --task causal-lm"), "a labelled text file is classification data: {e}");
}
