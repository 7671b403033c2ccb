//! Element-wise activations with their derivatives: exact (erf) GELU, ReLU, tanh, SiLU and the
//! tanh-approximate GELU (GPT-2's `gelu_new`); and SwiGLU, silu(gate) · up (Llama's MLP).

use super::fastmath::{erf, exp};
use multiversion::multiversion;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per parallel task for element-wise kernels.
const CHUNK: usize = 4096;

/// An element-wise activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// 0.5·x·(1 + erf(x/√2)), as PyTorch's `gelu` with `approximate="none"`.
    Gelu,
    /// max(0, x).
    Relu,
    /// tanh(x).
    Tanh,
    /// x · sigmoid(x) (SiLU / swish), as PyTorch's `silu`.
    Silu,
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): GPT-2's `gelu_new`.
    #[serde(rename = "gelu_tanh")]
    GeluTanh,
}

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x)
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    // tanh(x) = 1 - 2 / (e^{2x} + 1), saturating cleanly for large |x|.
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

#[inline(always)]
fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}

#[inline(always)]
fn gelu_tanh_grad(x: f32) -> f32 {
    let t = tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x)
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn forward_chunk(act: Activation, out: &mut [f32], x: &[f32]) {
    match act {
        Activation::Gelu => out.iter_mut().zip(x).for_each(|(o, x)| *o = gelu(*x)),
        Activation::Relu => out.iter_mut().zip(x).for_each(|(o, x)| *o = x.max(0.0)),
        Activation::Tanh => out.iter_mut().zip(x).for_each(|(o, x)| *o = tanh(*x)),
        Activation::Silu => out.iter_mut().zip(x).for_each(|(o, x)| *o = silu(*x)),
        Activation::GeluTanh => out.iter_mut().zip(x).for_each(|(o, x)| *o = gelu_tanh(*x)),
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn backward_chunk(act: Activation, d: &mut [f32], x: &[f32], out: &[f32]) {
    match act {
        Activation::Gelu => d.iter_mut().zip(x).for_each(|(d, x)| *d *= gelu_grad(*x)),
        Activation::Relu => d.iter_mut().zip(x).for_each(|(d, x)| *d = if *x > 0.0 { *d } else { 0.0 }),
        Activation::Tanh => d.iter_mut().zip(out).for_each(|(d, o)| *d *= 1.0 - o * o),
        Activation::Silu => d.iter_mut().zip(x).for_each(|(d, x)| *d *= silu_grad(*x)),
        Activation::GeluTanh => d.iter_mut().zip(x).for_each(|(d, x)| *d *= gelu_tanh_grad(*x)),
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn swiglu_chunk(out: &mut [f32], gate: &[f32], up: &[f32]) {
    out.iter_mut().zip(gate).zip(up).for_each(|((o, g), u)| *o = silu(*g) * u);
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn swiglu_backward_chunk(dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
    for i in 0..dout.len() {
        let (g, u, d) = (gate[i], up[i], dout[i]);
        dgate[i] = d * u * silu_grad(g);
        dup[i] = d * silu(g);
    }
}

/// SwiGLU forward: out = silu(gate) · up, element-wise.
pub fn swiglu_forward(out: &mut [f32], gate: &[f32], up: &[f32]) {
    out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))).for_each(|(o, (g, u))| swiglu_chunk(o, g, u));
}

/// SwiGLU backward: sets `dgate` and `dup` from the output gradient `dout`.
pub fn swiglu_backward(dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(dout.par_chunks(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))))
        .for_each(|((dg, du), (d, (g, u)))| swiglu_backward_chunk(dg, du, d, g, u));
}

impl Activation {
    /// out = f(x).
    pub fn forward(self, out: &mut [f32], x: &[f32]) {
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| forward_chunk(self, o, x));
    }

    /// dx = dy · f'(x), in place over `dy`; `x` is the forward input, `out` the forward output.
    pub fn backward_inplace(self, dy: &mut [f32], x: &[f32], out: &[f32]) {
        assert_eq!(dy.len(), x.len(), "activation backward: gradient and input differ in length");
        if self.reads_output() {
            assert_eq!(dy.len(), out.len(), "activation backward: {self:?} needs its output");
            dy.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .zip(out.par_chunks(CHUNK))
                .for_each(|((d, x), o)| backward_chunk(self, d, x, o));
        } else {
            dy.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(d, x)| backward_chunk(self, d, x, &[]));
        }
    }

    /// Whether [`Activation::backward_inplace`] reads the forward output (tanh's derivative);
    /// the others need only the input, and take an empty `out`.
    pub fn reads_output(self) -> bool {
        self == Activation::Tanh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_gradient, dot, random_vec};

    #[test]
    fn gelu_matches_reference_values() {
        // torch.nn.functional.gelu(torch.tensor([-3., -1., -0.5, 0., 0.5, 1., 3.]))
        let x = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
        let want = [-0.004_049_867, -0.158_655_29, -0.154_268_79, 0.0, 0.345_731_2, 0.841_344_7, 2.995_950_2];
        let mut out = [0.0f32; 7];
        Activation::Gelu.forward(&mut out, &x);
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 3e-7, "{o} vs {w}");
        }
    }

    #[test]
    fn silu_and_gelu_tanh_match_reference_values() {
        // torch.nn.functional.silu(x); transformers' NewGELUActivation()(x)
        let x = [-3.0f32, -1.0, 0.0, 0.5, 2.0];
        let silu = [-0.142_277_61, -0.268_941_43, 0.0, 0.311_229_68, 1.761_594];
        let gelu_new = [-0.003_637_433, -0.158_808, 0.0, 0.345_714, 1.954_597_7];
        for (act, want) in [(Activation::Silu, silu), (Activation::GeluTanh, gelu_new)] {
            let mut out = [0.0f32; 5];
            act.forward(&mut out, &x);
            for (o, w) in out.iter().zip(want) {
                assert!((o - w).abs() < 2e-6, "{act:?}: {o} vs {w}");
            }
        }
    }

    #[test]
    fn swiglu_backward_matches_finite_differences() {
        let (gate, up, probe) = (random_vec(40, 1), random_vec(40, 2), random_vec(40, 3));
        let (mut dg, mut du) = (vec![0.0; 40], vec![0.0; 40]);
        swiglu_backward(&mut dg, &mut du, &probe, &gate, &up);
        let f = |g: &[f32], u: &[f32]| {
            let mut o = vec![0.0; 40];
            swiglu_forward(&mut o, g, u);
            dot(&o, &probe)
        };
        check_gradient("swiglu dgate", &gate, &dg, 1, |g| f(g, &up));
        check_gradient("swiglu dup", &up, &du, 1, |u| f(&gate, u));
    }

    #[test]
    fn backward_matches_finite_differences() {
        for act in [Activation::Gelu, Activation::Relu, Activation::Tanh, Activation::Silu, Activation::GeluTanh] {
            // Keep ReLU inputs away from its kink at 0.
            let x: Vec<f32> = random_vec(64, 1).iter().map(|v| if v.abs() < 0.05 { 0.3 } else { 2.0 * v }).collect();
            let probe = random_vec(64, 2);
            let mut out = vec![0.0; 64];
            act.forward(&mut out, &x);
            let mut dx = probe.clone();
            act.backward_inplace(&mut dx, &x, &out);
            check_gradient(&format!("{act:?}"), &x, &dx, 1, |x| {
                let mut o = vec![0.0; 64];
                act.forward(&mut o, x);
                dot(&o, &probe)
            });
        }
    }
}
