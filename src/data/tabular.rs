//! Delimited text files: reading CSV/TSV datasets with a header row, and writing a dataset as CSV.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use super::error::DataError;
use super::labels::RawExample;
use super::{build, read_text, Dataset, ReadOptions};

/// Reads a CSV (`delimiter` b',') or TSV (b'\t') file with a header row into a dataset.
pub(crate) fn load_delimited(path: &Path, delimiter: u8, opts: &ReadOptions) -> Result<Dataset, DataError> {
    let text = read_text(path)?;
    if text.trim().is_empty() {
        return Err(DataError::NoExamples { path: path.to_path_buf() });
    }
    let csv_error = |err: csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        line: err.position().map_or(0, |pos| pos.line() as usize),
        message: err.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).has_headers(true).from_reader(text.as_bytes());
    let columns: Vec<String> = reader.headers().map_err(csv_error)?.iter().map(str::to_string).collect();
    let find = |role: &'static str, column: &str| {
        let positions: Vec<usize> = columns.iter().enumerate().filter(|(_, c)| *c == column).map(|(i, _)| i + 1).collect();
        if positions.len() > 1 {
            return Err(DataError::DuplicateColumn {
                path: path.to_path_buf(),
                role,
                column: column.to_string(),
                count: positions.len(),
                positions,
            });
        }
        positions.first().map(|p| p - 1).ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            role,
            column: column.to_string(),
            columns: columns.clone(),
        })
    };
    let text_at = find("text", &opts.text_column)?;
    let label_at = find("label", &opts.label_column)?;
    let name_at = columns.iter().position(|c| c == &opts.label_name_column);

    let mut raws = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, |pos| pos.line() as usize);
        let field = |at: usize, column: &str| {
            let value = record.get(at).unwrap_or("");
            if value.trim().is_empty() {
                Err(DataError::EmptyField { path: path.to_path_buf(), line, field: column.to_string() })
            } else {
                Ok(value)
            }
        };
        let text = field(text_at, &opts.text_column)?.to_string();
        let label = field(label_at, &opts.label_column)?.trim().to_string();
        let label_name = name_at.and_then(|at| record.get(at)).map(str::trim).filter(|name| !name.is_empty()).map(str::to_string);
        raws.push(RawExample { text, label, label_name, line });
    }
    build(path, raws, opts)
}

/// Writes `ds` as a CSV file with the columns `text,label,label_name` (label = class id), atomically
/// (see [`crate::fsutil::AtomicFile`]).
///
/// [`super::load`] reads the file back to the same examples, ids and class names. A written split
/// that lacks some class (e.g. a tiny test split) must be read back with the full map in
/// [`ReadOptions::label_map`], since ids cannot be inferred for classes that do not occur.
pub fn write_csv(ds: &Dataset, path: &Path) -> Result<(), DataError> {
    let as_write_error = |e: crate::error::Error| match e {
        crate::error::Error::Io { source, .. } => DataError::Write { path: path.to_path_buf(), source },
        other => DataError::Write { path: path.to_path_buf(), source: std::io::Error::other(other.to_string()) },
    };
    let file = crate::fsutil::AtomicFile::new(path).map_err(as_write_error)?;
    write_rows(ds, file.tmp())?;
    file.commit().map_err(as_write_error)
}

fn write_rows(ds: &Dataset, tmp: &Path) -> Result<(), DataError> {
    let io_error = |source: std::io::Error| DataError::Write { path: tmp.to_path_buf(), source };
    let csv_error = |err: csv::Error| io_error(std::io::Error::other(err.to_string()));
    let file = File::create(tmp).map_err(io_error)?;
    let mut writer = csv::Writer::from_writer(file);
    writer.write_record(["text", "label", "label_name"]).map_err(csv_error)?;
    for example in &ds.examples {
        let name =
            ds.labels.name(example.label).ok_or_else(|| ds.labels.unknown(&example.label.to_string(), Some(tmp.to_path_buf()), None))?;
        writer.write_record([example.text.as_str(), &example.label.to_string(), name]).map_err(csv_error)?;
    }
    let mut file = writer.into_inner().map_err(|err| io_error(std::io::Error::other(err.to_string())))?;
    file.flush().map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, Example, LabelMap};

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn reads_quoted_multiline_csv_with_label_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.csv", "text,label,label_name,movie\n\"line one,\nline \"\"two\"\"\",0,rotten,a\nplain,1,fresh,b\n");
        let ds = load(&path, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels.names(), ["rotten", "fresh"]);
        assert_eq!(
            ds.examples,
            [Example { text: "line one,\nline \"two\"".into(), label: 0 }, Example { text: "plain".into(), label: 1 },]
        );
    }

    #[test]
    fn reads_tsv_with_custom_columns_and_string_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.tsv", "sentence\tsentiment\ngood, really\tpositive\nbad\tnegative\n");
        let opts = ReadOptions { text_column: "sentence".into(), label_column: "sentiment".into(), ..ReadOptions::default() };
        let ds = load(&path, &opts).unwrap();
        assert_eq!(ds.labels.names(), ["negative", "positive"]);
        assert_eq!(ds.examples[0], Example { text: "good, really".into(), label: 1 });
        assert_eq!(ds.class_counts(), [1, 1]);
    }

    #[test]
    fn three_classes_are_read_as_three() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.csv", "text,label\na,0\nb,1\nc,2\nd,1\n");
        let ds = load(&path, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels.len(), 3);
        assert_eq!(ds.class_counts(), [1, 2, 1]);
    }

    #[test]
    fn missing_column_lists_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.csv", "review,label\na,0\nb,1\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingColumn { role: "text", column, columns, .. }
                if column == "text" && columns == &["review", "label"]),
            "{err}"
        );
        assert!(err.to_string().contains("review, label"), "{err}");
    }

    #[test]
    fn empty_file_and_header_only_have_no_examples() {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in [("empty.csv", ""), ("blank.csv", "\n \n"), ("header.csv", "text,label\n")] {
            let path = write(&dir, name, contents);
            let err = load(&path, &ReadOptions::default()).unwrap_err();
            assert!(matches!(&err, DataError::NoExamples { path: p } if p == &path), "{name}: {err}");
        }
    }

    #[test]
    fn empty_text_or_label_reports_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.csv", "text,label\n\"multi\nline\",0\n  ,1\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::EmptyField { line: 4, field, .. } if field == "text"), "{err}");
        let path = write(&dir, "e.csv", "text,label\na,0\nb,\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::EmptyField { line: 3, field, .. } if field == "label"), "{err}");
    }

    #[test]
    fn ragged_row_is_a_csv_error_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.csv", "text,label\na,0\nb,1,extra\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::Csv { line: 3, .. }), "{err}");
    }

    #[test]
    fn duplicate_header_names_are_an_error_naming_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.csv", "text,label,text\na,0,x\nb,1,y\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::DuplicateColumn { role: "text", count: 2, positions, .. } if positions == &[1, 3]), "{err}");
        assert!(err.to_string().contains("rename"), "{err}");
        // A repeated column that is not used is fine.
        let path = write(&dir, "e.csv", "text,label,note,note\na,0,x,y\nb,1,y,z\n");
        assert_eq!(load(&path, &ReadOptions::default()).unwrap().len(), 2);
    }

    #[test]
    fn missing_value_labels_are_errors_not_classes() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["NaN", "nan", "null", "None", "NA", "N/A"] {
            let path = write(&dir, "d.csv", &format!("text,label\na,0\nb,1\nc,{bad}\n"));
            let err = load(&path, &ReadOptions::default()).unwrap_err();
            assert!(matches!(&err, DataError::MissingLabel { line: 4, label, .. } if label == bad), "{bad}: {err}");
        }
        // A class that a given label map names is accepted as it is.
        let path = write(&dir, "v.csv", "text,label\na,NA\nb,EU\n");
        let map = LabelMap::new(vec!["EU".into(), "NA".into()]).unwrap();
        let ds = load(&path, &ReadOptions { label_map: Some(map), ..ReadOptions::default() }).unwrap();
        assert_eq!(ds.class_counts(), [1, 1]);
    }

    #[test]
    fn line_numbers_count_from_the_header_and_through_quoted_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.csv", "text,label\n\"one\ntwo\nthree\",0\nb,1,extra\n");
        assert!(matches!(load(&path, &ReadOptions::default()).unwrap_err(), DataError::Csv { line: 5, .. }));
        let path = write(&dir, "e.csv", "text,label\n,1\n");
        assert!(matches!(load(&path, &ReadOptions::default()).unwrap_err(), DataError::EmptyField { line: 2, .. }));
    }

    #[test]
    fn one_class_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.csv", "text,label\na,1\nb,1\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::OneClass { label, .. } if label == "1"), "{err}");
    }

    #[test]
    fn val_file_label_not_in_train_map_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let train = write(&dir, "train.csv", "text,label\na,neg\nb,pos\n");
        let val = write(&dir, "val.csv", "text,label\nc,pos\nd,neutral\n");
        let map = load(&train, &ReadOptions::default()).unwrap().labels;
        let opts = ReadOptions { label_map: Some(map), ..ReadOptions::default() };
        let err = load(&val, &opts).unwrap_err();
        assert!(
            matches!(&err, DataError::UnknownLabel { label, line: Some(3), known, .. }
                if label == "neutral" && known == &["neg", "pos"]),
            "{err}"
        );
        assert!(err.to_string().contains("val.csv:3"), "{err}");
    }

    #[test]
    fn val_file_with_one_class_loads_with_train_map() {
        let dir = tempfile::tempdir().unwrap();
        let val = write(&dir, "val.csv", "text,label\nc,pos\n");
        let map = LabelMap::new(vec!["neg".into(), "pos".into()]).unwrap();
        let opts = ReadOptions { label_map: Some(map.clone()), ..ReadOptions::default() };
        let ds = load(&val, &opts).unwrap();
        assert_eq!(ds.labels, map);
        assert_eq!(ds.class_counts(), [0, 1]);
    }

    #[test]
    fn write_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset {
            examples: vec![
                Example { text: "commas, here".into(), label: 1 },
                Example { text: "\"quoted\" and 'single'".into(), label: 0 },
                Example { text: "multi\nline\r\nwith CRLF".into(), label: 2 },
                Example { text: "  leading and trailing spaces  ".into(), label: 1 },
                Example { text: "unicode: café — ✓".into(), label: 0 },
            ],
            labels: LabelMap::new(vec!["neg".into(), "neutral, mixed".into(), "pos".into()]).unwrap(),
        };
        let path = dir.path().join("split.csv");
        write_csv(&ds, &path).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left behind");
        let back = load(&path, &ReadOptions::default()).unwrap();
        assert_eq!(back, ds);
        let with_map = ReadOptions { label_map: Some(ds.labels.clone()), ..ReadOptions::default() };
        assert_eq!(load(&path, &with_map).unwrap(), ds);
        // Writing again replaces the file.
        let smaller = ds.subset(&[0, 1, 2]);
        write_csv(&smaller, &path).unwrap();
        assert_eq!(load(&path, &ReadOptions::default()).unwrap(), smaller);
    }

    #[test]
    fn write_into_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset {
            examples: vec![Example { text: "a".into(), label: 0 }],
            labels: LabelMap::new(vec!["neg".into(), "pos".into()]).unwrap(),
        };
        let err = write_csv(&ds, &dir.path().join("no/such/dir/split.csv")).unwrap_err();
        assert!(matches!(&err, DataError::Write { .. }), "{err}");
    }
}
