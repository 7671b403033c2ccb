//! Unit tests of the llama.cpp export on small random decoders built in memory; the fixture
//! models, the real SmolLM2 and the command line are tested in tests/gguf_export.rs.

use super::*;
use crate::adapter::save::transpose;
use crate::gguf::hf::unpermute_qk;
use crate::gguf::{GgmlType, GgufFile, MetadataValue};
use crate::lora::{LoraConfig, LoraLayer, Scaling};
use crate::model::ModelConfig;
use rand::{Rng, SeedableRng};
use std::path::Path;

const LLAMA: &str = r#"{"model_type": "llama", "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "vocab_size": 11, "max_position_embeddings": 32,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": false}"#;
const GPT2: &str = r#"{"model_type": "gpt2", "n_embd": 16, "n_head": 4, "n_layer": 2, "n_positions": 32, "vocab_size": 11}"#;

/// A random decoder with an LM head and random LoRA (B non-zero) on every linear.
fn model_with_lora(json: &str, patch: &[(&str, serde_json::Value)], cfg: LoraConfig) -> Model {
    let mut raw: serde_json::Value = serde_json::from_str(json).unwrap();
    for (k, v) in patch {
        raw[*k] = v.clone();
    }
    let mut m = Model::new(&ModelConfig::from_value(&raw).unwrap(), HeadKind::Lm, 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for p in m.base_params_mut() {
        p.data.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
    }
    for lin in m.linears_mut() {
        let mut l = LoraLayer::new(&lin.path, lin.in_dim(), lin.out_dim(), &cfg, &mut rng);
        l.b.data.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
        l.a.set_trainable(false);
        l.b.set_trainable(false);
        lin.lora = Some(l);
    }
    m
}

fn read(w: &crate::gguf::GgufWriter) -> GgufFile {
    GgufFile::from_bytes(w.to_bytes(), Path::new("adapter.gguf")).unwrap()
}

fn raschka(r: usize) -> LoraConfig {
    LoraConfig { r, alpha: 16.0, scaling: Scaling::Raschka, dropout: 0.0, ..Default::default() }
}

#[test]
fn alpha_gives_back_the_scale_under_llama_cpps_division() {
    // The seed's raschka scaling (scale = alpha = 16 at r 8) needs alpha 128 in llama.cpp.
    assert_eq!(llama_cpp_alpha("m", 16.0, 8).unwrap(), 128.0);
    // PEFT's lora_alpha 4 at r 2 (adapter-qv): scale 2, alpha 4.
    assert_eq!(llama_cpp_alpha("m", 2.0, 2).unwrap(), 4.0);
    // The scales of the seed's raschka convention (scale = alpha) and PEFT's (lora_alpha / r),
    // for integer and half-integer alphas and every rank to 1024, divide back exactly.
    let alphas: Vec<f32> = (1..=256).map(|a| a as f32 / 2.0).collect();
    for r in 1..=1024usize {
        for &a in &alphas {
            for scale in [a, a / r as f32] {
                let alpha = llama_cpp_alpha("m", scale, r).unwrap();
                assert_eq!(alpha / r as f32, scale, "r {r}, scale {scale}");
            }
        }
    }
    // Any other factor (rsLoRA's alpha / √r, random ones) is exact or one f32 step off: when
    // neighbouring f32 alphas divide to quotients more than one step of the scale apart, some
    // scales fall between them (measured: about 90% of random factors are exact).
    let mut counts = [(0usize, 0usize); 2];
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for k in 0..200_000 {
        let r = rng.random_range(1..=512usize);
        let scale: f32 = if k % 2 == 0 {
            rng.random_range(1..=64) as f32 / (r as f32).sqrt()
        } else {
            10f32.powf(rng.random_range(-4.0..4.0)) * if rng.random_bool(0.1) { -1.0 } else { 1.0 }
        };
        let got = llama_cpp_alpha("m", scale, r).unwrap_or_else(|e| panic!("{e}")) / r as f32;
        assert!(got.to_bits().abs_diff(scale.to_bits()) <= 1, "r {r}, scale {scale}, llama.cpp {got}");
        counts[k % 2].0 += usize::from(got == scale);
        counts[k % 2].1 += 1;
    }
    eprintln!("exact: rsLoRA {}/{}, random {}/{}", counts[0].0, counts[0].1, counts[1].0, counts[1].1);
    for (exact, total) in counts {
        assert!(exact * 100 >= total * 85, "only {exact} of {total} exact");
    }
    // rsLoRA: alpha 8 at r 3 is the factor 8/√3.
    let s = 8.0 / 3f32.sqrt();
    assert_eq!(llama_cpp_alpha("m", s, 3).unwrap() / 3.0, s);
    for (scale, r) in [(0.0, 4), (f32::NAN, 4), (f32::INFINITY, 4), (1.0, 0), (f32::MAX, 8)] {
        let e = llama_cpp_alpha("blk.x", scale, r).unwrap_err().to_string();
        assert!(e.contains("blk.x") && e.contains("adapter.lora.alpha"), "{e}");
    }
}

#[test]
fn module_names_follow_llama_cpp() {
    let cases = [
        (DecoderArch::Llama, "model.layers.0.self_attn.q_proj", "blk.0.attn_q"),
        (DecoderArch::Llama, "model.layers.12.self_attn.k_proj", "blk.12.attn_k"),
        (DecoderArch::Mistral, "model.layers.1.self_attn.v_proj", "blk.1.attn_v"),
        (DecoderArch::Qwen2, "model.layers.1.self_attn.o_proj", "blk.1.attn_output"),
        (DecoderArch::Llama, "model.layers.3.mlp.gate_proj", "blk.3.ffn_gate"),
        (DecoderArch::Llama, "model.layers.3.mlp.up_proj", "blk.3.ffn_up"),
        (DecoderArch::Llama, "model.layers.3.mlp.down_proj", "blk.3.ffn_down"),
        (DecoderArch::Llama, "lm_head", "output"),
        (DecoderArch::Gpt2, "transformer.h.0.attn.c_attn", "blk.0.attn_qkv"),
        (DecoderArch::Gpt2, "transformer.h.5.attn.c_proj", "blk.5.attn_output"),
        (DecoderArch::Gpt2, "transformer.h.5.mlp.c_fc", "blk.5.ffn_up"),
        (DecoderArch::Gpt2, "transformer.h.5.mlp.c_proj", "blk.5.ffn_down"),
    ];
    for (arch, hf, gguf) in cases {
        assert_eq!(gguf_module_name(arch, hf).unwrap(), gguf, "{hf}");
    }
    for (arch, bad) in [(DecoderArch::Llama, "score"), (DecoderArch::Gpt2, "transformer.h.x.attn.c_attn"), (DecoderArch::Gpt2, "score")] {
        let e = gguf_module_name(arch, bad).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains(llama_cpp_arch(arch).name), "{e}");
    }
    assert_eq!(permuted_heads(DecoderArch::Llama, 9, 3, "blk.4.attn_q.weight"), Some(9));
    assert_eq!(permuted_heads(DecoderArch::Mistral, 9, 3, "blk.4.attn_k.bias"), Some(3));
    assert_eq!(permuted_heads(DecoderArch::Llama, 9, 3, "blk.4.attn_v.weight"), None);
    assert_eq!(permuted_heads(DecoderArch::Llama, 9, 3, "blk.4.attn_qkv.weight"), None);
    assert_eq!(permuted_heads(DecoderArch::Qwen2, 9, 3, "blk.4.attn_q.weight"), None);
}

/// Checks the file's metadata and that every tensor is the model's LoRA in llama.cpp's layout:
/// lora_a = Aᵀ, lora_b = Bᵀ with rows permuted for attn_q / attn_k when `permutes`.
fn check_adapter(model: &Model, f: &GgufFile, arch: &str, permutes: bool) {
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["general.architecture", "general.type", "adapter.type", "adapter.lora.alpha", "general.quantization_version"]);
    assert_eq!(f.get_str("general.architecture").unwrap(), Some(arch));
    assert_eq!(f.get_str("general.type").unwrap(), Some("adapter"));
    assert_eq!(f.get_str("adapter.type").unwrap(), Some("lora"));
    let Some(MetadataValue::F32(alpha)) = f.get("adapter.lora.alpha").cloned() else { panic!("alpha must be an f32") };
    let Model::Decoder(d) = model else { unreachable!() };
    let lins: Vec<_> = model.linears().into_iter().filter(|l| l.lora.is_some()).collect();
    assert_eq!(f.tensors().len(), 2 * lins.len());
    for lin in lins {
        let l = lin.lora.as_ref().unwrap();
        let (i, r, o) = (lin.in_dim(), l.rank(), lin.out_dim());
        assert_eq!(alpha / r as f32, l.scale, "llama.cpp's alpha / r must be lowrank's scale");
        let base = gguf_module_name(d.config.arch, &lin.path).unwrap();
        let (ia, ib) = (f.tensor_info(&format!("{base}.weight.lora_a")).unwrap(), f.tensor_info(&format!("{base}.weight.lora_b")).unwrap());
        assert_eq!((ia.dims.as_slice(), ib.dims.as_slice()), ([i as u64, r as u64].as_slice(), [r as u64, o as u64].as_slice()));
        assert_eq!((ia.ggml_type, ib.ggml_type), (GgmlType::F32, GgmlType::F32));
        assert_eq!(f.read_tensor(&ia.name).unwrap().data, transpose(&l.a.data, i, r), "{}", ia.name);
        let b = f.read_tensor(&ib.name).unwrap().data;
        let heads = if base.ends_with("attn_q") { Some(d.config.n_heads) } else { base.ends_with("attn_k").then_some(d.config.n_kv_heads) };
        let b = match heads.filter(|_| permutes) {
            Some(h) => {
                assert_ne!(b, transpose(&l.b.data, r, o), "{} must be permuted", ib.name);
                unpermute_qk(&b, o, h).unwrap()
            }
            None => b,
        };
        assert_eq!(b, transpose(&l.b.data, r, o), "{}", ib.name);
    }
}

#[test]
fn llama_adapter_is_in_llama_cpps_layout_with_q_and_k_permuted() {
    let model = model_with_lora(LLAMA, &[], raschka(3));
    let (w, s) = adapter_writer(&model).unwrap();
    assert_eq!((s.arch, s.rank, s.alpha, s.scale), ("llama", 3, 48.0, 16.0));
    assert_eq!(s.modules.len(), 2 * 7 + 1, "7 projections per layer and lm_head");
    assert_eq!(s.modules[0], ("model.layers.0.self_attn.q_proj".to_string(), "blk.0.attn_q.weight".to_string()));
    assert_eq!(s.modules.last().unwrap().1, "output.weight");
    let f = read(&w);
    check_adapter(&model, &f, "llama", true);
    // Tensor order: lora_a then lora_b, module by module.
    assert_eq!(f.tensors()[0].name, "blk.0.attn_q.weight.lora_a");
    assert_eq!(f.tensors()[1].name, "blk.0.attn_q.weight.lora_b");
    // Mistral is llama.cpp's llama, permuted the same way.
    let mistral = model_with_lora(LLAMA, &[("model_type", "mistral".into())], raschka(2));
    check_adapter(&mistral, &read(&adapter_writer(&mistral).unwrap().0), "llama", true);
}

#[test]
fn qwen2_and_gpt2_adapters_are_not_permuted() {
    let peft = LoraConfig { r: 4, alpha: 8.0, scaling: Scaling::Peft, dropout: 0.0, ..Default::default() };
    let qwen = model_with_lora(LLAMA, &[("model_type", "qwen2".into())], peft);
    let (w, s) = adapter_writer(&qwen).unwrap();
    assert_eq!((s.arch, s.alpha, s.scale), ("qwen2", 8.0, 2.0));
    check_adapter(&qwen, &read(&w), "qwen2", false);

    let gpt2 = model_with_lora(GPT2, &[], LoraConfig { scaling: Scaling::Rslora, ..peft });
    let (w, s) = adapter_writer(&gpt2).unwrap();
    assert_eq!(s.arch, "gpt2");
    let names: Vec<&str> = s.modules.iter().map(|(_, g)| g.as_str()).take(4).collect();
    assert_eq!(names, ["blk.0.attn_qkv.weight", "blk.0.attn_output.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"]);
    let f = read(&w);
    check_adapter(&gpt2, &f, "gpt2", false);
    // c_attn is 16 → 48 (q, k, v fused), in llama.cpp's [in, r] / [r, out] dims.
    assert_eq!(f.tensor_info("blk.0.attn_qkv.weight.lora_b").unwrap().dims, [4, 48]);
}

#[test]
fn what_llama_cpp_cannot_load_is_refused_with_the_fix() {
    // A classification head.
    let raw: serde_json::Value = serde_json::from_str(LLAMA).unwrap();
    let cls = Model::new(&ModelConfig::from_value(&raw).unwrap(), HeadKind::Score, 2);
    let e = adapter_writer(&cls).unwrap_err().to_string();
    assert!(e.contains("score") && e.contains("--format peft"), "{e}");
    // No LoRA at all.
    let mut plain = model_with_lora(LLAMA, &[], raschka(2));
    plain.linears_mut().into_iter().for_each(|l| l.lora = None);
    assert!(matches!(adapter_writer(&plain), Err(ExportError::NoLora)));
    // A base tensor that trains in full (modules_to_save, last layers).
    let mut full = model_with_lora(LLAMA, &[], raschka(2));
    full.base_params_mut().into_iter().find(|p| p.name == "model.norm.weight").unwrap().set_trainable(true);
    let e = adapter_writer(&full).unwrap_err().to_string();
    assert!(e.contains("model.norm.weight") && e.contains("lowrank merge") && e.contains("--format gguf"), "{e}");
    // Two scales that no single adapter.lora.alpha gives.
    let mut mixed = model_with_lora(LLAMA, &[], raschka(2));
    mixed.linears_mut()[3].lora.as_mut().unwrap().scale = 3.0;
    let e = adapter_writer(&mixed).unwrap_err().to_string();
    assert!(e.contains("model.layers.0.self_attn.o_proj") && e.contains("one adapter.lora.alpha"), "{e}");
    // Non-finite LoRA values.
    let mut bad = model_with_lora(LLAMA, &[], raschka(2));
    bad.linears_mut()[1].lora.as_mut().unwrap().b.data[0] = f32::NAN;
    let e = adapter_writer(&bad).unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_k.weight.lora_b") && e.contains("non-finite"), "{e}");
    // A head count the rows do not split into.
    let mut odd = model_with_lora(LLAMA, &[], raschka(2));
    if let Model::Decoder(d) = &mut odd {
        d.config.n_heads = 3;
    }
    let e = adapter_writer(&odd).unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("3 heads"), "{e}");
}

/// A GGUF base of `model` as llama.cpp's converter would write it (F32, Q/K rows permuted).
fn gguf_base(model: &Model, tied: bool) -> GgufFile {
    let Model::Decoder(d) = model else { unreachable!() };
    let c = &d.config;
    let mut w = crate::gguf::GgufWriter::new();
    w.add_string("general.architecture", "llama").unwrap();
    w.add_string("general.name", "tiny").unwrap();
    w.add_u32("general.file_type", 7).unwrap();
    for (k, v) in [("embedding_length", c.dim), ("feed_forward_length", c.ffn_dim), ("block_count", c.n_layers), ("context_length", 32)] {
        w.add_u32(&format!("llama.{k}"), v as u32).unwrap();
    }
    w.add_u32("llama.attention.head_count", c.n_heads as u32).unwrap();
    w.add_u32("llama.attention.head_count_kv", c.n_kv_heads as u32).unwrap();
    w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5).unwrap();
    w.add_string("tokenizer.chat_template", "{{ messages }}").unwrap();
    for p in model.base_params() {
        if tied && p.name == "lm_head.weight" {
            continue;
        }
        let name = crate::gguf::hf::gguf_tensor_name("llama", &p.name).unwrap();
        let data = to_gguf_rows(d, &name, p.data.clone(), p.shape[0]).unwrap();
        w.add_tensor_f32(&name, &p.shape, &data).unwrap();
    }
    GgufFile::from_bytes(w.to_bytes(), Path::new("base.gguf")).unwrap()
}

#[test]
fn merged_model_keeps_the_metadata_and_adds_the_permuted_delta() {
    let model = model_with_lora(LLAMA, &[], raschka(2));
    let source = gguf_base(&model, false);
    let (adapter, _) = adapter_writer(&model).unwrap();
    let adapter = read(&adapter);
    let alpha = adapter.get_f64("adapter.lora.alpha").unwrap().unwrap() as f32;
    for dtype in [GgufDtype::F32, GgufDtype::F16] {
        let (w, s) = merged_writer(&model, &source, dtype).unwrap();
        assert_eq!((s.tensors, s.merged_modules.len()), (source.tensors().len(), 15));
        let f = read(&w);
        let keys = |f: &GgufFile| f.metadata().iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&f), keys(&source));
        assert_eq!(f.get_u64("general.file_type").unwrap(), Some(u64::from(dtype.file_type())));
        assert_eq!(f.get_str("tokenizer.chat_template").unwrap(), Some("{{ messages }}"));
        for t in source.tensors() {
            let got = f.tensor_info(&t.name).unwrap();
            let want_type = if t.dims.len() == 1 || dtype == GgufDtype::F32 { GgmlType::F32 } else { GgmlType::F16 };
            assert_eq!((got.dims.as_slice(), got.ggml_type), (t.dims.as_slice(), want_type), "{}", t.name);
            // In GGUF space, with no permutation in sight: merged = base + (alpha / r)·lora_b·lora_a.
            let mut want = source.read_tensor(&t.name).unwrap().data;
            if let (Ok(a), Ok(b)) = (adapter.read_tensor(&format!("{}.lora_a", t.name)), adapter.read_tensor(&format!("{}.lora_b", t.name)))
            {
                let (r, i, o) = (a.shape[0], a.shape[1], b.shape[0]);
                let scale = alpha / r as f32;
                for row in 0..o {
                    for col in 0..i {
                        let dot: f32 = (0..r).map(|k| b.data[row * r + k] * a.data[k * i + col]).sum();
                        want[row * i + col] += scale * dot;
                    }
                }
            }
            let got = f.read_tensor(&t.name).unwrap().data;
            for (g, w) in got.iter().zip(&want) {
                let tol = if want_type == GgmlType::F16 { w.abs() / 1024.0 + 1e-6 } else { 1e-5 * w.abs().max(1.0) };
                assert!((g - w).abs() <= tol, "{}: {g} vs {w}", t.name);
            }
        }
    }
    // Tied embeddings: no output.weight in the source, none written.
    let tied = model_with_lora(LLAMA, &[("tie_word_embeddings", true.into())], raschka(2));
    let f = read(&merged_writer(&tied, &gguf_base(&tied, true), GgufDtype::F32).unwrap().0);
    assert!(f.tensor_info("output.weight").is_none() && f.tensor_info("token_embd.weight").is_some());
}

#[test]
fn merged_model_refusals_name_the_fix() {
    let model = model_with_lora(LLAMA, &[], raschka(2));
    // A source without lm_head: the model's trained lm_head would be lost.
    let e = merged_writer(&model, &gguf_base(&model, true), GgufDtype::F16).unwrap_err().to_string();
    assert!(e.contains("lm_head.weight") && e.contains("--format peft"), "{e}");
    // Values f16 cannot hold.
    let mut big = model.clone();
    big.base_params_mut().into_iter().find(|p| p.name == "model.layers.1.mlp.up_proj.weight").unwrap().data[5] = 1e6;
    let e = merged_writer(&big, &gguf_base(&big, false), GgufDtype::F16).unwrap_err().to_string();
    assert!(e.contains("blk.1.ffn_up.weight") && e.contains("--dtype f32"), "{e}");
    // Another architecture's source.
    let qwen = model_with_lora(LLAMA, &[("model_type", "qwen2".into())], raschka(2));
    let e = merged_writer(&qwen, &gguf_base(&model, false), GgufDtype::F16).unwrap_err().to_string();
    assert!(e.contains("\"llama\"") && e.contains("qwen2"), "{e}");
    // GPT-2: lowrank reads no GPT-2 GGUF, so it writes none.
    let gpt2 = model_with_lora(GPT2, &[], raschka(2));
    let e = merged_writer(&gpt2, &gguf_base(&model, false), GgufDtype::F16).unwrap_err().to_string();
    assert!(e.contains("gpt2") && e.contains("convert_hf_to_gguf.py"), "{e}");
}
