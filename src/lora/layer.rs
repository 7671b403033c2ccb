//! The LoRA layer: a rank-r update `scale · (x·A)·B` (+ `scale · bias` with PEFT's lora_bias)
//! added to a frozen linear layer's output, computed as two thin products (A·B is never
//! materialised), with its backward and merging. DoRA's magnitude ([`super::dora`]) rides on it.
//!
//! Dimensions: N rows, I input features, O output features, r rank. Layouts are the seed's:
//! A: [I, r], B: [r, O]. (PEFT stores lora_A.weight = Aᵀ [r, I] and lora_B.weight = Bᵀ [O, r].)

use super::config::LoraConfig;
use super::dora::Dora;
use super::init::{initialise, Start};
use crate::ops::dropout::Dropout;
use crate::ops::gemm::{matmul, MatMut, MatRef, Threads};
use crate::param::Param;
use rand::Rng;

/// Scratch buffers a LoRA branch needs during backward (sized by the caller's buffer plan; grown
/// here, never shrunk, so a steady state allocates nothing).
#[derive(Default, Debug)]
pub struct LoraScratch {
    /// dh = dy·Bᵀ: [N, r].
    pub dh: Vec<f32>,
    /// Dropped-out input (or masked input gradient): [N, in].
    pub x: Vec<f32>,
    /// DoRA: the scaled output gradient g ⊙ dy (or (g − 1) ⊙ dy): [N, out].
    pub dz: Vec<f32>,
    /// DoRA with dropout: the input gradient of the dropped-out base branch: [N, in].
    pub t: Vec<f32>,
}

impl LoraScratch {
    /// Grows the buffers to hold `n` rows of width `in_dim` at rank `r`.
    pub fn ensure(&mut self, n: usize, in_dim: usize, r: usize) {
        grow(&mut self.dh, n * r);
        grow(&mut self.x, n * in_dim);
    }
}

/// Grows `v` to at least `len` elements (never shrinks, so a steady state allocates nothing).
pub fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// A LoRA update attached to one linear layer.
#[derive(Clone, Debug)]
pub struct LoraLayer {
    /// Down projection A: [in, r].
    pub a: Param,
    /// Up projection B: [r, out]; zero at initialisation (except PiSSA / OLoRA), so training
    /// starts at the base model.
    pub b: Param,
    /// lora_B's bias [out] (PEFT's lora_bias), scaled like the update; zero at initialisation.
    pub bias: Option<Param>,
    /// DoRA's magnitude (PEFT's use_dora), when the layer is a DoRA layer.
    pub dora: Option<Dora>,
    /// The initial A and B, kept when the initialisation turned the base weight into the residual
    /// W₀ − scale·(A₀·B₀)ᵀ (PiSSA, OLoRA): the adapter is then saved relative to W₀.
    pub start: Option<Start>,
    /// The factor on (x·A)·B (see [`LoraConfig::scale`]).
    pub scale: f32,
    /// Dropout probability on the branch's input.
    pub dropout: f32,
    /// Whether the update is currently in the base weight (forward then skips the branch).
    pub merged: bool,
}

impl LoraLayer {
    /// A freshly initialised layer for a linear `module` of shape in → out: A random per the
    /// configuration (PEFT's default for the inits that need the base weight, which
    /// `Linear::add_lora` handles), B zero; both trainable (and the bias, with `cfg.bias`).
    /// DoRA's magnitude needs the base weight too: `Linear::add_lora` sets it.
    pub fn new(module: &str, in_dim: usize, out_dim: usize, cfg: &LoraConfig, rng: &mut impl Rng) -> Self {
        let init = match cfg.init_kind() {
            k if k.mutates_base() => super::Init::Kaiming,
            k => k,
        };
        let start = initialise(init, module, &mut [], out_dim, in_dim, cfg.r, cfg.scale(), rng).expect("random inits cannot fail");
        Self::from_start(module, in_dim, out_dim, start, cfg)
    }

    /// A trainable layer starting from `start` (A [in, r], B [r, out]).
    pub fn from_start(module: &str, in_dim: usize, out_dim: usize, start: Start, cfg: &LoraConfig) -> Self {
        let r = cfg.r;
        let mut a = Param::zeros(format!("{module}.lora_A"), &[in_dim, r]);
        a.data = start.a;
        let mut b = Param::zeros(format!("{module}.lora_B"), &[r, out_dim]);
        b.data = start.b;
        a.set_trainable(true);
        b.set_trainable(true);
        let bias = cfg.bias.then(|| {
            let mut p = Param::zeros(format!("{module}.lora_B.bias"), &[out_dim]);
            p.set_trainable(true);
            p
        });
        LoraLayer { a, b, bias, dora: None, start: None, scale: cfg.scale(), dropout: cfg.dropout, merged: false }
    }

    /// The rank r.
    pub fn rank(&self) -> usize {
        self.a.shape[1]
    }

    /// Every tensor of the update: A, B, then the bias and DoRA's magnitude when present.
    pub fn params(&self) -> impl Iterator<Item = &Param> {
        [&self.a, &self.b].into_iter().chain(self.bias.as_ref()).chain(self.dora.as_ref().map(|d| &d.magnitude))
    }

    /// Mutable access to [`LoraLayer::params`], in the same order.
    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        let LoraLayer { a, b, bias, dora, .. } = self;
        [a, b].into_iter().chain(bias.as_mut()).chain(dora.as_mut().map(|d| &mut d.magnitude))
    }

    fn dims(&self) -> (usize, usize, usize) {
        (self.a.shape[0], self.a.shape[1], self.b.shape[1])
    }

    /// The branch input: `x`, or `dropout(x)` written into `x_drop` when dropout is active.
    fn input<'a>(&self, x: &'a [f32], x_drop: &'a mut [f32], n: usize, drop: Dropout) -> &'a [f32] {
        let i = self.a.shape[0];
        if drop.active() {
            let xd = &mut x_drop[..n * i];
            xd.copy_from_slice(&x[..n * i]);
            drop.apply(xd, 0);
            xd
        } else {
            &x[..n * i]
        }
    }

    /// Forward: `y[N,O] += scale · ((x·A)·B + bias)`, caching `h[N,r] = x·A` for backward.
    /// `x_drop` ([N,I] scratch) is used only when `drop` is active.
    pub fn forward(&self, y: &mut [f32], h: &mut [f32], x: &[f32], x_drop: &mut [f32], n: usize, drop: Dropout) {
        if self.merged {
            return;
        }
        let (i, r, o) = self.dims();
        let xin = self.input(x, x_drop, n, drop);
        matmul(MatMut::new(&mut h[..n * r], n, r), MatRef::new(xin, n, i), MatRef::new(&self.a.data, i, r), 1.0, 0.0, Threads::Pool);
        matmul(
            MatMut::new(&mut y[..n * o], n, o),
            MatRef::new(&h[..n * r], n, r),
            MatRef::new(&self.b.data, r, o),
            self.scale,
            1.0,
            Threads::Pool,
        );
        if let Some(bias) = &self.bias {
            for row in y[..n * o].chunks_exact_mut(o) {
                row.iter_mut().zip(&bias.data).for_each(|(v, b)| *v += self.scale * b);
            }
        }
    }

    /// Backward: accumulates dA and dB (and the bias gradient) when trainable and adds the
    /// branch's input gradient to `dx`. `dh` is [N,r] scratch; `x_drop` is [N,I] scratch used
    /// when `drop` is active.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dx: Option<&mut [f32]>,
        dy: &[f32],
        x: &[f32],
        h: &[f32],
        dh: &mut [f32],
        x_drop: &mut [f32],
        n: usize,
        drop: Dropout,
    ) {
        let (i, r, o) = self.dims();
        if let Some(g) = self.bias.as_mut().and_then(|b| b.grad.as_deref_mut()) {
            for row in dy[..n * o].chunks_exact(o) {
                g.iter_mut().zip(row).for_each(|(g, d)| *g += self.scale * d);
            }
        }
        let dy = MatRef::new(&dy[..n * o], n, o);
        if let Some(gb) = self.b.grad.as_deref_mut() {
            matmul(MatMut::new(gb, r, o), MatRef::new(&h[..n * r], n, r).t(), dy, self.scale, 1.0, Threads::Pool);
        }
        let dh = &mut dh[..n * r];
        matmul(MatMut::new(dh, n, r), dy, MatRef::new(&self.b.data, r, o).t(), self.scale, 0.0, Threads::Pool);
        if self.a.grad.is_some() {
            let xin = self.input(x, x_drop, n, drop);
            let ga = self.a.grad.as_deref_mut().expect("checked");
            matmul(MatMut::new(ga, i, r), MatRef::new(xin, n, i).t(), MatRef::new(dh, n, r), 1.0, 1.0, Threads::Pool);
        }
        if let Some(dx) = dx {
            let dx = &mut dx[..n * i];
            if drop.active() {
                // dx += dropout_mask ∘ (dh·Aᵀ): compute into scratch, mask, add.
                let t = &mut x_drop[..n * i];
                matmul(MatMut::new(t, n, i), MatRef::new(dh, n, r), MatRef::new(&self.a.data, i, r).t(), 1.0, 0.0, Threads::Pool);
                drop.apply(t, 0);
                dx.iter_mut().zip(t.iter()).for_each(|(d, v)| *d += v);
            } else {
                matmul(MatMut::new(dx, n, i), MatRef::new(dh, n, r), MatRef::new(&self.a.data, i, r).t(), 1.0, 1.0, Threads::Pool);
            }
        }
    }

    /// The update in the base weight's layout: ΔW[O,I] = scale · (A·B)ᵀ.
    pub fn delta_weight(&self) -> Vec<f32> {
        let (i, r, o) = self.dims();
        let mut dw = vec![0.0; o * i];
        // ΔW = scale · Bᵀ[O,r] · Aᵀ[r,I]
        matmul(
            MatMut::new(&mut dw, o, i),
            MatRef::new(&self.b.data, r, o).t(),
            MatRef::new(&self.a.data, i, r).t(),
            self.scale,
            0.0,
            Threads::Pool,
        );
        dw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::Scaling;
    use crate::ops::testing::{check_gradient, dot, random_vec};
    use rand::SeedableRng;

    const N: usize = 6;
    const I: usize = 5;
    const O: usize = 4;

    fn layer(scaling: Scaling) -> LoraLayer {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut l = LoraLayer::new("m", I, O, &LoraConfig { r: 3, alpha: 2.0, scaling, bias: true, ..Default::default() }, &mut rng);
        l.b.data = random_vec(3 * O, 9);
        l.bias.as_mut().unwrap().data = random_vec(O, 10);
        l
    }

    fn out(l: &LoraLayer, x: &[f32], drop: Dropout) -> Vec<f32> {
        let (mut y, mut h, mut xd) = (vec![0.0; N * O], vec![0.0; N * 3], vec![0.0; N * I]);
        l.forward(&mut y, &mut h, x, &mut xd, N, drop);
        y
    }

    #[test]
    fn initialisation_follows_the_convention() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let big = 4096;
        let l = LoraLayer::new("m", big, 2, &LoraConfig { r: 4, alpha: 16.0, scaling: Scaling::Raschka, ..Default::default() }, &mut rng);
        let std = (l.a.data.iter().map(|v| v * v).sum::<f32>() / l.a.numel() as f32).sqrt();
        assert!((std - 0.5).abs() < 0.02, "raschka A std {std}, want 1/sqrt(4)");
        assert!(l.b.data.iter().all(|v| *v == 0.0) && l.scale == 16.0);
        let p = LoraLayer::new("m", big, 2, &LoraConfig { r: 4, alpha: 16.0, scaling: Scaling::Peft, ..Default::default() }, &mut rng);
        let bound = 1.0 / (big as f32).sqrt();
        assert!(p.a.data.iter().all(|v| v.abs() <= bound) && p.a.data.iter().any(|v| v.abs() > 0.9 * bound));
        assert_eq!(p.scale, 4.0);
    }

    #[test]
    fn zero_b_adds_nothing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let l = LoraLayer::new("m", I, O, &LoraConfig { r: 3, ..Default::default() }, &mut rng);
        assert!(out(&l, &random_vec(N * I, 1), Dropout::OFF).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn backward_matches_finite_differences() {
        for drop in [Dropout::OFF, Dropout::site(0.4, 3, 1, 7)] {
            let l = layer(Scaling::Peft);
            let (x, probe) = (random_vec(N * I, 1), random_vec(N * O, 2));
            let mut y = vec![0.0; N * O];
            let (mut h, mut xd, mut dh) = (vec![0.0; N * 3], vec![0.0; N * I], vec![0.0; N * 3]);
            l.forward(&mut y, &mut h, &x, &mut xd, N, drop);
            let mut g = l.clone();
            let mut dx = vec![0.0; N * I];
            g.backward(Some(&mut dx), &probe, &x, &h, &mut dh, &mut xd, N, drop);
            check_gradient("lora dx", &x, &dx, 1, |x| dot(&out(&l, x, drop), &probe));
            let ga = g.a.grad.clone().unwrap();
            check_gradient("lora dA", &l.a.data, &ga, 1, |a| {
                let mut m = l.clone();
                m.a.data = a.to_vec();
                dot(&out(&m, &x, drop), &probe)
            });
            let gb = g.b.grad.clone().unwrap();
            check_gradient("lora dB", &l.b.data, &gb, 1, |b| {
                let mut m = l.clone();
                m.b.data = b.to_vec();
                dot(&out(&m, &x, drop), &probe)
            });
            let gbias = g.bias.as_ref().unwrap().grad.clone().unwrap();
            check_gradient("lora_B bias", &l.bias.as_ref().unwrap().data, &gbias, 1, |b| {
                let mut m = l.clone();
                m.bias.as_mut().unwrap().data = b.to_vec();
                dot(&out(&m, &x, drop), &probe)
            });
        }
    }

    #[test]
    fn delta_weight_equals_the_branch() {
        let mut l = layer(Scaling::Raschka);
        l.bias = None;
        let x = random_vec(N * I, 1);
        let dw = l.delta_weight();
        let mut want = vec![0.0; N * O];
        crate::ops::linear::linear_forward(&mut want, &x, &dw, None, N, I, O);
        let got = out(&l, &x, Dropout::OFF);
        assert!(crate::ops::testing::max_abs_diff(&got, &want) < 1e-5);
    }
}
