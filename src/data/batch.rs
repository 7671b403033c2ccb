//! Batches: tokenised examples ([`Encoded`]), the order of an epoch's examples ([`Batching`]: a
//! seeded shuffle, optionally length-bucketed, cut into batches), and a batch in the packed form
//! the model takes ([`Batch`]: all sequences' tokens back to back, no padding rows unless asked
//! for, with each sequence's span, positions and label).
//!
//! Dimensions: N packed rows, B sequences.

use crate::ops::attention::SeqSpan;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Token ids of several sequences packed into one matrix of rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Token id of every row, sequences back to back: [N].
    pub ids: Vec<u32>,
    /// Position of every row within its sequence: [N].
    pub positions: Vec<u32>,
    /// Token type (segment) of every row: [N].
    pub type_ids: Vec<u32>,
    /// Where each sequence lives: [B].
    pub seqs: Vec<SeqSpan>,
    /// Class id of each sequence (empty for unlabelled inference): [B].
    pub labels: Vec<usize>,
    /// Next-token target of every row for language modelling ([`IGNORE`] where no loss is taken;
    /// empty for classification): [N].
    pub targets: Vec<u32>,
}

/// The target of a row that takes no loss (transformers' label −100).
pub const IGNORE: u32 = u32::MAX;

impl Batch {
    /// Packs `sequences` (token ids, each already with its special tokens). With `pad_to = Some(L)`
    /// every sequence is padded with `pad_id` rows up to L (the seed's fixed padding: padding rows
    /// are computed but never attended to); with `None` no padding row exists at all. Every row
    /// gets token type 0.
    pub fn pack(sequences: &[&[u32]], labels: &[usize], pad_to: Option<usize>, pad_id: u32) -> Batch {
        Self::pack_with_types(sequences, None, labels, pad_to, pad_id)
    }

    /// [`Batch::pack`] with each sequence's token types (BERT's segments; missing ones are 0).
    pub fn pack_with_types(
        sequences: &[&[u32]],
        type_ids: Option<&[&[u32]]>,
        labels: &[usize],
        pad_to: Option<usize>,
        pad_id: u32,
    ) -> Batch {
        let mut b = Batch { labels: labels.to_vec(), ..Default::default() };
        for (i, seq) in sequences.iter().enumerate() {
            let len = pad_to.map_or(seq.len(), |p| p.max(seq.len()));
            b.seqs.push(SeqSpan { start: b.ids.len(), len, valid: seq.len() });
            for p in 0..len {
                b.ids.push(seq.get(p).copied().unwrap_or(pad_id));
                b.positions.push(p as u32);
                b.type_ids.push(type_ids.and_then(|t| t[i].get(p).copied()).unwrap_or(0));
            }
        }
        b
    }

    /// Packs language-modelling sequences: `ids` with `targets` of the same length per sequence
    /// (row t's target is the token to predict after it, or [`IGNORE`]).
    pub fn pack_lm(sequences: &[&[u32]], targets: &[&[u32]]) -> Batch {
        let mut b = Self::pack(sequences, &[], None, 0);
        b.targets = targets.iter().flat_map(|t| t.iter().copied()).collect();
        assert_eq!(b.targets.len(), b.ids.len(), "one target per token");
        b
    }

    /// Number of rows N (tokens, padding included).
    pub fn n_tokens(&self) -> usize {
        self.ids.len()
    }

    /// Number of sequences B.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Whether the batch holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Number of real (non-padding) tokens.
    pub fn real_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.valid).sum()
    }
}

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
        Batch::pack(&seqs, &labels, pad_to, pad_id)
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
    fn packs_without_padding_and_with_fixed_padding() {
        let (a, b) = ([101u32, 7, 102], [101u32, 102]);
        let p = Batch::pack(&[&a, &b], &[1, 0], None, 0);
        assert_eq!(p.ids, vec![101, 7, 102, 101, 102]);
        assert_eq!(p.positions, vec![0, 1, 2, 0, 1]);
        assert_eq!(p.seqs[1], SeqSpan { start: 3, len: 2, valid: 2 });
        let f = Batch::pack(&[&a, &b], &[1, 0], Some(4), 0);
        assert_eq!(f.ids, vec![101, 7, 102, 0, 101, 102, 0, 0]);
        assert_eq!(f.seqs[1], SeqSpan { start: 4, len: 4, valid: 2 });
        assert_eq!((f.n_tokens(), f.real_tokens()), (8, 5));
    }
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
