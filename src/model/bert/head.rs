//! Sequence-classification heads on the [CLS] row: DistilBERT's (pre_classifier → ReLU →
//! dropout → classifier) and BERT's (pooler dense → tanh → dropout → classifier).
//!
//! Dimensions: B sequences, C width, K classes.

use super::acts::{GradScratch, HeadCache};
use crate::model::linear::{Linear, LoraScratch};
use crate::model::HeadKind;
use crate::ops::activation::Activation;
use crate::ops::dropout::Dropout;

/// A classification head.
#[derive(Clone, Debug)]
pub struct Head {
    /// Which head.
    pub kind: HeadKind,
    /// pre_classifier (DistilBERT) or pooler dense (BERT): C → C.
    pub hidden: Linear,
    /// classifier: C → K.
    pub classifier: Linear,
    /// Dropout before the classifier.
    pub dropout: f32,
}

/// Dropout masks of the head for one step.
#[derive(Clone, Copy, Debug)]
pub struct HeadDropout {
    /// Before the classifier.
    pub classifier: Dropout,
    /// LoRA branch inputs of (hidden, classifier).
    pub lora: [Dropout; 2],
}

impl Head {
    fn activation(&self) -> Activation {
        match self.kind {
            HeadKind::Bert => Activation::Tanh,
            _ => Activation::Relu,
        }
    }

    /// Whether any head parameter trains.
    pub fn trainable(&self) -> bool {
        self.hidden.trainable() || self.classifier.trainable()
    }

    /// Forward from the final [CLS] states `cls_hidden[B,C]` to `cache.logits[B,K]`.
    pub fn forward(&self, cache: &mut HeadCache, cls_hidden: &[f32], drop: &HeadDropout, lora_x: &mut Vec<f32>) {
        let c = self.hidden.in_dim();
        let b = cls_hidden.len() / c;
        cache.cls[..b * c].copy_from_slice(cls_hidden);
        let HeadCache { cls, pre, act, dropped, logits, lora_h } = cache;
        let [h0, h1] = lora_h;
        self.hidden.forward(pre, h0, &cls[..b * c], lora_x, b, drop.lora[0]);
        self.activation().forward(&mut act[..b * c], &pre[..b * c]);
        dropped[..b * c].copy_from_slice(&act[..b * c]);
        drop.classifier.apply(&mut dropped[..b * c], 0);
        self.classifier.forward(logits, h1, &dropped[..b * c], lora_x, b, drop.lora[1]);
    }

    /// Backward from `g.dlogits` for a batch of `b`; writes the gradient of the [CLS] states into
    /// `d_hidden[B,C]` when it is given.
    pub fn backward(&mut self, g: &mut GradScratch, cache: &HeadCache, b: usize, drop: &HeadDropout, d_hidden: Option<&mut [f32]>) {
        let c = self.hidden.in_dim();
        let act = self.activation();
        let GradScratch { d_head_a, dlogits, lora, .. } = g;
        let need_below = d_hidden.is_some() || self.hidden.trainable();
        let lora: &mut LoraScratch = lora;
        self.classifier.backward(
            need_below.then_some(&mut d_head_a[..b * c]),
            false,
            dlogits,
            &cache.dropped,
            &cache.lora_h[1],
            lora,
            b,
            drop.lora[1],
        );
        if !need_below {
            return;
        }
        drop.classifier.apply(&mut d_head_a[..b * c], 0);
        act.backward_inplace(&mut d_head_a[..b * c], &cache.pre[..b * c], &cache.act[..b * c]);
        self.hidden.backward(d_hidden.map(|d| &mut d[..b * c]), false, d_head_a, &cache.cls, &cache.lora_h[0], lora, b, drop.lora[0]);
    }
}
