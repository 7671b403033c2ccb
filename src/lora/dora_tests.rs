//! DoRA against an independent f64 reference: forward values, every gradient by f64 central
//! differences (with the norm held fixed, i.e. detached), merge / unmerge.

use super::*;
use crate::lora::LoraConfig;
use crate::ops::linear::linear_forward;
use crate::ops::testing::random_vec;
use rand::SeedableRng;

const N: usize = 5;
const I: usize = 6;
const O: usize = 4;
const R: usize = 3;

struct Case {
    w: Vec<f32>,
    b: Vec<f32>,
    lora: LoraLayer,
}

fn case() -> Case {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let cfg = LoraConfig { r: R, alpha: 1.5, scaling: crate::lora::Scaling::Peft, dora: true, ..Default::default() };
    let w = random_vec(O * I, 1);
    let mut lora = LoraLayer::new("m", I, O, &cfg, &mut rng);
    lora.b.data = random_vec(R * O, 2);
    lora.dora = Some(Dora::new("m", &w, &lora));
    // Move m away from the norms so that g ≠ 1.
    lora.dora.as_mut().unwrap().magnitude.data.iter_mut().zip(random_vec(O, 3)).for_each(|(m, d)| *m += 0.3 * d);
    lora.b.data = random_vec(R * O, 4);
    Case { w, b: random_vec(O, 5), lora }
}

/// Everything the f64 reference needs, as f64.
struct Ref {
    x: Vec<f64>,
    w: Vec<f64>,
    b: Vec<f64>,
    a: Vec<f64>,
    bb: Vec<f64>,
    m: Vec<f64>,
    scale: f64,
    mask: Option<Vec<f64>>,
}

/// An f32 base layer.
fn fp32<'a>(w: &'a [f32], bias: Option<&'a [f32]>) -> Base<'a> {
    Base { w, bias, arith: Arith::Fp32 }
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

impl Ref {
    fn new(c: &Case, x: &[f32], drop: Dropout) -> Ref {
        let dora = c.lora.dora.as_ref().unwrap();
        let mask = drop.active().then(|| {
            let mut ones = vec![1.0f32; N * I];
            drop.apply(&mut ones, 0);
            to64(&ones)
        });
        Ref {
            x: to64(x),
            w: to64(&c.w),
            b: to64(&c.b),
            a: to64(&c.lora.a.data),
            bb: to64(&c.lora.b.data),
            m: to64(&dora.magnitude.data),
            scale: c.lora.scale as f64,
            mask,
        }
    }

    fn delta(&self, j: usize, k: usize) -> f64 {
        self.scale * (0..R).map(|t| self.a[k * R + t] * self.bb[t * O + j]).sum::<f64>()
    }

    /// ‖W₀ + ΔW‖ per row.
    fn norms(&self) -> Vec<f64> {
        (0..O).map(|j| (0..I).map(|k| (self.w[j * I + k] + self.delta(j, k)).powi(2)).sum::<f64>().sqrt()).collect()
    }

    /// The output with the norm `n` held fixed (the detached forward), or recomputed (None).
    fn forward(&self, n: Option<&[f64]>) -> Vec<f64> {
        let n = n.map_or_else(|| self.norms(), <[f64]>::to_vec);
        let xd: Vec<f64> = match &self.mask {
            Some(mk) => self.x.iter().zip(mk).map(|(a, b)| a * b).collect(),
            None => self.x.clone(),
        };
        let mut y = vec![0.0; N * O];
        for row in 0..N {
            for j in 0..O {
                let g = self.m[j] / n[j];
                let base: f64 = (0..I).map(|k| self.x[row * I + k] * self.w[j * I + k]).sum();
                let based: f64 = (0..I).map(|k| xd[row * I + k] * self.w[j * I + k]).sum();
                let lora: f64 = (0..I).map(|k| xd[row * I + k] * self.delta(j, k)).sum();
                y[row * O + j] = base + self.b[j] + (g - 1.0) * based + g * lora;
            }
        }
        y
    }
}

fn dot64(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * *y as f64).sum()
}

/// f64 central differences of `f` at `at`, against the analytic gradient `grad`.
fn fd_check(what: &str, at: &[f64], grad: &[f32], f: impl Fn(&[f64]) -> f64) {
    let eps = 1e-6;
    let mut p = at.to_vec();
    for k in 0..at.len() {
        p[k] = at[k] + eps;
        let up = f(&p);
        p[k] = at[k] - eps;
        let down = f(&p);
        p[k] = at[k];
        let fd = (up - down) / (2.0 * eps);
        let err = (fd - grad[k] as f64).abs();
        assert!(err <= 1e-4 + 1e-3 * fd.abs(), "{what}[{k}]: finite difference {fd}, analytic {}", grad[k]);
    }
}

fn run(c: &Case, x: &[f32], drop: Dropout, probe: &[f32], train_w: bool) -> (Vec<f32>, Vec<f32>, Case) {
    let mut weight = Param::zeros("m.weight", &[O, I]);
    weight.data = c.w.clone();
    let mut bias = Param::zeros("m.bias", &[O]);
    bias.data = c.b.clone();
    weight.set_trainable(train_w);
    bias.set_trainable(train_w);
    let mut lora = c.lora.clone();
    let (mut y, mut cache, mut xd) = (vec![0.0; N * O], Vec::new(), Vec::new());
    forward(&mut y, &mut cache, x, &mut xd, fp32(&weight.data, Some(&bias.data)), &lora, N, drop);
    let mut dx = vec![7.0; N * I];
    let mut scratch = LoraScratch::default();
    let grads = Grads { dx: Some(&mut dx), accumulate_dx: false, dy: probe, x, cache: &cache, arith: Arith::Fp32 };
    backward(grads, &mut scratch, &mut weight, Some(&mut bias), &mut lora, N, drop);
    let grads = Case { w: weight.grad.unwrap_or_default(), b: bias.grad.unwrap_or_default(), lora };
    (y, dx, grads)
}

#[test]
fn forward_and_every_gradient_match_an_f64_reference() {
    for drop in [Dropout::OFF, Dropout::site(0.3, 5, 2, 11)] {
        let c = case();
        let x = random_vec(N * I, 6);
        let probe = random_vec(N * O, 7);
        let (y, dx, g) = run(&c, &x, drop, &probe, true);
        let r = Ref::new(&c, &x, drop);
        let n0 = r.norms();
        let want = r.forward(Some(&n0));
        let err = y.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-5, "forward differs by {err}");
        // Gradients of the detached forward: the norm stays at n0 while the inputs move.
        let check = |what: &str, at: &[f64], grad: &[f32], edit: fn(&mut Ref, &[f64])| {
            fd_check(what, at, grad, |v| {
                let mut q = Ref::new(&c, &x, drop);
                edit(&mut q, v);
                dot64(&q.forward(Some(&n0)), &probe)
            })
        };
        check("dx", &r.x, &dx, |q, v| q.x = v.to_vec());
        check("dA", &r.a, g.lora.a.grad.as_ref().unwrap(), |q, v| q.a = v.to_vec());
        check("dB", &r.bb, g.lora.b.grad.as_ref().unwrap(), |q, v| q.bb = v.to_vec());
        let gm = g.lora.dora.as_ref().unwrap().magnitude.grad.clone().unwrap();
        check("dm", &r.m, &gm, |q, v| q.m = v.to_vec());
        check("dW", &r.w, &g.w, |q, v| q.w = v.to_vec());
        check("db", &r.b, &g.b, |q, v| q.b = v.to_vec());
        // The detach matters: the undetached derivative of A is a different number.
        let undetached = |v: &[f64]| {
            let mut q = Ref::new(&c, &x, drop);
            q.a = v.to_vec();
            dot64(&q.forward(None), &probe)
        };
        let mut p = r.a.clone();
        p[0] += 1e-6;
        let up = undetached(&p);
        p[0] -= 2e-6;
        let fd = (up - undetached(&p)) / 2e-6;
        assert!((fd - g.lora.a.grad.as_ref().unwrap()[0] as f64).abs() > 1e-4, "the norm must be detached");
    }
}

#[test]
fn magnitude_starts_at_the_row_norms_so_dora_starts_at_lora() {
    let mut c = case();
    let dora = Dora::new("m", &c.w, &c.lora);
    let r = Ref::new(&c, &random_vec(N * I, 1), Dropout::OFF);
    for (got, want) in dora.magnitude.data.iter().zip(r.norms()) {
        assert!((*got as f64 - want).abs() < 1e-5 * want, "{got} vs {want}");
    }
    // With m = n, g = 1 and DoRA computes plain LoRA.
    c.lora.dora = Some(dora);
    let x = random_vec(N * I, 9);
    let (mut y, mut cache, mut xd) = (vec![0.0; N * O], Vec::new(), Vec::new());
    forward(&mut y, &mut cache, &x, &mut xd, fp32(&c.w, Some(&c.b)), &c.lora, N, Dropout::OFF);
    let mut want = vec![0.0; N * O];
    linear_forward(&mut want, &x, &c.w, Some(&c.b), N, I, O);
    let mut plain = c.lora.clone();
    plain.dora = None;
    plain.forward(&mut want, &mut [0.0; N * R], &x, &mut [], N, Dropout::OFF);
    assert!(crate::ops::testing::max_abs_diff(&y, &want) < 1e-5);
}

#[test]
fn merged_weight_gives_the_same_outputs_and_unmerges_back() {
    let c = case();
    let x = random_vec(N * I, 8);
    let (mut y, mut cache, mut xd) = (vec![0.0; N * O], Vec::new(), Vec::new());
    forward(&mut y, &mut cache, &x, &mut xd, fp32(&c.w, Some(&c.b)), &c.lora, N, Dropout::OFF);
    let (merged, n) = merged_weight(&c.w, &c.lora);
    let mut ym = vec![0.0; N * O];
    linear_forward(&mut ym, &x, &merged, Some(&c.b), N, I, O);
    assert!(crate::ops::testing::max_abs_diff(&y, &ym) < 1e-5);
    let back = unmerged_weight(&merged, &c.lora, &n);
    assert!(crate::ops::testing::max_abs_diff(&back, &c.w) < 1e-5);
}

/// The vectorised row kernels against the plain loops they replace, on lengths around the
/// vector widths and the magnitude gradient's 64-column blocks.
#[test]
fn row_kernels_match_plain_loops() {
    for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130] {
        let (z, g, b, dy) = (random_vec(len, 1), random_vec(len, 2), random_vec(len, 3), random_vec(len, 4));
        let want: f64 = z.iter().map(|v| *v as f64 * *v as f64).sum();
        let got = rows::sum_squares(&z);
        assert!((got - want).abs() <= 1e-12 * want.max(1.0), "sum_squares({len}): {got} vs {want}");
        let mut y = vec![9.0; len];
        rows::scale_bias(&mut y, &z, &g, Some(&b));
        assert!(y.iter().enumerate().all(|(j, v)| *v == g[j] * z[j] + b[j]), "scale_bias({len})");
        rows::scale_bias(&mut y, &z, &g, None);
        assert!(y.iter().enumerate().all(|(j, v)| *v == g[j] * z[j]), "scale_bias({len}, no bias)");
        let before = y.clone();
        rows::add_scaled(&mut y, &z, &g);
        assert!(y.iter().enumerate().all(|(j, v)| *v == before[j] + g[j] * z[j]), "add_scaled({len})");
        for c in [0.0, 1.0] {
            rows::scale_grad(&mut y, &dy, &g, c);
            assert!(y.iter().enumerate().all(|(j, v)| *v == (g[j] - c) * dy[j]), "scale_grad({len}, {c})");
        }
        let mut acc = vec![0.5f64; len];
        rows::dot_cols(&mut acc, &dy, &z);
        assert!(acc.iter().enumerate().all(|(j, v)| *v == 0.5 + dy[j] as f64 * z[j] as f64), "dot_cols({len})");
    }
}

/// A layer wider than the kernels' blocks (O = 150: two full 64-column blocks and a tail; I = 70)
/// against direct f64 sums: the output, the magnitude gradient and the input gradient.
#[test]
fn wide_layer_matches_direct_sums() {
    let (n, i, o, r) = (9, 70, 150, 4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let cfg = LoraConfig { r, alpha: 8.0, scaling: crate::lora::Scaling::Peft, dora: true, ..Default::default() };
    let w = random_vec(o * i, 11);
    let mut lora = LoraLayer::new("m", i, o, &cfg, &mut rng);
    lora.b.data = random_vec(r * o, 12);
    let mut dora = Dora::new("m", &w, &lora);
    dora.magnitude.data.iter_mut().zip(random_vec(o, 13)).for_each(|(m, d)| *m += 0.5 * d);
    lora.dora = Some(dora);
    lora.b.data = random_vec(r * o, 14);
    let (x, bias, dy) = (random_vec(n * i, 15), random_vec(o, 16), random_vec(n * o, 17));
    // f64: W′ = W₀ + ΔW, norms, g.
    let s = lora.scale as f64;
    let wp: Vec<f64> = (0..o * i)
        .map(|jk| {
            let (j, k) = (jk / i, jk % i);
            w[jk] as f64 + s * (0..r).map(|t| lora.a.data[k * r + t] as f64 * lora.b.data[t * o + j] as f64).sum::<f64>()
        })
        .collect();
    let norm: Vec<f64> = wp.chunks_exact(i).map(|row| row.iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
    let m = &lora.dora.as_ref().unwrap().magnitude.data;
    let g: Vec<f64> = (0..o).map(|j| m[j] as f64 / norm[j]).collect();
    let z: Vec<f64> = (0..n * o).map(|rj| (0..i).map(|k| x[rj / o * i + k] as f64 * wp[rj % o * i + k]).sum()).collect();

    let (mut y, mut cache, mut xd) = (vec![0.0; n * o], Vec::new(), Vec::new());
    forward(&mut y, &mut cache, &x, &mut xd, fp32(&w, Some(&bias)), &lora, n, Dropout::OFF);
    for (rj, got) in y.iter().enumerate() {
        let want = g[rj % o] * z[rj] + bias[rj % o] as f64;
        assert!((*got as f64 - want).abs() < 1e-4 * want.abs().max(1.0), "y[{rj}]: {got} vs {want}");
    }
    let mut weight = Param::zeros("m.weight", &[o, i]);
    weight.data = w.clone();
    let mut dx = vec![0.0; n * i];
    let grads = Grads { dx: Some(&mut dx), accumulate_dx: false, dy: &dy, x: &x, cache: &cache, arith: Arith::Fp32 };
    backward(grads, &mut LoraScratch::default(), &mut weight, None, &mut lora, n, Dropout::OFF);
    let gm = lora.dora.as_ref().unwrap().magnitude.grad.as_ref().unwrap();
    for j in 0..o {
        let want = (0..n).map(|row| dy[row * o + j] as f64 * z[row * o + j]).sum::<f64>() / norm[j];
        assert!((gm[j] as f64 - want).abs() < 1e-4 * want.abs().max(1.0), "dm[{j}]: {} vs {want}", gm[j]);
    }
    for (rk, got) in dx.iter().enumerate() {
        let (row, k) = (rk / i, rk % i);
        let want: f64 = (0..o).map(|j| g[j] * dy[row * o + j] as f64 * wp[j * i + k]).sum();
        assert!((*got as f64 - want).abs() < 1e-4 * want.abs().max(1.0), "dx[{rk}]: {got} vs {want}");
    }
}

/// The base products in bf16 (the layer's arithmetic): the output and gradients move away from
/// the f32 ones, but only by bf16's rounding.
#[test]
fn bf16_base_products_stay_close_to_f32() {
    let c = case();
    let x = random_vec(N * I, 21);
    let probe = random_vec(N * O, 22);
    let go = |arith: Arith<'_>| {
        let mut weight = Param::zeros("m.weight", &[O, I]);
        weight.data = c.w.clone();
        let mut lora = c.lora.clone();
        let (mut y, mut cache, mut xd) = (vec![0.0; N * O], Vec::new(), Vec::new());
        forward(&mut y, &mut cache, &x, &mut xd, Base { w: &c.w, bias: Some(&c.b), arith }, &lora, N, Dropout::OFF);
        let mut dx = vec![0.0; N * I];
        let grads = Grads { dx: Some(&mut dx), accumulate_dx: false, dy: &probe, x: &x, cache: &cache, arith };
        backward(grads, &mut LoraScratch::default(), &mut weight, None, &mut lora, N, Dropout::OFF);
        (y, dx, lora.dora.unwrap().magnitude.grad.unwrap())
    };
    let (y32, dx32, dm32) = go(Arith::Fp32);
    let (y16, dx16, dm16) = go(Arith::Bf16 { packed: None });
    for (what, a, b) in [("y", &y16, &y32), ("dx", &dx16, &dx32), ("dm", &dm16, &dm32)] {
        let d = crate::ops::testing::max_abs_diff(a, b);
        let scale = b.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert!(d > 0.0 && d < 2e-2 * scale, "{what}: bf16 differs from f32 by {d} (scale {scale})");
    }
}
