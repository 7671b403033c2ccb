//! One entry point per reader of user files, fed arbitrary bytes: what the fuzzers call.
//!
//! Two harnesses use it: `tests/fuzz_readers.rs` (bounded random mutation on stable Rust, in
//! every `cargo test`) and the coverage-guided libFuzzer targets in `fuzz/` (run by
//! `scripts/fuzz.sh`, in CI). Each [`Target`] writes the bytes where its reader expects a file
//! (inside a scratch folder the caller owns) and runs the reader and what follows it on a user's
//! command: a reader may return an error for any input; it must never panic, abort or allocate
//! without bound. The seed corpus of each target is in `tests/fuzz/corpus/<name>/`, the inputs
//! that once crashed one in `tests/fuzz/crashes/<name>/`.

use crate::data::lm::{ChatTemplate, LmOptions, Message, Role};
use crate::data::ReadOptions;
use crate::tokenize::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A reader of user files that the fuzzers exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `model.safetensors`, checkpoints and adapter weights ([`crate::tensorfile::TensorFile`]).
    Safetensors,
    /// GGUF model files: header, metadata, tensor table, every tensor dequantized, the
    /// Hugging Face config derived from the metadata.
    Gguf,
    /// A model's `config.json`, then the memory pre-flight on it.
    ConfigJson,
    /// PEFT's `adapter_config.json`.
    AdapterConfig,
    /// Labelled CSV (classification data).
    Csv,
    /// Labelled JSON Lines (classification data).
    Jsonl,
    /// Sweep spaces, TOML and JSON, expanded into trials.
    SweepSpace,
    /// Causal-LM JSON Lines (chat, prompt / completion, text), rendered with the tiny test
    /// model's chat template and tokenised.
    LmJsonl,
    /// A chat template (`--chat-template FILE`), rendered on a fixed conversation.
    ChatTemplate,
}

impl Target {
    /// Every target, in the order the fuzz runs take them.
    pub const ALL: [Target; 9] = [
        Target::Safetensors,
        Target::Gguf,
        Target::ConfigJson,
        Target::AdapterConfig,
        Target::Csv,
        Target::Jsonl,
        Target::SweepSpace,
        Target::LmJsonl,
        Target::ChatTemplate,
    ];

    /// The target's name: its corpus folder and its libFuzzer binary.
    pub fn name(self) -> &'static str {
        match self {
            Target::Safetensors => "safetensors",
            Target::Gguf => "gguf",
            Target::ConfigJson => "config_json",
            Target::AdapterConfig => "adapter_config",
            Target::Csv => "csv",
            Target::Jsonl => "jsonl",
            Target::SweepSpace => "sweep_space",
            Target::LmJsonl => "lm_jsonl",
            Target::ChatTemplate => "chat_template",
        }
    }

    /// The target called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Gives `input` to the reader; `scratch` is a folder the caller owns (files are written
    /// there and overwritten on the next call). Errors are the expected answer to most inputs
    /// and are dropped: only a panic, an abort or a runaway allocation is a finding.
    pub fn feed(self, input: &[u8], scratch: &Path) {
        match self {
            Target::Safetensors => {
                let _ = crate::tensorfile::TensorFile::read(&write(scratch, "x.safetensors", input));
            }
            Target::Gguf => {
                if let Ok(f) = crate::gguf::GgufFile::from_bytes(input.to_vec(), &scratch.join("x.gguf")) {
                    let _ = crate::gguf::hf::hf_config(&f);
                    let names: Vec<String> = f.tensors().iter().map(|t| t.name.clone()).collect();
                    for n in names {
                        let _ = f.read_tensor(&n);
                    }
                }
            }
            Target::ConfigJson => {
                if let Ok(c) = crate::model::ModelConfig::from_json_str(&String::from_utf8_lossy(input)) {
                    let _ = crate::guard::memory::check_config(&c, "fuzzed config");
                }
            }
            Target::AdapterConfig => {
                write(scratch, "adapter_config.json", input);
                if let Ok(c) = crate::adapter::PeftConfig::read(scratch) {
                    let _ = c.scale();
                }
            }
            Target::Csv => {
                let _ = crate::data::load(&write(scratch, "x.csv", input), &ReadOptions::default());
            }
            Target::Jsonl => {
                let _ = crate::data::load(&write(scratch, "x.jsonl", input), &ReadOptions::default());
            }
            Target::SweepSpace => {
                let text = String::from_utf8_lossy(input);
                let spaces =
                    [crate::sweep::space::Space::from_toml_str(&text, "fuzz"), crate::sweep::space::Space::from_json_str(&text, "fuzz")];
                for s in spaces.into_iter().flatten() {
                    let _ = s.trials();
                }
            }
            Target::LmJsonl => {
                let opts = LmOptions { max_length: 64, train_on_prompt: false, drop_long_prompts: true };
                let _ = crate::data::lm::load(&write(scratch, "x.jsonl", input), tiny_tokenizer(), None, &opts);
            }
            Target::ChatTemplate => {
                if let Ok(t) = ChatTemplate::new(&String::from_utf8_lossy(input), "fuzzed template", tiny_tokenizer()) {
                    let chat = [Message::new(Role::System, "Be brief."), Message::user("Hi?"), Message::new(Role::Assistant, "Hello.")];
                    let _ = t.render(&chat, false);
                    let _ = t.render(&chat[..2], true);
                }
            }
        }
    }
}

/// [`Target::feed`] in this process's scratch folder: `$LOWRANK_FUZZ_SCRATCH` when set (scripts/fuzz.sh
/// sets it and removes the folder afterwards), else `lowrank-fuzz-<pid>` in the temporary
/// folder; made on the first call. For the libFuzzer binaries, which have no place to keep one.
pub fn feed_in_scratch(target: Target, input: &[u8]) {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    let dir = SCRATCH.get_or_init(|| {
        let dir = std::env::var_os("LOWRANK_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join(format!("lowrank-fuzz-{}", std::process::id())));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("fuzz scratch folder {}: {e}", dir.display()));
        dir
    });
    target.feed(input, dir);
}

/// The tiny character tokenizer of the test decoder (tests/fixtures/peft-decoder), loaded once.
fn tiny_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft-decoder/lowrank-made/model");
        Tokenizer::from_model_dir(&dir, 64).unwrap_or_else(|e| panic!("the fuzzers' tokenizer in {}: {e}", dir.display()))
    })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("fuzz scratch file {}: {e}", p.display()));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_unique_name_that_maps_back() {
        for t in Target::ALL {
            assert_eq!(Target::from_name(t.name()), Some(t));
        }
        assert_eq!(Target::from_name("nope"), None);
    }

    #[test]
    fn the_text_targets_accept_their_own_well_formed_inputs() {
        let dir = tempfile::tempdir().unwrap();
        // A well-formed chat goes through rendering and tokenisation without panicking.
        Target::LmJsonl.feed(br#"{"messages":[{"role":"user","content":"ab"},{"role":"assistant","content":"c"}]}"#, dir.path());
        let tmpl = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
        let t = ChatTemplate::new(tmpl, "t", tiny_tokenizer()).unwrap();
        assert_eq!(t.render(&[Message::user("Hi?")], false).unwrap(), "user: Hi?\n");
    }
}
