//! Getting a run's examples: load and split (or load the user's split), record the split in the
//! run folder (so every run and every resume sees the same one), and tokenise.

use super::batches::Encoded;
use super::config::{DataSource, TrainConfig};
use crate::data::{self, Dataset, LabelMap, LoadOptions};
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;
use std::path::Path;

/// A run's tokenised splits.
pub struct RunData {
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

fn opts(cfg: &TrainConfig, map: Option<LabelMap>) -> LoadOptions {
    LoadOptions { text_column: cfg.text_column.clone(), label_column: cfg.label_column.clone(), label_map: map, ..Default::default() }
}

/// Tokenises a dataset.
pub fn encode(ds: &Dataset, tokenizer: &Tokenizer) -> Result<Encoded> {
    let texts: Vec<&str> = ds.examples.iter().map(|e| e.text.as_str()).collect();
    Ok(Encoded { ids: tokenizer.encode_batch(&texts)?, labels: ds.examples.iter().map(|e| e.label).collect() })
}

/// Loads the run's split: from the run folder when it was recorded there, otherwise from the
/// configured source (and then records it).
pub fn load_split(cfg: &TrainConfig, run_dir: &Path) -> Result<(Dataset, Dataset, Option<Dataset>)> {
    let recorded = run_dir.join("labels.json");
    if recorded.exists() {
        let map: LabelMap = crate::fsutil::read_json(&recorded, "labels.json")?;
        let o = opts(cfg, Some(map));
        let o = LoadOptions { text_column: "text".into(), label_column: "label".into(), ..o };
        let test = run_dir.join("test.csv");
        let test = if test.exists() { Some(data::load(&test, &o)?) } else { None };
        return Ok((data::load(&run_dir.join("train.csv"), &o)?, data::load(&run_dir.join("val.csv"), &o)?, test));
    }
    let (train, val, test) = match &cfg.data {
        DataSource::Split { path, fractions } => {
            let all = data::load(path, &opts(cfg, None))?;
            let s = data::split(&all, cfg.seed, *fractions)?;
            (s.train, s.val, Some(s.test))
        }
        DataSource::Files { train, val, test } => {
            let t = data::load(train, &opts(cfg, None))?;
            let map = Some(t.labels.clone());
            let v = data::load(val, &opts(cfg, map.clone()))?;
            let te = test.as_ref().map(|p| data::load(p, &opts(cfg, map))).transpose()?;
            (t, v, te)
        }
    };
    data::write_csv(&train, &run_dir.join("train.csv"))?;
    data::write_csv(&val, &run_dir.join("val.csv"))?;
    if let Some(t) = &test {
        data::write_csv(t, &run_dir.join("test.csv"))?;
    }
    crate::fsutil::write_json(&recorded, &train.labels)?;
    Ok((train, val, test))
}

/// Loads, records and tokenises the run's data.
pub fn prepare(cfg: &TrainConfig, run_dir: &Path, tokenizer: &Tokenizer) -> Result<RunData> {
    let (mut train, val, test) = load_split(cfg, run_dir)?;
    if let Some(n) = cfg.limit_train {
        train.examples.truncate(n);
    }
    if train.examples.len() < cfg.batch_size && cfg.drop_last {
        return Err(Error::InvalidOption(format!(
            "the training split has {} examples, fewer than one batch of {}; lower --batch-size or add data",
            train.examples.len(),
            cfg.batch_size
        )));
    }
    let train_enc = encode(&train, tokenizer)?;
    let mean = train_enc.mean_len();
    Ok(RunData {
        labels: train.labels.clone(),
        train: train_enc,
        val: encode(&val, tokenizer)?,
        test: test.as_ref().map(|t| encode(t, tokenizer)).transpose()?,
        mean_train_tokens: mean,
    })
}
