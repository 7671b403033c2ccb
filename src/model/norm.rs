//! Normalisation modules with their parameters (the kernels are in [`crate::ops::layernorm`]).

use crate::param::Param;

/// A LayerNorm module: weight and bias over the last dimension.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Module path.
    pub path: String,
    /// Scale γ [C].
    pub weight: Param,
    /// Shift β [C].
    pub bias: Param,
    /// Epsilon added to the variance.
    pub eps: f32,
}

impl LayerNorm {
    /// A frozen LayerNorm of width `c` (γ = 1, β = 0).
    pub fn new(path: String, c: usize, eps: f32) -> Self {
        let mut weight = Param::zeros(format!("{path}.weight"), &[c]);
        weight.data.fill(1.0);
        let bias = Param::zeros(format!("{path}.bias"), &[c]);
        LayerNorm { path, weight, bias, eps }
    }
}

/// An RMSNorm module: a scale over the last dimension (Llama, Qwen2, Mistral).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// Module path.
    pub path: String,
    /// Scale [C].
    pub weight: Param,
    /// Epsilon added to the mean square.
    pub eps: f32,
}

impl RmsNorm {
    /// A frozen RMSNorm of width `c` (scale 1).
    pub fn new(path: String, c: usize, eps: f32) -> Self {
        let mut weight = Param::zeros(format!("{path}.weight"), &[c]);
        weight.data.fill(1.0);
        RmsNorm { path, weight, eps }
    }
}

/// What a norm's forward keeps for its backward: per-row statistics [N].
#[derive(Default, Debug)]
pub struct NormCache {
    /// Row means (LayerNorm only).
    pub mean: Vec<f32>,
    /// Row 1/std (LayerNorm) or 1/rms (RMSNorm).
    pub rstd: Vec<f32>,
}

/// A LayerNorm or an RMSNorm: the decoder families use one or the other.
#[derive(Clone, Debug)]
pub enum Norm {
    /// LayerNorm (GPT-2).
    Layer(LayerNorm),
    /// RMSNorm (Llama family).
    Rms(RmsNorm),
}

impl Norm {
    /// Module path.
    pub fn path(&self) -> &str {
        match self {
            Norm::Layer(n) => &n.path,
            Norm::Rms(n) => &n.path,
        }
    }

    /// The parameters: scale, then shift (LayerNorm only).
    pub fn params(&self) -> Vec<&Param> {
        match self {
            Norm::Layer(n) => vec![&n.weight, &n.bias],
            Norm::Rms(n) => vec![&n.weight],
        }
    }

    /// Mutable access to [`Norm::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Norm::Layer(n) => vec![&mut n.weight, &mut n.bias],
            Norm::Rms(n) => vec![&mut n.weight],
        }
    }

    /// Whether any parameter trains.
    pub fn trainable(&self) -> bool {
        self.params().iter().any(|p| p.trainable())
    }

    /// Forward of `x[N,C]` into `out[N,C]`, keeping the row statistics in `cache`.
    pub fn forward(&self, out: &mut [f32], cache: &mut NormCache, x: &[f32], n: usize) {
        use crate::model::linear::grow;
        grow(&mut cache.rstd, n);
        match self {
            Norm::Layer(l) => {
                grow(&mut cache.mean, n);
                let c = l.weight.numel();
                crate::ops::layernorm::layernorm_forward(
                    out,
                    &mut cache.mean,
                    &mut cache.rstd,
                    x,
                    &l.weight.data,
                    &l.bias.data,
                    n,
                    c,
                    l.eps,
                )
            }
            Norm::Rms(r) => crate::ops::rmsnorm::rmsnorm_forward(out, &mut cache.rstd, x, &r.weight.data, n, r.weight.numel(), r.eps),
        }
    }

    /// Backward: sets `dx[N,C]` (or adds to it with `accumulate`) from `dout`, and accumulates the
    /// gradients of whatever trains.
    pub fn backward(&mut self, dx: &mut [f32], dout: &[f32], x: &[f32], cache: &NormCache, n: usize, accumulate: bool) {
        match self {
            Norm::Layer(l) => {
                let c = l.weight.numel();
                crate::ops::layernorm::layernorm_backward(
                    dx,
                    l.weight.grad.as_deref_mut(),
                    l.bias.grad.as_deref_mut(),
                    dout,
                    x,
                    &cache.mean,
                    &cache.rstd,
                    &l.weight.data,
                    n,
                    c,
                    accumulate,
                )
            }
            Norm::Rms(r) => {
                let c = r.weight.numel();
                crate::ops::rmsnorm::rmsnorm_backward(
                    dx,
                    r.weight.grad.as_deref_mut(),
                    dout,
                    x,
                    &cache.rstd,
                    &r.weight.data,
                    n,
                    c,
                    accumulate,
                )
            }
        }
    }
}
