//! A run's examples: load and split (or load the user's split), record the split in the run
//! folder (so every run and every resume sees the same one), and tokenise.

use super::batch::Encoded;
use super::{Dataset, LabelMap, ReadOptions};
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the examples come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataSource {
    /// One labelled file (or aclImdb folder), split with the run's seed.
    Split {
        /// The file or folder.
        path: PathBuf,
        /// Train / validation / test fractions.
        fractions: (f64, f64, f64),
    },
    /// A split brought by the user.
    Files {
        /// Training file.
        train: PathBuf,
        /// Validation file.
        val: PathBuf,
        /// Test file, if any.
        test: Option<PathBuf>,
    },
}

/// What a run's data is and how to read it.
#[derive(Clone, Copy, Debug)]
pub struct RunData<'a> {
    /// The source.
    pub source: &'a DataSource,
    /// Text column of CSV/JSON files.
    pub text_column: &'a str,
    /// Label column of CSV/JSON files.
    pub label_column: &'a str,
    /// Seed of the split.
    pub seed: u64,
}

/// A run's tokenised splits.
pub struct RunSplits {
    /// The classes.
    pub labels: LabelMap,
    /// Training examples.
    pub train: Encoded,
    /// Validation examples.
    pub val: Encoded,
    /// Test examples (absent when the user's split has none).
    pub test: Option<Encoded>,
    /// Mean tokens per training example.
    pub mean_train_tokens: f64,
}

impl RunData<'_> {
    fn opts(&self, map: Option<LabelMap>) -> ReadOptions {
        ReadOptions {
            text_column: self.text_column.to_string(),
            label_column: self.label_column.to_string(),
            label_map: map,
            ..Default::default()
        }
    }

    /// Reads the run's split without writing anything: from the run folder when it was recorded
    /// there (`recorded` is then true), otherwise from the source (split with the run's seed).
    pub fn read_split(&self, run_dir: &Path) -> Result<Loaded> {
        let recorded = run_dir.join("labels.json");
        if recorded.exists() {
            let map: LabelMap = crate::fsutil::read_json(&recorded, "labels.json")?;
            let o = ReadOptions { label_map: Some(map), ..Default::default() };
            let test = run_dir.join("test.csv");
            let test = if test.exists() { Some(super::load(&test, &o)?) } else { None };
            let (train, val) = (super::load(&run_dir.join("train.csv"), &o)?, super::load(&run_dir.join("val.csv"), &o)?);
            return Ok(Loaded { train, val, test, recorded: true });
        }
        let (train, val, test) = match self.source {
            DataSource::Split { path, fractions } => {
                let all = super::load(path, &self.opts(None))?;
                let s = super::split(&all, self.seed, *fractions)?;
                (s.train, s.val, Some(s.test))
            }
            DataSource::Files { train, val, test } => {
                let t = super::load(train, &self.opts(None))?;
                let map = Some(t.labels.clone());
                let v = super::load(val, &self.opts(map.clone()))?;
                let te = test.as_ref().map(|p| super::load(p, &self.opts(map))).transpose()?;
                (t, v, te)
            }
        };
        Ok(Loaded { train, val, test, recorded: false })
    }

    /// Loads the run's split ([`RunData::read_split`]) and records it in the run folder when it
    /// was not recorded yet.
    pub fn load_split(&self, run_dir: &Path) -> Result<(Dataset, Dataset, Option<Dataset>)> {
        let loaded = self.read_split(run_dir)?;
        if !loaded.recorded {
            loaded.record(run_dir)?;
        }
        Ok((loaded.train, loaded.val, loaded.test))
    }

    /// Loads, records and tokenises the run's data; the training split keeps its first
    /// `limit_train` examples when given, and must hold at least `min_train` of them.
    pub fn prepare(&self, run_dir: &Path, tokenizer: &Tokenizer, limit_train: Option<usize>, min_train: usize) -> Result<RunSplits> {
        let loaded = self.read_split(run_dir)?;
        let splits = loaded.encode(tokenizer, limit_train, min_train)?;
        if !loaded.recorded {
            loaded.record(run_dir)?;
        }
        Ok(splits)
    }
}

/// A run's split as read, before it is recorded.
pub struct Loaded {
    /// Training examples.
    pub train: Dataset,
    /// Validation examples.
    pub val: Dataset,
    /// Test examples.
    pub test: Option<Dataset>,
    /// Whether they came from the run folder's record.
    pub recorded: bool,
}

impl Loaded {
    /// Records the split in the run folder (train.csv, val.csv, test.csv, labels.json last), so
    /// that every resume sees the same one.
    pub fn record(&self, run_dir: &Path) -> Result<()> {
        super::write_csv(&self.train, &run_dir.join("train.csv"))?;
        super::write_csv(&self.val, &run_dir.join("val.csv"))?;
        if let Some(t) = &self.test {
            super::write_csv(t, &run_dir.join("test.csv"))?;
        }
        crate::fsutil::write_json(&run_dir.join("labels.json"), &self.train.labels)
    }

    /// Tokenises the splits; the training split keeps its first `limit_train` examples when
    /// given, and must hold at least `min_train` of them.
    pub fn encode(&self, tokenizer: &Tokenizer, limit_train: Option<usize>, min_train: usize) -> Result<RunSplits> {
        let mut train = self.train.clone();
        if let Some(n) = limit_train {
            train.examples.truncate(n);
        }
        if train.examples.len() < min_train {
            return Err(Error::InvalidOption(format!(
                "the training split has {} examples, fewer than one batch of {min_train}; lower --batch-size or add data",
                train.examples.len(),
            )));
        }
        let train_enc = encode(&train, tokenizer)?;
        let mean = train_enc.mean_len();
        Ok(RunSplits {
            labels: train.labels.clone(),
            train: train_enc,
            val: encode(&self.val, tokenizer)?,
            test: self.test.as_ref().map(|t| encode(t, tokenizer)).transpose()?,
            mean_train_tokens: mean,
        })
    }
}

/// Tokenises a dataset.
pub fn encode(ds: &Dataset, tokenizer: &Tokenizer) -> Result<Encoded> {
    let texts: Vec<&str> = ds.examples.iter().map(|e| e.text.as_str()).collect();
    Ok(Encoded { ids: tokenizer.encode_batch(&texts)?, labels: ds.examples.iter().map(|e| e.label).collect() })
}
