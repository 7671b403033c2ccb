//! Optimizers over the trainable parameters: Adam and AdamW exactly as `torch.optim` computes
//! them (optionally with LoRA+'s parameter groups, as PEFT's `create_loraplus_optimizer` builds
//! them), a learning-rate schedule (linear warmup, then constant or linear decay), and global
//! gradient-norm clipping.

use crate::param::Param;
use serde::{Deserialize, Serialize};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// torch.optim.Adam: weight decay (if any) is added to the gradient.
    #[default]
    Adam,
    /// torch.optim.AdamW: decoupled weight decay.
    AdamW,
}

/// Optimizer hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// Peak learning rate.
    pub lr: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// LoRA+ (PEFT's `loraplus_lr_ratio`): lora_B and every 1-D tensor learn at `lr × ratio`.
    #[serde(default)]
    pub loraplus_lr_ratio: Option<f32>,
}

impl Default for OptimizerConfig {
    /// The seed's: Adam, lr 5e-5, no weight decay, PyTorch's betas and eps, one group.
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 5e-5,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            loraplus_lr_ratio: None,
        }
    }
}

impl OptimizerConfig {
    /// (learning-rate multiplier, weight decay) of a parameter. Without LoRA+ every parameter
    /// gets (1, weight_decay). With it, PEFT's groups: tensors named lora_B and 1-D tensors (DoRA
    /// magnitudes, biases, norms) get the ratio, and no decay for biases and norm weights; the
    /// rest (lora_A, other matrices) get (1, weight_decay).
    pub fn group(&self, name: &str, shape: &[usize]) -> (f32, f32) {
        let Some(ratio) = self.loraplus_lr_ratio else { return (1.0, self.weight_decay) };
        if name.contains("lora_B") || shape.len() == 1 {
            let lower = name.to_ascii_lowercase();
            let no_decay = name.contains("bias") || lower.contains("layernorm") || lower.contains("layer_norm");
            (ratio, if no_decay { 0.0 } else { self.weight_decay })
        } else {
            (1.0, self.weight_decay)
        }
    }
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Schedule {
    /// Fraction of all steps spent warming up linearly from 0.
    pub warmup_ratio: f32,
    /// Decay linearly to 0 at the last step (after warmup); otherwise stay constant.
    pub linear_decay: bool,
}

impl Schedule {
    /// Multiplier of the peak learning rate at optimizer step `step` (0-based) of `total`.
    pub fn factor(&self, step: u64, total: u64) -> f32 {
        let warmup = (self.warmup_ratio as f64 * total as f64).round() as u64;
        if step < warmup {
            return (step + 1) as f32 / warmup as f32;
        }
        if self.linear_decay && total > warmup {
            return ((total - step) as f32 / (total - warmup) as f32).max(0.0);
        }
        1.0
    }
}

/// Adam / AdamW state: first and second moments for each trainable parameter, by position.
#[derive(Clone, Debug, Default)]
pub struct Adam {
    /// Hyperparameters.
    pub config: OptimizerConfig,
    /// Steps taken.
    pub t: u64,
    /// First moments, one per trainable parameter (in the model's parameter order).
    pub m: Vec<Vec<f32>>,
    /// Second moments.
    pub v: Vec<Vec<f32>>,
}

impl Adam {
    /// A fresh optimizer.
    pub fn new(config: OptimizerConfig) -> Self {
        Adam { config, ..Default::default() }
    }

    /// One update of every trainable parameter in `params` with learning rate `lr`; the
    /// gradients are zeroed in the same pass, ready for the next backward.
    pub fn step(&mut self, params: &mut [&mut Param], lr: f32) {
        let c = self.config;
        let mut trainable: Vec<&mut Param> = params.iter_mut().filter(|p| p.trainable()).map(|p| &mut **p).collect();
        if self.m.is_empty() {
            self.m = trainable.iter().map(|p| vec![0.0; p.numel()]).collect();
            self.v = self.m.clone();
        }
        assert_eq!(self.m.len(), trainable.len(), "optimizer state does not match the trainable parameters");
        self.t += 1;
        let bc1 = 1.0 - (c.beta1 as f64).powi(self.t as i32);
        let bc2 = 1.0 - (c.beta2 as f64).powi(self.t as i32);
        let bc2_sqrt = bc2.sqrt() as f32;
        use rayon::prelude::*;
        for ((p, m), v) in trainable.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            let (mult, weight_decay) = c.group(&p.name, &p.shape);
            let lr = lr * mult;
            let step_size = (lr as f64 / bc1) as f32;
            let k = Kernel { kind: c.kind, lr, weight_decay, beta1: c.beta1, beta2: c.beta2, eps: c.eps, step_size, bc2_sqrt };
            let Param { data, grad, .. } = &mut **p;
            let grad = grad.as_mut().expect("trainable");
            data.par_chunks_mut(4096)
                .zip(grad.par_chunks_mut(4096))
                .zip(m.par_chunks_mut(4096).zip(v.par_chunks_mut(4096)))
                .for_each(|((w, g), (m, v))| adam_chunk(&k, w, g, m, v));
        }
    }
}

/// The constants of one Adam step.
struct Kernel {
    kind: OptimizerKind,
    lr: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    bc2_sqrt: f32,
}

/// Updates one chunk of a parameter and zeroes its gradient (one pass over memory).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn adam_chunk(k: &Kernel, w: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    for i in 0..w.len() {
        let mut gi = g[i];
        match k.kind {
            OptimizerKind::Adam => gi += k.weight_decay * w[i],
            OptimizerKind::AdamW => w[i] *= 1.0 - k.lr * k.weight_decay,
        }
        m[i] = k.beta1 * m[i] + (1.0 - k.beta1) * gi;
        v[i] = k.beta2 * v[i] + (1.0 - k.beta2) * gi * gi;
        let denom = v[i].sqrt() / k.bc2_sqrt + k.eps;
        w[i] -= k.step_size * m[i] / denom;
        g[i] = 0.0;
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_grad_norm(params: &mut [&mut Param], max_norm: f32) -> f32 {
    let total: f64 = params.iter().filter_map(|p| p.grad.as_ref()).flat_map(|g| g.iter()).map(|v| (*v as f64) * (*v as f64)).sum();
    let norm = total.sqrt() as f32;
    if norm > max_norm && norm.is_finite() {
        let s = max_norm / (norm + 1e-6);
        for p in params.iter_mut() {
            if let Some(g) = p.grad.as_mut() {
                g.iter_mut().for_each(|v| *v *= s);
            }
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(values: &[f32], grad: &[f32]) -> Param {
        let mut p = Param::zeros("w", &[values.len()]);
        p.data.copy_from_slice(values);
        p.grad = Some(grad.to_vec());
        p
    }

    #[test]
    fn adam_matches_torch() {
        // w = torch.tensor([1., -2., 3.], requires_grad=True); opt = torch.optim.Adam([w], lr=0.1)
        // for g in ([0.5, -1., 2.], [0.1, 0.2, -0.3]): w.grad = torch.tensor(g); opt.step()
        // -> [0.8196959, -1.8488973, 2.8447802]
        let mut p = param(&[1.0, -2.0, 3.0], &[0.5, -1.0, 2.0]);
        let mut opt = Adam::new(OptimizerConfig { lr: 0.1, ..Default::default() });
        opt.step(&mut [&mut p], 0.1);
        assert_eq!(p.grad.as_deref(), Some(&[0.0, 0.0, 0.0][..]), "the step zeroes the gradient");
        p.grad = Some(vec![0.1, 0.2, -0.3]);
        opt.step(&mut [&mut p], 0.1);
        let want = [0.819_696, -1.848_897_3, 2.844_780_2];
        for (a, b) in p.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", p.data);
        }
    }

    #[test]
    fn loraplus_groups_are_peft_s() {
        // create_loraplus_optimizer(model, torch.optim.Adam, lr=0.1, loraplus_lr_ratio=4): lora_B at
        // lr 0.4, lora_A at 0.1; Adam's first step moves each weight by lr·sign(g).
        let c = OptimizerConfig { lr: 0.1, loraplus_lr_ratio: Some(4.0), weight_decay: 0.5, ..Default::default() };
        assert_eq!(c.group("m.lora_A", &[4, 2]), (1.0, 0.5));
        assert_eq!(c.group("m.lora_B", &[2, 4]), (4.0, 0.5));
        assert_eq!(c.group("m.lora_B.bias", &[4]), (4.0, 0.0));
        assert_eq!(c.group("m.lora_magnitude_vector", &[4]), (4.0, 0.5));
        assert_eq!(c.group("bert.encoder.layer.0.output.LayerNorm.weight", &[4]), (4.0, 0.0));
        assert_eq!(OptimizerConfig::default().group("m.lora_B", &[2, 4]), (1.0, 0.0));
        let mut a = param(&[1.0], &[0.3]);
        a.name = "m.lora_A".into();
        a.shape = vec![1, 1];
        let mut b = param(&[1.0], &[0.3]);
        b.name = "m.lora_B".into();
        b.shape = vec![1, 1];
        let mut opt = Adam::new(OptimizerConfig { lr: 0.1, loraplus_lr_ratio: Some(4.0), ..Default::default() });
        opt.step(&mut [&mut a, &mut b], 0.1);
        assert!((a.data[0] - 0.9).abs() < 1e-6 && (b.data[0] - 0.6).abs() < 1e-6, "{:?} {:?}", a.data, b.data);
    }

    #[test]
    fn adamw_decouples_weight_decay() {
        let mut p = param(&[1.0], &[0.0]);
        let mut opt = Adam::new(OptimizerConfig { kind: OptimizerKind::AdamW, lr: 0.1, weight_decay: 0.5, ..Default::default() });
        opt.step(&mut [&mut p], 0.1);
        assert!((p.data[0] - 0.95).abs() < 1e-6, "{}", p.data[0]);
    }

    #[test]
    fn frozen_parameters_are_untouched() {
        let mut frozen = Param::zeros("f", &[2]);
        frozen.data = vec![1.0, 2.0];
        let mut p = param(&[1.0], &[1.0]);
        let mut opt = Adam::new(OptimizerConfig::default());
        opt.step(&mut [&mut frozen, &mut p], 0.01);
        assert_eq!(frozen.data, vec![1.0, 2.0]);
        assert_eq!(opt.m.len(), 1);
    }

    #[test]
    fn schedule_warms_up_and_decays() {
        let s = Schedule { warmup_ratio: 0.1, linear_decay: true };
        assert!((s.factor(0, 100) - 0.1).abs() < 1e-6);
        assert!((s.factor(9, 100) - 1.0).abs() < 1e-6);
        assert!((s.factor(10, 100) - 1.0).abs() < 1e-6);
        assert!(s.factor(99, 100) < 0.02);
        assert_eq!(Schedule::default().factor(50, 100), 1.0);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut a = param(&[0.0, 0.0], &[3.0, 0.0]);
        let mut b = param(&[0.0], &[4.0]);
        let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let after: f32 = [a.grad.as_ref().unwrap()[0], b.grad.as_ref().unwrap()[0]].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((after - 1.0).abs() < 1e-4);
    }
}
