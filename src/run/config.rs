//! The resolved configuration of a training run: everything that determines its result, written
//! to the run folder as config.json so a run can be resumed, repeated and compared.

use crate::data::DataSource;
use crate::error::{Error, Result};
use crate::model::precision::PrecisionChoice;
use crate::model::HeadKind;
use crate::optim::{OptimizerConfig, Schedule};
use crate::plan::TrainPlan;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a run learns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Sequence classification of labelled texts (accuracy; the best checkpoint has the highest
    /// validation accuracy).
    #[default]
    Classification,
    /// Causal language modelling on conversations, prompt / completion pairs or texts (a decoder
    /// with its language-model head; the best checkpoint has the lowest validation loss).
    CausalLm,
}

impl Task {
    /// The name on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::CausalLm => "causal-lm",
        }
    }

    /// Whether validation metrics `m` beat the best criterion so far (`best`, as [`Task::criterion`]
    /// gave it): a higher accuracy, or a lower causal-LM loss.
    pub fn improves(self, m: &crate::infer::Metrics, best: Option<f64>) -> bool {
        best.is_none_or(|b| match self {
            Task::Classification => m.accuracy > b,
            Task::CausalLm => m.loss < b,
        })
    }

    /// The number kept as the best validation result: accuracy, or the causal-LM loss.
    pub fn criterion(self, m: &crate::infer::Metrics) -> f64 {
        match self {
            Task::Classification => m.accuracy,
            Task::CausalLm => m.loss,
        }
    }
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "classification" => Ok(Task::Classification),
            "causal-lm" => Ok(Task::CausalLm),
            other => Err(Error::InvalidOption(format!("unknown --task {other:?}; use classification or causal-lm"))),
        }
    }
}

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The base model folder.
    pub model: PathBuf,
    /// Classification head (None: the checkpoint's own family).
    pub head: Option<HeadKind>,
    /// The data.
    pub data: DataSource,
    /// Text column of CSV/JSON files.
    pub text_column: String,
    /// Label column of CSV/JSON files.
    pub label_column: String,
    /// Truncation length in tokens, [CLS] and [SEP] included.
    pub max_length: usize,
    /// Pad every sequence to `max_length` (the seed's setting; costs time, changes nothing else).
    pub pad_to_max_length: bool,
    /// What trains.
    pub plan: TrainPlan,
    /// An adapter (PEFT folder) whose weights initialise the trainable tensors.
    pub init_adapter: Option<PathBuf>,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f32>,
    /// Epochs.
    pub epochs: u32,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Examples per inference batch during evaluation.
    pub eval_batch_size: usize,
    /// Also evaluate on validation every this many steps (besides each epoch's end).
    pub eval_every: Option<u64>,
    /// Seed of everything random: split, head and LoRA initialisation, shuffling, dropout.
    pub seed: u64,
    /// Drop each epoch's last incomplete batch.
    pub drop_last: bool,
    /// Length-bucketed batches.
    pub bucket: bool,
    /// Use only the first N training examples (quick runs).
    pub limit_train: Option<usize>,
    /// Write a resumable checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// The arithmetic of the base weights' products (`auto`: bf16 where the CPU has it).
    #[serde(default)]
    pub precision: PrecisionChoice,
    /// What the run learns.
    #[serde(default)]
    pub task: Task,
    /// A Jinja chat template file rendering the conversations (causal-LM; default: the model's).
    #[serde(default)]
    pub chat_template: Option<PathBuf>,
    /// Loss on every token of the causal-LM examples, prompts included (default: the assistant
    /// replies / completions only).
    #[serde(default)]
    pub train_on_prompt: bool,
}

impl Default for TrainConfig {
    /// The seed's hyperparameters.
    fn default() -> Self {
        TrainConfig {
            model: PathBuf::new(),
            head: None,
            data: DataSource::Split { path: PathBuf::new(), fractions: crate::data::DEFAULT_FRACTIONS },
            text_column: "text".into(),
            label_column: "label".into(),
            max_length: 512,
            pad_to_max_length: false,
            plan: TrainPlan::default(),
            init_adapter: None,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::default(),
            clip_grad_norm: None,
            epochs: 3,
            batch_size: 12,
            eval_batch_size: 64,
            eval_every: None,
            seed: 123,
            drop_last: true,
            bucket: false,
            limit_train: None,
            checkpoint_every: 200,
            precision: PrecisionChoice::Fp32,
            task: Task::Classification,
            chat_template: None,
            train_on_prompt: false,
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.as_os_str().is_empty() {
        return p.to_path_buf();
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl TrainConfig {
    /// The same configuration with every path (model, data, initial adapter) made absolute, so
    /// that a run folder resumes, evaluates and exports from any directory.
    pub fn absolutized(&self) -> TrainConfig {
        let mut c = self.clone();
        c.model = absolute(&c.model);
        c.init_adapter = c.init_adapter.as_deref().map(absolute);
        c.data = match &c.data {
            DataSource::Split { path, fractions } => DataSource::Split { path: absolute(path), fractions: *fractions },
            DataSource::Files { train, val, test } => {
                DataSource::Files { train: absolute(train), val: absolute(val), test: test.as_deref().map(absolute) }
            }
        };
        c
    }

    /// Checks that the inputs a run folder's configuration names exist: the base model (and the
    /// initial adapter); the data too when `data` (it is needed only until the split is recorded).
    /// A missing one is named: for a `recorded` configuration (a run's config.json) with how to
    /// repair the record, for a new one as a path given on the command line.
    pub fn check_inputs(&self, run_dir: &Path, data: bool, recorded: bool) -> Result<()> {
        let mut inputs: Vec<(&str, &Path)> = vec![("base model", &self.model)];
        if let Some(a) = &self.init_adapter {
            inputs.push(("initial adapter", a));
        }
        if data {
            match &self.data {
                DataSource::Split { path, .. } => inputs.push(("data", path)),
                DataSource::Files { train, val, test } => {
                    inputs.push(("training data", train));
                    inputs.push(("validation data", val));
                    if let Some(t) = test {
                        inputs.push(("test data", t));
                    }
                }
            }
        }
        for (what, p) in inputs {
            if !p.exists() && !recorded {
                return Err(Error::InvalidOption(format!(
                    "the {what} {} does not exist; check the path given on the command line",
                    p.display()
                )));
            }
            if !p.exists() {
                let hint = if p.is_relative() {
                    format!(
                        "it is a relative path (runs before this version recorded them so), read from the current folder {}: run the command from the folder the run was started in, or write the absolute path into {}",
                        std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
                        run_dir.join("config.json").display()
                    )
                } else {
                    format!("was it moved or deleted? Put it back, or write its new path into {}", run_dir.join("config.json").display())
                };
                return Err(Error::InvalidOption(format!("the run's {what} {} does not exist; {hint}", p.display())));
            }
        }
        Ok(())
    }

    /// The settings in which `recorded` (a run's or a sweep's recorded configuration, as JSON)
    /// differs from this one, each as "name: recorded then, this now". Paths compare absolute; a
    /// `max_length` that the recorded run clamped to the model's positions is not a difference.
    pub fn differences_from(&self, recorded: &serde_json::Value) -> Vec<String> {
        // Through the text form, as the record was made: f32 fields then read as the recorded ones.
        let requested: serde_json::Value =
            serde_json::to_string(&self.absolutized()).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let mut out = Vec::new();
        diff_values("", recorded, &requested, &mut out);
        out
    }

    /// Rejects settings that cannot work, naming the option.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOption(m));
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.optimizer.lr));
        }
        if !(0.0..1.0).contains(&self.schedule.warmup_ratio) {
            return bad(format!("--warmup-ratio must be in [0, 1), got {}", self.schedule.warmup_ratio));
        }
        if self.clip_grad_norm.is_some_and(|c| c.is_nan() || c <= 0.0) {
            return bad("--clip-grad-norm must be positive".into());
        }
        if self.checkpoint_every == 0 {
            return bad("--checkpoint-every must be at least 1".into());
        }
        if self.task == Task::CausalLm && self.head.is_some_and(|h| h != HeadKind::Lm) {
            return bad(format!("--task causal-lm trains the language-model head; drop --head {}", self.head.map_or("", HeadKind::name)));
        }
        if self.task == Task::Classification && (self.chat_template.is_some() || self.train_on_prompt) {
            return bad("--chat-template and --train-on-prompt are causal-LM options; add --task causal-lm".into());
        }
        self.plan.patterns.validate()?;
        self.plan.lora.validate()
    }
}

/// The first three of [`TrainConfig::differences_from`]'s differences, for a message.
pub fn describe_differences(diffs: &[String]) -> String {
    let mut s = diffs.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if diffs.len() > 3 {
        s += &format!("; and {} more", diffs.len() - 3);
    }
    s
}

/// Appends to `out` each leaf where `now` differs from `then` ("a.b: then then, now now");
/// objects are compared field by field, anything else as a whole. A `max_length` that went down
/// (clamped to the model's positions when the record was made) is not a difference.
fn diff_values(path: &str, then: &serde_json::Value, now: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    if let (Value::Object(a), Value::Object(b)) = (then, now) {
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            diff_values(&sub, a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), out);
        }
        return;
    }
    let clamped = path == "max_length" && then.as_u64().zip(now.as_u64()).is_some_and(|(t, n)| t < n);
    if then != now && !clamped {
        let short = |v: &Value| {
            let t = v.to_string();
            if t.chars().count() > 60 {
                format!("{}…", t.chars().take(60).collect::<String>())
            } else {
                t
            }
        };
        out.push(format!("{path}: {} then, {} now", short(then), short(now)));
    }
}
