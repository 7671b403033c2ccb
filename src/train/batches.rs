//! The order of examples in each epoch: a seeded shuffle per epoch (optionally length-bucketed),
//! cut into batches, and packing a batch of tokenised examples.

use crate::batch::Batch;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Tokenised examples of one split.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    /// Token ids with [CLS]/[SEP], truncated.
    pub ids: Vec<Vec<u32>>,
    /// Class ids.
    pub labels: Vec<usize>,
}

impl Encoded {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Packs examples `idx` into a batch (`pad_to` reproduces fixed-length padding).
    pub fn batch(&self, idx: &[usize], pad_to: Option<usize>, pad_id: u32) -> Batch {
        let seqs: Vec<&[u32]> = idx.iter().map(|&i| self.ids[i].as_slice()).collect();
        let labels: Vec<usize> = idx.iter().map(|&i| self.labels[i]).collect();
        Batch::pack(&seqs, None, &labels, pad_to, pad_id)
    }

    /// Mean number of tokens per example.
    pub fn mean_len(&self) -> f64 {
        self.ids.iter().map(Vec::len).sum::<usize>() as f64 / self.len().max(1) as f64
    }
}

/// How an epoch's examples are ordered into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Examples per batch.
    pub batch_size: usize,
    /// Drop the last incomplete batch (as the seed's DataLoader does).
    pub drop_last: bool,
    /// Sort by length within shuffled chunks of 50 batches (then shuffle the batches).
    pub bucket: bool,
}

impl Batching {
    /// Batches per epoch over `n` examples.
    pub fn batches_per_epoch(&self, n: usize) -> usize {
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The batches of `epoch` (lists of example indices): a pure function of (seed, epoch), so
    /// that a resumed run sees exactly the batches an uninterrupted one would.
    pub fn epoch(&self, lengths: &[usize], seed: u64, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (epoch + 1));
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.shuffle(&mut rng);
        if self.bucket {
            for chunk in order.chunks_mut(self.batch_size * 50) {
                chunk.sort_by_key(|&i| lengths[i]);
            }
        }
        let mut batches: Vec<Vec<usize>> = order.chunks(self.batch_size).map(<[usize]>::to_vec).collect();
        if self.drop_last && batches.last().is_some_and(|b| b.len() < self.batch_size) {
            batches.pop();
        }
        if self.bucket {
            batches.shuffle(&mut rng);
        }
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_reproducible_distinct_and_complete() {
        let lengths: Vec<usize> = (0..103).map(|i| i % 17).collect();
        let b = Batching { batch_size: 10, drop_last: true, bucket: false };
        let e0 = b.epoch(&lengths, 7, 0);
        assert_eq!(e0, b.epoch(&lengths, 7, 0));
        assert_ne!(e0, b.epoch(&lengths, 7, 1));
        assert_eq!(e0.len(), 10);
        assert_eq!(b.batches_per_epoch(103), 10);
        let keep = Batching { drop_last: false, ..b };
        let mut all: Vec<usize> = keep.epoch(&lengths, 7, 0).concat();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
    }

    #[test]
    fn bucketing_groups_similar_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 300).collect();
        let spread = |bucket| {
            let b = Batching { batch_size: 10, drop_last: false, bucket };
            b.epoch(&lengths, 1, 0)
                .iter()
                .map(|idx| idx.iter().map(|&i| lengths[i]).max().unwrap() - idx.iter().map(|&i| lengths[i]).min().unwrap())
                .sum::<usize>()
        };
        assert!(spread(true) * 5 < spread(false));
    }
}
