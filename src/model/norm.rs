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
