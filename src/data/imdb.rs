//! The aclImdb folder layout: `{train,test}/{pos,neg}/*.txt`, one review per file.

use std::path::{Path, PathBuf};

use super::error::DataError;
use super::labels::LabelMap;
use super::{read_text, Dataset, Example, ReadOptions};

/// The two halves of aclImdb, in the order they are merged.
const HALVES: [&str; 2] = ["test", "train"];
/// The class folders, in id order: neg = 0, pos = 1.
const CLASSES: [&str; 2] = ["neg", "pos"];

/// Reads an aclImdb folder into one dataset, labels neg = 0 and pos = 1.
///
/// `dir` may be the aclImdb root (with `train/` and/or `test/`, each holding `pos/` and `neg/`) or one
/// half (holding `pos/` and `neg/` itself). Other entries (`unsup/`, `*.feat`, `urls_*.txt`, `imdb.vocab`,
/// `README`) are ignored. The order is deterministic: sorted by half (test, then train), then class (neg,
/// then pos), then file name (byte order, so `10_2.txt` comes before `1_1.txt`). The text of each file is
/// kept as is, `<br />` tags included. With [`ReadOptions::label_map`] set, `neg` and `pos` are resolved
/// through it.
pub(crate) fn load_imdb(dir: &Path, opts: &ReadOptions) -> Result<Dataset, DataError> {
    let mut halves: Vec<PathBuf> = HALVES.iter().map(|half| dir.join(half)).filter(|half| half.is_dir()).collect();
    if halves.is_empty() {
        if CLASSES.iter().any(|class| dir.join(class).is_dir()) {
            halves.push(dir.to_path_buf());
        } else {
            return Err(not_imdb(dir, "it has no train/ or test/ folder, nor pos/ and neg/"));
        }
    }
    let map = match &opts.label_map {
        Some(map) => map.clone(),
        None => LabelMap::new(CLASSES.iter().map(|class| class.to_string()).collect())?,
    };
    let ids = [map.id_at(CLASSES[0], dir, None)?, map.id_at(CLASSES[1], dir, None)?];
    let mut examples = Vec::new();
    let mut counts = [0usize; 2];
    for half in &halves {
        for (class, (name, &id)) in CLASSES.iter().zip(&ids).enumerate() {
            let folder = half.join(name);
            if !folder.is_dir() {
                return Err(not_imdb(half, &format!("it has no {name}/ folder")));
            }
            for file in txt_files(&folder)? {
                let text = read_text(&file)?;
                if text.trim().is_empty() {
                    return Err(DataError::EmptyField { path: file, line: 1, field: "text".to_string() });
                }
                examples.push(Example { text, label: id });
                counts[class] += 1;
            }
        }
    }
    if examples.is_empty() {
        return Err(DataError::NoExamples { path: dir.to_path_buf() });
    }
    if let Some(class) = counts.iter().position(|&count| count == examples.len()) {
        return Err(DataError::OneClass { path: dir.to_path_buf(), label: CLASSES[class].to_string() });
    }
    Ok(Dataset { examples, labels: map })
}

/// The `*.txt` files in `folder`, sorted by file name.
fn txt_files(folder: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read_error = |source| DataError::Read { path: folder.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.extension().is_some_and(|ext| ext == "txt") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The "not aclImdb-shaped" error, listing what the folder does contain.
fn not_imdb(dir: &Path, problem: &str) -> DataError {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if entry.path().is_dir() {
                        format!("{name}/")
                    } else {
                        name
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    DataError::NotImdbLayout { path: dir.to_path_buf(), problem: problem.to_string(), found }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load;

    fn review(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn tiny_imdb() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        review(root, "train/pos/1_9.txt", "train pos 1");
        review(root, "train/pos/0_10.txt", "train pos 0");
        review(root, "train/neg/3_2.txt", "train neg 3");
        review(root, "test/pos/2_8.txt", "test pos 2");
        review(root, "test/neg/5_1.txt", "test neg 5<br /><br />second line");
        review(root, "train/unsup/9_0.txt", "unlabelled");
        review(root, "train/labeledBow.feat", "0 0:1");
        review(root, "imdb.vocab", "the");
        dir
    }

    #[test]
    fn reads_both_halves_in_a_fixed_order_and_skips_unsup() {
        let dir = tiny_imdb();
        let ds = load(dir.path(), &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels.names(), ["neg", "pos"]);
        let got: Vec<(&str, usize)> = ds.examples.iter().map(|e| (e.text.as_str(), e.label)).collect();
        assert_eq!(
            got,
            [("test neg 5<br /><br />second line", 0), ("test pos 2", 1), ("train neg 3", 0), ("train pos 0", 1), ("train pos 1", 1),]
        );
    }

    #[test]
    fn reads_a_single_half() {
        let dir = tiny_imdb();
        let ds = load(&dir.path().join("train"), &ReadOptions::default()).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.class_counts(), [1, 2]);
    }

    #[test]
    fn folder_without_the_layout_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        review(dir.path(), "reviews/a.txt", "x");
        let err = load(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::NotImdbLayout { found, .. } if found == &["reviews/"]), "{err}");

        let dir = tempfile::tempdir().unwrap();
        review(dir.path(), "train/pos/1_9.txt", "good");
        let err = load(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DataError::NotImdbLayout { path, problem, .. }
                if path.ends_with("train") && problem.contains("neg/")),
            "{err}"
        );
    }

    #[test]
    fn empty_class_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train/pos")).unwrap();
        std::fs::create_dir_all(dir.path().join("train/neg")).unwrap();
        let err = load(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::NoExamples { .. }), "{err}");
        review(dir.path(), "train/pos/1_9.txt", "good");
        let err = load(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::OneClass { label, .. } if label == "pos"), "{err}");
    }

    #[test]
    fn bad_review_file_is_named() {
        let dir = tiny_imdb();
        std::fs::write(dir.path().join("train/neg/4_1.txt"), b"ok\nbad \xff byte").unwrap();
        let err = load(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::InvalidUtf8 { path, line: 2, column: 5 } if path.ends_with("4_1.txt")), "{err}");
        std::fs::write(dir.path().join("train/neg/4_1.txt"), "  \n").unwrap();
        let err = load(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, DataError::EmptyField { path, .. } if path.ends_with("4_1.txt")), "{err}");
    }
}
