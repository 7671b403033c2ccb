//! BERT / DistilBERT embeddings: token + position (+ token type) embeddings, LayerNorm, dropout.
//!
//! Dimensions: N packed rows, C width.

use crate::model::norm::LayerNorm;
use crate::ops::dropout::Dropout;
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::layernorm::{layernorm_backward, layernorm_forward};
use crate::param::Param;

/// Token, position and token-type embeddings followed by LayerNorm and dropout.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// Word embeddings [vocab, C].
    pub word: Param,
    /// Position embeddings [max_positions, C].
    pub position: Param,
    /// Token type embeddings [type_vocab, C] (BERT only).
    pub token_type: Option<Param>,
    /// LayerNorm after the sum.
    pub ln: LayerNorm,
}

impl Embeddings {
    /// Whether any embedding parameter trains.
    pub fn trainable(&self) -> bool {
        self.word.trainable()
            || self.position.trainable()
            || self.token_type.as_ref().is_some_and(Param::trainable)
            || self.ln.weight.trainable()
            || self.ln.bias.trainable()
    }

    /// Forward: `out[N,C]`, caching the pre-LayerNorm sum and its statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        out: &mut [f32],
        sum: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        ids: &[u32],
        positions: &[u32],
        type_ids: &[u32],
        drop: Dropout,
    ) {
        let c = self.ln.weight.numel();
        let n = ids.len();
        let tt = self.token_type.as_ref().map(|p| p.data.as_slice());
        embedding_forward(sum, ids, positions, tt.map(|_| type_ids), &self.word.data, Some(&self.position.data), tt, c);
        layernorm_forward(out, mean, rstd, sum, &self.ln.weight.data, &self.ln.bias.data, n, c, self.ln.eps);
        drop.apply(&mut out[..n * c], 0);
    }

    /// Backward from the gradient of the output (`dout` is consumed as scratch).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dout: &mut [f32],
        dsum: &mut [f32],
        sum: &[f32],
        mean: &[f32],
        rstd: &[f32],
        ids: &[u32],
        positions: &[u32],
        type_ids: &[u32],
        drop: Dropout,
    ) {
        let c = self.ln.weight.numel();
        let n = ids.len();
        drop.apply(&mut dout[..n * c], 0);
        layernorm_backward(
            dsum,
            self.ln.weight.grad.as_deref_mut(),
            self.ln.bias.grad.as_deref_mut(),
            dout,
            sum,
            mean,
            rstd,
            &self.ln.weight.data,
            n,
            c,
            false,
        );
        if let Some(g) = self.word.grad.as_deref_mut() {
            embedding_backward(g, ids, &dsum[..n * c], c);
        }
        if let Some(g) = self.position.grad.as_deref_mut() {
            embedding_backward(g, positions, &dsum[..n * c], c);
        }
        if let Some(g) = self.token_type.as_mut().and_then(|p| p.grad.as_deref_mut()) {
            embedding_backward(g, type_ids, &dsum[..n * c], c);
        }
    }
}
