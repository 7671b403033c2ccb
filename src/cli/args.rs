//! Command-line options shared by several commands: the model, the data, and what trains.

use crate::error::{Error, Result};
use crate::lora::{LoraConfig, Scaling, SeedFlags, TargetModules};
use crate::model::HeadKind;
use crate::plan::{TrainMode, TrainPlan};
use crate::train::optim::{OptimizerConfig, OptimizerKind, Schedule};
use crate::train::{DataSource, TrainConfig};
use clap::Args;
use std::path::PathBuf;

/// Which model and head.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Base model: a Hugging Face model folder (config.json + model.safetensors), a bare
    /// config.json (counting only), or a hub id such as distilbert-base-uncased (downloaded into
    /// the Hugging Face cache).
    #[arg(long, value_name = "DIR|ID")]
    pub model: Option<String>,
    /// Classification head: distilbert (pre_classifier → ReLU → classifier; a BERT checkpoint is
    /// then converted to DistilBERT form) or bert (pooler → tanh → classifier). Default: the
    /// checkpoint's own.
    #[arg(long, value_name = "KIND")]
    pub head: Option<HeadKind>,
}

/// What trains (the seed's flags or PEFT-style target modules) and the LoRA hyperparameters.
#[derive(Args, Debug, Clone, Default)]
pub struct PlanArgs {
    /// lora (frozen base + LoRA), last-layers (only the two head linears), or full.
    #[arg(long, default_value = "lora")]
    pub mode: TrainMode,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    /// LoRA alpha (see --scaling).
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f32,
    /// raschka (the seed's: scale = alpha, A ~ N(0, 1/r)), peft (scale = alpha/r, kaiming A) or rslora (alpha/√r).
    #[arg(long, default_value = "raschka")]
    pub scaling: Scaling,
    /// Dropout on the LoRA branch input (PEFT's lora_dropout).
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f32,
    /// LoRA on the attention query projections (the default targets are query + value).
    #[arg(long)]
    pub lora_query: bool,
    /// LoRA on the attention key projections.
    #[arg(long)]
    pub lora_key: bool,
    /// LoRA on the attention value projections.
    #[arg(long)]
    pub lora_value: bool,
    /// LoRA on the attention output projections.
    #[arg(long)]
    pub lora_projection: bool,
    /// LoRA on both feed-forward linears.
    #[arg(long)]
    pub lora_mlp: bool,
    /// LoRA on the head's two linears.
    #[arg(long)]
    pub lora_head: bool,
    /// PEFT-style targets instead of the flags: comma-separated module names (matched as dotted
    /// suffixes), `re:REGEX` (full match), or `all-linear`.
    #[arg(long, value_name = "LIST|re:REGEX|all-linear")]
    pub target_modules: Option<String>,
    /// Modules trained in full beside LoRA (comma-separated names, PEFT's modules_to_save).
    #[arg(long, value_delimiter = ',')]
    pub modules_to_save: Vec<String>,
}

impl PlanArgs {
    /// The resolved plan.
    pub fn plan(&self, seed: u64) -> Result<TrainPlan> {
        let flags = SeedFlags {
            query: self.lora_query,
            key: self.lora_key,
            value: self.lora_value,
            projection: self.lora_projection,
            mlp: self.lora_mlp,
            head: self.lora_head,
        };
        let targets = match self.target_modules.as_deref() {
            Some(_) if !flags.is_empty() => {
                return Err(Error::InvalidOption("use either the --lora-* flags or --target-modules, not both".into()))
            }
            Some("all-linear") => TargetModules::AllLinear,
            Some(t) if t.starts_with("re:") => TargetModules::Regex(t[3..].to_string()),
            Some(t) => TargetModules::Names(t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()),
            None if flags.is_empty() => TargetModules::Flags(SeedFlags::query_value()),
            None => TargetModules::Flags(flags),
        };
        let lora = LoraConfig { r: self.lora_r, alpha: self.lora_alpha, scaling: self.scaling, dropout: self.lora_dropout };
        Ok(TrainPlan { mode: self.mode, lora, targets, modules_to_save: self.modules_to_save.clone(), seed })
    }
}

/// Where the labelled data comes from.
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Labelled data to split: .csv/.tsv (text,label columns), .jsonl/.json, or an aclImdb folder.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Your own training file (with --val, and optionally --test) instead of --data.
    #[arg(long, value_name = "PATH", requires = "val", conflicts_with = "data")]
    pub train: Option<PathBuf>,
    /// Your own validation file.
    #[arg(long, value_name = "PATH")]
    pub val: Option<PathBuf>,
    /// Your own test file.
    #[arg(long, value_name = "PATH")]
    pub test: Option<PathBuf>,
    /// Train/validation/test fractions for --data.
    #[arg(long, value_name = "T,V,T", default_value = "0.7,0.1,0.2")]
    pub split: String,
    /// Text column of CSV/JSON data.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Label column of CSV/JSON data (integers or strings).
    #[arg(long, default_value = "label")]
    pub label_column: String,
}

impl DataArgs {
    /// The resolved data source.
    pub fn source(&self) -> Result<DataSource> {
        if let (Some(train), Some(val)) = (&self.train, &self.val) {
            return Ok(DataSource::Files { train: train.clone(), val: val.clone(), test: self.test.clone() });
        }
        let path = self.data.clone().ok_or_else(|| Error::InvalidOption("give --data PATH, or --train and --val".into()))?;
        let parts: Vec<f64> = self
            .split
            .split(',')
            .map(|s| s.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::InvalidOption(format!("--split must be three numbers like 0.7,0.1,0.2, got {:?}", self.split)))?;
        let fractions = match parts.as_slice() {
            [a, b, c] => (*a, *b, *c),
            _ => return Err(Error::InvalidOption(format!("--split needs three fractions, got {:?}", self.split))),
        };
        Ok(DataSource::Split { path, fractions })
    }
}

/// Optimisation and loop options.
#[derive(Args, Debug, Clone)]
pub struct LoopArgs {
    /// adam (the seed's) or adamw.
    #[arg(long, default_value = "adam", value_parser = parse_optimizer)]
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f32,
    /// Weight decay (coupled for adam, decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Fraction of steps of linear warmup.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_ratio: f32,
    /// Decay the learning rate linearly to 0 after warmup.
    #[arg(long)]
    pub linear_decay: bool,
    /// Clip the global gradient norm.
    #[arg(long, value_name = "NORM")]
    pub clip_grad_norm: Option<f32>,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: u32,
    /// Examples per step.
    #[arg(long, default_value_t = 12)]
    pub batch_size: usize,
    /// Truncate texts to this many tokens ([CLS] and [SEP] included).
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Pad every sequence to --max-length, as the seed does (slower; same results).
    #[arg(long)]
    pub pad_to_max_length: bool,
    /// Length-bucketed batches (sorted within shuffled chunks).
    #[arg(long)]
    pub bucket: bool,
    /// Keep each epoch's last incomplete batch.
    #[arg(long)]
    pub keep_last: bool,
    /// Also evaluate on validation every N steps (besides each epoch's end).
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Write a resumable checkpoint every N steps.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub checkpoint_every: u64,
    /// Train on only the first N training examples.
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Seed of everything random (split, initialisation, shuffling, dropout).
    #[arg(long, default_value_t = 123)]
    pub seed: u64,
}

fn parse_optimizer(s: &str) -> std::result::Result<OptimizerKind, String> {
    match s {
        "adam" => Ok(OptimizerKind::Adam),
        "adamw" => Ok(OptimizerKind::AdamW),
        other => Err(format!("unknown optimizer {other:?}; use adam or adamw")),
    }
}

impl ModelArgs {
    /// The resolved local model path (downloading a hub id).
    pub fn resolve(&self) -> Result<PathBuf> {
        let m = self.model.as_deref().ok_or_else(|| Error::InvalidOption("--model DIR is required".into()))?;
        crate::hub::resolve_model(m)
    }
}

/// Builds a run configuration from the option groups.
pub fn train_config(model: PathBuf, head: Option<HeadKind>, data: &DataArgs, plan: &PlanArgs, lp: &LoopArgs) -> Result<TrainConfig> {
    let cfg = TrainConfig {
        model,
        head,
        data: data.source()?,
        text_column: data.text_column.clone(),
        label_column: data.label_column.clone(),
        max_length: lp.max_length,
        pad_to_max_length: lp.pad_to_max_length,
        plan: plan.plan(lp.seed)?,
        init_adapter: None,
        optimizer: OptimizerConfig { kind: lp.optimizer, lr: lp.lr, weight_decay: lp.weight_decay, ..Default::default() },
        schedule: Schedule { warmup_ratio: lp.warmup_ratio, linear_decay: lp.linear_decay },
        clip_grad_norm: lp.clip_grad_norm,
        epochs: lp.epochs,
        batch_size: lp.batch_size,
        eval_batch_size: 64,
        eval_every: lp.eval_every,
        seed: lp.seed,
        drop_last: !lp.keep_last,
        bucket: lp.bucket,
        limit_train: lp.limit_train,
        checkpoint_every: lp.checkpoint_every,
    };
    cfg.validate()?;
    Ok(cfg)
}
