//! Seeded train/val/test splitting of a dataset.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::error::DataError;
use super::Dataset;

/// The default (train, val, test) fractions: 0.7 / 0.1 / 0.2, i.e. 35,000 / 5,000 / 10,000 of aclImdb's
/// 50,000 reviews.
pub const DEFAULT_FRACTIONS: (f64, f64, f64) = (0.7, 0.1, 0.2);

/// The three parts of a split dataset; each keeps the full label map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The training part.
    pub train: Dataset,
    /// The validation part (model selection, early stopping).
    pub val: Dataset,
    /// The held-out test part.
    pub test: Dataset,
}

/// Splits `ds` into train/val/test: shuffles the example indices with a seeded RNG, then cuts them —
/// the first `floor(n * fractions.0)` go to train, the next `floor(n * fractions.1)` to val, the rest
/// to test (so `fractions.2` only has to make the sum 1). Each part keeps the shuffled order.
///
/// The RNG is `rand::rngs::StdRng::seed_from_u64(seed)`: the same seed gives the same split on every
/// run and machine for a given `rand` version (0.9 here); `rand` does not promise `StdRng`'s stream
/// across versions, so a version bump may change splits — record splits with [`super::write_csv`].
/// Stratification is not done.
///
/// Errors: [`DataError::BadFractions`] when a fraction is negative or not finite or they do not add up
/// to 1 (within 1e-6); [`DataError::EmptySplit`] when a part would get no examples.
pub fn split(ds: &Dataset, seed: u64, fractions: (f64, f64, f64)) -> Result<Split, DataError> {
    let (train, val, test) = split_indices(ds.len(), seed, fractions)?;
    Ok(Split { train: ds.subset(&train), val: ds.subset(&val), test: ds.subset(&test) })
}

/// Example indices of the three parts of a split: train, val, test.
pub(crate) type PartIndices = (Vec<usize>, Vec<usize>, Vec<usize>);

/// The indices of [`split()`]'s three parts of `n` examples (train, val, test), by the same rule
/// and the same seeded shuffle; also used for causal-LM data, which has no [`Dataset`].
pub(crate) fn split_indices(n: usize, seed: u64, fractions: (f64, f64, f64)) -> Result<PartIndices, DataError> {
    let (f_train, f_val, f_test) = fractions;
    let valid = [f_train, f_val, f_test].iter().all(|f| f.is_finite() && *f >= 0.0);
    if !valid || (f_train + f_val + f_test - 1.0).abs() > 1e-6 {
        return Err(DataError::BadFractions { fractions });
    }
    // A tiny epsilon so that e.g. 0.7 * 50_000 = 34_999.999… still floors to 35_000.
    let part = |f: f64| ((n as f64) * f + 1e-9).floor() as usize;
    let n_train = part(f_train).min(n);
    let n_val = part(f_val).min(n - n_train);
    let sizes = (n_train, n_val, n - n_train - n_val);
    for (name, size) in [("train", sizes.0), ("val", sizes.1), ("test", sizes.2)] {
        if size == 0 {
            return Err(DataError::EmptySplit { part: name, n, fractions, sizes });
        }
    }
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut StdRng::seed_from_u64(seed));
    let test = indices.split_off(n_train + n_val);
    let val = indices.split_off(n_train);
    Ok((indices, val, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Example, LabelMap};
    use std::collections::HashSet;

    fn numbered(n: usize) -> Dataset {
        Dataset {
            examples: (0..n).map(|i| Example { text: format!("example {i}"), label: i % 3 }).collect(),
            labels: LabelMap::new(vec!["a".into(), "b".into(), "c".into()]).unwrap(),
        }
    }

    #[test]
    fn sizes_follow_the_floor_rule() {
        let ds = numbered(50_000);
        let s = split(&ds, 42, DEFAULT_FRACTIONS).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (35_000, 5_000, 10_000));
        // The reference Rotten Tomatoes split: 12,752 rows → 8,926 / 1,275 / 2,551.
        let s = split(&numbered(12_752), 1, DEFAULT_FRACTIONS).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (8_926, 1_275, 2_551));
    }

    #[test]
    fn parts_partition_the_examples_and_keep_labels() {
        let ds = numbered(1000);
        let s = split(&ds, 7, DEFAULT_FRACTIONS).unwrap();
        let mut seen = HashSet::new();
        for part in [&s.train, &s.val, &s.test] {
            assert_eq!(part.labels, ds.labels);
            for e in &part.examples {
                let i: usize = e.text.trim_start_matches("example ").parse().unwrap();
                assert_eq!(e.label, i % 3);
                assert!(seen.insert(i), "example {i} in two parts");
            }
        }
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn same_seed_same_split_other_seed_other_split() {
        let ds = numbered(200);
        let a = split(&ds, 123, DEFAULT_FRACTIONS).unwrap();
        let b = split(&ds, 123, DEFAULT_FRACTIONS).unwrap();
        let c = split(&ds, 124, DEFAULT_FRACTIONS).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.train, c.train);
        // Shuffled, not a prefix of the input.
        assert_ne!(a.train.examples[..], ds.examples[..a.train.len()]);
    }

    #[test]
    fn seeded_stream_is_pinned() {
        // Guards against a silent change of StdRng's stream (e.g. a rand upgrade): splits recorded
        // by earlier runs would no longer be reproducible from their seed.
        let s = split(&numbered(10), 0, (0.5, 0.2, 0.3)).unwrap();
        let order: Vec<&str> =
            [&s.train, &s.val, &s.test].iter().flat_map(|p| p.examples.iter().map(|e| e.text.trim_start_matches("example "))).collect();
        assert_eq!(order, PINNED_ORDER);
    }

    const PINNED_ORDER: [&str; 10] = ["1", "0", "7", "3", "6", "4", "5", "9", "8", "2"];

    #[test]
    fn empty_part_is_an_error() {
        let err = split(&numbered(5), 0, DEFAULT_FRACTIONS).unwrap_err();
        assert!(matches!(&err, DataError::EmptySplit { part: "val", n: 5, sizes: (3, 0, 2), .. }), "{err}");
        let err = split(&numbered(10), 0, (0.5, 0.5, 0.0)).unwrap_err();
        assert!(matches!(&err, DataError::EmptySplit { part: "test", .. }), "{err}");
    }

    #[test]
    fn bad_fractions_are_an_error() {
        for f in [(0.7, 0.1, 0.1), (1.2, -0.1, -0.1), (f64::NAN, 0.5, 0.5)] {
            assert!(matches!(split(&numbered(100), 0, f), Err(DataError::BadFractions { .. })), "{f:?}");
        }
    }
}
