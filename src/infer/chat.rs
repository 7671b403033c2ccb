//! Chat prompts: a conversation rendered by the model's chat template (Jinja: the GGUF's
//! `tokenizer.chat_template` or tokenizer_config.json's `chat_template`) with `minijinja`, as
//! transformers' `apply_chat_template` does: blocks trimmed (`trim_blocks`, `lstrip_blocks`),
//! Python's string methods available, `raise_exception` for the template's own checks, and the
//! variables `messages`, `add_generation_prompt`, `bos_token` and `eos_token`.

use crate::error::{Error, Result};
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind};
use std::collections::BTreeMap;

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// "system", "user" or "assistant".
    pub role: String,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A turn of `role`.
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

/// The special tokens a template may print.
#[derive(Clone, Debug, Default)]
pub struct TemplateTokens {
    /// The beginning-of-sequence token's text.
    pub bos: Option<String>,
    /// The end-of-sequence token's text.
    pub eos: Option<String>,
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::from_object(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<String, Value>>())
}

/// Renders `messages` with the Jinja chat `template`; `add_generation_prompt` appends the
/// template's opening of an assistant turn. A template that does not parse or fails to render is
/// an error naming what failed and `--chat-template` as the way out.
pub fn render(template: &str, messages: &[Message], add_generation_prompt: bool, tokens: &TemplateTokens) -> Result<String> {
    let fail = |what: &str, e: minijinja::Error| {
        let mut msg = format!("the chat template {what}: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        Error::InvalidOption(format!("{msg}; fix it or pass another one with --chat-template FILE"))
    };
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(|e| fail("syntax", e))?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| fail("does not parse", e))?;
    let msgs: Vec<Value> =
        messages.iter().map(|m| map(vec![("role", Value::from(m.role.as_str())), ("content", Value::from(m.content.as_str()))])).collect();
    let opt = |t: &Option<String>| t.as_deref().map_or(Value::UNDEFINED, Value::from);
    let ctx = map(vec![
        ("messages", Value::from(msgs)),
        ("add_generation_prompt", Value::from(add_generation_prompt)),
        ("bos_token", opt(&tokens.bos)),
        ("eos_token", opt(&tokens.eos)),
    ]);
    let tmpl = env.get_template("chat").map_err(|e| fail("does not load", e))?;
    tmpl.render(ctx).map_err(|e| fail("failed to render", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template (its GGUF's tokenizer.chat_template).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_as_transformers_does() {
        let m = [Message::new("user", "What is LoRA?")];
        let got = render(CHATML, &m, true, &TemplateTokens::default()).unwrap();
        // tests/fixtures/smollm2/hidden.json, prompt2's "rendered".
        assert_eq!(got, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is LoRA?<|im_end|>\n<|im_start|>assistant\n");
        let sys = [Message::new("system", "Be brief."), Message::new("user", "Hi")];
        let got = render(CHATML, &sys, false, &TemplateTokens::default()).unwrap();
        assert_eq!(got, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn trims_blocks_and_offers_python_methods_and_tokens() {
        let t = "{% for m in messages %}\n  {{ bos_token }}{{ m.role.upper() }}: {{ m.content.strip() }}{{ eos_token }}\n{% endfor %}";
        let tokens = TemplateTokens { bos: Some("<s>".into()), eos: Some("</s>".into()) };
        let got = render(t, &[Message::new("user", "  hi  ")], false, &tokens).unwrap();
        assert_eq!(got, "  <s>USER: hi</s>\n");
    }

    #[test]
    fn template_errors_are_clear() {
        let e = render("{% for m in messages %}", &[], true, &TemplateTokens::default()).unwrap_err().to_string();
        assert!(e.contains("does not parse") && e.contains("--chat-template"), "{e}");
        let t = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with the user') }}{% endif %}";
        let e = render(t, &[Message::new("assistant", "x")], true, &TemplateTokens::default()).unwrap_err().to_string();
        assert!(e.contains("failed to render") && e.contains("must start with the user"), "{e}");
    }
}
