//! Export for llama.cpp (lowrank::gguf::export): the GGUF LoRA adapter read back equals the PEFT
//! adapter (lora_a = PEFT's lora_A.weight, lora_b = lora_B.weight with attn_q / attn_k rows in
//! llama.cpp's permuted order), and the merged GGUF read back is base + delta (exactly for F32,
//! f16-rounded for F16) and, loaded as a model, gives the logits of base + adapter. Cases: the
//! tiny Llama fixture (tests/fixtures/golden/tiny-llama, with a GGUF base written here the way
//! llama.cpp's converter lays it out) with lowrank's own random adapter and with the PEFT-written
//! adapter tests/fixtures/peft-decoder/llama-lm-all, and the real SmolLM2 GGUF with the
//! PEFT-trained adapter tests/fixtures/smollm2/adapter-qv. Without the SmolLM2 asset its test
//! prints "skipped: …" and passes, except under CI, where it fails.
//!
//! The files were also checked with gguf-py's reader (scripts/golden/check_gguf_export.py); its
//! reports in tests/fixtures/gguf-export/ name the CRC-32 of each file checked, and the tests
//! here assert that lowrank still writes those very bytes. With LOWRANK_GGUF_EXPORT_OUT=DIR the
//! tests leave their files in DIR for the checker.

mod common;

use common::{lowrank, lowrank_err, lowrank_ok, s};
use lowrank::adapter::{load_into, save_adapter, AdapterInfo};
use lowrank::data::batch::{Batch, IGNORE};
use lowrank::data::LabelMap;
use lowrank::gguf::export::{gguf_module_name, write_adapter, write_merged, GgufDtype};
use lowrank::gguf::hf::{gguf_tensor_name, permute_qk, unpermute_qk};
use lowrank::gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue};
use lowrank::lora::{LoraConfig, LoraLayer, Scaling};
use lowrank::model::{Activations, HeadKind, LoadOptions, Model, Pass};
use lowrank::tensorfile::TensorFile;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

fn lm() -> LoadOptions {
    LoadOptions { head: Some(HeadKind::Lm), num_labels: None, seed: 0 }
}

/// CRC-32 (IEEE, zlib's) of `bytes`: the checksum the gguf-py check reports name.
fn crc32(bytes: &[u8]) -> u32 {
    let table: Vec<u32> = (0..256u32).map(|i| (0..8).fold(i, |c, _| if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 })).collect();
    !bytes.iter().fold(!0u32, |c, &b| table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8))
}

/// Where a test leaves the files the gguf-py check reads: LOWRANK_GGUF_EXPORT_OUT/`case` when
/// set, else a temporary folder (kept alive by the returned guard).
fn out_dir(case: &str) -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("LOWRANK_GGUF_EXPORT_OUT") {
        Some(root) => {
            let dir = PathBuf::from(root).join(case);
            std::fs::create_dir_all(&dir).unwrap();
            (dir, None)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            (t.path().to_path_buf(), Some(t))
        }
    }
}

/// Asserts that the gguf-py check report `case` says ok, and that it checked the files lowrank
/// writes now (same names, same CRC-32): `files` are (name in the report, path written here).
fn assert_checked_by_gguf_py(case: &str, files: &[(&str, &Path)]) {
    let path = fixture(&format!("gguf-export/{case}.check.json"));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(report["result"], "ok", "{}: the gguf-py check failed", path.display());
    for (name, file) in files {
        let bytes = std::fs::read(file).unwrap();
        let want = &report["files"][name];
        let got = serde_json::json!({"bytes": bytes.len(), "crc32": format!("{:08x}", crc32(&bytes))});
        assert_eq!(
            (&want["bytes"], &want["crc32"]),
            (&got["bytes"], &got["crc32"]),
            "{name}: lowrank no longer writes the bytes gguf-py checked ({}); rerun scripts/golden/check_gguf_export.py as its header says",
            path.display()
        );
    }
}

/// Logits [N, V] of `model` (a language-model head) at every token of `seqs`, packed.
fn lm_logits(model: &Model, seqs: &[Vec<u32>]) -> Vec<f32> {
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let targets: Vec<Vec<u32>> = seqs.iter().map(|q| (0..q.len()).map(|j| q.get(j + 1).copied().unwrap_or(IGNORE)).collect()).collect();
    let trefs: Vec<&[u32]> = targets.iter().map(Vec::as_slice).collect();
    let batch = Batch::pack_lm(&refs, &trefs);
    let mut acts = Activations::default();
    model.forward_loss(&batch, &mut acts, Pass::Eval);
    let Model::Decoder(d) = model else { unreachable!() };
    let all: Vec<usize> = (0..batch.n_tokens()).collect();
    d.lm_logits(acts.decoder_acts(), &all, true)
}

/// Largest |a − b| and largest |b|.
fn max_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    (d, b.iter().map(|v| v.abs()).fold(0.0f32, f32::max))
}

/// The tiny Llama (4 heads, 2 KV heads, untied lm_head) with random LoRA (B ≠ 0) on all seven
/// projections and lm_head, at rank 3 with the seed's raschka scaling (scale = alpha = 16).
fn tiny_llama_with_lora() -> Model {
    let (mut m, _) = Model::from_pretrained(&fixture("golden/tiny-llama"), &lm()).unwrap();
    let cfg = LoraConfig { r: 3, alpha: 16.0, scaling: Scaling::Raschka, dropout: 0.0, ..Default::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for lin in m.linears_mut() {
        let mut l = LoraLayer::new(&lin.path, lin.in_dim(), lin.out_dim(), &cfg, &mut rng);
        l.b.data.iter_mut().for_each(|v| *v = rng.random_range(-0.5..0.5));
        l.a.set_trainable(false);
        l.b.set_trainable(false);
        lin.lora = Some(l);
    }
    m
}

/// Writes the base weights of the tiny Llama as llama.cpp's converter lays them out (F32 GGUF,
/// attn_q / attn_k rows permuted), with the metadata lowrank's GGUF reader needs.
fn write_tiny_gguf(model: &Model, path: &Path) {
    let Model::Decoder(d) = model else { unreachable!() };
    let c = &d.config;
    let mut w = GgufWriter::new();
    w.add_string("general.architecture", "llama").unwrap();
    w.add_string("general.name", "tiny-llama").unwrap();
    w.add_u32("general.file_type", 0).unwrap();
    for (k, v) in [
        ("embedding_length", c.dim),
        ("feed_forward_length", c.ffn_dim),
        ("block_count", c.n_layers),
        ("context_length", 64),
        ("attention.head_count", c.n_heads),
        ("attention.head_count_kv", c.n_kv_heads),
        ("vocab_size", c.vocab_size),
    ] {
        w.add_u32(&format!("llama.{k}"), v as u32).unwrap();
    }
    w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5).unwrap();
    w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}").unwrap();
    for p in model.base_params() {
        let name = gguf_tensor_name("llama", &p.name).unwrap();
        let heads = if name.contains(".attn_q.") { Some(c.n_heads) } else { name.contains(".attn_k.").then_some(c.n_kv_heads) };
        let data = heads.map_or_else(|| p.data.clone(), |h| permute_qk(&p.data, p.shape[0], h).unwrap());
        w.add_tensor_f32(&name, &p.shape, &data).unwrap();
    }
    w.write(path).unwrap();
}

/// Checks that every tensor of the GGUF adapter `gguf` is the PEFT adapter's (`peft`, the
/// tensors of adapter_model.safetensors) in llama.cpp's layout, that llama.cpp's `alpha / r` is
/// `peft_scale`, and that both hold the same modules; returns the number of modules.
fn assert_adapter_equals_peft(gguf: &GgufFile, peft: &TensorFile, model: &Model, peft_scale: f32) -> usize {
    let Model::Decoder(d) = model else { unreachable!() };
    let c = &d.config;
    assert_eq!(gguf.get_str("general.type").unwrap(), Some("adapter"));
    assert_eq!(gguf.get_str("adapter.type").unwrap(), Some("lora"));
    assert_eq!(gguf.get_str("general.architecture").unwrap(), Some("llama"));
    let Some(MetadataValue::F32(alpha)) = gguf.get("adapter.lora.alpha").cloned() else { panic!("adapter.lora.alpha must be f32") };
    let mut modules = 0;
    for (key, a_peft) in peft.tensors.iter().filter(|(k, _)| k.ends_with(".lora_A.weight")) {
        let module = key.strip_prefix("base_model.model.").unwrap().strip_suffix(".lora_A.weight").unwrap();
        let b_peft = &peft.tensors[&format!("base_model.model.{module}.lora_B.weight")];
        let base = gguf_module_name(c.arch, module).unwrap();
        let a = gguf.read_tensor(&format!("{base}.weight.lora_a")).unwrap();
        let b = gguf.read_tensor(&format!("{base}.weight.lora_b")).unwrap();
        let r = a_peft.shape[0];
        assert_eq!(alpha / r as f32, peft_scale, "llama.cpp's alpha / r must be the adapter's scale");
        assert_eq!((a.shape.as_slice(), a.data.as_slice()), (a_peft.shape.as_slice(), a_peft.f32.as_slice()), "{base}.lora_a");
        let gguf_info = gguf.tensor_info(&format!("{base}.weight.lora_b")).unwrap();
        assert_eq!(gguf_info.dims, [r as u64, b_peft.shape[0] as u64], "lora_b's GGUF dims are [r, out]");
        assert_eq!(gguf_info.ggml_type, GgmlType::F32);
        let heads = if base.ends_with(".attn_q") { Some(c.n_heads) } else { base.ends_with(".attn_k").then_some(c.n_kv_heads) };
        let b_hf = match heads {
            Some(h) => {
                assert_ne!(b.data, b_peft.f32, "{base}.lora_b must be in llama.cpp's permuted row order");
                unpermute_qk(&b.data, b.shape[0], h).unwrap()
            }
            None => b.data.clone(),
        };
        assert_eq!((b.shape.as_slice(), b_hf.as_slice()), (b_peft.shape.as_slice(), b_peft.f32.as_slice()), "{base}.lora_b");
        modules += 1;
    }
    assert_eq!(gguf.tensors().len(), 2 * modules, "the GGUF adapter has tensors the PEFT adapter lacks");
    modules
}

#[test]
fn tiny_llama_adapter_equals_the_peft_adapter_and_merges_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama_with_lora();
    // The PEFT adapter, as lowrank writes it for PEFT (lora_alpha = 16 · 3 = 48).
    let peft_dir = dir.path().join("peft");
    let labels = LabelMap::new(vec!["a".into(), "b".into()]).unwrap();
    let lora = LoraConfig { r: 3, alpha: 16.0, scaling: Scaling::Raschka, dropout: 0.0, ..Default::default() };
    let info = AdapterInfo {
        base_model: "tiny-llama".into(),
        labels: Some(&labels),
        tokenizer_dir: &fixture("golden/tiny-llama"),
        lora: Some(lora),
        patterns: None,
    };
    save_adapter(&model, &peft_dir, &info).unwrap();
    let peft = TensorFile::read(&peft_dir.join("adapter_model.safetensors")).unwrap();

    let out = dir.path().join("adapter.gguf");
    let summary = write_adapter(&model, &out).unwrap();
    assert_eq!((summary.alpha, summary.rank, summary.scale, summary.scale_exact), (48.0, 3, 16.0, true));
    let gguf = GgufFile::open(&out).unwrap();
    assert_eq!(assert_adapter_equals_peft(&gguf, &peft, &model, 16.0), 2 * 7 + 1);

    // A GGUF base, then the merged model read back by lowrank: base + delta.
    let base = dir.path().join("tiny.gguf");
    write_tiny_gguf(&model, &base);
    let (from_gguf, _) = Model::from_gguf(&base, &lm()).unwrap();
    let hf_params: BTreeMap<_, _> = model.base_params().into_iter().map(|p| (p.name.clone(), p.data.clone())).collect();
    for p in from_gguf.base_params() {
        assert_eq!(p.data, hf_params[&p.name], "{}: the GGUF base must read back as the Hugging Face weights", p.name);
    }
    let mut expected = model.clone();
    expected.merge_lora().unwrap();
    let expected: BTreeMap<_, _> =
        expected.base_params().into_iter().map(|p| (p.name.clone(), (p.shape.clone(), p.data.clone()))).collect();
    let source = GgufFile::open(&base).unwrap();
    for dtype in [GgufDtype::F32, GgufDtype::F16] {
        let merged_path = dir.path().join(format!("merged-{}.gguf", dtype.name()));
        let summary = write_merged(&model, &source, &merged_path, dtype).unwrap();
        assert_eq!((summary.tensors, summary.merged_modules.len()), (source.tensors().len(), 15));
        let (merged, _) = Model::from_gguf(&merged_path, &lm()).unwrap();
        for p in merged.base_params() {
            let (shape, want) = &expected[&p.name];
            let want: Vec<f32> = if dtype == GgufDtype::F16 && shape.len() == 2 {
                want.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
            } else {
                want.clone()
            };
            assert_eq!(&p.data, &want, "{} ({})", p.name, dtype.name());
        }
    }

    // The command line gives the same files from the PEFT folder and the GGUF base.
    let cli_adapter = dir.path().join("cli-adapter.gguf");
    let out = lowrank(&["export", "--model", s(&base), "--adapter", s(&peft_dir), "--format", "gguf", "--out", s(&cli_adapter)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lora"));
    let cli = GgufFile::open(&cli_adapter).unwrap();
    assert_adapter_equals_peft(&cli, &peft, &model, 16.0);
    assert_eq!(std::fs::read(&cli_adapter).unwrap(), std::fs::read(dir.path().join("adapter.gguf")).unwrap());
    let cli_merged = dir.path().join("cli-merged.gguf");
    let args = ["merge", "--model", s(&base), "--adapter", s(&peft_dir), "--out", s(&cli_merged), "--format", "gguf", "--dtype", "f32"];
    let out = lowrank(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&cli_merged).unwrap(), std::fs::read(dir.path().join("merged-f32.gguf")).unwrap());

    // An existing file is replaced only with --force, an input never (not even the base itself).
    let e = lowrank_err(&args);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    let forced: Vec<&str> = args.iter().copied().chain(["--force"]).collect();
    lowrank_ok(&forced);
    let base_bytes = std::fs::read(&base).unwrap();
    for victim in [base.clone(), peft_dir.join("adapter_config.json")] {
        let e = lowrank_err(&["merge", "--model", s(&base), "--adapter", s(&peft_dir), "--out", s(&victim), "--format", "gguf", "--force"]);
        assert!(e.contains("writing there would replace it"), "{e}");
        let e =
            lowrank_err(&["export", "--model", s(&base), "--adapter", s(&peft_dir), "--format", "gguf", "--out", s(&victim), "--force"]);
        assert!(e.contains("writing there would replace it"), "{e}");
    }
    assert_eq!(std::fs::read(&base).unwrap(), base_bytes);
    let e = lowrank_err(&["export", "--model", s(&base), "--adapter", s(&peft_dir), "--format", "gguf", "--out", s(&cli_adapter)]);
    assert!(e.contains("already exists"), "{e}");

    // Bad requests name the fix.
    let hf = fixture("golden/tiny-llama");
    let cli_merged = dir.path().join("cli-merged-2.gguf");
    let e = lowrank_err(&["merge", "--model", s(&hf), "--adapter", s(&peft_dir), "--out", s(&cli_merged), "--format", "gguf"]);
    assert!(e.contains("not a GGUF file") && e.contains("convert_hf_to_gguf.py"), "{e}");
    let e = lowrank_err(&["merge", "--model", s(&base), "--adapter", s(&peft_dir), "--out", s(&cli_merged), "--dtype", "f16"]);
    assert!(e.contains("--dtype applies to --format gguf"), "{e}");
    let e = lowrank_err(&["export", "--model", s(&base), "--adapter", s(&peft_dir), "--out", s(&cli_adapter)]);
    assert!(e.contains("--format gguf"), "{e}");
}

#[test]
fn dora_and_bias_adapters_are_refused_for_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("smollm2/adapter-qv");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
    for (key, value, needle) in [
        ("use_dora", serde_json::json!(true), "use_dora"),
        ("lora_bias", serde_json::json!(true), "lora_bias"),
        ("bias", serde_json::json!("all"), "bias is \"all\""),
        ("task_type", serde_json::json!("SEQ_CLS"), "sequence-classification"),
    ] {
        let adapter = dir.path().join(key);
        std::fs::create_dir_all(&adapter).unwrap();
        let mut c = cfg.clone();
        c[key] = value;
        std::fs::write(adapter.join("adapter_config.json"), serde_json::to_string(&c).unwrap()).unwrap();
        std::fs::copy(src.join("adapter_model.safetensors"), adapter.join("adapter_model.safetensors")).unwrap();
        // The base is never read: the adapter is refused first.
        let base = dir.path().join("absent.gguf");
        let e = lowrank::gguf::export::export_peft_adapter(&base, &adapter, &dir.path().join("a.gguf")).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("--format peft"), "{key}: {e}");
        let e = lowrank::gguf::export::merge_to_gguf(&base, &adapter, &dir.path().join("m.gguf"), GgufDtype::F16).unwrap_err().to_string();
        assert!(e.contains(needle), "{key}: {e}");
    }
}

/// The fixture's sequences without their padding.
fn fixture_sequences(expected: &serde_json::Value) -> Vec<Vec<u32>> {
    let lengths = expected["lengths"].as_array().unwrap();
    let ids = expected["input_ids"].as_array().unwrap();
    ids.iter()
        .zip(lengths)
        .map(|(row, n)| row.as_array().unwrap()[..n.as_u64().unwrap() as usize].iter().map(|v| v.as_u64().unwrap() as u32).collect())
        .collect()
}

#[test]
fn peft_adapter_exports_and_merged_gguf_gives_the_logits_of_base_plus_adapter() {
    let (dir, _keep) = out_dir("tiny-llama-lm-all");
    // A PEFT-written causal-LM adapter: rsLoRA, r 2, lora_alpha 2 on all seven projections.
    let peft_dir = fixture("peft-decoder/llama-lm-all");
    let peft = TensorFile::read(&peft_dir.join("adapter_model.safetensors")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(peft_dir.join("expected.json")).unwrap()).unwrap();
    let (hf, _) = Model::from_pretrained(&fixture("golden/tiny-llama"), &lm()).unwrap();
    let base = dir.join("base.gguf");
    write_tiny_gguf(&hf, &base);
    let (plain, _) = Model::from_gguf(&base, &lm()).unwrap();
    let mut with_adapter = plain.clone();
    load_into(&peft_dir, &mut with_adapter).unwrap();

    let adapter = dir.join("adapter.gguf");
    lowrank_ok(&["export", "--model", s(&base), "--adapter", s(&peft_dir), "--format", "gguf", "--out", s(&adapter)]);
    let gguf = GgufFile::open(&adapter).unwrap();
    // lowrank's rsLoRA factor; PEFT's (2 / √2 in f64, then f32) is within one f32 step of it.
    let scale = 2.0f32 / 2f32.sqrt();
    assert!((f64::from(scale) - 2.0 / 2f64.sqrt()).abs() <= f64::from(f32::EPSILON));
    assert_eq!(assert_adapter_equals_peft(&gguf, &peft, &with_adapter, scale), 14);

    // The merged GGUF, loaded back as a model, gives base + adapter's logits.
    let seqs = fixture_sequences(&expected);
    let want = lm_logits(&with_adapter, &seqs);
    let (moved, _) = max_diff(&lm_logits(&plain, &seqs), &want);
    assert!(moved > 1.0, "the adapter moves the logits by only {moved}, so this test could not see it missing");
    // f16 weights: each rounded by at most 2⁻¹¹ relative, which moves these logits by ~4e-3 of
    // their range (measured), far below what the adapter moves them by.
    for (dtype, rtol) in [("f32", 1e-5f32), ("f16", 1e-2)] {
        let merged = dir.join(format!("merged-{dtype}.gguf"));
        lowrank_ok(&["merge", "--model", s(&base), "--adapter", s(&peft_dir), "--format", "gguf", "--dtype", dtype, "--out", s(&merged)]);
        let inspect = lowrank_ok(&["inspect", "--model", s(&merged), "--head", "lm"]);
        assert!(inspect.contains("LlamaForCausalLM"), "{inspect}");
        let (m, _) = Model::from_gguf(&merged, &lm()).unwrap();
        let (d, top) = max_diff(&lm_logits(&m, &seqs), &want);
        eprintln!("merged {dtype}: logits differ from base + adapter by {d:e} (max |logit| {top}, the adapter moves them by {moved})");
        assert!(d <= rtol * top, "merged {dtype}: logits differ from base + adapter by {d} (max {top})");
    }
    let files = [
        ("base.gguf", base.as_path()),
        ("adapter.gguf", &adapter),
        ("merged-f32.gguf", &dir.join("merged-f32.gguf")),
        ("merged-f16.gguf", &dir.join("merged-f16.gguf")),
    ];
    assert_checked_by_gguf_py("tiny-llama-lm-all", &files);
}

#[test]
fn gguf_export_refuses_what_llama_cpp_cannot_run_with_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let model = common::tiny_bert(d.path());
    let data = d.path().join("data.csv");
    std::fs::write(&data, "text,label\nfine film,1\nawful,0\ngreat,1\nbad,0\n").unwrap();
    let run = d.path().join("run");
    let (m, dd, r) = (s(&model), s(&data), s(&run));
    lowrank_ok(&["train", "--model", m, "--train", dd, "--val", dd, "--batch-size", "2", "--epochs", "1", "--out", r]);
    let out = d.path().join("a.gguf");
    let e = lowrank_err(&["export", "--run", r, "--format", "gguf", "--out", s(&out)]);
    assert!(e.contains("bert") && e.contains("llama.cpp's decoder") && e.contains("--format peft"), "{e}");
    assert!(!out.exists());
    // The same run exports as PEFT (the default).
    lowrank_ok(&["export", "--run", r, "--out", s(&d.path().join("peft"))]);
    // --out must be a file; --model goes with --adapter only.
    let e = lowrank_err(&["export", "--run", r, "--format", "gguf", "--out", s(d.path())]);
    assert!(e.contains("is a folder") && e.contains("adapter.gguf"), "{e}");
    let e = lowrank_err(&["export", "--run", r, "--model", m, "--format", "gguf", "--out", s(&out)]);
    assert!(e.contains("--adapter"), "{e}");
    // A merged GGUF of an encoder: the base is no GGUF.
    let e = lowrank_err(&["merge", "--model", m, "--adapter", s(&d.path().join("peft")), "--format", "gguf", "--out", s(&out)]);
    assert!(e.contains("not a GGUF file") && e.contains("--format peft"), "{e}");
}

const SMOLLM2: &str = "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

fn smollm2_path() -> Option<PathBuf> {
    let assets =
        std::env::var_os("LOWRANK_ASSETS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"));
    let path = assets.join(SMOLLM2);
    if path.exists() {
        Some(path)
    } else {
        lowrank::ci::missing(&path.display().to_string(), "run scripts/fetch-assets.sh");
        None
    }
}

#[test]
fn smollm2_adapter_qv_exports_for_llama_cpp() {
    let Some(base) = smollm2_path() else { return };
    let (dir, _keep) = out_dir("smollm2-adapter-qv");
    let adapter_dir = fixture("smollm2/adapter-qv");
    let peft = TensorFile::read(&adapter_dir.join("adapter_model.safetensors")).unwrap();
    let (plain, _) = Model::from_gguf(&base, &lm()).unwrap();
    let mut model = plain.clone();
    load_into(&adapter_dir, &mut model).unwrap();

    let out = dir.join("adapter.gguf");
    let summary = write_adapter(&model, &out).unwrap();
    // PEFT's lora_alpha 4 at r 2: scale 2, which llama.cpp computes as 4 / 2.
    let got = (summary.arch, summary.alpha, summary.rank, summary.scale, summary.scale_exact, summary.modules.len());
    assert_eq!(got, ("llama", 4.0, 2, 2.0, true, 60));
    let gguf = GgufFile::open(&out).unwrap();
    assert_eq!(assert_adapter_equals_peft(&gguf, &peft, &model, 2.0), 60);

    // Merged F16: in GGUF space, with no permutation involved, each tensor is the Q4_1 base
    // dequantized plus (alpha / r)·lora_b·lora_a, rounded to f16; vectors stay F32.
    let source = GgufFile::open(&base).unwrap();
    let merged_path = dir.join("merged-f16.gguf");
    let m = write_merged(&model, &source, &merged_path, GgufDtype::F16).unwrap();
    assert_eq!((m.tensors, m.merged_modules.len()), (272, 60));
    let merged = GgufFile::open(&merged_path).unwrap();
    let keys = |f: &GgufFile| f.metadata().iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&merged), keys(&source));
    for (k, v) in source.metadata() {
        if k != "general.file_type" {
            assert_eq!(merged.get(k), Some(v), "{k}");
        }
    }
    assert_eq!(merged.get_u64("general.file_type").unwrap(), Some(1));
    let mut worst = 0f32;
    for t in source.tensors() {
        let info = merged.tensor_info(&t.name).unwrap();
        assert_eq!(info.dims, t.dims, "{}", t.name);
        assert_eq!(info.ggml_type, if t.dims.len() == 1 { GgmlType::F32 } else { GgmlType::F16 }, "{}", t.name);
        let mut want = source.read_tensor(&t.name).unwrap().data;
        if let (Ok(a), Ok(b)) = (gguf.read_tensor(&format!("{}.lora_a", t.name)), gguf.read_tensor(&format!("{}.lora_b", t.name))) {
            let (r, i, o) = (a.shape[0], a.shape[1], b.shape[0]);
            for row in 0..o {
                for col in 0..i {
                    let dot: f32 = (0..r).map(|k| b.data[row * r + k] * a.data[k * i + col]).sum();
                    want[row * i + col] += summary.scale * dot;
                }
            }
        }
        let got = merged.read_tensor(&t.name).unwrap().data;
        for (g, w) in got.iter().zip(&want) {
            let rounded = if t.dims.len() == 1 { *w } else { half::f16::from_f32(*w).to_f32() };
            // Equal to the f16 rounding of base + delta, up to one f16 step where the f32 sums of
            // lowrank's merge and this check round differently next to a rounding boundary.
            let step = if t.dims.len() == 1 { 0.0 } else { (w.abs() / 1024.0).max(6e-8) };
            worst = worst.max((g - rounded).abs() / step.max(f32::MIN_POSITIVE));
            assert!((g - rounded).abs() <= step, "{}: {g} vs {rounded}", t.name);
        }
    }
    eprintln!("merged f16 vs f16(base + delta): worst {worst:.3} f16 steps");

    // Loaded back as a model (tokenizer and all), the merged file gives base + adapter's logits,
    // up to the f16 rounding of the weights.
    let tok = lowrank::tokenize::Tokenizer::from_gguf(&base, 64).unwrap();
    let merged_tok = lowrank::tokenize::Tokenizer::from_gguf(&merged_path, 64).unwrap();
    let prompts = ["The capital of France is", "def fibonacci(n):", "I loved this film because"];
    let seqs: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p).unwrap()).collect();
    for (p, q) in prompts.iter().zip(&seqs) {
        assert_eq!(&merged_tok.encode(p).unwrap(), q, "{p}");
    }
    let want = lm_logits(&model, &seqs);
    let (moved, _) = max_diff(&lm_logits(&plain, &seqs), &want);
    let (merged_model, _) = Model::from_gguf(&merged_path, &lm()).unwrap();
    let (d, top) = max_diff(&lm_logits(&merged_model, &seqs), &want);
    eprintln!("SmolLM2 merged f16: logits differ from base + adapter by {d:e} (max |logit| {top}; the adapter moves them by {moved})");
    assert!(moved > 10.0 * d, "the adapter moves the logits by {moved}, too little next to the f16 error {d} for this test to see it");
    assert!(d <= 1e-2 * top, "merged f16: logits differ from base + adapter by {d} (max {top})");
    assert_checked_by_gguf_py("smollm2-adapter-qv", &[("adapter.gguf", &out), ("merged-f16.gguf", &merged_path)]);
}
