//! Evaluation: logits over a whole split in inference mode, and accuracy, confusion matrix and
//! per-class precision / recall / F1 from them.

use crate::data::batch::Batch;
use crate::model::{Activations, Model, Pass};
use crate::ops::loss::cross_entropy;
use serde::{Deserialize, Serialize};

/// Logits [n, K] of every example of `data`, in order, `batch_size` at a time. `on_batch` is
/// called with the number of examples done (for progress bars).
pub fn predict_logits(
    model: &Model,
    acts: &mut Activations,
    ids: &[Vec<u32>],
    batch_size: usize,
    pad_id: u32,
    on_batch: &mut dyn FnMut(usize),
) -> Vec<f32> {
    let k = model.num_labels();
    let mut out = Vec::with_capacity(ids.len() * k);
    let idx: Vec<usize> = (0..ids.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        let batch = Batch::pack(&seqs, &[], None, pad_id);
        out.extend_from_slice(model.forward(&batch, acts, Pass::Infer));
        on_batch(chunk.len());
    }
    out
}

/// Evaluates `model` on tokenised examples (inference mode, `batch_size` at a time).
pub fn evaluate(
    model: &Model,
    acts: &mut Activations,
    ids: &[Vec<u32>],
    labels: &[usize],
    names: &[String],
    batch_size: usize,
    pad_id: u32,
) -> Metrics {
    let logits = predict_logits(model, acts, ids, batch_size, pad_id, &mut |_| {});
    metrics(&logits, labels, names)
}

/// Precision, recall and F1 of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub label: String,
    /// Of the examples predicted as this class, the fraction that are.
    pub precision: f64,
    /// Of the examples of this class, the fraction predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Examples of this class.
    pub support: usize,
}

/// Metrics of one split: of a classifier, or of a causal language model (see
/// [`super::lm_eval::evaluate_lm`]: next-token accuracy and loss over the target tokens, with
/// their perplexity, and no confusion matrix).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Fraction of correct predictions (0..1): of examples, or of target tokens (causal LM).
    pub accuracy: f64,
    /// Mean cross-entropy: per example, or per target token (causal LM).
    pub loss: f64,
    /// Number of examples.
    pub n: usize,
    /// confusion[true][predicted] (empty for a causal LM).
    pub confusion: Vec<Vec<usize>>,
    /// Per-class metrics (empty for a causal LM).
    pub per_class: Vec<ClassMetrics>,
    /// exp(loss), for a causal LM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// Target tokens the loss averages over, for a causal LM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
}

/// Metrics of `logits[n, K]` against `labels`, with class `names`.
pub fn metrics(logits: &[f32], labels: &[usize], names: &[String]) -> Metrics {
    let k = names.len();
    let n = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (row, &y) in logits.chunks_exact(k).zip(labels) {
        let pred = argmax(row);
        confusion[y][pred] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let mut scratch = vec![0.0; logits.len()];
    let loss = if n > 0 { cross_entropy(&mut scratch, logits, labels, k) as f64 } else { 0.0 };
    let per_class = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
            let recall = if support > 0 { tp / support as f64 } else { 0.0 };
            let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
            ClassMetrics { label: names[c].clone(), precision, recall, f1, support }
        })
        .collect();
    Metrics { accuracy: if n > 0 { correct as f64 / n as f64 } else { 0.0 }, loss, n, confusion, per_class, perplexity: None, tokens: None }
}

/// Index of the largest value.
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_per_class_metrics() {
        let names = vec!["neg".to_string(), "pos".to_string()];
        // predictions: pos, pos, neg, neg ; truth: pos, neg, neg, pos
        let logits = [0.0, 1.0, 0.0, 2.0, 3.0, 0.0, 1.0, 0.5];
        let m = metrics(&logits, &[1, 0, 0, 1], &names);
        assert_eq!(m.accuracy, 0.5);
        assert_eq!(m.confusion, vec![vec![1, 1], vec![1, 1]]);
        assert_eq!(m.per_class[1].precision, 0.5);
        assert_eq!(m.per_class[1].support, 2);
    }
}
