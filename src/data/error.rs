//! The data module's error type: every way a dataset can fail to load, split or save, with the evidence.

use std::fmt::Display;
use std::path::PathBuf;

/// Errors raised while loading, splitting or writing a labelled text dataset.
///
/// Every variant carries the evidence needed to find the problem (path, 1-based line number, column,
/// the offending value, the labels that are known) and its message ends with how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset path does not exist.
    #[error("dataset {path} does not exist; check the path (a .csv, .tsv, .jsonl or .json file, or an aclImdb folder)")]
    FileMissing {
        /// The path that was asked for.
        path: PathBuf,
    },

    /// The path exists but could not be read.
    #[error("could not read {path}: {source}; check that it is a readable file")]
    Read {
        /// The file or folder that failed.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A file could not be written (or renamed into place).
    #[error("could not write {path}: {source}; check that its folder exists and is writable")]
    Write {
        /// The file that failed.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The file extension names no supported format.
    #[error("{path}: unsupported dataset format {extension:?}; use a .csv, .tsv, .jsonl or .json file, or an aclImdb folder")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Its extension (empty when it has none).
        extension: String,
    },

    /// A folder was given that is not in the aclImdb layout.
    #[error("{path} is not an aclImdb folder ({problem}; it contains: {}); point at a folder holding train/ and/or test/, each with pos/ and neg/ folders of .txt reviews", list(found))]
    NotImdbLayout {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// The entries the folder does contain.
        found: Vec<String>,
    },

    /// The file holds no examples (it is empty, or has a header and no rows).
    #[error("{path} contains no examples; check that it is the right file and that it has rows after the header")]
    NoExamples {
        /// The file or folder.
        path: PathBuf,
    },

    /// A byte sequence that is not UTF-8.
    #[error(
        "{path}:{line}: not valid UTF-8 (at byte {column} of the line); re-save the file as UTF-8, e.g. with `iconv -f latin1 -t utf-8`"
    )]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the bad byte.
        line: usize,
        /// 1-based byte offset of the bad byte within its line.
        column: usize,
    },

    /// A required column is absent from the header row.
    #[error(
        "{path}: no {role} column named {column:?} (the columns are: {}); name one of those as the {role} column, or rename the header",
        list(columns)
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// What the column is for: "text" or "label".
        role: &'static str,
        /// The column name that was asked for.
        column: String,
        /// The columns the header does have.
        columns: Vec<String>,
    },

    /// A JSON record lacks a required field.
    #[error(
        "{path}:{line}: no {role} field named {field:?} (the record has: {}); name one of those as the {role} field, or fix the record",
        list(present)
    )]
    MissingField {
        /// The file.
        path: PathBuf,
        /// 1-based line number where the record starts.
        line: usize,
        /// What the field is for: "text" or "label".
        role: &'static str,
        /// The field name that was asked for.
        field: String,
        /// The fields the record does have.
        present: Vec<String>,
    },

    /// A field holds a value of the wrong kind (e.g. a JSON label that is a float or an object).
    #[error("{path}:{line}: field {field:?} is {value}, expected {expected}; fix the value in the file")]
    BadField {
        /// The file.
        path: PathBuf,
        /// 1-based line number where the record starts.
        line: usize,
        /// The field (column) name.
        field: String,
        /// The value found (shortened when long).
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },

    /// A text or label field is empty (or only whitespace).
    #[error("{path}:{line}: the {field:?} field is empty; remove the row or fill it in")]
    EmptyField {
        /// The file.
        path: PathBuf,
        /// 1-based line number where the record starts.
        line: usize,
        /// The field (column) name.
        field: String,
    },

    /// A CSV/TSV parse error.
    #[error("{path}:{line}: malformed CSV: {message}; every row needs as many fields as the header, and fields holding the delimiter, quotes or newlines must be quoted")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the failing record (0 when unknown).
        line: usize,
        /// The parser's message.
        message: String,
    },

    /// A JSON parse error, or a record that is not a JSON object.
    #[error("{path}:{line}: malformed JSON: {message}; a .jsonl file needs one JSON object per line, a .json file one array of objects")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the failing record.
        line: usize,
        /// The parser's message.
        message: String,
    },

    /// Only one distinct class in the data.
    #[error(
        "{path}: every example has the label {label:?}; a classifier needs at least two classes, so check the label column or the file"
    )]
    OneClass {
        /// The file or folder.
        path: PathBuf,
        /// The single label seen.
        label: String,
    },

    /// A negative integer label.
    #[error(
        "{path}:{line}: negative label {label}; integer labels must be the class ids 0..n-1, so renumber them or use class names as labels"
    )]
    NegativeLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The label value.
        label: i64,
    },

    /// Integer labels that are not 0..n-1 without gaps.
    #[error("{path}: integer labels must be the class ids 0..n-1 without gaps, but id {missing} is missing (ids found: {}); renumber the labels 0 to {} or use class names as labels", list(found), found.len().saturating_sub(1))]
    LabelGap {
        /// The file.
        path: PathBuf,
        /// The smallest missing id.
        missing: usize,
        /// The distinct ids found, sorted.
        found: Vec<usize>,
    },

    /// One label id given two different names (in the `label_name` column, or against the label map).
    #[error(
        "{path}:{line}: label {id} is named {name:?} here but {expected:?} {expected_from}; give each id one name in the label_name column"
    )]
    LabelNameConflict {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the conflicting row.
        line: usize,
        /// The label id.
        id: usize,
        /// The name on this row.
        name: String,
        /// The name seen first.
        expected: String,
        /// Where the first name came from ("on line 12", "in the label map").
        expected_from: String,
    },

    /// A label that the label map does not know (e.g. a val/test label absent from the train file).
    #[error("{}unknown label {label:?}; the known labels are {} (or their ids 0 to {}), so fix the label, or make sure the train file has every class", at(path, line), list(known), known.len().saturating_sub(1))]
    UnknownLabel {
        /// The label as written in the file.
        label: String,
        /// The class names the map knows, in id order.
        known: Vec<String>,
        /// The file, when known.
        path: Option<PathBuf>,
        /// 1-based line number, when known.
        line: Option<usize>,
    },

    /// A label map that is not usable (fewer than two classes, duplicate or empty names, ids not 0..n-1).
    #[error("invalid label map from {origin}: {reason}; a label map needs at least two distinct, non-empty class names with ids 0..n-1")]
    InvalidLabelMap {
        /// Where the map came from (a path, "JSON", "LabelMap::new").
        origin: String,
        /// What is wrong.
        reason: String,
    },

    /// Split fractions that are negative, not finite, or do not add up to 1.
    #[error("split fractions {fractions:?} must be non-negative and add up to 1; use e.g. (0.7, 0.1, 0.2)")]
    BadFractions {
        /// The fractions given (train, val, test).
        fractions: (f64, f64, f64),
    },

    /// A split that would leave one part without examples.
    #[error("splitting {n} examples by {fractions:?} gives sizes {sizes:?}, leaving the {part} part empty; use more examples or a larger {part} fraction")]
    EmptySplit {
        /// The empty part: "train", "val" or "test".
        part: &'static str,
        /// The number of examples split.
        n: usize,
        /// The fractions given.
        fractions: (f64, f64, f64),
        /// The resulting sizes (train, val, test).
        sizes: (usize, usize, usize),
    },

    /// A label that is how missing values are written (NaN, null, None, NA, N/A).
    #[error("{path}:{line}: the label is {label:?}, which is how a missing value is written (pandas, R, SQL); fill it in or remove the row (if {label:?} really is a class, rename it)")]
    MissingLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number where the record starts.
        line: usize,
        /// The label as written.
        label: String,
    },

    /// The header names the text or label column more than once.
    #[error("{path}: the header has {count} columns named {column:?} (columns {}); lowrank would not know which one holds the {role}: rename the others", list(positions))]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// What the column is for: "text" or "label".
        role: &'static str,
        /// The repeated name.
        column: String,
        /// How many columns have it.
        count: usize,
        /// Their 1-based positions.
        positions: Vec<usize>,
    },
}

/// Formats a list for an error message: at most ten items, then how many more.
pub(crate) fn list<T: Display>(items: &[T]) -> String {
    const SHOWN: usize = 10;
    if items.is_empty() {
        return "(none)".to_string();
    }
    let mut out = items.iter().take(SHOWN).map(|item| item.to_string()).collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(", … ({} more)", items.len() - SHOWN));
    }
    out
}

/// Formats an optional location as a message prefix: "path:line: ", "path: " or "".
fn at(path: &Option<PathBuf>, line: &Option<usize>) -> String {
    match (path, line) {
        (Some(path), Some(line)) => format!("{}:{line}: ", path.display()),
        (Some(path), None) => format!("{}: ", path.display()),
        (None, Some(line)) => format!("line {line}: "),
        (None, None) => String::new(),
    }
}

/// Shortens a value quoted in an error message to at most 80 characters.
pub(crate) fn shorten(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        value.to_string()
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// The 1-based (line, byte-in-line) position of byte `offset` in `bytes`.
pub(crate) fn line_col(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_truncates_after_ten_items() {
        let items: Vec<usize> = (0..13).collect();
        assert_eq!(list(&items), "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … (3 more)");
        assert_eq!(list::<String>(&[]), "(none)");
    }

    #[test]
    fn line_col_is_one_based() {
        let bytes = b"ab\ncd\ne";
        assert_eq!(line_col(bytes, 0), (1, 1));
        assert_eq!(line_col(bytes, 4), (2, 2));
        assert_eq!(line_col(bytes, 6), (3, 1));
    }

    #[test]
    fn unknown_label_message_names_location_and_known_labels() {
        let err = DataError::UnknownLabel {
            label: "meh".into(),
            known: vec!["neg".into(), "pos".into()],
            path: Some(PathBuf::from("val.csv")),
            line: Some(7),
        };
        let msg = err.to_string();
        assert!(msg.starts_with("val.csv:7: unknown label \"meh\""), "{msg}");
        assert!(msg.contains("neg, pos"), "{msg}");
    }
}
