//! Tests of the causal-LM data steps on a byte-level tokenizer made here (one token per byte, the
//! ChatML specials, a BOS its post-processor adds), so that every loss token can be decoded and
//! compared with the text it must be.

use super::*;
use serde_json::json;
use tempfile::TempDir;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A folder with a byte-level tokenizer.json (256 byte tokens, then <|im_start|> 256, <|im_end|>
/// 257, <|endoftext|> 258 = BOS, added first by the post-processor) and a tokenizer_config.json
/// naming eos <|im_end|>, bos <|endoftext|> and the ChatML template.
fn tokenizer_dir(chat_template: Option<&str>) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut chars: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    chars.sort();
    let vocab: serde_json::Map<String, serde_json::Value> = chars.iter().enumerate().map(|(i, c)| (c.to_string(), json!(i))).collect();
    let special = |id: u32, content: &str| json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(256, "<|im_start|>"), special(257, "<|im_end|>"), special(258, "<|endoftext|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [258], "tokens": ["<|endoftext|>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let mut config = json!({"eos_token": "<|im_end|>", "bos_token": "<|endoftext|>"});
    if let Some(t) = chat_template {
        config["chat_template"] = json!(t);
    }
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

fn tokenizer() -> (TempDir, Tokenizer) {
    let dir = tokenizer_dir(Some(CHATML));
    let tok = Tokenizer::from_model_dir(dir.path(), 512).unwrap();
    (dir, tok)
}

fn write(dir: &TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn opts(max_length: usize) -> LmOptions {
    LmOptions { max_length, train_on_prompt: false, drop_long_prompts: false }
}

/// The runs of consecutive loss tokens, decoded.
fn loss_runs(tok: &Tokenizer, ex: &LmExample) -> Vec<String> {
    let mut runs: Vec<Vec<u32>> = Vec::new();
    for (t, (&id, &on)) in ex.ids.iter().zip(&ex.loss).enumerate() {
        match (on, t > 0 && ex.loss[t - 1]) {
            (true, true) => runs.last_mut().unwrap().push(id),
            (true, false) => runs.push(vec![id]),
            _ => {}
        }
    }
    runs.iter().map(|r| tok.decode(r, false).unwrap()).collect()
}

fn load_one(tok: &Tokenizer, dir: &TempDir, line: serde_json::Value, o: &LmOptions) -> Result<LmEncoded, LmDataError> {
    let path = write(dir, "data.jsonl", &format!("{line}\n"));
    load(&path, tok, None, o)
}

fn chat(messages: &[(&str, &str)]) -> serde_json::Value {
    json!({"messages": messages.iter().map(|(r, c)| json!({"role": r, "content": c})).collect::<Vec<_>>()})
}

#[test]
fn reads_each_shape_skipping_blank_lines_and_keeping_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let chat_file = write(
        &dir,
        "chat.jsonl",
        "\n{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\", \"name\": \"ann\", \"x\": null}, {\"role\": \"assistant\", \"content\": \"Hello\"}], \"prompt\": \"Hi\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n",
    );
    let file = read_jsonl(&chat_file).unwrap();
    assert_eq!(file.shape, LmShape::Chat);
    assert_eq!(file.records.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 4]);
    let LmSample::Chat { messages } = &file.records[0].sample else { panic!("{:?}", file.records[0]) };
    assert_eq!(messages.iter().map(|m| m.role).collect::<Vec<_>>(), [Role::System, Role::User, Role::Assistant]);
    assert_eq!(messages[1].content, "Hi");
    // Extra fields reach the template; null ones are dropped (as transformers drops them).
    assert_eq!(messages[1].extra, json!({"name": "ann"}).as_object().unwrap().clone());

    let pc = write(&dir, "pc.jsonl", "{\"prompt\": \"\", \"completion\": \"x\"}\n{\"prompt\": \"Q\", \"completion\": \" A\", \"id\": 3}\n");
    let file = read_jsonl(&pc).unwrap();
    assert_eq!(file.shape, LmShape::PromptCompletion);
    assert_eq!(file.records[1].sample, LmSample::PromptCompletion { prompt: "Q".into(), completion: " A".into() });

    let text = write(&dir, "text.jsonl", "{\"text\": \"one\", \"label\": 1}\n");
    let file = read_jsonl(&text).unwrap();
    assert_eq!(file.records, [LmRecord { line: 1, sample: LmSample::Text { text: "one".into() } }]);
}

#[test]
fn every_bad_line_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let ok = "{\"text\": \"fine\"}";
    let cases: &[(&str, &str)] = &[
        ("{\"prompt\": \"p\", \"completion\": \"c\"}", "data.jsonl:2: this record is a prompt / completion pair (\"prompt\", \"completion\") but the first record (line 1) is a plain text"),
        ("{\"txt\": \"oops\"}", "data.jsonl:2: the record has none of the fields"),
        ("{\"text\": \"unclosed}", "data.jsonl:2: malformed JSON"),
        ("[1, 2]", "data.jsonl:2: malformed JSON: expected an object"),
        ("{\"text\": \"   \"}", "data.jsonl:2: the \"text\" field is empty"),
        ("{\"text\": 5}", "data.jsonl:2: field \"text\" is 5, expected a string"),
    ];
    for (second, want) in cases {
        let path = write(&dir, "data.jsonl", &format!("{ok}\n{second}\n"));
        let e = read_jsonl(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{e}\nwanted: {want}");
    }
    let chat_cases: &[(serde_json::Value, &str)] = &[
        (json!({"messages": [{"role": "user", "content": "q"}]}), "data.jsonl:1: the conversation has no \"assistant\" message"),
        (json!({"messages": [{"role": "asistant", "content": "q"}]}), "data.jsonl:1: message 1 of \"messages\" has the role asistant"),
        (
            json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ["x"]}]}),
            "message 2 of \"messages\" has the content [\"x\"], not a string",
        ),
        (json!({"messages": [{"content": "q"}]}), "message 1 of \"messages\" has no \"role\""),
        (json!({"messages": [{"role": "user"}]}), "message 1 of \"messages\" has no \"content\""),
        (json!({"messages": ["hi"]}), "message 1 of \"messages\" is \"hi\", not an object"),
        (json!({"messages": []}), "field \"messages\" is [], expected a non-empty list of messages"),
        (json!({"prompt": "only a prompt"}), "data.jsonl:1: no completion field named \"completion\""),
        (json!({"prompt": "p", "completion": ""}), "data.jsonl:1: the \"completion\" field is empty"),
    ];
    for (line, want) in chat_cases {
        let path = write(&dir, "data.jsonl", &format!("{line}\n"));
        let e = read_jsonl(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{e}\nwanted: {want}");
    }
    let array = write(&dir, "data.json", "[{\"text\": \"a\"}]");
    assert!(matches!(read_jsonl(&array), Err(LmDataError::NotJsonLines { .. })));
    let csv = write(&dir, "labelled.csv", "text,label\ngood,1\n");
    let e = read_jsonl(&csv).unwrap_err();
    assert!(matches!(e, LmDataError::CsvNotJsonLines { .. }) && e.to_string().contains("JSON Lines"), "{e}");
    let empty = write(&dir, "empty.jsonl", "\n\n");
    assert!(read_jsonl(&empty).unwrap_err().to_string().contains("contains no examples"));
}

#[test]
fn detects_the_shape_from_the_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let shape = |name: &str, contents: &str| detect_shape(&write(&dir, name, contents)).unwrap();
    assert_eq!(shape("a.jsonl", "\n{\"messages\": [], \"prompt\": \"x\"}\n"), Some(LmShape::Chat));
    assert_eq!(shape("b.jsonl", "{\"prompt\": \"x\", \"completion\": \"y\"}\n"), Some(LmShape::PromptCompletion));
    assert_eq!(shape("c.ndjson", "\u{feff}{\"text\": \"x\", \"label\": 0}\n"), Some(LmShape::Text));
    assert_eq!(shape("d.jsonl", "{\"sentence\": \"x\"}\n"), None);
    assert_eq!(shape("e.jsonl", "not json\n"), None);
    assert_eq!(shape("f.csv", "messages,label\n"), None);
    assert!(LmShape::Chat.implies_causal_lm() && LmShape::PromptCompletion.implies_causal_lm());
    assert!(!LmShape::Text.implies_causal_lm());
    assert!(detect_shape(&dir.path().join("missing.jsonl")).unwrap_err().to_string().contains("does not exist"));
    let lm = |name: &str, contents: &str| causal_lm_shape(&write(&dir, name, contents), "label").unwrap();
    assert_eq!(lm("g.jsonl", "{\"text\": \"x\", \"label\": 0}\n"), None, "a labelled text is classification data");
    assert_eq!(lm("h.jsonl", "{\"text\": \"x\"}\n"), Some(LmShape::Text));
    assert_eq!(lm("i.jsonl", "{\"messages\": [], \"label\": 1}\n"), Some(LmShape::Chat));
    assert_eq!(lm("j.csv", "text\nx\n"), None);
}

#[test]
fn chatml_loss_covers_each_reply_and_its_end_of_turn_only() {
    let (_t, tok) = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let line = chat(&[
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Bye"),
        ("assistant", "Bye now."),
        ("user", "ok"),
    ]);
    let enc = load_one(&tok, &dir, line, &opts(512)).unwrap();
    let ex = &enc.examples[0];
    let text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nBye now.<|im_end|>\n<|im_start|>user\nok<|im_end|>\n";
    // Rendered, then tokenised without the post-processor's BOS (the template writes the specials).
    assert_eq!(ex.ids, tok.encode_raw(text).unwrap());
    assert_eq!(loss_runs(&tok, ex), ["Hello!<|im_end|>", "Bye now.<|im_end|>"]);
    assert_eq!(ex.loss_tokens(), "Hello!".len() + "Bye now.".len() + 2);
    // The first loss token comes right after the assistant header.
    let header =
        tok.encode_raw("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n").unwrap();
    assert_eq!(ex.loss.iter().position(|&on| on), Some(header.len()));
    assert_eq!((ex.line, enc.shape, enc.truncation.truncated), (1, LmShape::Chat, 0));

    let all = load_one(
        &tok,
        &dir,
        chat(&[("user", "Hi"), ("assistant", "Yo")]),
        &LmOptions { max_length: 512, train_on_prompt: true, drop_long_prompts: false },
    )
    .unwrap();
    assert!(all.examples[0].loss.iter().all(|&on| on));
}

#[test]
fn prompt_completion_and_text_add_bos_and_eos_and_mask_the_prompt() {
    let (_t, tok) = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let enc = load_one(&tok, &dir, json!({"prompt": "Cheese in French:", "completion": " fromage"}), &opts(512)).unwrap();
    let ex = &enc.examples[0];
    assert_eq!(ex.ids[0], 258, "the post-processor's BOS");
    assert_eq!(*ex.ids.last().unwrap(), 257, "eos appended");
    assert_eq!(ex.ids.len(), 1 + "Cheese in French: fromage".len() + 1);
    assert_eq!(loss_runs(&tok, ex), [" fromage<|im_end|>"]);

    let trained = load_one(
        &tok,
        &dir,
        json!({"prompt": "P:", "completion": "c"}),
        &LmOptions { max_length: 512, train_on_prompt: true, drop_long_prompts: false },
    )
    .unwrap();
    assert!(trained.examples[0].loss.iter().all(|&on| on));

    let text = load_one(&tok, &dir, json!({"text": "abc"}), &opts(512)).unwrap();
    assert_eq!(
        text.examples[0].ids,
        [258, tok.encode_raw("a").unwrap()[0], tok.encode_raw("b").unwrap()[0], tok.encode_raw("c").unwrap()[0], 257]
    );
    assert_eq!(text.examples[0].loss, [true; 5]);
    // A completion that already ends with the eos token gets no second one.
    let eos = load_one(&tok, &dir, json!({"prompt": "P", "completion": "c<|im_end|>"}), &opts(512)).unwrap();
    assert_eq!(eos.examples[0].ids.iter().filter(|&&id| id == 257).count(), 1);
}

#[test]
fn truncation_keeps_the_beginning_and_is_counted() {
    let (_t, tok) = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let path =
        write(&dir, "d.jsonl", "{\"prompt\": \"Q:\", \"completion\": \" a long answer\"}\n{\"prompt\": \"Q:\", \"completion\": \"ok\"}\n");
    let full = load(&path, &tok, None, &opts(512)).unwrap();
    let cut = load(&path, &tok, None, &opts(8)).unwrap();
    assert_eq!(cut.examples[0].ids, full.examples[0].ids[..8]);
    assert_eq!(cut.examples[0].loss, full.examples[0].loss[..8]);
    assert_eq!(cut.examples[1], full.examples[1]);
    let longest = full.examples[0].ids.len();
    assert_eq!(cut.truncation, Truncation { truncated: 1, examples: 2, max_length: 8, longest, dropped: 0 });
    assert_eq!(
        cut.truncation.to_string(),
        format!("1 of 2 examples truncated to 8 tokens (the longest has {longest}); raise --max-length to keep them whole")
    );
    assert!(!full.truncation.any());
}

#[test]
fn a_prompt_longer_than_max_length_is_an_error_naming_the_line_and_the_fix() {
    let (_t, tok) = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "d.jsonl",
        "{\"prompt\": \"ok\", \"completion\": \"x\"}\n\n{\"prompt\": \"a much longer prompt\", \"completion\": \"x\"}\n",
    );
    let e = load(&path, &tok, None, &opts(10)).unwrap_err();
    assert!(matches!(e, LmDataError::PromptTooLong { line: 3, tokens: 21, max_length: 10, .. }), "{e}");
    assert!(e.to_string().contains("d.jsonl:3: the prompt alone is 21 tokens"), "{e}");
    assert!(e.to_string().contains("raise --max-length to at least 22"), "{e}");
    let e = load_one(&tok, &dir, chat(&[("user", "a long question"), ("assistant", "x")]), &opts(10)).unwrap_err().to_string();
    assert!(e.contains(":1: the conversation before the first assistant reply alone is"), "{e}"); // Left out and counted instead, unless nothing would be left.
    let lenient = LmOptions { drop_long_prompts: true, ..opts(10) };
    let kept = load(&path, &tok, None, &lenient).unwrap();
    assert_eq!((kept.examples.len(), kept.examples[0].line, kept.truncation.dropped), (1, 1, 1));
    assert!(kept.truncation.any() && kept.truncation.to_string().contains("1 more left out"), "{}", kept.truncation);
    let e = load_one(&tok, &dir, chat(&[("user", "a long question"), ("assistant", "x")]), &lenient).unwrap_err();
    assert!(matches!(e, LmDataError::PromptTooLong { .. }), "{e}");
}

#[test]
fn targets_are_the_next_tokens_where_the_loss_is_on() {
    let ex = LmExample { ids: vec![10, 11, 12, 13, 14], loss: vec![false, false, true, true, false], line: 1 };
    assert_eq!(ex.targets(), [IGNORE, 12, 13, IGNORE, IGNORE]);
    assert_eq!(ex.labels(), [-100, -100, 12, 13, -100]);
    assert_eq!(ex.loss_tokens(), 2);
    // Shifting transformers' labels left by one gives the targets.
    let shifted: Vec<u32> = ex.labels().iter().skip(1).map(|&l| if l < 0 { IGNORE } else { l as u32 }).chain([IGNORE]).collect();
    assert_eq!(shifted, ex.targets());
    assert_eq!(next_token_targets(&[7], &[true]), [IGNORE]);
    assert!(next_token_targets(&[], &[]).is_empty());
}

#[test]
fn template_problems_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        &dir,
        "c.jsonl",
        &format!("{}\n{}\n", chat(&[("user", "a"), ("assistant", "b")]), chat(&[("assistant", "b"), ("user", "a")])),
    );

    let none = tokenizer_dir(None);
    let tok = Tokenizer::from_model_dir(none.path(), 64).unwrap();
    let e = load(&data, &tok, None, &opts(64)).unwrap_err().to_string();
    assert!(e.contains("has no chat template") && e.contains("--chat-template FILE"), "{e}");

    let bad = write(&dir, "bad.jinja", "{% for m in messages %}{{ m.content }\n");
    let e = load(&data, &tok, Some(&bad), &opts(64)).unwrap_err().to_string();
    assert!(e.contains("bad.jinja does not parse") && e.contains("chat_template:1"), "{e}");

    let alternate = write(&dir, "alt.jinja", "{% for m in messages %}\n{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}\n{{ raise_exception('Conversation roles must alternate user/assistant') }}\n{% endif %}\n[{{ m.role }}] {{ m.content }}\n{% endfor %}\n");
    let e = load(&data, &tok, Some(&alternate), &opts(64)).unwrap_err();
    assert!(matches!(&e, LmDataError::TemplateRender { line: Some(2), .. }), "{e}");
    let e = e.to_string();
    assert!(e.starts_with(&format!("{}:2: the chat template from {}", data.display(), alternate.display())), "{e}");
    assert!(e.contains("Conversation roles must alternate user/assistant") && e.contains("chat_template:3"), "{e}");

    // A template that would loop for 10^10 steps stops with minijinja's fuel error, not a hang.
    let endless = write(
        &dir,
        "endless.jinja",
        "{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(100) %}{% endfor %}{% endfor %}{% endfor %}",
    );
    let e = load(&data, &tok, Some(&endless), &opts(64)).unwrap_err();
    assert!(matches!(&e, LmDataError::TemplateRender { .. }) && e.to_string().contains("fuel"), "{e}");

    let missing = dir.path().join("nope.jinja");
    assert!(load(&data, &tok, Some(&missing), &opts(64)).unwrap_err().to_string().contains("cannot read the chat template"));

    // A template that rewrites earlier replies once later turns follow cannot be masked by prefixes.
    let rewrites = write(&dir, "rw.jinja", "{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}[earlier reply]{% else %}{{ m.content }}{% endif %}{% endfor %}");
    let two = write(&dir, "two.jsonl", &format!("{}\n", chat(&[("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")])));
    let e = load(&two, &tok, Some(&rewrites), &opts(64)).unwrap_err();
    assert!(matches!(&e, LmDataError::TemplateNotPrefix { line: Some(1), number: 2, .. }), "{e}");
    let all = load(&two, &tok, Some(&rewrites), &LmOptions { max_length: 64, train_on_prompt: true, drop_long_prompts: false }).unwrap();
    assert_eq!(all.examples[0].ids, tok.encode_raw("a[earlier reply]cd").unwrap());
}

#[test]
fn templates_see_the_tokenizer_tokens_and_a_file_overrides_the_tokenizer() {
    let (_t, tok) = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let custom = write(&dir, "t.jinja", "{{ bos_token }}{% if tools is none and documents is none %}.{% endif %}{% for m in messages %}{{ m.role[0] | upper }}: {{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}A: {% endif %}");
    let template = ChatTemplate::resolve(Some(&custom), &tok).unwrap();
    assert_eq!(template.origin(), custom.display().to_string());
    let messages = [Message::user("Hi"), Message::new(Role::Assistant, "Yo")];
    assert_eq!(template.render(&messages, false).unwrap(), "<|endoftext|>.U: Hi\nA: Yo<|im_end|>\n");
    let rendered = render_chat(&template, &messages).unwrap();
    assert_eq!(&rendered.text[rendered.spans[0].clone()], "Yo<|im_end|>");
    assert_eq!(generation_prompt(&template, &messages[..1]).unwrap(), "<|endoftext|>.U: Hi\nA: ");

    let own = ChatTemplate::from_tokenizer(&tok).unwrap();
    assert!(own.origin().starts_with("the tokenizer of "), "{}", own.origin());
    let prompt = generation_prompt(&own, &[Message::user("What is LoRA?")]).unwrap();
    assert_eq!(prompt, "<|im_start|>user\nWhat is LoRA?<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(generation_prompt_ids(&own, &tok, &[Message::user("What is LoRA?")]).unwrap(), tok.encode_raw(&prompt).unwrap());
}
