//! The real SmolLM2-135M-Instruct GGUF (Q4_1, assets/SmolLM2-135M-Instruct/): tensors, config and
//! tokenizer must equal what transformers builds from the same file (tests/fixtures/smollm2, made
//! by scripts/golden/make_smollm2_tensors.py and make_smollm2_tokenizer.py).
//!
//! Without the asset the tests print "skipped: …" and pass, except under CI (env CI set), where a
//! missing asset fails them.

use lowrank::gguf::hf::{gguf_tensor_name, hf_config, hf_tensor_names, read_hf_tensor};
use lowrank::gguf::tokenizer::{GgufTokenizer, TokenizerSpec};
use lowrank::gguf::{GgmlType, GgufFile};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

const ASSET: &str = "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

fn asset_path() -> PathBuf {
    let assets =
        std::env::var_os("LOWRANK_ASSETS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"));
    assets.join(ASSET)
}

/// The parsed file, read once for all tests; `None` (test skipped) when absent outside CI.
fn smollm2() -> Option<&'static GgufFile> {
    static FILE: OnceLock<Option<GgufFile>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = asset_path();
        if !path.exists() {
            assert!(std::env::var_os("CI").is_none(), "{} is missing under CI: run scripts/fetch-assets.sh", path.display());
            eprintln!("skipped: {} is missing (run scripts/fetch-assets.sh)", path.display());
            return None;
        }
        Some(GgufFile::open(&path).unwrap())
    })
    .as_ref()
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(got: f64, want: f64, what: &str) {
    let tol = 1e-6 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: lowrank {got}, transformers {want}");
}

#[test]
fn file_layout_is_as_documented() {
    let Some(f) = smollm2() else { return };
    assert_eq!((f.version, f.alignment, f.tensors().len()), (3, 32, 272));
    let count = |t: GgmlType| f.tensors().iter().filter(|i| i.ggml_type == t).count();
    assert_eq!((count(GgmlType::Q4_1), count(GgmlType::Q8_0), count(GgmlType::F32)), (210, 1, 61));
    let params: u64 = f.tensors().iter().map(|t| t.n_elements).sum();
    assert_eq!(params, 134_515_008);
    assert_eq!(f.tensor_info("blk.0.ffn_gate.weight").unwrap().dims, [576, 1536]);
    assert_eq!(f.tensor_info("blk.0.ffn_gate.weight").unwrap().shape(), [1536, 576]);
}

#[test]
fn tensors_equal_transformers_dequantized_and_unpermuted() {
    let Some(f) = smollm2() else { return };
    let want = fixture("tensors.json");
    for (name, w) in want["tensors"].as_object().unwrap() {
        let (hf_name, rows) = match name.strip_suffix("[0:4]") {
            Some(base) => (base, Some(4)),
            None => (name.as_str(), None),
        };
        let gguf_name = gguf_tensor_name("llama", hf_name).unwrap();
        let (mapped, mut t) = read_hf_tensor(f, &gguf_name).unwrap();
        assert_eq!(mapped, hf_name);
        if let Some(r) = rows {
            t.data.truncate(r * t.shape[1]);
            t.shape[0] = r;
        }
        let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
        assert_eq!(t.shape, shape, "{name}");
        let sum: f64 = t.data.iter().map(|&v| f64::from(v)).sum();
        let sum_sq: f64 = t.data.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let weighted: f64 = t.data.iter().enumerate().map(|(i, &v)| f64::from(v) * (1.0 + (i % 1000) as f64 / 1000.0)).sum();
        close(sum, w["sum"].as_f64().unwrap(), &format!("{name} sum"));
        close(sum_sq, w["sum_sq"].as_f64().unwrap(), &format!("{name} sum of squares"));
        close(weighted, w["weighted_sum"].as_f64().unwrap(), &format!("{name} position-weighted sum"));
        let first8: Vec<f32> = serde_json::from_value(w["first8"].clone()).unwrap();
        assert_eq!(&t.data[..8], first8.as_slice(), "{name} first values");
        let cols = t.data.len() / t.shape[0];
        for (row, values) in w["rows"].as_object().unwrap() {
            let r: usize = row.parse().unwrap();
            let values: Vec<f32> = serde_json::from_value(values.clone()).unwrap();
            assert_eq!(&t.data[r * cols..r * cols + 4], values.as_slice(), "{name} row {r}");
        }
    }
}

#[test]
fn config_and_tensor_names_equal_transformers() {
    let Some(f) = smollm2() else { return };
    let want = fixture("tensors.json");
    let got = hf_config(f).unwrap();
    let tf = want["config"].as_object().unwrap();
    let mut compared = Vec::new();
    for (key, value) in got.as_object().unwrap() {
        if let Some(w) = tf.get(key) {
            match (value.as_f64(), w.as_f64()) {
                (Some(a), Some(b)) => assert_eq!(a, b, "{key}"),
                _ => assert_eq!(value, w, "{key}"),
            }
            compared.push(key.as_str());
        }
    }
    compared.sort();
    let expected = [
        "attention_bias",
        "bos_token_id",
        "eos_token_id",
        "head_dim",
        "hidden_act",
        "hidden_size",
        "intermediate_size",
        "max_position_embeddings",
        "mlp_bias",
        "model_type",
        "num_attention_heads",
        "num_hidden_layers",
        "num_key_value_heads",
        "pad_token_id",
        "rms_norm_eps",
        "rope_parameters",
        "tie_word_embeddings",
        "vocab_size",
    ];
    assert_eq!(compared, expected, "keys lowrank and transformers both set");
    assert_eq!(got["rope_theta"], 100000.0);
    assert!(got.get("rope_scaling").is_none());

    let names = hf_tensor_names(f).unwrap();
    let mut mapped: Vec<String> = names.into_iter().map(|(_, hf)| hf).collect();
    assert_eq!(got["tie_word_embeddings"], true);
    mapped.push("lm_head.weight".into()); // tied: transformers' state_dict lists it too
    mapped.sort();
    let keys: Vec<String> = serde_json::from_value(want["state_dict_keys"].clone()).unwrap();
    assert_eq!(mapped, keys);
}

/// The pre-tokenizer's pieces of `text`, in the byte-level alphabet.
fn pieces(tok: &GgufTokenizer, text: &str) -> Vec<String> {
    let mut pts = PreTokenizedString::from(text);
    tok.inner.get_pre_tokenizer().unwrap().pre_tokenize(&mut pts).unwrap();
    pts.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(s, _, _)| s.to_string()).collect()
}

fn check_cases(tok: &GgufTokenizer, cases: &Value, label: &str) {
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want_pieces: Vec<String> = serde_json::from_value(case["pieces"].clone()).unwrap();
        assert_eq!(pieces(tok, text), want_pieces, "{label}: pieces of {text:?}");
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids, "{label}: ids of {text:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), case["decoded"].as_str().unwrap(), "{label}: decode {text:?}");
        assert_eq!(tok.decode(&ids, true).unwrap(), case["decoded_skip_special"].as_str().unwrap(), "{label}: decode {text:?}");
    }
}

#[test]
fn tokenizer_ids_equal_transformers() {
    let Some(f) = smollm2() else { return };
    let want = fixture("tokenizer-ids.json");
    let tok = GgufTokenizer::from_gguf(f).unwrap();
    let s = &want["special"];
    assert_eq!(tok.bos_id(), Some(s["bos_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.eos_id(), Some(s["eos_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.pad_id(), Some(s["pad_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.unk_id(), Some(s["unk_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.vocab_size() as u64, s["vocab_size_with_added"].as_u64().unwrap());
    assert!(!tok.add_bos());
    assert_eq!(tok.chat_template(), want["chat_template"].as_str());
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));
    let cases = &want["cases"];
    assert!(cases.as_array().unwrap().len() >= 34);
    check_cases(&tok, cases, "smollm");
}

#[test]
fn tokenizer_variants_equal_transformers() {
    let Some(f) = smollm2() else { return };
    let want = fixture("tokenizer-ids.json");
    let spec = TokenizerSpec::from_gguf(f).unwrap();
    let variants = want["variants"].as_object().unwrap();
    assert_eq!(variants.len(), 8);
    for (label, v) in variants {
        let mut s = spec.clone();
        for (key, value) in v["overrides"].as_object().unwrap() {
            match key.as_str() {
                "tokenizer.ggml.pre" => s.pre = value.as_str().unwrap().to_string(),
                "tokenizer.ggml.add_bos_token" => s.add_bos = value.as_bool().unwrap(),
                "tokenizer.ggml.add_eos_token" => s.add_eos = value.as_bool().unwrap(),
                other => panic!("unexpected override {other}"),
            }
        }
        let tok = GgufTokenizer::from_spec(s, f.path.clone()).unwrap();
        check_cases(&tok, &v["cases"], label);
    }
    let mut s = spec;
    s.pre = "no-such-pre".into();
    let e = GgufTokenizer::from_spec(s, f.path.clone()).unwrap_err().to_string();
    assert!(e.contains("\"no-such-pre\"") && e.contains("smollm") && e.contains("llama-bpe"), "{e}");
}
