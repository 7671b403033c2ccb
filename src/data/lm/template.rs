//! Step 2: chat templates. A conversation becomes text the way transformers'
//! `apply_chat_template` makes it: the template (Jinja) rendered with `messages`,
//! `add_generation_prompt`, `tools` and `documents` (none), and the tokenizer's `bos_token` and
//! `eos_token`, in the environment of [`super::jinja`].

use super::jinja;
use super::{LmDataError, Message};
use crate::tokenize::Tokenizer;
use minijinja::value::{Serde, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The name the template is compiled under (error messages say "(in chat_template:LINE)").
const NAME: &str = "chat_template";

/// A compiled chat template and the tokenizer values it is rendered with.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// Where the template came from (a file, or "the tokenizer of FILE").
    origin: String,
    /// The variables every render gets besides `messages` and `add_generation_prompt`.
    globals: BTreeMap<&'static str, Value>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("origin", &self.origin).finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` (Jinja), which came from `origin` (named in errors), to render with
    /// `tokenizer`'s bos / eos tokens.
    pub fn new(source: &str, origin: impl Into<String>, tokenizer: &Tokenizer) -> Result<Self, LmDataError> {
        let origin = origin.into();
        let syntax = |e: minijinja::Error| LmDataError::TemplateSyntax { origin: origin.clone(), message: e.to_string() };
        let mut env = jinja::environment().map_err(syntax)?;
        env.add_template_owned(NAME, jinja::plain_generation_blocks(source)).map_err(syntax)?;
        let mut globals = BTreeMap::new();
        globals.insert("tools", Value::from(()));
        globals.insert("documents", Value::from(()));
        let token = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id));
        if let Some(bos) = token(tokenizer.bos_id) {
            globals.insert("bos_token", Value::from(bos));
        }
        if let Some(eos) = token(tokenizer.eos_ids.first().copied()) {
            globals.insert("eos_token", Value::from(eos));
        }
        Ok(ChatTemplate { env, origin, globals })
    }

    /// The tokenizer's own template (tokenizer_config.json's `chat_template`, or the GGUF's
    /// `tokenizer.chat_template`).
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self, LmDataError> {
        let source =
            tokenizer.chat_template.as_deref().ok_or_else(|| LmDataError::NoChatTemplate { tokenizer: tokenizer.source.clone() })?;
        Self::new(source, format!("the tokenizer of {}", tokenizer.source.display()), tokenizer)
    }

    /// A template read from a file (`--chat-template FILE`).
    pub fn from_file(path: &Path, tokenizer: &Tokenizer) -> Result<Self, LmDataError> {
        let source = std::fs::read_to_string(path).map_err(|source| LmDataError::TemplateFile { path: path.to_path_buf(), source })?;
        Self::new(&source, path.display().to_string(), tokenizer)
    }

    /// The `--chat-template` file when given, else the tokenizer's template.
    pub fn resolve(file: Option<&Path>, tokenizer: &Tokenizer) -> Result<Self, LmDataError> {
        match file {
            Some(path) => Self::from_file(path, tokenizer),
            None => Self::from_tokenizer(tokenizer),
        }
    }

    /// Where the template came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The conversation rendered (with the assistant header after it when `add_generation_prompt`).
    /// Errors are [`LmDataError::TemplateRender`] without a data location.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, LmDataError> {
        let fail = |e: minijinja::Error| self.render_error(e);
        let template = self.env.get_template(NAME).map_err(fail)?;
        let mut ctx = self.globals.clone();
        ctx.insert("messages", Value::from(Serde(messages)));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        template.render(Value::from_pairs(ctx)).map_err(fail)
    }

    fn render_error(&self, e: minijinja::Error) -> LmDataError {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            message.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        LmDataError::TemplateRender { origin: self.origin.clone(), path: None, line: None, message }
    }
}

/// The prompt a model generates from: the conversation rendered with `add_generation_prompt`, i.e.
/// transformers' `apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`.
pub fn generation_prompt(template: &ChatTemplate, messages: &[Message]) -> Result<String, LmDataError> {
    template.render(messages, true)
}

/// The token ids of [`generation_prompt`], tokenised as transformers' `apply_chat_template` does
/// (without adding the tokenizer's special tokens: the template writes them).
pub fn generation_prompt_ids(template: &ChatTemplate, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>, LmDataError> {
    Ok(tokenizer.encode_raw(&generation_prompt(template, messages)?)?)
}

/// Adds the data file and line to a template error (other errors pass through unchanged).
pub(crate) fn locate(e: LmDataError, file: &Path, at: usize) -> LmDataError {
    let here = || (Some(PathBuf::from(file)), Some(at));
    match e {
        LmDataError::TemplateRender { origin, message, .. } => {
            let (path, line) = here();
            LmDataError::TemplateRender { origin, path, line, message }
        }
        LmDataError::TemplateNotPrefix { origin, number, .. } => {
            let (path, line) = here();
            LmDataError::TemplateNotPrefix { origin, path, line, number }
        }
        other => other,
    }
}
