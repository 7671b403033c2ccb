//! The causal-LM data error type: every way a JSON Lines file of conversations, prompt /
//! completion pairs or texts can fail to read, render or tokenise, with the file, the 1-based line
//! and the fix.

use crate::data::DataError;
use std::path::PathBuf;

/// Errors raised while reading, rendering or tokenising causal-LM data.
#[derive(Debug, thiserror::Error)]
pub enum LmDataError {
    /// A problem the labelled-data readers also have (missing file, invalid UTF-8, malformed JSON,
    /// a field of the wrong kind, an empty field, no examples).
    #[error(transparent)]
    Data(Box<DataError>),

    /// A tokenizer failed.
    #[error(transparent)]
    Tokenizer(Box<crate::error::Error>),

    /// A CSV / TSV file where causal-LM data (JSON Lines) is needed.
    #[error("{path}: a CSV / TSV file, but causal-LM data (and a causal-LM run's evaluation) is JSON Lines: one {{\"messages\": [...]}}, {{\"prompt\": ..., \"completion\": ...}} or {{\"text\": ...}} object a line; labelled CSV files are for classification runs")]
    CsvNotJsonLines {
        /// The file.
        path: PathBuf,
    },

    /// A `.json` file holding one JSON array instead of one object per line.
    #[error("{path}: causal-LM data must be JSON Lines (one object per line), but this file is a JSON array; convert it with `jq -c '.[]' FILE > FILE.jsonl`")]
    NotJsonLines {
        /// The file.
        path: PathBuf,
    },

    /// A record with none of the fields that make a causal-LM example.
    #[error("{path}:{line}: the record has none of the fields \"messages\", \"prompt\" + \"completion\" or \"text\" (it has: {}); causal-LM data needs one of these three shapes on every line", crate::data::error::list(present))]
    UnknownShape {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The fields the record does have.
        present: Vec<String>,
    },

    /// A record with the fields of more than one shape.
    #[error("{path}:{line}: the record has the fields of several shapes ({}); keep only one of \"messages\", \"prompt\" + \"completion\" or \"text\" per record", shapes.join(", "))]
    AmbiguousShape {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The shapes whose fields are present.
        shapes: Vec<&'static str>,
    },

    /// A record whose shape differs from the file's first record.
    #[error("{path}:{line}: this record is {found} but the first record (line {first_line}) is {expected}; a file holds one shape, so split it into one file per shape")]
    MixedShapes {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the odd record.
        line: usize,
        /// The shape of this record.
        found: &'static str,
        /// The shape of the first record.
        expected: &'static str,
        /// 1-based line number of the first record.
        first_line: usize,
    },

    /// A chat message that is malformed (not an object, no role or content, content not a string, an unknown role).
    #[error("{path}:{line}: message {number} of \"messages\" {problem}; each message needs a \"role\" (\"system\", \"user\" or \"assistant\") and a string \"content\"")]
    BadMessage {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based position of the message in the conversation.
        number: usize,
        /// What is wrong with it.
        problem: String,
    },

    /// A conversation without any assistant message: nothing to learn from it.
    #[error("{path}:{line}: the conversation has no \"assistant\" message, so it has nothing to learn; add the assistant's reply or remove the line")]
    NoAssistantTurn {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },

    /// Chat data but the tokenizer has no chat template.
    #[error("{} has no chat template (tokenizer_config.json's \"chat_template\" or the GGUF's tokenizer.chat_template), so conversations cannot be rendered; pass --chat-template FILE with a Jinja chat template", tokenizer.display())]
    NoChatTemplate {
        /// Where the tokenizer came from.
        tokenizer: PathBuf,
    },

    /// A `--chat-template` file that cannot be read.
    #[error("cannot read the chat template {path}: {source}; check the --chat-template path")]
    TemplateFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A chat template that does not parse.
    #[error("the chat template from {origin} does not parse: {message}; fix the template, or pass another with --chat-template FILE")]
    TemplateSyntax {
        /// Where the template came from.
        origin: String,
        /// The template engine's message (with the template's line).
        message: String,
    },

    /// A chat template that fails while rendering a conversation (e.g. it calls `raise_exception`).
    #[error("{}the chat template from {origin} failed to render the conversation: {message}; fix the conversation, or pass a template that accepts it with --chat-template FILE", at(path, line))]
    TemplateRender {
        /// Where the template came from.
        origin: String,
        /// The data file, when a file's record was rendered.
        path: Option<PathBuf>,
        /// 1-based line number, when a file's record was rendered.
        line: Option<usize>,
        /// The template engine's message (with the template's line).
        message: String,
    },

    /// A template that renders a turn differently once later turns follow, so a reply's span cannot
    /// be found by rendering the conversation prefix by prefix.
    #[error("{}the chat template from {origin} renders the conversation up to message {number} differently once later messages follow (it is not prefix-stable, e.g. it rewrites earlier assistant turns), so the reply's tokens cannot be found; pass --chat-template FILE with a template that renders each turn the same way, or --train-on-prompt", at(path, line))]
    TemplateNotPrefix {
        /// Where the template came from.
        origin: String,
        /// The data file, when a file's record was rendered.
        path: Option<PathBuf>,
        /// 1-based line number, when a file's record was rendered.
        line: Option<usize>,
        /// 1-based position of the message whose rendering changed.
        number: usize,
    },

    /// The part before the first loss token is already `max_length` tokens or more, so truncation
    /// would leave nothing to learn.
    #[error("{path}:{line}: the {what} alone is {tokens} tokens, and --max-length is {max_length}, so truncation leaves nothing to learn; raise --max-length to at least {} or shorten the example", tokens + 1)]
    PromptTooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// "prompt" or "conversation before the first assistant reply".
        what: &'static str,
        /// Tokens before the first loss token.
        tokens: usize,
        /// The length limit.
        max_length: usize,
    },

    /// An example whose only loss token is its first token, which no position predicts.
    #[error("{path}:{line}: no token of the example can be learnt (the only loss token is the first one, which no position predicts); give it a longer completion, or a prompt")]
    NothingToPredict {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

impl From<DataError> for LmDataError {
    fn from(e: DataError) -> Self {
        LmDataError::Data(Box::new(e))
    }
}

impl From<crate::error::Error> for LmDataError {
    fn from(e: crate::error::Error) -> Self {
        LmDataError::Tokenizer(Box::new(e))
    }
}

/// Formats an optional location as a message prefix: "path:line: " or "".
fn at(path: &Option<PathBuf>, line: &Option<usize>) -> String {
    match (path, line) {
        (Some(path), Some(line)) => format!("{}:{line}: ", path.display()),
        (Some(path), None) => format!("{}: ", path.display()),
        _ => String::new(),
    }
}
