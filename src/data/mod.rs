//! Labelled text datasets and the batches made from them: loading CSV/TSV, JSON Lines/JSON and
//! aclImdb folders, label maps, seeded splits, a run's recorded split, and batching.
//!
//! [`load`] reads a file (or an aclImdb folder) into a [`Dataset`] of [`Example`]s whose labels are
//! ids into the dataset's [`LabelMap`]; [`split()`] cuts a dataset into train/val/test with a seeded
//! shuffle; [`write_csv`] records a split so that [`load`] reads back the same examples and ids;
//! [`record`] does that for a run folder and tokenises; [`batch`] orders and packs batches.

pub mod batch;
mod error;
mod imdb;
mod jsonl;
mod labels;
pub mod lm;
pub mod record;
mod split;
mod tabular;

use std::path::Path;

pub use error::DataError;
pub use labels::LabelMap;
pub use record::{encode, DataSource, Loaded, RunData, RunSplits};
pub use split::{split, Split, DEFAULT_FRACTIONS};
pub use tabular::write_csv;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The text, exactly as in the file.
    pub text: String,
    /// The class id, an index into the dataset's [`LabelMap`].
    pub label: usize,
}

/// A list of labelled texts and the classes their labels index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The examples, in file order (or split order after [`split()`]).
    pub examples: Vec<Example>,
    /// The classes: `examples[i].label` is an id into this map.
    pub labels: LabelMap,
}

impl Dataset {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The number of examples of each class, indexed by class id (length = number of classes).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for example in &self.examples {
            if let Some(count) = counts.get_mut(example.label) {
                *count += 1;
            }
        }
        counts
    }

    /// A one-line summary, e.g. `1275 examples: rotten 637, fresh 638`.
    pub fn summary(&self) -> String {
        let classes = self
            .labels
            .names()
            .iter()
            .zip(self.class_counts())
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{} examples: {classes}", self.len())
    }

    /// The examples at `indices`, in that order, with the same label map.
    pub(crate) fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset { examples: indices.iter().filter_map(|&i| self.examples.get(i).cloned()).collect(), labels: self.labels.clone() }
    }
}

/// How to read a dataset file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// The CSV/TSV column or JSON field holding the text (default `"text"`).
    pub text_column: String,
    /// The CSV/TSV column or JSON field holding the label (default `"label"`).
    pub label_column: String,
    /// The column or field naming integer labels' classes, used when present (default `"label_name"`).
    pub label_name_column: String,
    /// The classes to map labels with (e.g. the train file's, when loading val/test); `None` infers
    /// them from the file.
    pub label_map: Option<LabelMap>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            text_column: "text".to_string(),
            label_column: "label".to_string(),
            label_name_column: "label_name".to_string(),
            label_map: None,
        }
    }
}

/// Loads a labelled dataset, choosing the reader by what `path` is.
///
/// - `.csv` / `.tsv`: a header row, then one example per row (fields may be quoted, with commas,
///   quotes and newlines inside).
/// - `.jsonl` / `.json`: one JSON object per line, or a JSON array of objects (the first non-blank
///   character decides). The label may be an integer or a string.
/// - a folder in the aclImdb layout: `{train,test}/{pos,neg}/*.txt`, labels neg = 0, pos = 1, both
///   halves merged in a fixed order (see the `imdb` reader); `unsup/` is ignored.
///
/// Labels become ids as described on [`LabelMap`] and [`ReadOptions::label_map`]: integer labels
/// `0..n-1` are the ids themselves, named by the `label_name` column when there is one; string labels get
/// ids in sorted order. Errors (see [`DataError`]) name the path and, within a file, the 1-based line.
pub fn load(path: &Path, opts: &ReadOptions) -> Result<Dataset, DataError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::FileMissing { path: path.to_path_buf() },
        _ => DataError::Read { path: path.to_path_buf(), source },
    })?;
    if meta.is_dir() {
        return imdb::load_imdb(path, opts);
    }
    let extension = path.extension().map(|ext| ext.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "csv" => tabular::load_delimited(path, b',', opts),
        "tsv" => tabular::load_delimited(path, b'\t', opts),
        "jsonl" | "ndjson" | "json" => jsonl::load_json(path, opts),
        _ => Err(DataError::UnsupportedFormat { path: path.to_path_buf(), extension }),
    }
}

/// Reads a file as UTF-8 text, naming the 1-based line and byte of the first invalid sequence.
/// A leading UTF-8 byte-order mark is dropped.
pub(crate) fn read_text(path: &Path) -> Result<String, DataError> {
    let mut bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::FileMissing { path: path.to_path_buf() },
        _ => DataError::Read { path: path.to_path_buf(), source },
    })?;
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|err| {
        let (line, column) = error::line_col(err.as_bytes(), err.utf8_error().valid_up_to());
        DataError::InvalidUtf8 { path: path.to_path_buf(), line, column }
    })
}

/// Turns raw examples into a dataset, resolving labels with `opts.label_map` or inferring the map.
pub(crate) fn build(path: &Path, raws: Vec<labels::RawExample>, opts: &ReadOptions) -> Result<Dataset, DataError> {
    if raws.is_empty() {
        return Err(DataError::NoExamples { path: path.to_path_buf() });
    }
    let (labels, ids) = labels::resolve(&raws, path, opts.label_map.as_ref())?;
    let examples = raws.into_iter().zip(ids).map(|(raw, label)| Example { text: raw.text, label }).collect();
    Ok(Dataset { examples, labels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn two_class() -> Dataset {
        Dataset {
            examples: vec![
                Example { text: "a".into(), label: 1 },
                Example { text: "b".into(), label: 0 },
                Example { text: "c".into(), label: 1 },
            ],
            labels: LabelMap::new(vec!["neg".into(), "pos".into()]).unwrap(),
        }
    }

    #[test]
    fn class_counts_and_summary() {
        let ds = two_class();
        assert_eq!(ds.class_counts(), [1, 2]);
        assert_eq!(ds.summary(), "3 examples: neg 1, pos 2");
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.csv");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::FileMissing { path: p } if p == &path), "{err}");
        assert!(err.to_string().contains("nope.csv"), "{err}");
    }

    #[test]
    fn unsupported_extension_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.parquet");
        std::fs::write(&path, "x").unwrap();
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::UnsupportedFormat { extension, .. } if extension == "parquet"), "{err}");
    }

    #[test]
    fn invalid_utf8_reports_line_and_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(&path, b"text,label\nfine,0\ncaf\xe9 latin1,1\n").unwrap();
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::InvalidUtf8 { line: 3, column: 4, .. }), "{err}");
        assert!(err.to_string().contains("bad.csv:3"), "{err}");
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bom.csv");
        std::fs::write(&path, b"\xEF\xBB\xBFtext,label\na,0\nb,1\n").unwrap();
        let ds = load(&path, &ReadOptions::default()).unwrap();
        assert_eq!(ds.len(), 2);
    }

    /// The reference Rotten Tomatoes split in shared/ (always there in CI).
    #[test]
    fn loads_reference_rt_val_split() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/rt-split/val.csv");
        if !path.exists() {
            crate::ci::missing(&path.display().to_string(), "CI checks out ../shared beside the project");
            return;
        }
        let ds = load(&path, &ReadOptions::default()).unwrap();
        assert_eq!(ds.len(), 1275);
        assert_eq!(ds.labels.names(), ["rotten", "fresh"]);
        let counts = ds.class_counts();
        assert_eq!(counts.iter().sum::<usize>(), 1275);
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }
}
