//! Hugging Face view of llama-family GGUF files: the equivalent `config.json`, the tensor names
//! (both ways), and llama.cpp's Q/K row permutation (both ways).
//!
//! llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel.permute`) reorders the rows of `q_proj` and
//! `k_proj` (weights and biases) so that its RoPE can rotate adjacent pairs: within each head of
//! `hd` rows, Hugging Face row `i·hd/2 + j` (half `i` ∈ {0, 1}, `j` < hd/2) becomes GGUF row
//! `2·j + i`. `q_proj` uses `num_attention_heads` heads and `k_proj` `num_key_value_heads`.
//! Qwen2 files are converted without it.

use super::error::{GgufError, Result};
use super::{GgufFile, Tensor};
use serde_json::{json, Map, Value};

/// The architectures (`general.architecture`) this module maps.
pub const SUPPORTED_ARCHITECTURES: &str = "\"llama\" and \"qwen2\"";

fn check_arch(file: &GgufFile) -> Result<&str> {
    let arch = file.architecture()?;
    match arch {
        "llama" | "qwen2" => Ok(arch),
        _ => {
            Err(GgufError::UnsupportedArchitecture { path: file.path.clone(), arch: arch.to_string(), supported: SUPPORTED_ARCHITECTURES })
        }
    }
}

/// Whether llama.cpp's converter permuted the Q/K rows of this architecture.
fn permutes_qk(arch: &str) -> bool {
    arch == "llama"
}

/// The Hugging Face `config.json` equivalent to the file's metadata, for `LlamaForCausalLM` /
/// `Qwen2ForCausalLM` (field names as transformers writes them; rope given both as
/// `rope_theta` / `rope_scaling` and as transformers 5's `rope_parameters`).
pub fn hf_config(file: &GgufFile) -> Result<Value> {
    let arch = check_arch(file)?;
    let key = |name: &str| format!("{arch}.{name}");
    let hint = "the converter writes it for every model; convert the model again with a current llama.cpp";
    let hidden = file.require_u64(&key("embedding_length"), hint)?;
    let heads = file.require_u64(&key("attention.head_count"), hint)?;
    if heads == 0 {
        return Err(GgufError::BadValue {
            path: file.path.clone(),
            key: key("attention.head_count"),
            expected: "at least 1",
            found: "0".into(),
        });
    }
    let kv_heads = file.get_u64(&key("attention.head_count_kv"))?.unwrap_or(heads);
    let vocab = match file.get_u64(&key("vocab_size"))? {
        Some(v) => v,
        None => match file.get_str_array("tokenizer.ggml.tokens")? {
            Some(tokens) => tokens.len() as u64,
            None => file.tensor_info("token_embd.weight").and_then(|t| t.dims.get(1).copied()).unwrap_or(0),
        },
    };
    let theta = file.get_f64(&key("rope.freq_base"))?.unwrap_or(10000.0);
    let mut c = Map::new();
    let (model_type, class) = if arch == "llama" { ("llama", "LlamaForCausalLM") } else { ("qwen2", "Qwen2ForCausalLM") };
    c.insert("architectures".into(), json!([class]));
    c.insert("model_type".into(), json!(model_type));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert("intermediate_size".into(), json!(file.require_u64(&key("feed_forward_length"), hint)?));
    c.insert("num_hidden_layers".into(), json!(file.require_u64(&key("block_count"), hint)?));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert("num_key_value_heads".into(), json!(kv_heads));
    let head_dim = match file.get_u64(&key("attention.key_length"))? {
        Some(d) => Some(d),
        None if arch == "llama" => Some(file.get_u64(&key("rope.dimension_count"))?.unwrap_or(hidden / heads)),
        None => None,
    };
    if let Some(d) = head_dim {
        c.insert("head_dim".into(), json!(d));
    }
    c.insert("hidden_act".into(), json!("silu"));
    c.insert("rms_norm_eps".into(), json!(file.require_f64(&key("attention.layer_norm_rms_epsilon"), hint)?));
    c.insert("max_position_embeddings".into(), json!(file.require_u64(&key("context_length"), hint)?));
    c.insert("vocab_size".into(), json!(vocab));
    c.insert("tie_word_embeddings".into(), json!(file.tensor_info("output.weight").is_none()));
    if arch == "llama" {
        c.insert("attention_bias".into(), json!(file.tensor_info("blk.0.attn_q.bias").is_some()));
        c.insert("mlp_bias".into(), json!(file.tensor_info("blk.0.ffn_up.bias").is_some()));
    }
    for (name, gguf) in [("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id")] {
        c.insert(name.into(), json!(file.get_u64(&format!("tokenizer.ggml.{gguf}"))?));
    }
    c.insert("rope_theta".into(), json!(theta));
    let scaling = rope_scaling(file, arch)?;
    let mut params = Map::new();
    params.insert("rope_type".into(), json!("default"));
    if let Some(s) = &scaling {
        params.extend(s.clone());
        c.insert("rope_scaling".into(), Value::Object(s.clone()));
    }
    params.insert("rope_theta".into(), json!(theta));
    c.insert("rope_parameters".into(), Value::Object(params));
    Ok(Value::Object(c))
}

/// `rope_scaling` from `{arch}.rope.scaling.*` (or the older `{arch}.rope.scale_linear`); `None`
/// when the file has none or says "none".
fn rope_scaling(file: &GgufFile, arch: &str) -> Result<Option<Map<String, Value>>> {
    let key = |name: &str| format!("{arch}.rope.{name}");
    let mut s = Map::new();
    match file.get_str(&key("scaling.type"))? {
        Some("none") => return Ok(None),
        Some(ty) => {
            s.insert("rope_type".into(), json!(ty));
        }
        None => match file.get_f64(&key("scale_linear"))? {
            Some(f) => {
                s.insert("rope_type".into(), json!("linear"));
                s.insert("factor".into(), json!(f));
                return Ok(Some(s));
            }
            None => return Ok(None),
        },
    }
    for (gguf, hf) in [
        ("scaling.factor", "factor"),
        ("scaling.attn_factor", "attention_factor"),
        ("scaling.yarn_beta_fast", "beta_fast"),
        ("scaling.yarn_beta_slow", "beta_slow"),
    ] {
        if let Some(v) = file.get_f64(&key(gguf))? {
            s.insert(hf.into(), json!(v));
        }
    }
    if let Some(n) = file.get_u64(&key("scaling.original_context_length"))? {
        s.insert("original_max_position_embeddings".into(), json!(n));
    }
    Ok(Some(s))
}

/// (GGUF infix, Hugging Face infix) of the per-layer tensors.
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// (GGUF name, Hugging Face name) of the tensors outside the layers.
const GLOBAL_NAMES: [(&str, &str); 3] = [("token_embd", "model.embed_tokens"), ("output_norm", "model.norm"), ("output", "lm_head")];

/// Splits `prefix{N}.{middle}.{weight|bias}` into (N, middle, suffix).
fn split_layer<'a>(name: &'a str, prefix: &str) -> Option<(u64, &'a str, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    let (n, rest) = rest.split_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    let (middle, suffix) = rest.rsplit_once('.')?;
    matches!(suffix, "weight" | "bias").then_some((n.parse().ok()?, middle, suffix))
}

fn unmapped(name: &str, target: &'static str, arch: &str) -> GgufError {
    let hint = if name == "rope_freqs.weight" {
        "it holds Llama-3.1-style rope frequency factors, which lowrank does not support"
    } else {
        "lowrank maps the llama decoder tensors (token_embd, blk.N.attn_*/ffn_*, output_norm, output)"
    };
    GgufError::UnmappedTensor { name: name.to_string(), target, arch: arch.to_string(), hint }
}

/// The Hugging Face name of GGUF tensor `name` (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`) for architecture `arch` ("llama" or "qwen2").
pub fn hf_tensor_name(arch: &str, name: &str) -> Result<String> {
    if !matches!(arch, "llama" | "qwen2") {
        return Err(unmapped(name, "Hugging Face", arch));
    }
    if let Some((n, middle, suffix)) = split_layer(name, "blk.") {
        if let Some((_, hf)) = LAYER_NAMES.iter().find(|(g, _)| *g == middle) {
            return Ok(format!("model.layers.{n}.{hf}.{suffix}"));
        }
    } else if let Some((stem, suffix)) = name.rsplit_once('.').filter(|(_, s)| matches!(*s, "weight" | "bias")) {
        if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == stem) {
            return Ok(format!("{hf}.{suffix}"));
        }
    }
    Err(unmapped(name, "Hugging Face", arch))
}

/// The GGUF name of Hugging Face tensor `name` (the inverse of [`hf_tensor_name`]).
pub fn gguf_tensor_name(arch: &str, name: &str) -> Result<String> {
    if !matches!(arch, "llama" | "qwen2") {
        return Err(unmapped(name, "GGUF", arch));
    }
    if let Some((n, middle, suffix)) = split_layer(name, "model.layers.") {
        if let Some((g, _)) = LAYER_NAMES.iter().find(|(_, hf)| *hf == middle) {
            return Ok(format!("blk.{n}.{g}.{suffix}"));
        }
    } else if let Some((stem, suffix)) = name.rsplit_once('.').filter(|(_, s)| matches!(*s, "weight" | "bias")) {
        if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, hf)| *hf == stem) {
            return Ok(format!("{g}.{suffix}"));
        }
    }
    Err(unmapped(name, "GGUF", arch))
}

/// Reorders the rows of `data` (`rows` rows of equal length, row-major): `to_hf` maps GGUF row
/// `h·hd + 2·j + i` to Hugging Face row `h·hd + i·hd/2 + j`, and the reverse when false.
fn permute_rows(data: &[f32], rows: usize, n_head: usize, to_hf: bool) -> Option<Vec<f32>> {
    let hd = rows.checked_div(n_head)?;
    if rows == 0 || hd % 2 != 0 || hd * n_head != rows || !data.len().is_multiple_of(rows) {
        return None;
    }
    let (half, cols) = (hd / 2, data.len() / rows);
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let (hf_row, gguf_row) = (h * hd + i * half + j, h * hd + 2 * j + i);
                let (src, dst) = if to_hf { (gguf_row, hf_row) } else { (hf_row, gguf_row) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

/// llama.cpp's `LlamaModel.permute` (Hugging Face → GGUF) of a `q_proj` / `k_proj` weight
/// `[rows, cols]` or bias `[rows]` given as `data` with `rows` rows; `n_head` is
/// `num_attention_heads` for q and `num_key_value_heads` for k. `None` unless `rows` is a
/// multiple of `2·n_head` and `data.len()` a multiple of `rows`.
pub fn permute_qk(data: &[f32], rows: usize, n_head: usize) -> Option<Vec<f32>> {
    permute_rows(data, rows, n_head, false)
}

/// The inverse of [`permute_qk`] (GGUF → Hugging Face), as transformers' GGUF loader applies it.
pub fn unpermute_qk(data: &[f32], rows: usize, n_head: usize) -> Option<Vec<f32>> {
    permute_rows(data, rows, n_head, true)
}

/// Reads GGUF tensor `name` as the Hugging Face tensor it corresponds to: its Hugging Face name
/// and its f32 values in PyTorch order, Q/K rows un-permuted for llama.
pub fn read_hf_tensor(file: &GgufFile, name: &str) -> Result<(String, Tensor)> {
    let arch = check_arch(file)?;
    let hf_name = hf_tensor_name(arch, name)?;
    let mut t = file.read_tensor(name)?;
    let heads_key = match split_layer(name, "blk.") {
        Some((_, "attn_q", _)) => Some("attention.head_count"),
        Some((_, "attn_k", _)) => Some("attention.head_count_kv"),
        _ => None,
    };
    if let (true, Some(heads_key)) = (permutes_qk(arch), heads_key) {
        let hint = "llama.cpp writes the head counts for every llama model";
        let heads = file.require_u64(&format!("{arch}.attention.head_count"), hint)?;
        let n_head =
            if heads_key == "attention.head_count_kv" { file.get_u64(&format!("{arch}.{heads_key}"))?.unwrap_or(heads) } else { heads };
        let rows = t.shape.first().copied().unwrap_or(1);
        t.data = usize::try_from(n_head).ok().and_then(|n| unpermute_qk(&t.data, rows, n)).ok_or_else(|| GgufError::BadShape {
            path: file.path.clone(),
            tensor: name.to_string(),
            dims: file.tensor_info(name).map(|i| i.dims.clone()).unwrap_or_default(),
            reason: format!("{rows} rows do not split into {n_head} heads of an even size ({arch}.{heads_key} = {n_head})"),
        })?;
    }
    Ok((hf_name, t))
}

/// (GGUF name, Hugging Face name) of every tensor in the file, in file order; an error names the
/// first tensor without a mapping.
pub fn hf_tensor_names(file: &GgufFile) -> Result<Vec<(String, String)>> {
    let arch = check_arch(file)?;
    file.tensors().iter().map(|t| Ok((t.name.clone(), hf_tensor_name(arch, &t.name)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufWriter, MetadataValue};

    #[test]
    fn permutation_by_hand_and_round_trip_with_grouped_kv_heads() {
        // One head of 4 rows, 1 column: HF rows [r0, r1, r2, r3] are GGUF rows [r0, r2, r1, r3].
        assert_eq!(permute_qk(&[0.0, 1.0, 2.0, 3.0], 4, 1).unwrap(), [0.0, 2.0, 1.0, 3.0]);
        // Two heads of 4 rows, 2 columns: each head is permuted on its own, rows stay whole.
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(unpermute_qk(&x, 8, 2).unwrap(), [0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]);
        // q with 6 heads and k with 2 KV heads (head_dim 8, 5 columns): both round trips are identity.
        let (n_head, n_kv, hd, cols) = (6, 2, 8, 5);
        for (rows, heads) in [(n_head * hd, n_head), (n_kv * hd, n_kv)] {
            let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 7.0).collect();
            let p = permute_qk(&w, rows, heads).unwrap();
            assert_ne!(p, w);
            assert_eq!(unpermute_qk(&p, rows, heads).unwrap(), w);
            assert_eq!(permute_qk(&unpermute_qk(&w, rows, heads).unwrap(), rows, heads).unwrap(), w);
        }
        // Biases are one column.
        let b: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(unpermute_qk(&permute_qk(&b, 16, 2).unwrap(), 16, 2).unwrap(), b);
        // Shapes that do not split into heads of an even size are refused.
        assert!(permute_qk(&[0.0; 6], 6, 2).is_none(), "head size 3 is odd");
        assert!(permute_qk(&[0.0; 8], 8, 0).is_none());
        assert!(permute_qk(&[0.0; 9], 8, 2).is_none());
        assert!(permute_qk(&[], 0, 1).is_none());
    }

    #[test]
    fn tensor_names_map_both_ways() {
        let pairs = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
            ("blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"),
            ("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"),
            ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
            ("blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias"),
            ("blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"),
            ("blk.10.attn_output.weight", "model.layers.10.self_attn.o_proj.weight"),
            ("blk.1.ffn_gate.weight", "model.layers.1.mlp.gate_proj.weight"),
            ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
            ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
        ];
        for (g, h) in pairs {
            assert_eq!(hf_tensor_name("llama", g).unwrap(), h);
            assert_eq!(hf_tensor_name("qwen2", g).unwrap(), h);
            assert_eq!(gguf_tensor_name("llama", h).unwrap(), g);
        }
        for bad in
            ["blk.0.attn_qkv.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight", "blk.0.attn_q.scale", "rope_freqs.weight", "blk.0"]
        {
            let e = hf_tensor_name("llama", bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains("Hugging Face"), "{e}");
        }
        assert!(hf_tensor_name("llama", "rope_freqs.weight").unwrap_err().to_string().contains("rope frequency"));
        assert!(gguf_tensor_name("llama", "model.layers.0.self_attn.rotary_emb.inv_freq").is_err());
        assert!(hf_tensor_name("gemma3", "token_embd.weight").unwrap_err().to_string().contains("gemma3"));
    }

    fn llama_file(extra: &[(&str, MetadataValue)], with_output: bool) -> GgufFile {
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama").unwrap();
        for (k, v) in [("llama.embedding_length", 64), ("llama.feed_forward_length", 128), ("llama.block_count", 2)] {
            w.add_u32(k, v).unwrap();
        }
        w.add_u32("llama.context_length", 512).unwrap();
        w.add_u32("llama.attention.head_count", 4).unwrap();
        w.add_u32("llama.attention.head_count_kv", 2).unwrap();
        w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-6).unwrap();
        w.add_u32("tokenizer.ggml.bos_token_id", 5).unwrap();
        for (k, v) in extra {
            w.add(k, v.clone()).unwrap();
        }
        w.add_tensor_f32("token_embd.weight", &[10, 64], &[0.0; 640]).unwrap();
        if with_output {
            w.add_tensor_f32("output.weight", &[10, 64], &[0.0; 640]).unwrap();
        }
        GgufFile::from_bytes(w.to_bytes(), std::path::Path::new("tiny.gguf")).unwrap()
    }

    #[test]
    fn config_from_metadata_with_defaults_and_rope_scaling() {
        let c = hf_config(&llama_file(&[], false)).unwrap();
        assert_eq!(c["model_type"], "llama");
        assert_eq!((c["hidden_size"].as_u64(), c["num_key_value_heads"].as_u64(), c["head_dim"].as_u64()), (Some(64), Some(2), Some(16)));
        assert_eq!(c["vocab_size"], 10, "from token_embd when there is neither vocab_size nor a token list");
        assert_eq!(c["rope_theta"], 10000.0);
        assert_eq!(c["rms_norm_eps"].as_f64(), Some(f64::from(1e-6f32)));
        assert_eq!((c["tie_word_embeddings"].as_bool(), c["attention_bias"].as_bool()), (Some(true), Some(false)));
        assert_eq!((c["bos_token_id"].as_u64(), c["eos_token_id"].is_null()), (Some(5), true));
        assert!(c.get("rope_scaling").is_none());
        assert_eq!(c["rope_parameters"], json!({"rope_type": "default", "rope_theta": 10000.0}));

        let scaled = [
            ("llama.rope.scaling.type", MetadataValue::String("yarn".into())),
            ("llama.rope.scaling.factor", MetadataValue::F32(4.0)),
            ("llama.rope.scaling.original_context_length", MetadataValue::U32(128)),
            ("llama.rope.freq_base", MetadataValue::F32(500000.0)),
            ("llama.vocab_size", MetadataValue::U32(10)),
        ];
        let c = hf_config(&llama_file(&scaled, true)).unwrap();
        assert_eq!(c["rope_scaling"], json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}));
        assert_eq!(c["rope_parameters"]["rope_type"], "yarn");
        assert_eq!(c["rope_parameters"]["rope_theta"], 500000.0);
        assert_eq!(c["tie_word_embeddings"], false);
        let none = [("llama.rope.scaling.type", MetadataValue::String("none".into()))];
        assert!(hf_config(&llama_file(&none, true)).unwrap().get("rope_scaling").is_none());
        let linear = [("llama.rope.scale_linear", MetadataValue::F32(2.0))];
        assert_eq!(hf_config(&llama_file(&linear, true)).unwrap()["rope_scaling"], json!({"rope_type": "linear", "factor": 2.0}));
    }

    #[test]
    fn unsupported_architecture_and_missing_keys_are_named() {
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "gemma3").unwrap();
        let f = GgufFile::from_bytes(w.to_bytes(), std::path::Path::new("g.gguf")).unwrap();
        let e = hf_config(&f).unwrap_err().to_string();
        assert!(e.contains("\"gemma3\"") && e.contains("\"llama\""), "{e}");
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama").unwrap();
        let f = GgufFile::from_bytes(w.to_bytes(), std::path::Path::new("l.gguf")).unwrap();
        let e = hf_config(&f).unwrap_err().to_string();
        assert!(e.contains("llama.embedding_length") && e.contains("l.gguf"), "{e}");
    }

    #[test]
    fn qwen2_config_and_tensors_are_not_permuted() {
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "qwen2").unwrap();
        for (k, v) in [("embedding_length", 8), ("feed_forward_length", 16), ("block_count", 1), ("context_length", 32)] {
            w.add_u32(&format!("qwen2.{k}"), v).unwrap();
        }
        w.add_u32("qwen2.attention.head_count", 2).unwrap().add_u32("qwen2.attention.head_count_kv", 1).unwrap();
        w.add_f32("qwen2.attention.layer_norm_rms_epsilon", 1e-6).unwrap();
        let b: Vec<f32> = (0..8).map(|v| v as f32).collect();
        w.add_tensor_f32("blk.0.attn_q.bias", &[8], &b).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes(), std::path::Path::new("q.gguf")).unwrap();
        let c = hf_config(&f).unwrap();
        assert_eq!((c["model_type"].as_str(), c["architectures"][0].as_str()), (Some("qwen2"), Some("Qwen2ForCausalLM")));
        assert!(c.get("head_dim").is_none() && c.get("attention_bias").is_none());
        let (name, t) = read_hf_tensor(&f, "blk.0.attn_q.bias").unwrap();
        assert_eq!((name.as_str(), t.data), ("model.layers.0.self_attn.q_proj.bias", b));
    }

    #[test]
    fn read_hf_tensor_unpermutes_q_and_k_for_llama_only() {
        // Tiny llama: 4 heads / 2 KV heads of size 2 → q rows 8, k rows 4.
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama").unwrap();
        w.add_u32("llama.attention.head_count", 4).unwrap().add_u32("llama.attention.head_count_kv", 2).unwrap();
        let q: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let k: Vec<f32> = (0..12).map(|v| v as f32).collect();
        w.add_tensor_f32("blk.0.attn_q.weight", &[8, 3], &q).unwrap();
        w.add_tensor_f32("blk.0.attn_k.weight", &[4, 3], &k).unwrap();
        w.add_tensor_f32("blk.0.attn_v.weight", &[4, 3], &k).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes(), std::path::Path::new("t.gguf")).unwrap();
        let (name, t) = read_hf_tensor(&f, "blk.0.attn_q.weight").unwrap();
        assert_eq!((name.as_str(), t.shape.as_slice()), ("model.layers.0.self_attn.q_proj.weight", [8usize, 3].as_slice()));
        assert_eq!(t.data, unpermute_qk(&q, 8, 4).unwrap());
        assert_eq!(read_hf_tensor(&f, "blk.0.attn_k.weight").unwrap().1.data, unpermute_qk(&k, 4, 2).unwrap());
        assert_eq!(read_hf_tensor(&f, "blk.0.attn_v.weight").unwrap().1.data, k, "v is not permuted");
        assert_eq!(hf_tensor_names(&f).unwrap()[2].1, "model.layers.0.self_attn.v_proj.weight");
    }
}
