//! Softmax cross-entropy over classes, averaged over the batch (PyTorch's `cross_entropy`).
//!
//! Dimensions: B examples, K classes.

/// Returns the mean loss and writes `dlogits[B,K]` = (softmax - onehot) / B.
pub fn cross_entropy(dlogits: &mut [f32], logits: &[f32], labels: &[usize], k: usize) -> f32 {
    let b = labels.len();
    let mut total = 0.0f64;
    for (i, &label) in labels.iter().enumerate() {
        let row = &logits[i * k..(i + 1) * k];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|v| ((v - max) as f64).exp()).sum();
        let log_z = max as f64 + sum.ln();
        total += log_z - row[label] as f64;
        for (j, d) in dlogits[i * k..(i + 1) * k].iter_mut().enumerate() {
            let p = (row[j] as f64 - log_z).exp();
            *d = ((p - if j == label { 1.0 } else { 0.0 }) / b as f64) as f32;
        }
    }
    (total / b as f64) as f32
}

/// Softmax of each row of `logits[B,K]` into `probs`.
pub fn softmax_rows(probs: &mut [f32], logits: &[f32], k: usize) {
    for (p, row) in probs.chunks_exact_mut(k).zip(logits.chunks_exact(k)) {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (p, v) in p.iter_mut().zip(row) {
            *p = (v - max).exp();
            sum += *p;
        }
        for p in p.iter_mut() {
            *p /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_gradient, random_vec};

    #[test]
    fn matches_reference_value() {
        // torch.nn.functional.cross_entropy(torch.tensor([[1., 2., 0.5], [0., 0., 3.]]), torch.tensor([1, 0]))
        let mut d = vec![0.0; 6];
        let loss = cross_entropy(&mut d, &[1.0, 2.0, 0.5, 0.0, 0.0, 3.0], &[1, 0], 3);
        assert!((loss - 1.779_645_9).abs() < 1e-5, "{loss}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let logits = random_vec(12, 1);
        let labels = [2usize, 0, 1, 2];
        let mut d = vec![0.0; 12];
        cross_entropy(&mut d, &logits, &labels, 3);
        check_gradient("cross entropy", &logits, &d, 1, |l| {
            let mut scratch = vec![0.0; 12];
            cross_entropy(&mut scratch, l, &labels, 3) as f64
        });
    }
}
