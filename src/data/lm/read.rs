//! Step 1: reading causal-LM JSON Lines: one record per non-blank line, each a conversation
//! (`"messages"`), a prompt / completion pair or a plain text, all of one shape.
//!
//! A record's shape is decided by its fields, in this order: `"messages"` makes a conversation
//! (other fields, such as ultrachat's `"prompt"` beside its messages, are ignored); else
//! `"completion"` (or a `"prompt"`) a prompt / completion pair; else `"text"` a plain text.

use super::{LmDataError, LmFile, LmRecord, LmSample, LmShape};
use crate::data::error::shorten;
use crate::data::{read_text, DataError};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use std::io::BufRead;
use std::path::Path;

/// Who says a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The user's turn.
    User,
    /// The assistant's reply: the tokens trained on.
    Assistant,
}

impl Role {
    /// The role as chat templates see it: "system", "user" or "assistant".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// The role named `name`, if it is one of the three.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One chat message, as a chat template sees it: `role`, `content` and any other (non-null) fields
/// of the record's message object.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What is said.
    pub content: String,
    /// The message object's other fields (e.g. "name"), passed to the template as they are.
    pub extra: Map<String, Value>,
}

impl Message {
    /// A message with only a role and content.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into(), extra: Map::new() }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2 + self.extra.len()))?;
        map.serialize_entry("role", self.role.as_str())?;
        map.serialize_entry("content", &self.content)?;
        for (key, value) in &self.extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Reads a causal-LM JSON Lines file. Blank lines are skipped; every other line must be a JSON
/// object of the shape of the first (see the module's doc for how the shape is chosen). Errors name
/// the file and the 1-based line.
pub fn read_jsonl(path: &Path) -> Result<LmFile, LmDataError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if matches!(ext.as_str(), "csv" | "tsv") {
        return Err(LmDataError::CsvNotJsonLines { path: path.to_path_buf() });
    }
    let text = read_text(path)?;
    if text.trim_start().starts_with('[') {
        return Err(LmDataError::NotJsonLines { path: path.to_path_buf() });
    }
    let mut records = Vec::new();
    let mut first: Option<(LmShape, usize)> = None;
    for (index, line_text) in text.lines().enumerate() {
        let line = index + 1;
        if line_text.trim().is_empty() {
            continue;
        }
        let object = parse_object(line_text, path, line)?;
        let shape = shape_of(&object).ok_or_else(|| LmDataError::UnknownShape {
            path: path.to_path_buf(),
            line,
            present: object.keys().cloned().collect(),
        })?;
        match first {
            None => first = Some((shape, line)),
            Some((expected, first_line)) if expected != shape => {
                return Err(LmDataError::MixedShapes {
                    path: path.to_path_buf(),
                    line,
                    found: shape.describe(),
                    expected: expected.describe(),
                    first_line,
                });
            }
            Some(_) => {}
        }
        records.push(LmRecord { line, sample: sample(object, shape, path, line)? });
    }
    let Some((shape, _)) = first else {
        return Err(DataError::NoExamples { path: path.to_path_buf() }.into());
    };
    Ok(LmFile { path: path.to_path_buf(), shape, records })
}

/// The shape of a data file, from its first non-blank line: `None` when the file is not JSON Lines
/// (by its extension: .jsonl, .ndjson or .json), or its first record is no causal-LM shape (or not
/// JSON). Fails only when the file cannot be read. `lowrank train` picks `--task causal-lm` when
/// the shape [implies it](LmShape::implies_causal_lm) (see [`causal_lm_shape`]).
pub fn detect_shape(path: &Path) -> Result<Option<LmShape>, LmDataError> {
    Ok(first_object(path)?.and_then(|o| shape_of(&o)))
}

/// The shape of a data file when its first record makes it causal-LM data: a conversation, a
/// prompt / completion pair, or a text without a `label_field` (a text with a label is a
/// classification example). `None` otherwise, as for [`detect_shape`].
pub fn causal_lm_shape(path: &Path, label_field: &str) -> Result<Option<LmShape>, LmDataError> {
    let Some(object) = first_object(path)? else { return Ok(None) };
    Ok(shape_of(&object).filter(|s| s.implies_causal_lm() || object.get(label_field).is_none_or(Value::is_null)))
}

/// The first non-blank line of a JSON Lines file as a JSON object (None: not a JSON Lines file by
/// its extension, or the line is not an object).
fn first_object(path: &Path) -> Result<Option<Map<String, Value>>, LmDataError> {
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if !matches!(extension.as_str(), "jsonl" | "ndjson" | "json") {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::FileMissing { path: path.to_path_buf() },
        _ => DataError::Read { path: path.to_path_buf(), source },
    })?;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let bytes = line.map_err(|source| DataError::Read { path: path.to_path_buf(), source })?;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            continue;
        }
        return Ok(match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => Some(object),
            _ => None,
        });
    }
    Ok(None)
}

/// Parses one line as a JSON object.
fn parse_object(line_text: &str, path: &Path, line: usize) -> Result<Map<String, Value>, LmDataError> {
    let json_error = |message: String| DataError::Json { path: path.to_path_buf(), line, message };
    match serde_json::from_str::<Value>(line_text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(json_error(format!("expected an object, found {}", shorten(&other.to_string()))).into()),
        Err(err) => {
            // serde_json counts lines within this one line: keep only the column.
            let message = err.to_string();
            let suffix = format!(" at line {} column {}", err.line(), err.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            Err(json_error(format!("{message} at column {}", err.column())).into())
        }
    }
}

/// The shape a record's fields make, if any (null fields count as absent).
fn shape_of(object: &Map<String, Value>) -> Option<LmShape> {
    let has = |key: &str| object.get(key).is_some_and(|v| !v.is_null());
    if has("messages") {
        Some(LmShape::Chat)
    } else if has("completion") || has("prompt") {
        Some(LmShape::PromptCompletion)
    } else if has("text") {
        Some(LmShape::Text)
    } else {
        None
    }
}

/// A record of a known shape → its sample, checking every field.
fn sample(mut object: Map<String, Value>, shape: LmShape, path: &Path, line: usize) -> Result<LmSample, LmDataError> {
    Ok(match shape {
        LmShape::Chat => LmSample::Chat { messages: messages(object.remove("messages"), path, line)? },
        LmShape::Text => LmSample::Text { text: string(&mut object, "text", false, path, line)? },
        LmShape::PromptCompletion => {
            let prompt = string(&mut object, "prompt", true, path, line)?;
            LmSample::PromptCompletion { prompt, completion: string(&mut object, "completion", false, path, line)? }
        }
    })
}

/// Removes a string field from a record (empty or only whitespace allowed when `may_be_empty`).
fn string(
    object: &mut Map<String, Value>,
    field: &'static str,
    may_be_empty: bool,
    path: &Path,
    line: usize,
) -> Result<String, LmDataError> {
    let present: Vec<String> = object.keys().cloned().collect();
    match object.remove(field) {
        None | Some(Value::Null) => {
            Err(DataError::MissingField { path: path.to_path_buf(), line, role: field, field: field.to_string(), present }.into())
        }
        Some(Value::String(s)) if !may_be_empty && s.trim().is_empty() => {
            Err(DataError::EmptyField { path: path.to_path_buf(), line, field: field.to_string() }.into())
        }
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(DataError::BadField {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            value: shorten(&other.to_string()),
            expected: "a string",
        }
        .into()),
    }
}

/// The `"messages"` field → the conversation: a non-empty list of messages with at least one
/// assistant reply.
fn messages(value: Option<Value>, path: &Path, line: usize) -> Result<Vec<Message>, LmDataError> {
    let messages = conversation(value, path, line)?;
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err(LmDataError::NoAssistantTurn { path: path.to_path_buf(), line });
    }
    Ok(messages)
}

/// A `"messages"` field → the conversation: a non-empty list of `{"role", "content", ...}`
/// objects (null fields dropped, as transformers' `apply_chat_template` drops them). Errors name
/// `path`, `line` and the message. Also what generation requests are read with.
pub fn conversation(value: Option<Value>, path: &Path, line: usize) -> Result<Vec<Message>, LmDataError> {
    let list = match value {
        Some(Value::Array(list)) if !list.is_empty() => list,
        other => {
            return Err(DataError::BadField {
                path: path.to_path_buf(),
                line,
                field: "messages".into(),
                value: shorten(&other.unwrap_or(Value::Null).to_string()),
                expected: "a non-empty list of messages",
            }
            .into())
        }
    };
    let bad = |number: usize, problem: String| LmDataError::BadMessage { path: path.to_path_buf(), line, number, problem };
    let mut messages = Vec::with_capacity(list.len());
    for (index, value) in list.into_iter().enumerate() {
        let number = index + 1;
        let Value::Object(object) = value else {
            return Err(bad(number, format!("is {}, not an object", shorten(&value.to_string()))));
        };
        // Null fields are dropped, as transformers' apply_chat_template drops them.
        let mut object: Map<String, Value> = object.into_iter().filter(|(_, v)| !v.is_null()).collect();
        let role = match object.remove("role") {
            Some(Value::String(name)) => {
                Role::parse(&name).ok_or_else(|| bad(number, format!("has the role {}, which is not one of the three", shorten(&name))))?
            }
            Some(other) => return Err(bad(number, format!("has the role {}, not a string", shorten(&other.to_string())))),
            None => return Err(bad(number, "has no \"role\"".into())),
        };
        let content = match object.remove("content") {
            Some(Value::String(content)) => content,
            Some(other) => return Err(bad(number, format!("has the content {}, not a string", shorten(&other.to_string())))),
            None => return Err(bad(number, "has no \"content\"".into())),
        };
        messages.push(Message { role, content, extra: object });
    }
    Ok(messages)
}
