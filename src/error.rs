//! The library's error type: every variant carries the evidence a user needs to fix the problem,
//! and its message ends with what to do.

pub use crate::data::DataError;
use std::path::PathBuf;

/// Errors raised by the lowrank library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A GGUF file could not be read or written (see [`crate::gguf::GgufError`]).
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),

    /// A problem with a dataset file (see [`DataError`]).
    #[error(transparent)]
    Data(#[from] DataError),

    /// A problem with causal-LM data (see [`crate::data::lm::LmDataError`]).
    #[error(transparent)]
    LmData(#[from] crate::data::lm::LmDataError),

    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "create directory", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A model folder lacks a file lowrank needs.
    #[error("{} has no {file}; a Hugging Face model folder needs config.json and model.safetensors (fetch one with scripts/fetch-assets.sh, or pass --model DIR)", dir.display())]
    MissingModelFile {
        /// The model folder.
        dir: PathBuf,
        /// The missing file name.
        file: &'static str,
    },

    /// A JSON or TOML file is malformed or lacks a field.
    #[error("malformed {what} in {}: {message}", path.display())]
    Malformed {
        /// What kind of file ("config.json", "adapter_config.json", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },

    /// The model's `model_type` (or a feature of it) is not supported.
    #[error("unsupported model: {0}; lowrank supports the encoders \"distilbert\" and \"bert\" (absolute position embeddings) and the decoders \"llama\", \"qwen2\", \"mistral\" and \"gpt2\"")]
    UnsupportedModel(String),

    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor {name} is missing from {}; is this checkpoint a {arch} model? (lowrank looked for the name with and without the \"{prefix}\" prefix)", file.display())]
    MissingTensor {
        /// The tensor's Hugging Face name.
        name: String,
        /// The checkpoint file.
        file: PathBuf,
        /// The architecture being loaded.
        arch: &'static str,
        /// The model prefix that may be absent.
        prefix: &'static str,
    },

    /// A tensor in a checkpoint or adapter has the wrong shape.
    #[error("tensor {name} has shape {got:?} but the model expects {expected:?}; the file does not belong to this model configuration")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },

    /// A checkpoint holds a tensor that no part of the model uses.
    #[error("tensor {name} in {} does not belong to a {arch} model; check that config.json matches the weights", file.display())]
    UnexpectedTensor {
        /// The tensor's name.
        name: String,
        /// The checkpoint file.
        file: PathBuf,
        /// The architecture being loaded.
        arch: &'static str,
    },

    /// A tensor has a data type lowrank cannot read.
    #[error("tensor {name} has dtype {dtype}; lowrank reads F32, F16 and BF16 weights")]
    UnsupportedDtype {
        /// The tensor's name.
        name: String,
        /// The dtype found.
        dtype: String,
    },

    /// A safetensors file could not be parsed.
    #[error("cannot parse safetensors file {}: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },

    /// A LoRA target pattern matched no module of the model.
    #[error("target module {pattern:?} matches no linear layer of this model; its linear layers are named like: {examples}")]
    UnknownTargetModule {
        /// The pattern given by the user.
        pattern: String,
        /// A few module names that exist.
        examples: String,
    },

    /// A LoRA variant cannot be set up on (or merged into) one module.
    #[error("LoRA on {module}: {message}")]
    LoraModule {
        /// The module path.
        module: String,
        /// What is wrong and what to do.
        message: String,
    },

    /// A training or LoRA option is invalid.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// Training produced a non-finite loss.
    #[error("the loss became {loss} at step {step}; lower --lr (or --lora-alpha with the raschka scaling), or enable --clip-grad-norm")]
    NonFiniteLoss {
        /// The offending loss value.
        loss: f32,
        /// The optimizer step.
        step: u64,
    },

    /// A tokenizer file could not be loaded or applied.
    #[error("tokenizer error ({}): {message}", path.display())]
    Tokenizer {
        /// The tokenizer file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// An adapter folder does not fit the base model or cannot be honoured.
    #[error("adapter {}: {message}", dir.display())]
    Adapter {
        /// The adapter folder.
        dir: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// Downloading from the Hugging Face hub failed.
    #[error("cannot download {repo} from the Hugging Face hub: {message}; without network access, download the model folder elsewhere and pass --model DIR")]
    Hub {
        /// The hub repository id.
        repo: String,
        /// The underlying error.
        message: String,
    },

    /// Merging a LoRA update would put non-finite values into a weight.
    #[error("merging the LoRA update of {module} gives {count} non-finite weights; the adapter is corrupt or diverged (retrain with a lower --lr or --clip-grad-norm), so nothing was merged")]
    NonFiniteMerge {
        /// The linear module.
        module: String,
        /// How many weights would be non-finite.
        count: usize,
    },

    /// Another process holds the lock of a folder or file this command would write.
    #[error("{what} {} is in use by {owner}; wait for it to finish or stop it (a lock left by a process that died is taken over automatically)", path.display())]
    Locked {
        /// What is locked ("run folder", "sweep folder", "eval output").
        what: String,
        /// The folder or file.
        path: PathBuf,
        /// Who holds it.
        owner: String,
    },

    /// An output folder would overwrite an input, or files lowrank did not write.
    #[error("--out {}: {message}", path.display())]
    OutputConflict {
        /// The output folder as given.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },

    /// A job would need more memory than the machine has.
    #[error("{what} needs about {} of memory ({detail}) but this machine has {}; {fix}", crate::guard::memory::human(*needed), crate::guard::memory::human(*available))]
    OutOfMemory {
        /// The job.
        what: String,
        /// Estimated bytes.
        needed: u64,
        /// Bytes the machine has.
        available: u64,
        /// Where the estimate comes from.
        detail: String,
        /// What to change.
        fix: String,
    },

    /// Weights or outputs hold NaN or infinity.
    #[error("{what} holds {count} non-finite values (NaN or infinity; the first in {name}); {fix}")]
    NonFinite {
        /// What was checked ("the base model's weights", "the logits").
        what: String,
        /// The first tensor or item concerned.
        name: String,
        /// How many values.
        count: usize,
        /// What to do.
        fix: String,
    },

    /// A config.json's text is not valid (the loader adds the file's path: [`Error::Malformed`]).
    #[error("invalid config.json: {0}")]
    BadConfig(String),

    /// A tensor looked up by name is not in a file.
    #[error("tensor {name} is missing from {}", file.display())]
    TensorNotFound {
        /// The tensor's name.
        name: String,
        /// The file.
        file: PathBuf,
    },

    /// A file of texts to classify cannot be read.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    TextFile {
        /// The file.
        path: PathBuf,
        /// The 1-based line, when known.
        line: Option<usize>,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A model cannot be written as a PEFT adapter.
    #[error("cannot save an adapter: {0}")]
    CannotSaveAdapter(String),

    /// A checkpoint's tensors do not fit the model.
    #[error("checkpoint {} does not fit this model: {message}; was the run folder's config.json edited, or the base model replaced?", path.display())]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// Which tensor does not fit.
        message: String,
    },

    /// A chart could not be drawn.
    #[error("cannot draw {}: {message}", path.display())]
    Plot {
        /// The chart file.
        path: PathBuf,
        /// The drawing library's message.
        message: String,
    },

    /// A value could not be serialised for writing.
    #[error("cannot serialise {}: {message}", path.display())]
    Serialize {
        /// The file being written.
        path: PathBuf,
        /// The serialiser's message.
        message: String,
    },

    /// Any other error, with context.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an I/O error with the action and path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
