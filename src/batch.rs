//! A training or inference batch in packed form: all sequences' tokens back to back (no padding
//! rows unless asked for), with each sequence's span, positions and label.

use crate::ops::attention::SeqSpan;

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
}

impl Batch {
    /// Packs `sequences` (token ids, each already with [CLS]/[SEP]). With `pad_to = Some(L)` every
    /// sequence is padded with `pad_id` rows up to L (the seed's fixed padding: padding rows are
    /// computed but never attended to); with `None` no padding row exists at all.
    pub fn pack(sequences: &[&[u32]], type_ids: Option<&[&[u32]]>, labels: &[usize], pad_to: Option<usize>, pad_id: u32) -> Batch {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_without_padding_and_with_fixed_padding() {
        let (a, b) = ([101u32, 7, 102], [101u32, 102]);
        let p = Batch::pack(&[&a, &b], None, &[1, 0], None, 0);
        assert_eq!(p.ids, vec![101, 7, 102, 101, 102]);
        assert_eq!(p.positions, vec![0, 1, 2, 0, 1]);
        assert_eq!(p.seqs[1], SeqSpan { start: 3, len: 2, valid: 2 });
        let f = Batch::pack(&[&a, &b], None, &[1, 0], Some(4), 0);
        assert_eq!(f.ids, vec![101, 7, 102, 0, 101, 102, 0, 0]);
        assert_eq!(f.seqs[1], SeqSpan { start: 4, len: 4, valid: 2 });
        assert_eq!((f.n_tokens(), f.real_tokens()), (8, 5));
    }
}
