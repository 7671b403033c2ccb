//! Step 3: token ids and the loss mask, as TRL's completion-only training makes them.
//!
//! - Conversation: the whole conversation rendered (no generation prompt) and tokenised without
//!   the tokenizer's own special tokens (the template writes them), as `apply_chat_template` does.
//!   Assistant message `i`'s text is the difference between rendering `messages[..i]` with the
//!   generation prompt and rendering `messages[..=i]`, less trailing whitespace: its content and
//!   end-of-turn token (ChatML: `content<|im_end|>`, not the `<|im_start|>assistant\n` header nor
//!   the newline after). Every token whose byte range overlaps such a span is a loss token
//!   (transformers' rule for `return_assistant_tokens_mask`). No eos is added: the template's
//!   end-of-turn ends each reply.
//! - Prompt / completion: `prompt + completion` tokenised with the tokenizer's special tokens (a
//!   Llama tokenizer's BOS), then the eos token appended unless already last; loss from the first
//!   token that overlaps the completion to the end (eos included).
//! - Text: tokenised with special tokens, eos appended; loss on every token.
//!
//! `train_on_prompt` puts the loss on every token. Then the first `max_length` tokens are kept.

use super::template::locate;
use super::{ChatTemplate, LmDataError, LmExample, LmFile, LmOptions, LmRecord, LmSample, Message, Role, Truncation};
use crate::tokenize::Tokenizer;
use rayon::prelude::*;
use std::ops::Range;
use std::path::Path;

/// A conversation rendered for training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedChat {
    /// The whole conversation, rendered without a generation prompt.
    pub text: String,
    /// The byte ranges of `text` that are assistant replies (content and end-of-turn), in order.
    pub spans: Vec<Range<usize>>,
}

/// Renders a conversation and finds its assistant replies by rendering it prefix by prefix.
/// Errors ([`LmDataError::TemplateRender`], [`LmDataError::TemplateNotPrefix`]) carry no data
/// location; [`encode_file`] adds it.
pub fn render_chat(template: &ChatTemplate, messages: &[Message]) -> Result<RenderedChat, LmDataError> {
    let text = template.render(messages, false)?;
    let mut spans = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if message.role != Role::Assistant {
            continue;
        }
        let not_prefix = || LmDataError::TemplateNotPrefix { origin: template.origin().to_string(), path: None, line: None, number: i + 1 };
        let before = template.render(&messages[..i], true)?;
        let through = if i + 1 == messages.len() { text.clone() } else { template.render(&messages[..=i], false)? };
        if !through.starts_with(&before) || !text.starts_with(&through) {
            return Err(not_prefix());
        }
        let end = through.trim_end().len().max(before.len());
        if end > before.len() {
            spans.push(before.len()..end);
        }
    }
    Ok(RenderedChat { text, spans })
}

/// Tokenises every record of `file` (in parallel; in file order). `template` renders
/// conversations (required for a chat file). Fails on the first bad record, naming its line.
pub fn encode_file(
    file: &LmFile,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    opts: &LmOptions,
) -> Result<super::LmEncoded, LmDataError> {
    if file.shape == super::LmShape::Chat && template.is_none() {
        return Err(LmDataError::NoChatTemplate { tokenizer: tokenizer.source.clone() });
    }
    let results: Vec<Result<(LmExample, usize), LmDataError>> =
        file.records.par_iter().map(|record| encode_record(record, &file.path, tokenizer, template, opts)).collect();
    // In file order, so that the error reported is the first bad line's.
    let (mut encoded, mut dropped, mut first_dropped) = (Vec::with_capacity(results.len()), 0, None);
    for r in results {
        match r {
            Err(e @ LmDataError::PromptTooLong { .. }) if opts.drop_long_prompts => {
                dropped += 1;
                first_dropped.get_or_insert(e);
            }
            other => encoded.push(other?),
        }
    }
    if let (true, Some(e)) = (encoded.is_empty(), first_dropped) {
        return Err(e);
    }
    let mut truncation = Truncation { examples: encoded.len(), max_length: opts.max_length, dropped, ..Truncation::default() };
    for (_, full) in &encoded {
        truncation.longest = truncation.longest.max(*full);
        truncation.truncated += usize::from(*full > opts.max_length);
    }
    Ok(super::LmEncoded { shape: file.shape, examples: encoded.into_iter().map(|(e, _)| e).collect(), truncation })
}

/// One record → its example (truncated) and its length before truncation.
pub fn encode_record(
    record: &LmRecord,
    path: &Path,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    opts: &LmOptions,
) -> Result<(LmExample, usize), LmDataError> {
    let line = record.line;
    let (mut ids, mut loss, what) = match &record.sample {
        LmSample::Chat { messages } => {
            let template = template.ok_or_else(|| LmDataError::NoChatTemplate { tokenizer: tokenizer.source.clone() })?;
            let (text, spans) = if opts.train_on_prompt {
                (template.render(messages, false), Vec::new())
            } else {
                match render_chat(template, messages) {
                    Ok(chat) => (Ok(chat.text), chat.spans),
                    Err(e) => (Err(e), Vec::new()),
                }
            };
            let text = text.map_err(|e| locate(e, path, line))?;
            let (ids, offsets) = tokenizer.encode_with_offsets(&text, false)?;
            let loss = if opts.train_on_prompt { vec![true; ids.len()] } else { span_mask(&offsets, &spans) };
            (ids, loss, "conversation before the first assistant reply")
        }
        LmSample::PromptCompletion { prompt, completion } => {
            let (mut ids, offsets) = tokenizer.encode_with_offsets(&format!("{prompt}{completion}"), true)?;
            let first = offsets.iter().position(|&(s, e)| s < e && e > prompt.len()).unwrap_or(ids.len());
            let mut loss: Vec<bool> = (0..ids.len()).map(|t| opts.train_on_prompt || t >= first).collect();
            push_eos(tokenizer, &mut ids, &mut loss);
            (ids, loss, "prompt")
        }
        LmSample::Text { text } => {
            let (mut ids, _) = tokenizer.encode_with_offsets(text, true)?;
            let mut loss = vec![true; ids.len()];
            push_eos(tokenizer, &mut ids, &mut loss);
            (ids, loss, "text")
        }
    };
    let full = ids.len();
    match loss.iter().skip(1).position(|&on| on).map(|k| k + 1) {
        None => return Err(LmDataError::NothingToPredict { path: path.to_path_buf(), line }),
        Some(first) if first >= opts.max_length => {
            return Err(LmDataError::PromptTooLong { path: path.to_path_buf(), line, what, tokens: first, max_length: opts.max_length });
        }
        Some(_) => {}
    }
    ids.truncate(opts.max_length);
    loss.truncate(opts.max_length);
    Ok((LmExample { ids, loss, line }, full))
}

/// Appends the tokenizer's (first) eos token as a loss token, unless the ids already end with it
/// (or the tokenizer names none).
fn push_eos(tokenizer: &Tokenizer, ids: &mut Vec<u32>, loss: &mut Vec<bool>) {
    if let Some(&eos) = tokenizer.eos_ids.first() {
        if ids.last() != Some(&eos) {
            ids.push(eos);
            loss.push(true);
        }
    }
}

/// Per token: whether its byte range `[start, end)` overlaps one of `spans` (sorted, disjoint),
/// exactly as transformers computes `assistant_masks` (an empty range `[s, s)` counts when
/// `span.start < s < span.end`).
pub(crate) fn span_mask(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<bool> {
    let mut mask = vec![false; offsets.len()];
    let mut span = 0;
    for (t, &(start, end)) in offsets.iter().enumerate() {
        while span < spans.len() && start >= spans[span].end {
            span += 1;
        }
        let Some(current) = spans.get(span) else { break };
        mask[t] = end > current.start;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_mask_marks_every_overlapping_token() {
        // Tokens: [0,3) [3,5) [5,9) [9,9) [9,12) [12,14); spans [4,6) and [12,13).
        let offsets = [(0, 3), (3, 5), (5, 9), (9, 9), (9, 12), (12, 14)];
        assert_eq!(span_mask(&offsets, &[4..6, 12..13]), [false, true, true, false, false, true]);
        assert_eq!(span_mask(&offsets, &[]), [false; 6]);
        assert_eq!(span_mask(&offsets, &[Range { start: 0, end: 14 }]), [true; 6]);
        assert_eq!(span_mask(&[(0, 0), (0, 2)], &[Range { start: 0, end: 2 }]), [false, true]);
    }
}
