//! `LinearWithLora`: a linear layer (weight [out, in], bias [out]) that may carry a LoRA update.
//! Frozen base weights get no gradient buffer, so their backward is the input gradient alone.

use crate::error::{Error, Result};
use crate::lora::{LoraLayer, Role};
use crate::ops::dropout::Dropout;
use crate::ops::linear::{linear_backward_with, linear_forward_with, Arith};
use crate::ops::precision::{PackedWeight, Precision};
use crate::param::Param;
use std::sync::Arc;

/// Scratch buffers a LoRA branch needs during backward (sized by the caller's buffer plan).
#[derive(Default, Debug)]
pub struct LoraScratch {
    /// dh = dy·Bᵀ: [N, r].
    pub dh: Vec<f32>,
    /// Dropped-out input (or masked input gradient): [N, in].
    pub x: Vec<f32>,
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

/// A linear layer with an optional LoRA branch.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Module path (Hugging Face naming), e.g. `distilbert.transformer.layer.0.attention.q_lin`.
    pub path: String,
    /// What the layer does in the network.
    pub role: Role,
    /// Weight [out, in].
    pub weight: Param,
    /// Bias [out], when the layer has one.
    pub bias: Option<Param>,
    /// The LoRA update, when the layer is a target.
    pub lora: Option<LoraLayer>,
    /// The arithmetic of the products with the weight.
    pub precision: Precision,
    /// The frozen weight packed as bf16 (bf16 precision only; used while it matches the weight).
    pub packed: Option<Arc<PackedWeight>>,
}

impl Linear {
    /// A frozen zero layer in → out named `path`, with a bias.
    pub fn new(path: String, role: Role, in_dim: usize, out_dim: usize) -> Self {
        let mut l = Self::without_bias(path, role, in_dim, out_dim);
        l.bias = Some(Param::zeros(format!("{}.bias", l.path), &[out_dim]));
        l
    }

    /// A frozen zero layer in → out named `path`, without a bias.
    pub fn without_bias(path: String, role: Role, in_dim: usize, out_dim: usize) -> Self {
        let weight = Param::zeros(format!("{path}.weight"), &[out_dim, in_dim]);
        Linear { path, role, weight, bias: None, lora: None, precision: Precision::Fp32, packed: None }
    }

    /// The base parameters: weight, then bias.
    pub fn base_params(&self) -> impl Iterator<Item = &Param> {
        std::iter::once(&self.weight).chain(self.bias.as_ref())
    }

    /// Whether the weight or the bias trains.
    pub fn base_trainable(&self) -> bool {
        self.base_params().any(Param::trainable)
    }

    /// Whether anything of the layer trains (its weight, bias, or a LoRA update).
    pub fn trainable(&self) -> bool {
        self.base_trainable() || self.lora.is_some()
    }

    /// Appends the weight and bias to `base` and the LoRA A and B (if any) to `loras`.
    pub fn collect_params_mut<'a>(&'a mut self, base: &mut Vec<&'a mut Param>, loras: &mut Vec<&'a mut Param>) {
        base.push(&mut self.weight);
        base.extend(self.bias.as_mut());
        if let Some(l) = &mut self.lora {
            loras.push(&mut l.a);
            loras.push(&mut l.b);
        }
    }

    /// Makes the weight and bias trainable or frozen.
    pub fn set_base_trainable(&mut self, on: bool) {
        self.weight.set_trainable(on);
        if let Some(b) = &mut self.bias {
            b.set_trainable(on);
        }
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight.shape[1]
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight.shape[0]
    }

    /// The LoRA rank, 0 without LoRA.
    pub fn rank(&self) -> usize {
        self.lora.as_ref().map_or(0, |l| l.rank())
    }

    /// y[N,out] = x·Wᵀ + b (+ scale·(x·A)·B, caching x·A in `h`).
    pub fn forward(&self, y: &mut [f32], h: &mut Vec<f32>, x: &[f32], x_drop: &mut Vec<f32>, n: usize, drop: Dropout) {
        let (i, o) = (self.in_dim(), self.out_dim());
        let arith = Arith::of(self.precision, self.packed.as_deref(), &self.weight.data);
        linear_forward_with(y, x, &self.weight.data, self.bias.as_ref().map(|b| b.data.as_slice()), n, i, o, arith);
        if let Some(lora) = &self.lora {
            grow(h, n * lora.rank());
            if drop.active() {
                grow(x_drop, n * i);
            }
            lora.forward(y, h, x, x_drop, n, drop);
        }
    }

    /// Backward: writes (or, with `accumulate_dx`, adds) the input gradient into `dx` when given,
    /// and accumulates the gradients of whatever trains (W, b, A, B).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dx: Option<&mut [f32]>,
        accumulate_dx: bool,
        dy: &[f32],
        x: &[f32],
        h: &[f32],
        scratch: &mut LoraScratch,
        n: usize,
        drop: Dropout,
    ) {
        let (i, o) = (self.in_dim(), self.out_dim());
        let arith = Arith::of(self.precision, self.packed.as_deref(), &self.weight.data);
        let Linear { weight, bias, lora, .. } = self;
        let mut dx = dx;
        linear_backward_with(
            dx.as_deref_mut(),
            weight.grad.as_deref_mut(),
            bias.as_mut().and_then(|b| b.grad.as_deref_mut()),
            dy,
            x,
            &weight.data,
            n,
            i,
            o,
            accumulate_dx,
            arith,
        );
        if let Some(lora) = lora.as_mut().filter(|l| !l.merged) {
            scratch.ensure(n, i, lora.rank());
            lora.backward(dx, dy, x, h, &mut scratch.dh, &mut scratch.x, n, drop);
        }
    }

    /// Sets the arithmetic of the layer's products; in bf16 a frozen weight is packed once (with
    /// its transpose for the input gradient when `backward`), a trainable one is packed on the fly
    /// at every product. Call again after writing into a frozen weight.
    pub fn set_precision(&mut self, precision: Precision, backward: bool) {
        self.precision = precision;
        self.packed = (precision == Precision::Bf16 && !self.weight.trainable())
            .then(|| Arc::new(PackedWeight::new(&self.weight.data, self.out_dim(), self.in_dim(), backward)));
    }

    /// Checks that merging the LoRA update would give finite weights (PEFT's `safe_merge`).
    pub fn check_merge(&self) -> Result<()> {
        if let Some(lora) = self.lora.as_ref().filter(|l| !l.merged) {
            let bad = self.weight.data.iter().zip(lora.delta_weight()).filter(|(w, d)| !(*w + d).is_finite()).count();
            if bad > 0 {
                return Err(Error::NonFiniteMerge { module: self.path.clone(), count: bad });
            }
        }
        Ok(())
    }

    /// Adds the LoRA update into the weight (W += scale·(A·B)ᵀ); forward then skips the branch.
    /// Callers that must not produce non-finite weights call [`Linear::check_merge`] first.
    pub fn merge(&mut self) {
        if let Some(lora) = self.lora.as_mut().filter(|l| !l.merged) {
            for (w, d) in self.weight.data.iter_mut().zip(lora.delta_weight()) {
                *w += d;
            }
            lora.merged = true;
        }
    }

    /// Undoes [`Linear::merge`].
    pub fn unmerge(&mut self) {
        if let Some(lora) = self.lora.as_mut().filter(|l| l.merged) {
            for (w, d) in self.weight.data.iter_mut().zip(lora.delta_weight()) {
                *w -= d;
            }
            lora.merged = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::LoraConfig;
    use rand::SeedableRng;

    #[test]
    fn merge_refuses_non_finite_weights_and_changes_nothing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut lin = Linear::new("m".into(), Role::Query, 3, 2);
        let mut lora = LoraLayer::new("m", 3, 2, &LoraConfig { r: 2, ..Default::default() }, &mut rng);
        lora.b.data[1] = f32::INFINITY;
        lin.lora = Some(lora);
        let e = lin.check_merge().unwrap_err().to_string();
        assert!(e.contains("m") && e.contains("non-finite"), "{e}");
        assert!(lin.weight.data.iter().all(|w| *w == 0.0));
        lin.lora.as_mut().unwrap().b.data[1] = 0.5;
        lin.check_merge().unwrap();
        lin.merge();
        assert!(lin.weight.data.iter().any(|w| *w != 0.0));
    }
}
