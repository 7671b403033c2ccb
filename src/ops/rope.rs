//! Rotary position embeddings in Hugging Face's rotate-half layout: for each head of width D,
//! the pair (x[i], x[i + D/2]) is rotated by the angle pos · inv_freq[i],
//! out = x · cos + rotate_half(x) · sin with rotate_half(x) = (−x₂, x₁).
//!
//! Dimensions: N rows, H heads of width D; the angle tables `cos`, `sin` are [N, D/2].

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How the base frequencies are rescaled for long contexts (`rope_scaling` / `rope_parameters`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// The original RoPE.
    Default,
    /// Positions divided by `factor` (inv_freq / factor).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3's frequency-dependent rescaling.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f32,
        /// Wavelengths longer than original / low_freq_factor are divided by `factor`.
        low_freq_factor: f32,
        /// Wavelengths shorter than original / high_freq_factor are kept.
        high_freq_factor: f32,
        /// The context the model was pre-trained with.
        original_max_position_embeddings: f32,
    },
}

/// The inverse frequencies of one head's rotation: [D/2].
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    /// inv_freq[i] = θ^(−2i/D), rescaled.
    pub inv_freq: Vec<f32>,
}

impl Rope {
    /// The frequencies of a head of width `head_dim` with base `theta`, as transformers computes
    /// them (in f32).
    pub fn new(theta: f32, head_dim: usize, scaling: RopeScaling) -> Rope {
        let base: Vec<f32> = (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
        let inv_freq = match scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        Rope { inv_freq }
    }

    /// Fills the angle tables `cos`, `sin` ([N, D/2]) for the rows' positions.
    pub fn tables(&self, positions: &[u32], cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        let h = self.inv_freq.len();
        cos.resize(positions.len() * h, 0.0);
        sin.resize(positions.len() * h, 0.0);
        cos.par_chunks_mut(h).zip(sin.par_chunks_mut(h)).zip(positions.par_iter()).with_min_len(64).for_each(|((c, s), &p)| {
            for ((c, s), f) in c.iter_mut().zip(s.iter_mut()).zip(&self.inv_freq) {
                let angle = (p as f32 * f) as f64;
                *c = angle.cos() as f32;
                *s = angle.sin() as f32;
            }
        });
    }
}

/// Rotates every head of every row of `x[N, H·D]` in place (forward), or by the opposite angle
/// (`inverse`: the backward pass, since the rotation's transpose is its inverse).
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], heads: usize, d: usize, inverse: bool) {
    let half = d / 2;
    let width = heads * d;
    let sign = if inverse { -1.0f32 } else { 1.0 };
    x.par_chunks_mut(width).zip(cos.par_chunks(half).zip(sin.par_chunks(half))).with_min_len(16).for_each(|(row, (c, s))| {
        for head in row.chunks_exact_mut(d) {
            let (x1, x2) = head.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (x1[i], x2[i]);
                let sn = sign * s[i];
                x1[i] = a * c[i] - b * sn;
                x2[i] = b * c[i] + a * sn;
            }
        }
    });
}

/// Forward: rotates `x[N, H·D]` in place by the rows' angles.
pub fn rope_forward(x: &mut [f32], cos: &[f32], sin: &[f32], n: usize, heads: usize, d: usize) {
    rotate(&mut x[..n * heads * d], cos, sin, heads, d, false);
}

/// Backward: turns the gradient of the rotated values into the gradient of the inputs, in place.
pub fn rope_backward(dx: &mut [f32], cos: &[f32], sin: &[f32], n: usize, heads: usize, d: usize) {
    rotate(&mut dx[..n * heads * d], cos, sin, heads, d, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_gradient, dot, random_vec};

    const N: usize = 5;
    const H: usize = 2;
    const D: usize = 8;

    #[test]
    fn matches_transformers_rotate_half() {
        // q = torch.arange(8.) ; pos 3 ; theta 10000 ; q*cos + rotate_half(q)*sin
        let rope = Rope::new(10000.0, D, RopeScaling::Default);
        let (mut c, mut s) = (Vec::new(), Vec::new());
        rope.tables(&[3], &mut c, &mut s);
        let mut q: Vec<f32> = (0..8).map(|v| v as f32).collect();
        rope_forward(&mut q, &c, &s, 1, 1, D);
        for i in 0..4 {
            let angle = 3.0f64 * 10000f64.powf(-((2 * i) as f64) / 8.0);
            let (x1, x2) = (i as f64, (i + 4) as f64);
            assert!((q[i] as f64 - (x1 * angle.cos() - x2 * angle.sin())).abs() < 1e-5);
            assert!((q[i + 4] as f64 - (x2 * angle.cos() + x1 * angle.sin())).abs() < 1e-5);
        }
    }

    #[test]
    fn backward_is_the_transpose() {
        let rope = Rope::new(500.0, D, RopeScaling::Linear { factor: 2.0 });
        let positions: Vec<u32> = vec![0, 1, 7, 30, 2];
        let (mut c, mut s) = (Vec::new(), Vec::new());
        rope.tables(&positions, &mut c, &mut s);
        let (x, probe) = (random_vec(N * H * D, 1), random_vec(N * H * D, 2));
        let mut g = probe.clone();
        rope_backward(&mut g, &c, &s, N, H, D);
        check_gradient("rope", &x, &g, 1, |x| {
            let mut y = x.to_vec();
            rope_forward(&mut y, &c, &s, N, H, D);
            dot(&y, &probe)
        });
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = Rope::new(500_000.0, 128, RopeScaling::Default);
        let scaled = Rope::new(
            500_000.0,
            128,
            RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192.0 },
        );
        assert_eq!(plain.inv_freq[0], scaled.inv_freq[0]);
        assert!((scaled.inv_freq[63] - plain.inv_freq[63] / 8.0).abs() < 1e-12);
    }
}
