//! Element-wise activations with their derivatives: exact (erf) GELU, ReLU and tanh.

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

#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
fn forward_chunk(act: Activation, out: &mut [f32], x: &[f32]) {
    match act {
        Activation::Gelu => out.iter_mut().zip(x).for_each(|(o, x)| *o = gelu(*x)),
        Activation::Relu => out.iter_mut().zip(x).for_each(|(o, x)| *o = x.max(0.0)),
        Activation::Tanh => out.iter_mut().zip(x).for_each(|(o, x)| *o = tanh(*x)),
    }
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma"))]
fn backward_chunk(act: Activation, d: &mut [f32], x: &[f32], out: &[f32]) {
    match act {
        Activation::Gelu => d.iter_mut().zip(x).for_each(|(d, x)| *d *= gelu_grad(*x)),
        Activation::Relu => d.iter_mut().zip(x).for_each(|(d, x)| *d = if *x > 0.0 { *d } else { 0.0 }),
        Activation::Tanh => d.iter_mut().zip(out).for_each(|(d, o)| *d *= 1.0 - o * o),
    }
}

impl Activation {
    /// out = f(x).
    pub fn forward(self, out: &mut [f32], x: &[f32]) {
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| forward_chunk(self, o, x));
    }

    /// dx = dy · f'(x), in place over `dy`; `x` is the forward input, `out` the forward output.
    pub fn backward_inplace(self, dy: &mut [f32], x: &[f32], out: &[f32]) {
        dy.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(out.par_chunks(CHUNK)).for_each(|((d, x), o)| backward_chunk(self, d, x, o));
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
    fn backward_matches_finite_differences() {
        for act in [Activation::Gelu, Activation::Relu, Activation::Tanh] {
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
