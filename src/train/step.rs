//! One training step — forward, cross-entropy, backward, gradient clipping, optimizer update —
//! the same code for `lowrank train` and `lowrank bench`, so that what is benchmarked is what
//! trains.

use crate::data::batch::Batch;
use crate::error::{Error, Result};
use crate::model::{Activations, Model, Pass};
use crate::optim::{clip_grad_norm, Adam};
use std::time::Instant;

/// What one step did and how long each part took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Mean cross-entropy of the batch.
    pub loss: f32,
    /// Seconds of forward pass and loss.
    pub forward_s: f64,
    /// Seconds of backward pass.
    pub backward_s: f64,
    /// Seconds of clipping and optimizer update.
    pub optimizer_s: f64,
}

/// The buffers a training loop reuses from step to step (and for its evaluations).
#[derive(Default, Debug)]
pub struct Stepper {
    /// The model's activations and backward scratch.
    pub acts: Activations,
}

impl Stepper {
    /// One step on `batch` with learning rate `lr`: gradients must be zero on entry (fresh, or
    /// zeroed by the previous update) and are zero again on exit. `pass` is a training pass (its
    /// step number names the step in errors). A non-finite loss stops before any update.
    pub fn step(&mut self, model: &mut Model, batch: &Batch, pass: Pass, opt: &mut Adam, lr: f32, clip: Option<f32>) -> Result<StepReport> {
        let t0 = Instant::now();
        let loss = model.forward_loss(batch, &mut self.acts, pass).loss;
        if !loss.is_finite() {
            let step = match pass {
                Pass::Train { step, .. } => step + 1,
                _ => 0,
            };
            return Err(Error::NonFiniteLoss { loss, step });
        }
        let t1 = Instant::now();
        model.backward(batch, &mut self.acts, pass);
        let t2 = Instant::now();
        let mut params = model.params_mut();
        if let Some(max) = clip {
            clip_grad_norm(&mut params, max);
        }
        opt.step(&mut params, lr);
        let t3 = Instant::now();
        Ok(StepReport {
            loss,
            forward_s: (t1 - t0).as_secs_f64(),
            backward_s: (t2 - t1).as_secs_f64(),
            optimizer_s: (t3 - t2).as_secs_f64(),
        })
    }
}
