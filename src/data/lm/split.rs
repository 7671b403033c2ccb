//! A causal-LM training run's examples: one file split with the run's seed (the rule of
//! [`crate::data::split()`]) or the user's own files, recorded in the run folder as train.jsonl /
//! val.jsonl / test.jsonl (so that every resume, and `lowrank eval`, sees the same examples),
//! then rendered and tokenised.

use super::{load, read_jsonl, LmEncoded, LmFile, LmOptions};
use crate::data::split::split_indices;
use crate::data::DataSource;
use crate::error::Result;
use crate::tokenize::Tokenizer;
use std::path::{Path, PathBuf};

/// A causal-LM run's tokenised splits.
#[derive(Debug, Clone)]
pub struct LmSplits {
    /// Training examples.
    pub train: LmEncoded,
    /// Validation examples.
    pub val: LmEncoded,
    /// Test examples (absent when the user's split has none).
    pub test: Option<LmEncoded>,
}

/// The recorded files of a run folder: train.jsonl, val.jsonl and test.jsonl (when there is one).
pub fn recorded(run_dir: &Path) -> (PathBuf, PathBuf, Option<PathBuf>) {
    let test = run_dir.join("test.jsonl");
    (run_dir.join("train.jsonl"), run_dir.join("val.jsonl"), test.exists().then_some(test))
}

/// Writes `records[idx]` of `file` as JSON Lines at `path`.
fn write_records(file: &LmFile, idx: &[usize], path: &Path) -> Result<()> {
    let mut text = String::new();
    for &i in idx {
        text.push_str(&file.records[i].sample.to_json().to_string());
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// Records the split of `source` in `run_dir` unless it is there already: a single file is
/// split with `seed`; the user's files are copied record by record (read first, so that a bad
/// line is reported against the user's file).
pub fn record_split(source: &DataSource, seed: u64, run_dir: &Path) -> Result<()> {
    let (train_path, val_path, _) = recorded(run_dir);
    if train_path.exists() && val_path.exists() {
        return Ok(());
    }
    let all = |f: &LmFile| (0..f.records.len()).collect::<Vec<_>>();
    match source {
        DataSource::Split { path, fractions } => {
            let file = read_jsonl(path)?;
            let (train, val, test) = split_indices(file.records.len(), seed, *fractions)?;
            write_records(&file, &test, &run_dir.join("test.jsonl"))?;
            write_records(&file, &val, &val_path)?;
            write_records(&file, &train, &train_path)?;
        }
        DataSource::Files { train, val, test } => {
            if let Some(test) = test {
                let f = read_jsonl(test)?;
                write_records(&f, &all(&f), &run_dir.join("test.jsonl"))?;
            }
            let f = read_jsonl(val)?;
            write_records(&f, &all(&f), &val_path)?;
            let f = read_jsonl(train)?;
            write_records(&f, &all(&f), &train_path)?;
        }
    }
    Ok(())
}

/// Records (see [`record_split`]) and loads a run's splits: rendered with `chat_template` (or the
/// tokenizer's template) and tokenised with `opts`; the training split keeps its first
/// `limit_train` examples when given.
pub fn prepare_lm(
    source: &DataSource,
    seed: u64,
    run_dir: &Path,
    tokenizer: &Tokenizer,
    chat_template: Option<&Path>,
    opts: &LmOptions,
    limit_train: Option<usize>,
) -> Result<LmSplits> {
    record_split(source, seed, run_dir)?;
    let (train, val, test) = recorded(run_dir);
    let mut train = load(&train, tokenizer, chat_template, opts)?;
    if let Some(n) = limit_train {
        train.examples.truncate(n);
    }
    Ok(LmSplits {
        train,
        val: load(&val, tokenizer, chat_template, opts)?,
        test: test.map(|t| load(&t, tokenizer, chat_template, opts)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_splits_by_the_seed_once_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d.jsonl");
        let lines: String = (0..20).map(|i| format!("{{\"prompt\": \"q{i} \", \"completion\": \"a{i}\"}}\n")).collect();
        std::fs::write(&data, lines).unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let source = DataSource::Split { path: data.clone(), fractions: (0.5, 0.25, 0.25) };
        record_split(&source, 3, &run).unwrap();
        let (train, val, test) = recorded(&run);
        let read = |p: &Path| read_jsonl(p).unwrap().records.into_iter().map(|r| r.sample).collect::<Vec<_>>();
        let (tr, va, te) = (read(&train), read(&val), read(&test.unwrap()));
        assert_eq!((tr.len(), va.len(), te.len()), (10, 5, 5));
        let mut all: Vec<_> = tr.iter().chain(&va).chain(&te).map(|s| s.to_json().to_string()).collect();
        all.sort();
        let mut want: Vec<_> = read(&data).iter().map(|s| s.to_json().to_string()).collect();
        want.sort();
        assert_eq!(all, want, "the three parts partition the file");
        // Recorded once: a changed source does not change the run's split.
        std::fs::write(&data, "{\"prompt\": \"x\", \"completion\": \"y\"}\n").unwrap();
        record_split(&source, 3, &run).unwrap();
        assert_eq!(read(&train), tr);
    }
}
