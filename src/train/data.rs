//! The examples a run trains and validates on, whichever its task: labelled texts
//! ([`crate::data::record`]) or causal-LM examples with their loss masks
//! ([`crate::data::lm::split`]), behind one surface the training loop uses (lengths, batches,
//! evaluation).

use crate::data::batch::{Batch, Encoded};
use crate::data::lm::{self, LmEncoded, LmExample, LmOptions};
use crate::data::{LabelMap, RunData};
use crate::error::{Error, Result};
use crate::infer::{evaluate, evaluate_lm, Metrics};
use crate::model::{Activations, Model};
use crate::run::{Task, TrainConfig};
use crate::tokenize::Tokenizer;
use std::path::Path;

/// One split's tokenised examples.
pub enum Examples {
    /// Labelled texts.
    Classes(Encoded),
    /// Causal-LM examples.
    Lm(Vec<LmExample>),
}

impl Examples {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            Examples::Classes(e) => e.len(),
            Examples::Lm(e) => e.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens of each example (for length bucketing).
    pub fn lengths(&self) -> Vec<usize> {
        match self {
            Examples::Classes(e) => e.ids.iter().map(Vec::len).collect(),
            Examples::Lm(e) => e.iter().map(|x| x.ids.len()).collect(),
        }
    }

    /// Examples `idx` as one batch; `pad_to` pads classification sequences (causal-LM batches are
    /// never padded).
    pub fn batch(&self, idx: &[usize], pad_to: Option<usize>, pad_id: u32) -> Batch {
        match self {
            Examples::Classes(e) => e.batch(idx, pad_to, pad_id),
            Examples::Lm(e) => crate::infer::lm_eval::lm_batch(e, idx),
        }
    }

    /// The model's metrics on every example (inference mode, `batch_size` examples at a time):
    /// accuracy over the classes `names`, or the causal-LM loss and perplexity.
    pub fn evaluate(&self, model: &Model, acts: &mut Activations, names: &[String], batch_size: usize, pad_id: u32) -> Metrics {
        match self {
            Examples::Classes(e) => evaluate(model, acts, &e.ids, &e.labels, names, batch_size, pad_id),
            Examples::Lm(e) => evaluate_lm(model, acts, e, batch_size),
        }
    }
}

/// A run's tokenised splits.
pub struct TaskData {
    /// The classes (classification).
    pub labels: Option<LabelMap>,
    /// Training examples.
    pub train: Examples,
    /// Validation examples.
    pub val: Examples,
    /// Test examples (absent when the user's split has none).
    pub test: Option<Examples>,
    /// Mean tokens per training example.
    pub mean_train_tokens: f64,
}

impl TaskData {
    /// The class names (empty for a causal LM).
    pub fn names(&self) -> &[String] {
        self.labels.as_ref().map_or(&[], LabelMap::names)
    }

    /// Checks that every token id is below the model's vocabulary size `vocab` (a tokenizer that
    /// does not belong to the model would index past its embeddings).
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        let parts = [Some(&self.train), Some(&self.val), self.test.as_ref()];
        let max = parts
            .iter()
            .flatten()
            .flat_map(|e| match e {
                Examples::Classes(c) => c.ids.iter().flatten().max().copied(),
                Examples::Lm(l) => l.iter().flat_map(|x| x.ids.iter()).max().copied(),
            })
            .max();
        match max {
            Some(id) if id as usize >= vocab => Err(Error::InvalidOption(format!(
                "the tokenizer gives token id {id}, but the model's vocabulary has {vocab} tokens: the tokenizer files do not belong to this model; put the model's own tokenizer.json beside its config.json"
            ))),
            _ => Ok(()),
        }
    }

    /// One line describing the splits, for the run's log.
    pub fn describe(&self) -> String {
        let counts =
            format!("{} train / {} val / {} test examples", self.train.len(), self.val.len(), self.test.as_ref().map_or(0, Examples::len));
        match &self.labels {
            Some(l) => format!("{counts}, {} classes", l.len()),
            None => format!("{counts}, {:.1} tokens per training example", self.mean_train_tokens),
        }
    }
}

/// Loads, records (in `run_dir`) and tokenises a run's data for its task; the training split keeps
/// its first `cfg.limit_train` examples and must hold at least `min_train`. Truncated causal-LM
/// examples are counted in a warning through `log`.
pub fn prepare(cfg: &TrainConfig, run_dir: &Path, tokenizer: &Tokenizer, min_train: usize, log: &dyn Fn(&str)) -> Result<TaskData> {
    match cfg.task {
        Task::Classification => {
            let data = RunData { source: &cfg.data, text_column: &cfg.text_column, label_column: &cfg.label_column, seed: cfg.seed };
            let s = data.prepare(run_dir, tokenizer, cfg.limit_train, min_train)?;
            Ok(TaskData {
                labels: Some(s.labels),
                train: Examples::Classes(s.train),
                val: Examples::Classes(s.val),
                test: s.test.map(Examples::Classes),
                mean_train_tokens: s.mean_train_tokens,
            })
        }
        Task::CausalLm => {
            let opts = LmOptions { max_length: cfg.max_length, train_on_prompt: cfg.train_on_prompt, drop_long_prompts: true };
            let s = lm::prepare_lm(&cfg.data, cfg.seed, run_dir, tokenizer, cfg.chat_template.as_deref(), &opts, cfg.limit_train)?;
            for (name, enc) in [("train", Some(&s.train)), ("val", Some(&s.val)), ("test", s.test.as_ref())] {
                if let Some(t) = enc.map(|e| e.truncation).filter(|t| t.any()) {
                    log(&format!("warning: {name}: {t}"));
                }
            }
            if s.train.examples.len() < min_train {
                return Err(Error::InvalidOption(format!(
                    "the training split has {} examples, fewer than one batch of {min_train}; lower --batch-size or add data",
                    s.train.examples.len(),
                )));
            }
            let lm = |e: LmEncoded| Examples::Lm(e.examples);
            let tokens: usize = s.train.examples.iter().map(|e| e.ids.len()).sum();
            let mean_train_tokens = tokens as f64 / s.train.examples.len().max(1) as f64;
            Ok(TaskData { labels: None, train: lm(s.train), val: lm(s.val), test: s.test.map(lm), mean_train_tokens })
        }
    }
}
