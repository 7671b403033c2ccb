//! Incremental decoding with the key/value cache against the model's full forward pass on the
//! tiny random Llama (GQA, llama3 rope), Qwen2 (q/k/v biases, tied embeddings) and GPT-2 (fused
//! c_attn, learned positions) of tests/fixtures/golden: the logits of every position, from a
//! prefill in chunks and then one token at a time, equal those of the whole sequence computed
//! at once (within 1e-5), with and without an unmerged LoRA; and bad input is a clear error.

use lowrank::data::batch::{Batch, IGNORE};
use lowrank::infer::generate::{parse_adapter_arg, step, AdapterSet, GenerateOptions, Generator, KvCache, Rows, StepBuffers};
use lowrank::lora::{LoraConfig, LoraLayer, Scaling};
use lowrank::model::{Activations, HeadKind, LoadOptions, Model, Pass};
use lowrank::tokenize::Tokenizer;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden").join(name)
}

fn load(name: &str) -> Model {
    Model::from_pretrained(&golden(name), &LoadOptions { head: Some(HeadKind::Lm), num_labels: None, seed: 0 }).unwrap().0
}

/// Logits [n, V] of every position of `ids`, the whole sequence at once.
fn full(model: &Model, ids: &[u32]) -> Vec<f32> {
    let Model::Decoder(d) = model else { panic!("a decoder") };
    let targets = vec![IGNORE; ids.len()];
    let batch = Batch::pack_lm(&[ids], &[&targets]);
    let mut acts = Activations::default();
    model.forward_loss(&batch, &mut acts, Pass::Infer);
    let all: Vec<usize> = (0..ids.len()).collect();
    d.lm_logits(acts.decoder_acts(), &all, false)
}

/// Logits [n, V] of every position from the cache: a prefill in `chunks`, the rest one by one.
fn cached(model: &Model, ids: &[u32], chunks: &[usize]) -> Vec<f32> {
    let Model::Decoder(d) = model else { panic!("a decoder") };
    let mut cache = KvCache::new(d.layers.len(), d.config.kv_dim(), ids.len());
    let mut buf = StepBuffers::default();
    let mut out = Vec::new();
    let mut at = 0;
    for &c in chunks.iter().chain(std::iter::repeat(&1)) {
        if at == ids.len() {
            break;
        }
        let c = c.min(ids.len() - at);
        out.extend_from_slice(step(d, &mut cache, &ids[at..at + c], Rows::All, &mut buf).unwrap());
        at += c;
    }
    assert_eq!(cache.len(), ids.len());
    out
}

/// The tiny models have no tokenizer: a small WordPiece one decodes (ids outside it are
/// skipped); only ids are compared.
fn tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\nc\n").unwrap();
    let tok = Tokenizer::from_vocab(&vocab, true, 512).unwrap();
    (dir, tok)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|v| v.is_finite()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// LoRA (PEFT's scaling, r 2, alpha 4, B ~ U(±0.05): the size of a trained adapter's) on every
/// linear, left unmerged (the decoding step runs the branch).
fn add_lora(model: &mut Model) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for lin in model.linears_mut() {
        let mut l = LoraLayer::new(
            &lin.path,
            lin.in_dim(),
            lin.out_dim(),
            &LoraConfig { r: 2, alpha: 4.0, scaling: Scaling::Peft, dropout: 0.0, ..Default::default() },
            &mut rng,
        );
        l.b.data.iter_mut().for_each(|v| *v = rng.random_range(-0.05..0.05));
        lin.lora = Some(l);
    }
}

#[test]
fn cached_decoding_equals_the_full_forward_pass() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        for lora in [false, true] {
            let mut model = load(name);
            if lora {
                add_lora(&mut model);
            }
            let v = model.vocab_size();
            let seq = ids(23, v, 1);
            let want = full(&model, &seq);
            for chunks in [&[1usize][..], &[7, 3], &[23]] {
                let got = cached(&model, &seq, chunks);
                let d = max_diff(&got, &want);
                let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
                assert!(d <= 1e-5, "{name} lora={lora} chunks {chunks:?}: max |Δlogit| {d:e} (max |logit| {scale:e})");
            }
        }
    }
}

#[test]
fn generation_with_the_cache_equals_generation_by_recomputation() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(name);
        let (_dir, tok) = tokenizer();
        let prompt = ids(9, model.vocab_size(), 2);
        let run = |decoding| {
            let opts = GenerateOptions { max_new_tokens: 20, decoding, ..Default::default() };
            Generator::new().generate(&model, &tok, &prompt, &opts, &mut |_| {}).unwrap().ids
        };
        let a = run(lowrank::infer::generate::Decoding::Cached);
        assert_eq!(a.len(), 20);
        assert_eq!(a, run(lowrank::infer::generate::Decoding::Recompute), "{name}");
    }
}

#[test]
fn a_shared_prefix_is_reused_and_changes_nothing() {
    let model = load("tiny-llama");
    let (_dir, tok) = tokenizer();
    let a = ids(12, model.vocab_size(), 4);
    let mut b = a[..8].to_vec();
    b.extend(ids(5, model.vocab_size(), 5));
    let opts = GenerateOptions { max_new_tokens: 6, ..Default::default() };
    let mut g = Generator::new();
    g.generate(&model, &tok, &a, &opts, &mut |_| {}).unwrap();
    let reused = g.generate(&model, &tok, &b, &opts, &mut |_| {}).unwrap();
    assert_eq!(reused.reused_tokens, 8);
    let fresh = Generator::new().generate(&model, &tok, &b, &opts, &mut |_| {}).unwrap();
    assert_eq!((fresh.reused_tokens, &fresh.ids), (0, &reused.ids));
}

#[test]
fn bad_input_is_a_clear_error() {
    let model = load("tiny-llama");
    let (_dir, tok) = tokenizer();
    // The tiny Llama's context is 64 positions.
    let long = ids(65, model.vocab_size(), 6);
    let e = Generator::new().generate(&model, &tok, &long, &GenerateOptions::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("65 tokens") && e.contains("context holds 64") && e.contains("shorten"), "{e}");
    // A prompt that fills the context leaves room for one new token only.
    let full_ctx = ids(64, model.vocab_size(), 6);
    let g = Generator::new().generate(&model, &tok, &full_ctx, &GenerateOptions::default(), &mut |_| {}).unwrap();
    assert_eq!((g.ids.len(), g.stopped.name()), (1, "context"));

    // Adapters: unknown names, and an adapter made for another base model.
    let smol = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2/adapter-qv");
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft-decoder/llama-lm-all");
    let arg = format!("smol={}", smol.display());
    let mut set = AdapterSet::new(model, vec![parse_adapter_arg(&arg), parse_adapter_arg(&other.display().to_string())]).unwrap();
    let e = set.select(Some("nope")).unwrap_err().to_string();
    assert!(e.contains("\"nope\"") && e.contains("smol, llama-lm-all, base"), "{e}");
    let e = set.select(None).unwrap_err().to_string();
    assert!(e.contains("--adapter-name"), "{e}");
    let e = set.select(Some("smol")).unwrap_err().to_string();
    assert!(e.contains("does not fit") && e.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && e.contains("trained on"), "{e}");
    assert_eq!(set.current(), None);
    // The right adapter still applies afterwards, and "base" removes it again.
    assert!(set.select(Some("llama-lm-all")).unwrap());
    assert_eq!(set.current(), Some("llama-lm-all"));
    assert!(set.select(Some("base")).unwrap());
    let e = AdapterSet::new(load("tiny-llama"), vec![parse_adapter_arg("base=x")]).err().unwrap().to_string();
    assert!(e.contains("reserved"), "{e}");
}
