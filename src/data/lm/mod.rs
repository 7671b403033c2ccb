//! Causal-LM data: JSON Lines files of conversations, prompt / completion pairs or plain texts,
//! turned into token ids with a per-token loss mask (completion-only training, as TRL does).
//!
//! The steps, one module each:
//! 1. [`read`]: a file → an [`LmFile`], one [`LmSample`] per non-blank line, all of one
//!    [`LmShape`]; [`detect_shape`] tells a file's shape from its first record.
//! 2. [`template`]: a conversation → text with the model's chat template, rendered as
//!    transformers' `apply_chat_template` renders it ([`ChatTemplate`], [`generation_prompt`]).
//! 3. [`mask`]: text → token ids and a loss mask (loss on the assistant replies / the completion /
//!    every token), truncated to `max_length` ([`encode_file`], [`render_chat`]).
//! 4. here: the next-token targets a model trains on ([`LmExample::targets`]).
//!
//! [`load`] does all of it for one file; [`split`] splits, records and loads a training run's
//! files.

mod error;
mod jinja;
pub mod mask;
pub mod read;
pub mod split;
pub mod template;

use crate::tokenize::Tokenizer;
use std::path::{Path, PathBuf};

pub use error::LmDataError;
pub use mask::{encode_file, render_chat, RenderedChat};
pub use read::{causal_lm_shape, conversation, detect_shape, read_jsonl, Message, Role};
pub use split::{prepare_lm, LmSplits};
pub use template::{generation_prompt, generation_prompt_ids, ChatTemplate};

/// The target of a position that is not trained (the last position, and every position whose next
/// token is masked). [`LmExample::targets`] uses it; transformers writes -100 in its labels instead.
pub const IGNORE: u32 = u32::MAX;

/// The shape of a causal-LM data file (every record of a file has the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmShape {
    /// `{"messages": [{"role": …, "content": …}, …]}`: loss on the assistant replies.
    Chat,
    /// `{"prompt": …, "completion": …}`: loss on the completion and the eos token.
    PromptCompletion,
    /// `{"text": …}`: loss on every token and the eos token.
    Text,
}

impl LmShape {
    /// How the shape is named in messages, e.g. "a conversation (\"messages\")".
    pub fn describe(self) -> &'static str {
        match self {
            LmShape::Chat => "a conversation (\"messages\")",
            LmShape::PromptCompletion => "a prompt / completion pair (\"prompt\", \"completion\")",
            LmShape::Text => "a plain text (\"text\")",
        }
    }

    /// Whether data of this shape can only mean causal-LM training (conversations and prompt /
    /// completion pairs); a `{"text": …}` file may just as well be classification data.
    pub fn implies_causal_lm(self) -> bool {
        matches!(self, LmShape::Chat | LmShape::PromptCompletion)
    }
}

/// What one line of a causal-LM file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum LmSample {
    /// A conversation, in order.
    Chat {
        /// The messages (at least one, and at least one from the assistant).
        messages: Vec<Message>,
    },
    /// A prompt and the completion to learn.
    PromptCompletion {
        /// The prompt, exactly as in the file (may be empty).
        prompt: String,
        /// The completion, exactly as in the file (not empty).
        completion: String,
    },
    /// A text to learn whole.
    Text {
        /// The text, exactly as in the file (not empty).
        text: String,
    },
}

impl LmSample {
    /// The record as a JSON object of its shape (`{"messages": …}`, `{"prompt", "completion"}` or
    /// `{"text"}`): [`read_jsonl`] reads it back as the same sample.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            LmSample::Chat { messages } => serde_json::json!({ "messages": messages }),
            LmSample::PromptCompletion { prompt, completion } => serde_json::json!({ "prompt": prompt, "completion": completion }),
            LmSample::Text { text } => serde_json::json!({ "text": text }),
        }
    }
}

/// One record of a causal-LM file and the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LmRecord {
    /// 1-based line number in the file.
    pub line: usize,
    /// What the line holds.
    pub sample: LmSample,
}

/// A causal-LM data file, read.
#[derive(Debug, Clone, PartialEq)]
pub struct LmFile {
    /// The file.
    pub path: PathBuf,
    /// The shape of every record.
    pub shape: LmShape,
    /// The records, in file order (at least one).
    pub records: Vec<LmRecord>,
}

/// One tokenised training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmExample {
    /// Token ids, at most `max_length`.
    pub ids: Vec<u32>,
    /// Per token (same length as `ids`): whether the model learns to predict this token, i.e.
    /// whether the loss at position `t - 1` (predicting `ids[t]`) counts. `loss[0]` is never used,
    /// since no position predicts the first token.
    pub loss: Vec<bool>,
    /// 1-based line of the file the example came from.
    pub line: usize,
}

impl LmExample {
    /// The next-token targets: `targets[t] = ids[t + 1]` where `loss[t + 1]`, else [`IGNORE`];
    /// the last position is always [`IGNORE`]. See [`next_token_targets`].
    pub fn targets(&self) -> Vec<u32> {
        next_token_targets(&self.ids, &self.loss)
    }

    /// transformers' `labels` for the same example: `ids[t]` where `loss[t]`, else -100, not yet
    /// shifted (a transformers causal-LM model shifts them itself: its loss at position `t` is
    /// against `labels[t + 1]`).
    pub fn labels(&self) -> Vec<i64> {
        self.ids.iter().zip(&self.loss).map(|(&id, &on)| if on { i64::from(id) } else { -100 }).collect()
    }

    /// The number of positions that are trained (targets that are not [`IGNORE`]).
    pub fn loss_tokens(&self) -> usize {
        self.loss.iter().skip(1).filter(|&&on| on).count()
    }
}

/// The next-token targets of a sequence: `targets[t] = ids[t + 1]` when `loss[t + 1]`, else
/// [`IGNORE`]; `targets[len - 1] = IGNORE`. `ids` and `loss` have the same length (a shorter `loss`
/// counts as `false`). This equals shifting transformers' `labels` (ids with -100 where the loss is
/// off) left by one, with -100 written as [`IGNORE`].
pub fn next_token_targets(ids: &[u32], loss: &[bool]) -> Vec<u32> {
    (0..ids.len())
        .map(|t| match (ids.get(t + 1), loss.get(t + 1)) {
            (Some(&next), Some(true)) => next,
            _ => IGNORE,
        })
        .collect()
}

/// How to tokenise causal-LM data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmOptions {
    /// Longest example in tokens; longer ones keep their beginning (and are counted in
    /// [`Truncation`]).
    pub max_length: usize,
    /// Loss on every token (the prompt, the system and user turns and the template's markup too),
    /// instead of only on the assistant replies / the completion.
    pub train_on_prompt: bool,
    /// Leave out (and count in [`Truncation::dropped`]) the examples whose part before the first
    /// target is `max_length` tokens or more, instead of failing on the first (training on a real
    /// data set); when every example would be left out, the first one's error is returned.
    pub drop_long_prompts: bool,
}

/// How many examples truncation shortened: the caller prints it as a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Truncation {
    /// Examples longer than `max_length` tokens, cut to it.
    pub truncated: usize,
    /// Examples in all.
    pub examples: usize,
    /// The limit.
    pub max_length: usize,
    /// The longest example before truncation, in tokens.
    pub longest: usize,
    /// Examples left out because truncation would leave them nothing to learn (see
    /// [`LmOptions::drop_long_prompts`]); not counted in `examples`.
    pub dropped: usize,
}

impl Truncation {
    /// Whether any example was truncated.
    pub fn any(&self) -> bool {
        self.truncated > 0 || self.dropped > 0
    }
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} examples truncated to {} tokens", self.truncated, self.examples, self.max_length)?;
        if self.truncated > 0 {
            write!(f, " (the longest has {}); raise --max-length to keep them whole", self.longest)?;
        }
        if self.dropped > 0 {
            write!(
                f,
                "; {} more left out, their prompt alone being {} tokens or more (raise --max-length to keep them)",
                self.dropped, self.max_length
            )?;
        }
        Ok(())
    }
}

/// A causal-LM file, tokenised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmEncoded {
    /// The file's shape.
    pub shape: LmShape,
    /// One example per record, in file order.
    pub examples: Vec<LmExample>,
    /// How many were truncated.
    pub truncation: Truncation,
}

/// Reads, renders and tokenises one causal-LM JSON Lines file: the chat template (for
/// conversations) is `chat_template`'s file when given (`--chat-template`), else the tokenizer's.
pub fn load(path: &Path, tokenizer: &Tokenizer, chat_template: Option<&Path>, opts: &LmOptions) -> Result<LmEncoded, LmDataError> {
    let file = read_jsonl(path)?;
    let template = match file.shape {
        LmShape::Chat => Some(ChatTemplate::resolve(chat_template, tokenizer)?),
        _ => None,
    };
    encode_file(&file, tokenizer, template.as_ref(), opts)
}

#[cfg(test)]
mod tests;
