//! `LinearWithLora`: a linear layer (weight [out, in], bias [out]) that may carry a LoRA update
//! (plain, with a bias on lora_B, or DoRA: the math of each lives in [`crate::lora`]).
//! Frozen base weights get no gradient buffer, so their backward is the input gradient alone.

use crate::error::{Error, Result};
pub use crate::lora::layer::{grow, LoraScratch};
use crate::lora::{dora, init::initialise, Dora, LoraConfig, LoraLayer, Role};
use crate::ops::dropout::Dropout;
use crate::ops::linear::{linear_backward_with, linear_forward_with, Arith};
use crate::ops::precision::{PackedWeight, Precision};
use crate::param::Param;
use std::sync::Arc;

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

    /// Whether backward reads the layer's input: its weight trains, or an unmerged LoRA update
    /// does (a bias's gradient and the input gradient need only the output gradient).
    pub fn needs_input(&self) -> bool {
        self.weight.trainable() || self.lora.as_ref().is_some_and(|l| !l.merged)
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
            loras.extend(l.params_mut());
        }
    }

    /// The LoRA tensors (A, B, lora_B's bias, DoRA's magnitude), none without LoRA.
    pub fn lora_params(&self) -> Vec<&Param> {
        self.lora.as_ref().map_or_else(Vec::new, |l| l.params().collect())
    }

    /// Puts a fresh LoRA update on the layer, initialised per `cfg` (PiSSA and OLoRA turn the
    /// weight into the residual; DoRA's magnitude starts at the row norms of the result).
    pub fn add_lora(&mut self, cfg: &LoraConfig, rng: &mut impl rand::Rng) -> Result<()> {
        self.remove_lora();
        let (i, o) = (self.in_dim(), self.out_dim());
        let init = cfg.init_kind();
        let start = initialise(init, &self.path, &mut self.weight.data, o, i, cfg.r, cfg.scale(), rng)?;
        let mut lora = LoraLayer::from_start(&self.path, i, o, start.clone(), cfg);
        if init.mutates_base() {
            lora.start = Some(start);
        }
        if cfg.dora {
            lora.dora = Some(Dora::new(&self.path, &self.weight.data, &lora));
        }
        self.lora = Some(lora);
        Ok(())
    }

    /// Takes the LoRA update off (unmerging it first), giving back W₀ where the initialisation
    /// had turned the weight into a residual.
    pub fn remove_lora(&mut self) {
        self.unmerge();
        if let Some(lora) = self.lora.take() {
            if let Some(start) = &lora.start {
                let mut first = lora.clone();
                first.a.data.clone_from(&start.a);
                first.b.data.clone_from(&start.b);
                for (w, d) in self.weight.data.iter_mut().zip(first.delta_weight()) {
                    *w += d;
                }
            }
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
        let bias = self.bias.as_ref().map(|b| b.data.as_slice());
        let arith = Arith::of(self.precision, self.packed.as_deref(), &self.weight.data);
        if let Some(lora) = self.lora.as_ref().filter(|l| l.dora.is_some() && !l.merged) {
            return dora::forward(y, h, x, x_drop, dora::Base { w: &self.weight.data, bias, arith }, lora, n, drop);
        }
        linear_forward_with(y, x, &self.weight.data, bias, n, i, o, arith);
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
        if let Some(lora) = lora.as_mut().filter(|l| l.dora.is_some() && !l.merged) {
            return dora::backward(
                dora::Grads { dx, accumulate_dx, dy, x, cache: h, arith },
                scratch,
                weight,
                bias.as_mut(),
                lora,
                n,
                drop,
            );
        }
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
        if self.released() {
            // Only the packs hold the weight now, and they cannot have gone stale (nothing writes
            // into a released weight): keep them.
            assert!(precision == Precision::Bf16, "{}: its f32 weight was released; reload the model for fp32", self.path);
            return;
        }
        self.precision = precision;
        self.packed = (precision == Precision::Bf16 && !self.weight.trainable())
            .then(|| Arc::new(PackedWeight::new(&self.weight.data, self.out_dim(), self.in_dim(), backward)));
    }

    /// Frees the f32 values of a frozen weight that bf16 packs (forward and input gradient) stand
    /// in for — 4 of the 8 bytes per weight that training in bf16 would hold; returns the bytes
    /// freed (0 when the layer trains, carries DoRA, or has no packs for both directions).
    /// Afterwards the layer cannot merge (merge refuses) nor go back to fp32: reload the model.
    pub fn release_f32(&mut self) -> usize {
        let packs_both = self.packed.as_ref().is_some_and(|p| p.w.is_some() && p.matches(&self.weight.data));
        let dora = self.lora.as_ref().is_some_and(|l| l.dora.is_some());
        if self.precision != Precision::Bf16 || !packs_both || self.weight.trainable() || dora || self.released() {
            return 0;
        }
        let bytes = self.weight.data.len() * 4;
        self.weight.data = Vec::new();
        bytes
    }

    /// Whether the f32 weight was released ([`Linear::release_f32`]): only its bf16 packs remain.
    pub fn released(&self) -> bool {
        self.weight.data.is_empty() && self.weight.numel() > 0
    }

    /// The weight and bias (None: unchanged) that merging would produce, and DoRA's norms.
    #[allow(clippy::type_complexity)]
    fn merged(&self) -> Result<Option<(Vec<f32>, Option<Vec<f32>>, Option<Vec<f32>>)>> {
        let Some(lora) = self.lora.as_ref().filter(|l| !l.merged) else { return Ok(None) };
        if self.released() {
            return Err(Error::LoraModule {
                module: self.path.clone(),
                message: "its f32 base weight was released after packing it as bf16 for training; load the model again to merge".into(),
            });
        }
        let (w, norm) = match &lora.dora {
            Some(_) => {
                let (w, n) = dora::merged_weight(&self.weight.data, lora);
                (w, Some(n))
            }
            None => (self.weight.data.iter().zip(lora.delta_weight()).map(|(w, d)| w + d).collect(), None),
        };
        let b = match (&lora.bias, &self.bias) {
            (Some(lb), Some(b)) => Some(b.data.iter().zip(&lb.data).map(|(b, l)| b + lora.scale * l).collect()),
            (Some(_), None) => {
                return Err(Error::LoraModule {
                    module: self.path.clone(),
                    message: "its lora_B bias cannot be merged because the layer has no bias (PEFT refuses too); keep the adapter unmerged"
                        .into(),
                })
            }
            (None, _) => None,
        };
        Ok(Some((w, b, norm)))
    }

    /// Checks that merging the LoRA update would give finite weights (PEFT's `safe_merge`).
    pub fn check_merge(&self) -> Result<()> {
        if let Some((w, b, _)) = self.merged()? {
            let bad = w.iter().chain(b.iter().flatten()).filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(Error::NonFiniteMerge { module: self.path.clone(), count: bad });
            }
        }
        Ok(())
    }

    /// Puts the LoRA update into the weight (W += scale·(A·B)ᵀ; DoRA: W ← g ⊙ (W + ΔW); the
    /// lora_B bias into the bias); forward then skips the branch. Callers that must not produce
    /// non-finite weights call [`Linear::check_merge`] first (a merge it refuses does nothing).
    pub fn merge(&mut self) {
        if let Ok(Some((w, b, norm))) = self.merged() {
            self.weight.data = w;
            if let (Some(b), Some(bias)) = (b, self.bias.as_mut()) {
                bias.data = b;
            }
            let lora = self.lora.as_mut().expect("merged() found LoRA");
            if let Some(d) = lora.dora.as_mut() {
                d.merged_norm = norm;
            }
            lora.merged = true;
        }
    }

    /// Undoes [`Linear::merge`].
    pub fn unmerge(&mut self) {
        if let Some(lora) = self.lora.as_mut().filter(|l| l.merged) {
            match lora.dora.as_mut().and_then(|d| d.merged_norm.take()) {
                Some(n) => self.weight.data = dora::unmerged_weight(&self.weight.data, lora, &n),
                None => {
                    for (w, d) in self.weight.data.iter_mut().zip(lora.delta_weight()) {
                        *w -= d;
                    }
                }
            }
            if let (Some(lb), Some(b)) = (&lora.bias, self.bias.as_mut()) {
                b.data.iter_mut().zip(&lb.data).for_each(|(b, l)| *b -= lora.scale * l);
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

    fn layer(bias: bool, cfg: &LoraConfig) -> Linear {
        let mut lin = if bias { Linear::new("m".into(), Role::Query, 6, 5) } else { Linear::without_bias("m".into(), Role::Query, 6, 5) };
        lin.weight.data = crate::ops::testing::random_vec(30, 1);
        if let Some(b) = lin.bias.as_mut() {
            b.data = crate::ops::testing::random_vec(5, 2);
        }
        lin.add_lora(cfg, &mut rand::rngs::StdRng::seed_from_u64(3)).unwrap();
        let l = lin.lora.as_mut().unwrap();
        l.b.data = crate::ops::testing::random_vec(l.b.numel(), 4);
        if let Some(b) = l.bias.as_mut() {
            b.data = crate::ops::testing::random_vec(5, 5);
        }
        if let Some(d) = l.dora.as_mut() {
            d.magnitude.data.iter_mut().for_each(|m| *m *= 1.3);
        }
        lin
    }

    fn out(lin: &Linear, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; 4 * 5];
        lin.forward(&mut y, &mut Vec::new(), x, &mut Vec::new(), 4, Dropout::OFF);
        y
    }

    #[test]
    fn every_variant_merges_to_the_same_outputs_and_unmerges_back() {
        let x = crate::ops::testing::random_vec(24, 6);
        for cfg in [
            LoraConfig { r: 2, bias: true, ..Default::default() },
            LoraConfig { r: 2, dora: true, ..Default::default() },
            LoraConfig { r: 3, init: Some(crate::lora::Init::Pissa), dora: true, ..Default::default() },
        ] {
            let mut lin = layer(true, &cfg);
            let (w, b, want) = (lin.weight.data.clone(), lin.bias.clone().unwrap().data, out(&lin, &x));
            lin.check_merge().unwrap();
            lin.merge();
            assert!(crate::ops::testing::max_abs_diff(&out(&lin, &x), &want) < 1e-5, "{cfg:?}");
            lin.unmerge();
            assert!(crate::ops::testing::max_abs_diff(&lin.weight.data, &w) < 1e-5, "{cfg:?}");
            assert!(crate::ops::testing::max_abs_diff(&lin.bias.as_ref().unwrap().data, &b) < 1e-6, "{cfg:?}");
        }
    }

    #[test]
    fn a_lora_bias_without_a_base_bias_cannot_merge() {
        let mut lin = layer(false, &LoraConfig { r: 2, bias: true, ..Default::default() });
        let e = lin.check_merge().unwrap_err().to_string();
        assert!(e.contains("no bias") && e.contains("unmerged"), "{e}");
        let w = lin.weight.data.clone();
        lin.merge();
        assert_eq!(lin.weight.data, w, "a refused merge changes nothing");
    }

    #[test]
    fn removing_a_residual_init_gives_the_base_weight_back() {
        let mut lin = layer(true, &LoraConfig { r: 2, ..Default::default() });
        let w0 = lin.weight.data.clone();
        lin.add_lora(
            &LoraConfig { r: 3, init: Some(crate::lora::Init::Olora), ..Default::default() },
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )
        .unwrap();
        assert!(crate::ops::testing::max_abs_diff(&lin.weight.data, &w0) > 0.1, "OLoRA made a residual");
        lin.merge();
        lin.remove_lora();
        assert!(lin.lora.is_none() && crate::ops::testing::max_abs_diff(&lin.weight.data, &w0) < 1e-5);
    }
}
