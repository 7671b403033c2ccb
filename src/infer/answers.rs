//! Scoring a causal LM's generated answers against reference answers (`lowrank eval --generate`):
//! each record's prompt — a conversation up to its last assistant turn (rendered with the chat
//! template's generation prompt, as `lowrank generate --chat` renders it), or a prompt / completion
//! pair's prompt (encoded with the tokenizer's special tokens, as training encodes it) — is
//! continued greedily, and the answer is compared with the reference (that last assistant turn, or
//! the completion): exact match after trimming surrounding whitespace, and the same ignoring case.

use crate::data::lm::{generation_prompt_ids, ChatTemplate, LmFile, LmSample, Role};
use crate::error::{Error, Result};
use crate::infer::generate::{decoder_of, GenerateOptions, Generator};
use crate::model::Model;
use crate::tokenize::Tokenizer;
use serde::Serialize;

/// One record's generated answer.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    /// 1-based line of the record in the data file.
    pub line: usize,
    /// The reference answer, as in the file.
    pub reference: String,
    /// What the model generated (special tokens skipped).
    pub generated: String,
    /// Whether the two are equal after trimming surrounding whitespace.
    pub exact: bool,
}

/// Exact-match scores of a file's generated answers.
#[derive(Clone, Debug, Serialize)]
pub struct AnswerScores {
    /// Records scored.
    pub n: usize,
    /// Fraction of answers equal to their reference after trimming surrounding whitespace.
    pub exact_match: f64,
    /// The same, ignoring case.
    pub exact_match_ignoring_case: f64,
    /// The most tokens generated per answer.
    pub max_new_tokens: usize,
    /// Every answer, in file order.
    pub answers: Vec<Answer>,
}

/// Whether `generated` answers `reference`: (exactly, ignoring case), surrounding whitespace
/// trimmed in both.
pub fn matches(generated: &str, reference: &str) -> (bool, bool) {
    let (g, r) = (generated.trim(), reference.trim());
    (g == r, g.to_lowercase() == r.to_lowercase())
}

/// The prompt ids and reference answer of a record; a text record has no reference (an error
/// naming the shapes that have one).
pub fn prompt_and_reference(
    sample: &LmSample,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    where_: &str,
) -> Result<(Vec<u32>, String)> {
    match sample {
        LmSample::Chat { messages } => {
            let last = messages.iter().rposition(|m| m.role == Role::Assistant).ok_or_else(|| {
                Error::InvalidOption(format!("{where_}: the conversation has no assistant turn to compare the generated answer with"))
            })?;
            let template = template.ok_or_else(|| {
                Error::InvalidOption(format!("{where_}: a conversation needs a chat template; pass one with --chat-template FILE"))
            })?;
            Ok((generation_prompt_ids(template, tokenizer, &messages[..last])?, messages[last].content.clone()))
        }
        LmSample::PromptCompletion { prompt, completion } => Ok((tokenizer.encode(prompt)?, completion.clone())),
        LmSample::Text { .. } => Err(Error::InvalidOption(format!(
            "{where_}: --generate needs reference answers: conversations ({{\"messages\": [...]}}, the last assistant turn is the reference) or {{\"prompt\", \"completion\"}} pairs, not texts"
        ))),
    }
}

/// Generates greedily (at most `max_new_tokens`, ending at the model's end-of-sequence ids) for
/// every record of `file` and scores the answers; `progress(done, total)` after each.
pub fn score_answers(
    model: &Model,
    tokenizer: &Tokenizer,
    file: &LmFile,
    template: Option<&ChatTemplate>,
    max_new_tokens: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AnswerScores> {
    let d = decoder_of(model)?;
    let mut eos = tokenizer.eos_ids.clone();
    eos.extend(d.config.eos_token_ids.iter().filter(|e| !tokenizer.eos_ids.contains(e)));
    let opts = GenerateOptions { max_new_tokens, eos, ..Default::default() };
    let mut gen = Generator::new();
    let (mut answers, mut exact, mut nocase) = (Vec::with_capacity(file.records.len()), 0usize, 0usize);
    for (i, r) in file.records.iter().enumerate() {
        let where_ = format!("{}:{}", file.path.display(), r.line);
        let (ids, reference) = prompt_and_reference(&r.sample, tokenizer, template, &where_)?;
        let g = gen.generate(model, tokenizer, &ids, &opts, &mut |_| {}).map_err(|e| Error::Other(format!("{where_}: {e}")))?;
        let (e, c) = matches(&g.text, &reference);
        exact += usize::from(e);
        nocase += usize::from(c);
        answers.push(Answer { line: r.line, reference, generated: g.text, exact: e });
        progress(i + 1, file.records.len());
    }
    let n = answers.len();
    let frac = |k: usize| if n > 0 { k as f64 / n as f64 } else { 0.0 };
    Ok(AnswerScores { n, exact_match: frac(exact), exact_match_ignoring_case: frac(nocase), max_new_tokens, answers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_trims_whitespace_and_can_ignore_case() {
        assert_eq!(matches(" positive\n", "positive"), (true, true));
        assert_eq!(matches("Positive", "positive"), (false, true));
        assert_eq!(matches("positive.", "positive"), (false, false));
        assert_eq!(matches("", "positive"), (false, false));
    }
}
