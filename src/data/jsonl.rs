//! JSON datasets: JSON Lines (one object per line) and JSON arrays of objects.

use std::path::Path;

use serde_json::{Map, Value};

use super::error::{shorten, DataError};
use super::labels::RawExample;
use super::{build, read_text, Dataset, ReadOptions};

/// Reads a `.jsonl` / `.json` file: a JSON array of objects when the first non-blank character is
/// `[`, otherwise one object per non-blank line.
pub(crate) fn load_json(path: &Path, opts: &ReadOptions) -> Result<Dataset, DataError> {
    let text = read_text(path)?;
    let mut raws = Vec::new();
    if text.trim_start().starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(&text).map_err(|err| DataError::Json {
            path: path.to_path_buf(),
            line: err.line(),
            message: err.to_string(),
        })?;
        let lines = element_lines(&text);
        for (index, value) in values.into_iter().enumerate() {
            let line = lines.get(index).copied().unwrap_or(0);
            raws.push(record(value, path, line, opts)?);
        }
    } else {
        for (index, line_text) in text.lines().enumerate() {
            let line = index + 1;
            if line_text.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line_text).map_err(|err| {
                // serde_json counts lines within this one line: keep only the column.
                let message = err.to_string();
                let suffix = format!(" at line {} column {}", err.line(), err.column());
                let message = message.strip_suffix(&suffix).unwrap_or(&message);
                DataError::Json { path: path.to_path_buf(), line, message: format!("{message} at column {}", err.column()) }
            })?;
            raws.push(record(value, path, line, opts)?);
        }
        let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if json && raws.len() == 1 {
            return Err(DataError::Json {
                path: path.to_path_buf(),
                line: 1,
                message: "the file holds one JSON object, not an array of examples: write [ {...}, {...} ], or one object a line in a .jsonl file".into(),
            });
        }
    }
    build(path, raws, opts)
}

/// One JSON object → a raw example (text must be a string; label an integer or a string).
fn record(value: Value, path: &Path, line: usize, opts: &ReadOptions) -> Result<RawExample, DataError> {
    let Value::Object(mut object) = value else {
        return Err(DataError::Json {
            path: path.to_path_buf(),
            line,
            message: format!("expected an object, found {}", shorten(&value.to_string())),
        });
    };
    let bad = |field: &str, value: &Value, expected: &'static str| DataError::BadField {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        value: shorten(&value.to_string()),
        expected,
    };
    let empty = |field: &str| DataError::EmptyField { path: path.to_path_buf(), line, field: field.to_string() };
    let text = match take(&mut object, "text", &opts.text_column, path, line)? {
        Value::String(text) if text.trim().is_empty() => return Err(empty(&opts.text_column)),
        Value::String(text) => text,
        other => return Err(bad(&opts.text_column, &other, "a string")),
    };
    let label = match take(&mut object, "label", &opts.label_column, path, line)? {
        Value::String(label) if label.trim().is_empty() => return Err(empty(&opts.label_column)),
        Value::String(label) => label.trim().to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        other => return Err(bad(&opts.label_column, &other, "an integer or a string")),
    };
    let label_name = match object.remove(&opts.label_name_column) {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.trim().to_string()).filter(|name| !name.is_empty()),
        Some(other) => return Err(bad(&opts.label_name_column, &other, "a string")),
    };
    Ok(RawExample { text, label, label_name, line })
}

/// Removes a required field from a record, or names the fields it does have.
fn take(object: &mut Map<String, Value>, role: &'static str, field: &str, path: &Path, line: usize) -> Result<Value, DataError> {
    let present: Vec<String> = object.keys().cloned().collect();
    object.remove(field).ok_or_else(|| DataError::MissingField { path: path.to_path_buf(), line, role, field: field.to_string(), present })
}

/// The 1-based line on which each element of a top-level JSON array starts.
///
/// Only meaningful for text that parses as JSON (it is called after parsing succeeded): it tracks
/// nesting and string literals, and records the line of the first character of each depth-1 element.
fn element_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut depth) = (1, 0usize);
    let (mut in_string, mut escaped, mut expecting) = (false, false, false);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if depth == 1 && expecting && !c.is_whitespace() && c != ']' {
            lines.push(line);
            expecting = false;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    expecting = true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, Example};
    use std::path::PathBuf;

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn reads_json_lines_with_number_and_string_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.jsonl", "{\"text\": \"good\", \"label\": 1}\n\n{\"text\": \"bad\", \"label\": \"0\"}\n");
        let ds = load(&path, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels.names(), ["0", "1"]);
        assert_eq!(ds.examples[1], Example { text: "bad".into(), label: 0 });

        let path = write(&dir, "s.jsonl", "{\"text\": \"good\", \"label\": \"positive\"}\n{\"text\": \"bad\", \"label\": \"negative\"}\n");
        let ds = load(&path, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels.names(), ["negative", "positive"]);
        assert_eq!(ds.examples[0].label, 1);
    }

    #[test]
    fn reads_json_array_with_label_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "d.json",
            r#"[
  {"text": "a [bracket], \"quote\" {brace}", "label": 0, "label_name": "rotten"},
  {"text": "b", "label": 1, "label_name": "fresh"}
]"#,
        );
        let ds = load(&path, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels.names(), ["rotten", "fresh"]);
        assert_eq!(ds.examples[0].text, "a [bracket], \"quote\" {brace}");
    }

    #[test]
    fn array_element_errors_name_the_element_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.json", "[\n  {\"text\": \"a\", \"label\": 0},\n  {\"text\": \"b\",\n   \"label\": 1.5}\n]\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::BadField { line: 3, field, value, .. } if field == "label" && value == "1.5"), "{err}");
    }

    #[test]
    fn malformed_json_line_reports_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.jsonl", "{\"text\": \"a\", \"label\": 0}\n{\"text\": \"b\", \"label\": 1\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::Json { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("d.jsonl:2"), "{err}");
        assert!(!err.to_string().contains("line 1"), "{err}");

        let path = write(&dir, "n.jsonl", "{\"text\": \"a\", \"label\": 0}\n[1, 2]\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::Json { line: 2, .. }), "{err}");
    }

    #[test]
    fn missing_field_lists_the_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.jsonl", "{\"text\": \"a\", \"label\": 0}\n{\"sentence\": \"b\", \"label\": 1}\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingField { line: 2, field, present, .. }
                if field == "text" && present.contains(&"sentence".to_string())),
            "{err}"
        );
    }

    #[test]
    fn empty_text_and_non_string_text_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "d.jsonl", "{\"text\": \"a\", \"label\": 0}\n{\"text\": \" \", \"label\": 1}\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::EmptyField { line: 2, .. }), "{err}");
        let path = write(&dir, "e.jsonl", "{\"text\": 5, \"label\": 0}\n");
        let err = load(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::BadField { line: 1, .. }), "{err}");
    }

    #[test]
    fn empty_json_files_have_no_examples() {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in [("a.jsonl", ""), ("b.jsonl", "\n\n"), ("c.json", "[]")] {
            let path = write(&dir, name, contents);
            let err = load(&path, &ReadOptions::default()).unwrap_err();
            assert!(matches!(&err, DataError::NoExamples { .. }), "{name}: {err}");
        }
    }

    #[test]
    fn element_lines_skip_strings_and_nesting() {
        let text = "[{\"a\": \"],[\"}, \n {\"b\": [1,\n 2]},\n\n \"x\"]";
        assert_eq!(element_lines(text), [1, 2, 5]);
    }
}
