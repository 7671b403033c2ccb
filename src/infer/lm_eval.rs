//! Evaluating a causal language model on tokenised examples: the next-token loss over every
//! target token of a split (the tokens the examples' loss masks train), its perplexity, and the
//! next-token accuracy, in inference mode.

use super::Metrics;
use crate::data::batch::Batch;
use crate::data::lm::LmExample;
use crate::model::{Activations, Model, Pass};

/// Examples `idx` of `examples` as one batch: packed back to back without padding (no attention
/// across them), with their next-token targets.
pub fn lm_batch(examples: &[LmExample], idx: &[usize]) -> Batch {
    let targets: Vec<Vec<u32>> = idx.iter().map(|&i| examples[i].targets()).collect();
    let seqs: Vec<&[u32]> = idx.iter().map(|&i| examples[i].ids.as_slice()).collect();
    let targets: Vec<&[u32]> = targets.iter().map(Vec::as_slice).collect();
    Batch::pack_lm(&seqs, &targets)
}

/// The loss of `model` (which has a language-model head) on `examples`: the mean cross-entropy
/// over all their target tokens (each token counts once, whatever its example's length), its
/// perplexity exp(loss), and the fraction of target tokens that are the most likely next token.
pub fn evaluate_lm(model: &Model, acts: &mut Activations, examples: &[LmExample], batch_size: usize) -> Metrics {
    let (mut loss_sum, mut count, mut correct) = (0.0f64, 0usize, 0usize);
    let idx: Vec<usize> = (0..examples.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let s = model.forward_loss(&lm_batch(examples, chunk), acts, Pass::Infer);
        loss_sum += f64::from(s.loss) * s.count as f64;
        count += s.count;
        correct += s.correct;
    }
    let loss = if count > 0 { loss_sum / count as f64 } else { 0.0 };
    Metrics {
        accuracy: if count > 0 { correct as f64 / count as f64 } else { 0.0 },
        loss,
        n: examples.len(),
        confusion: Vec::new(),
        per_class: Vec::new(),
        perplexity: Some(loss.exp()),
        tokens: Some(count),
    }
}
