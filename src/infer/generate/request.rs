//! Generation requests read from a file: one prompt per line (.txt), or JSON Lines (.jsonl) whose
//! objects hold a `prompt` (text to continue), `text` (the same) or `messages` (a chat, rendered
//! by the chat template), and optionally the `adapter` to answer with.

use crate::data::lm::{conversation, generation_prompt_ids, ChatTemplate, Message, Role};
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;
use serde_json::Value;
use std::path::Path;

/// How prompts become a conversation: the chat template (the one training renders with, so a
/// prompt is what the model saw before each reply) and an optional system prompt.
#[derive(Debug)]
pub struct ChatSettings {
    /// The compiled chat template, with the tokenizer's bos / eos tokens.
    pub template: ChatTemplate,
    /// A system turn put first when the conversation has none.
    pub system: Option<String>,
}

impl ChatSettings {
    /// The messages of `prompt` as a conversation (plain text becomes one user turn).
    pub fn messages(&self, prompt: &Prompt) -> Vec<Message> {
        let mut msgs = match prompt {
            Prompt::Text(t) => vec![Message::user(t.as_str())],
            Prompt::Chat(m) => m.clone(),
        };
        if let Some(s) = &self.system {
            if msgs.first().is_none_or(|m| m.role != Role::System) {
                msgs.insert(0, Message::new(Role::System, s.as_str()));
            }
        }
        msgs
    }
}

/// The token ids of `prompt`: plain text tokenized with the model's special tokens (e.g. a BOS)
/// when `chat` is None; otherwise the conversation rendered by the chat template with the
/// assistant's turn opened (`add_generation_prompt`) and tokenized as it is (the template writes
/// the special tokens). A chat prompt without a template is an error.
pub fn encode_prompt(tokenizer: &Tokenizer, prompt: &Prompt, chat: Option<&ChatSettings>) -> Result<Vec<u32>> {
    match (prompt, chat) {
        (Prompt::Text(t), None) => tokenizer.encode(t),
        (Prompt::Chat(_), None) => Err(Error::InvalidOption(
            "a request holds \"messages\" but the model has no chat template; pass one with --chat-template FILE".into(),
        )),
        (p, Some(c)) => Ok(generation_prompt_ids(&c.template, tokenizer, &c.messages(p))?),
    }
}

/// What to continue.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Plain text (with `--chat`, one user turn).
    Text(String),
    /// A conversation, rendered by the chat template.
    Chat(Vec<Message>),
}

/// One generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// What to continue.
    pub prompt: Prompt,
    /// The adapter to answer with, by name (None: the command line's choice).
    pub adapter: Option<String>,
}

/// Reads the requests of a .txt or .jsonl file.
pub fn read_requests(path: &Path) -> Result<Vec<Request>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let bad = |line: usize, message: String| Error::TextFile { path: path.to_path_buf(), line: Some(line), message };
    let jsonl = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if !jsonl {
            out.push(Request { prompt: Prompt::Text(line.to_string()), adapter: None });
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        let adapter = match v.get("adapter") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad(i + 1, "\"adapter\" must be a string (an adapter's name)".into())),
        };
        let prompt = if let Some(m) = v.get("messages") {
            Prompt::Chat(conversation(Some(m.clone()), path, i + 1)?)
        } else if let Some(t) = v.get("prompt").or_else(|| v.get("text")).and_then(Value::as_str) {
            Prompt::Text(t.to_string())
        } else {
            return Err(bad(i + 1, "no \"prompt\", \"text\" or \"messages\" field".into()));
        };
        out.push(Request { prompt, adapter });
    }
    if out.is_empty() {
        return Err(Error::TextFile { path: path.to_path_buf(), line: None, message: "holds no prompts".into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_and_json_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.txt");
        std::fs::write(&p, "one\n\ntwo\n").unwrap();
        let r = read_requests(&p).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].prompt, Prompt::Text("two".into()));
        let p = d.path().join("p.jsonl");
        std::fs::write(&p, "{\"prompt\": \"a\", \"adapter\": \"x\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n")
            .unwrap();
        let r = read_requests(&p).unwrap();
        assert_eq!(r[0], Request { prompt: Prompt::Text("a".into()), adapter: Some("x".into()) });
        assert_eq!(r[1].prompt, Prompt::Chat(vec![Message::user("hi")]));
        std::fs::write(&p, "{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}\n").unwrap();
        let e = read_requests(&p).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:1") && e.contains("robot"), "{e}");
        std::fs::write(&p, "{\"question\": \"a\"}\n").unwrap();
        let e = read_requests(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") || e.contains(":1"), "{e}");
        assert!(e.contains("\"prompt\""), "{e}");
    }
}
