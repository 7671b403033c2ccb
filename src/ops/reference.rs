//! f64 reference implementations of every kernel's forward (plain loops, the textbook formulas),
//! and the tests that hold the f32 kernels to them: each forward within 1e-5 of its reference, and
//! each hand-written backward within 1e-5 + 1e-4·|g| of f64 central differences of the reference
//! ([`check_gradient_f64`]) — tight enough to catch a tanh-approximate GELU derivative or a 1.5%
//! scale error, which the f32 self-consistency checks of each kernel's own tests would let pass.

use super::activation::Activation;
use super::attention::{attention_backward, attention_forward, probs_len, AttnSpan, Heads, SeqSpan};
use super::dropout::Dropout;
use super::embedding::{embedding_backward, embedding_forward};
use super::layernorm::{layernorm_backward, layernorm_forward};
use super::linear::{linear_backward, linear_forward};
use super::loss::cross_entropy;
use super::testing::{assert_close, check_gradient_f64, dot64, random_vec};
use crate::lora::{LoraConfig, LoraLayer, Scaling};
use rand::SeedableRng;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

fn act64(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::Relu => x.max(0.0),
        Activation::Tanh => x.tanh(),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
    }
}

/// y[N,O] = x[N,I]·wᵀ + b.
fn linear64(x: &[f64], w: &[f64], b: &[f64], n: usize, i: usize, o: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * o];
    for r in 0..n {
        for c in 0..o {
            y[r * o + c] = b[c] + (0..i).map(|k| x[r * i + k] * w[c * i + k]).sum::<f64>();
        }
    }
    y
}

fn layernorm64(x: &[f64], w: &[f64], b: &[f64], c: usize, eps: f64) -> Vec<f64> {
    x.chunks(c)
        .flat_map(|row| {
            let mu = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            row.iter().enumerate().map(move |(j, v)| (v - mu) * rstd * w[j] + b[j]).collect::<Vec<_>>()
        })
        .collect()
}

/// Per sequence and head: softmax(q·kᵀ/√D) over the valid keys, dropped out with the kernel's mask
/// (its index is the probability's offset in the cache: spans in order, heads within a span), · v.
fn attention64(q: &[f64], k: &[f64], v: &[f64], spans: &[AttnSpan], heads: usize, c: usize, drop: Dropout) -> Vec<f64> {
    let d = c / heads;
    let mut ctx = vec![0.0; q.len()];
    let mut off = 0;
    for s in spans {
        for h in 0..heads {
            for qi in 0..s.q_len {
                let qr = &q[(s.q_start + qi) * c + h * d..][..d];
                let scores: Vec<f64> = (0..s.k_valid)
                    .map(|kj| qr.iter().zip(&k[(s.k_start + kj) * c + h * d..][..d]).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                for (kj, sc) in scores.iter().enumerate() {
                    let p = (sc - max).exp() / z * drop.factor(off + qi * s.k_valid + kj) as f64;
                    for e in 0..d {
                        ctx[(s.q_start + qi) * c + h * d + e] += p * v[(s.k_start + kj) * c + h * d + e];
                    }
                }
            }
            off += s.q_len * s.k_valid;
        }
    }
    ctx
}

#[test]
fn activations_match_f64_references() {
    let x: Vec<f32> = random_vec(96, 1).iter().map(|v| if v.abs() < 0.02 { 0.5 } else { 4.0 * v }).collect();
    let probe = random_vec(96, 2);
    for act in [Activation::Gelu, Activation::Relu, Activation::Tanh] {
        let mut out = vec![0.0; 96];
        act.forward(&mut out, &x);
        let want: Vec<f32> = x.iter().map(|v| act64(act, *v as f64) as f32).collect();
        assert_close(&format!("{act:?} forward"), &out, &want, 1e-6, 1e-6);
        let mut dx = probe.clone();
        act.backward_inplace(&mut dx, &x, &out);
        check_gradient_f64(&format!("{act:?}"), &x, &dx, |p| p.iter().zip(&probe).map(|(v, w)| act64(act, *v) * *w as f64).sum()).unwrap();
    }
}

#[test]
fn linear_matches_its_f64_reference() {
    let (n, i, o) = (5, 7, 3);
    let (x, w, b, probe) = (random_vec(n * i, 1), random_vec(o * i, 2), random_vec(o, 3), random_vec(n * o, 4));
    let mut y = vec![0.0; n * o];
    linear_forward(&mut y, &x, &w, Some(&b), n, i, o);
    assert_close("linear forward", &y, &f32s(&linear64(&f64s(&x), &f64s(&w), &f64s(&b), n, i, o)), 1e-6, 1e-6);
    let (mut dx, mut dw, mut db) = (vec![0.0; n * i], vec![0.0; o * i], vec![0.0; o]);
    linear_backward(Some(&mut dx), Some(&mut dw), Some(&mut db), &probe, &x, &w, n, i, o, false);
    let (x64, w64, b64) = (f64s(&x), f64s(&w), f64s(&b));
    check_gradient_f64("linear dx", &x, &dx, |p| dot64(&linear64(p, &w64, &b64, n, i, o), &probe)).unwrap();
    check_gradient_f64("linear dw", &w, &dw, |p| dot64(&linear64(&x64, p, &b64, n, i, o), &probe)).unwrap();
    check_gradient_f64("linear db", &b, &db, |p| dot64(&linear64(&x64, &w64, p, n, i, o), &probe)).unwrap();
}

#[test]
fn layernorm_matches_its_f64_reference() {
    let (n, c, eps) = (4, 12, 1e-5);
    let x: Vec<f32> = random_vec(n * c, 1).iter().map(|v| 2.0 * v + 0.3).collect();
    let w: Vec<f32> = random_vec(c, 2).iter().map(|v| 1.0 + 0.5 * v).collect();
    let (b, probe) = (random_vec(c, 3), random_vec(n * c, 4));
    let (mut out, mut m, mut r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    layernorm_forward(&mut out, &mut m, &mut r, &x, &w, &b, n, c, eps as f32);
    let (x64, w64, b64) = (f64s(&x), f64s(&w), f64s(&b));
    assert_close("layernorm forward", &out, &f32s(&layernorm64(&x64, &w64, &b64, c, eps)), 1e-5, 1e-5);
    let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    layernorm_backward(&mut dx, Some(&mut dw), Some(&mut db), &probe, &x, &m, &r, &w, n, c, false);
    check_gradient_f64("layernorm dx", &x, &dx, |p| dot64(&layernorm64(p, &w64, &b64, c, eps), &probe)).unwrap();
    check_gradient_f64("layernorm dw", &w, &dw, |p| dot64(&layernorm64(&x64, p, &b64, c, eps), &probe)).unwrap();
    check_gradient_f64("layernorm db", &b, &db, |p| dot64(&layernorm64(&x64, &w64, p, c, eps), &probe)).unwrap();
}

#[test]
fn attention_matches_its_f64_reference_with_padding_and_dropout() {
    let (heads, c) = (2, 8);
    let seqs = [SeqSpan { start: 0, len: 4, valid: 3 }, SeqSpan { start: 4, len: 2, valid: 2 }, SeqSpan { start: 6, len: 3, valid: 1 }];
    let spans: Vec<AttnSpan> = seqs.iter().map(AttnSpan::full).collect();
    let n = 9;
    for drop in [Dropout::OFF, Dropout::site(0.3, 5, 1, 2)] {
        let (q, k, v, probe) = (random_vec(n * c, 1), random_vec(n * c, 2), random_vec(n * c, 3), random_vec(n * c, 4));
        let mut ctx = vec![0.0; n * c];
        let mut probs = vec![0.0; probs_len(&spans, heads)];
        let mut scratch = probs.clone();
        attention_forward(
            &mut ctx,
            &mut probs,
            &mut scratch,
            &q,
            &k,
            &v,
            &spans,
            Heads::mha(heads, c),
            drop,
            crate::ops::precision::Precision::Fp32,
        );
        let (q64, k64, v64) = (f64s(&q), f64s(&k), f64s(&v));
        assert_close("attention forward", &ctx, &f32s(&attention64(&q64, &k64, &v64, &spans, heads, c, drop)), 1e-5, 1e-6);
        let (mut dq, mut dk, mut dv) = (vec![0.0; n * c], vec![0.0; n * c], vec![0.0; n * c]);
        attention_backward(
            &mut dq,
            &mut dk,
            &mut dv,
            &mut scratch,
            &probe,
            &q,
            &k,
            &v,
            crate::ops::attention::SavedProbs::Kept(&probs),
            &spans,
            Heads::mha(heads, c),
            drop,
            crate::ops::precision::Precision::Fp32,
        );
        let f = |q: &[f64], k: &[f64], v: &[f64]| dot64(&attention64(q, k, v, &spans, heads, c, drop), &probe);
        check_gradient_f64("attention dq", &q, &dq, |p| f(p, &k64, &v64)).unwrap();
        check_gradient_f64("attention dk", &k, &dk, |p| f(&q64, p, &v64)).unwrap();
        check_gradient_f64("attention dv", &v, &dv, |p| f(&q64, &k64, p)).unwrap();
    }
}

#[test]
fn cross_entropy_and_embeddings_match_f64_references() {
    let (b, k) = (4, 3);
    let logits: Vec<f32> = random_vec(b * k, 1).iter().map(|v| 3.0 * v).collect();
    let labels = [2usize, 0, 1, 1];
    let ce64 = |l: &[f64]| {
        l.chunks(k)
            .zip(&labels)
            .map(|(row, &y)| {
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() - row[y]
            })
            .sum::<f64>()
            / b as f64
    };
    let mut d = vec![0.0; b * k];
    let loss = cross_entropy(&mut d, &logits, &labels, k);
    assert!((loss as f64 - ce64(&f64s(&logits))).abs() < 1e-6);
    check_gradient_f64("cross entropy", &logits, &d, ce64).unwrap();

    let (c, vocab) = (4, 6);
    let (ids, pos) = ([1u32, 5, 1, 0], [0u32, 1, 2, 0]);
    let (word, position, probe) = (random_vec(vocab * c, 2), random_vec(3 * c, 3), random_vec(ids.len() * c, 4));
    let mut out = vec![0.0; ids.len() * c];
    embedding_forward(&mut out, &ids, &pos, None, &word, Some(&position), None, c);
    let emb64 = |w: &[f64]| {
        let rows: Vec<f64> = (0..ids.len())
            .flat_map(|t| (0..c).map(move |j| (t, j)))
            .map(|(t, j)| w[ids[t] as usize * c + j] + position[pos[t] as usize * c + j] as f64)
            .collect();
        dot64(&rows, &probe)
    };
    let mut gw = vec![0.0; vocab * c];
    embedding_backward(&mut gw, &ids, &probe, c);
    check_gradient_f64("embedding word", &word, &gw, emb64).unwrap();
}

#[test]
fn lora_matches_its_f64_reference_with_input_dropout() {
    let (n, i, o, r) = (4, 6, 5, 3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut l =
        LoraLayer::new("m", i, o, &LoraConfig { r, alpha: 6.0, scaling: Scaling::Peft, dropout: 0.4, ..Default::default() }, &mut rng);
    l.b.data = random_vec(r * o, 8);
    for drop in [Dropout::OFF, Dropout::site(0.4, 3, 1, 7)] {
        let (x, probe) = (random_vec(n * i, 1), random_vec(n * o, 2));
        let lora64 = |x: &[f64], a: &[f64], bm: &[f64]| {
            let xd: Vec<f64> = x.iter().enumerate().map(|(j, v)| v * drop.factor(j) as f64).collect();
            let mut y = vec![0.0; n * o];
            for row in 0..n {
                let h: Vec<f64> = (0..r).map(|q| (0..i).map(|j| xd[row * i + j] * a[j * r + q]).sum()).collect();
                for col in 0..o {
                    y[row * o + col] = l.scale as f64 * (0..r).map(|q| h[q] * bm[q * o + col]).sum::<f64>();
                }
            }
            dot64(&y, &probe)
        };
        let (mut y, mut h, mut xd, mut dh) = (vec![0.0; n * o], vec![0.0; n * r], vec![0.0; n * i], vec![0.0; n * r]);
        l.forward(&mut y, &mut h, &x, &mut xd, n, drop);
        assert!((super::testing::dot(&y, &probe) - lora64(&f64s(&x), &f64s(&l.a.data), &f64s(&l.b.data))).abs() < 1e-5);
        let mut g = l.clone();
        g.a.zero_grad();
        g.b.zero_grad();
        let mut dx = vec![0.0; n * i];
        g.backward(Some(&mut dx), &probe, &x, &h, &mut dh, &mut xd, n, drop);
        let (x64, a64, b64) = (f64s(&x), f64s(&l.a.data), f64s(&l.b.data));
        check_gradient_f64("lora dx", &x, &dx, |p| lora64(p, &a64, &b64)).unwrap();
        check_gradient_f64("lora dA", &l.a.data, g.a.grad.as_ref().unwrap(), |p| lora64(&x64, p, &b64)).unwrap();
        check_gradient_f64("lora dB", &l.b.data, g.b.grad.as_ref().unwrap(), |p| lora64(&x64, &a64, p)).unwrap();
    }
}
