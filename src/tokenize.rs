//! Text → token ids with the `tokenizers` crate: a model folder's tokenizer.json, a BERT
//! WordPiece tokenizer built from its vocab.txt, or the byte-level BPE a GGUF file's metadata
//! describes; the model's special tokens added ([CLS]/[SEP], or a decoder's BOS when it wants
//! one), truncated, never padded (batches are packed, see [`crate::data::batch`]).

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

/// A model's tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same tokenizer without truncation (for [`Tokenizer::encode_raw`]).
    untruncated: tokenizers::Tokenizer,
    /// The file it was built from (tokenizer.json, vocab.txt or a .gguf file).
    pub source: PathBuf,
    /// Longest sequence produced, special tokens included.
    pub max_length: usize,
    /// Id of the padding token.
    pub pad_id: u32,
    /// End-of-sequence token ids (a decoder's generation stops at them).
    pub eos_ids: Vec<u32>,
    /// The chat template (Jinja), when the model has one.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("source", &self.source).field("max_length", &self.max_length).finish()
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer { path: path.to_path_buf(), message: e.to_string() }
}

/// Whether the folder's tokenizer lower-cases (tokenizer_config.json's do_lower_case; default true).
fn lower_case(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.get("do_lower_case").and_then(Value::as_bool))
        .unwrap_or(true)
}

impl Tokenizer {
    /// Loads the tokenizer of a model: a GGUF file's, or a model folder's tokenizer.json when
    /// present, else its vocab.txt.
    pub fn from_model_dir(dir: &Path, max_length: usize) -> Result<Self> {
        if crate::model::config::is_gguf(dir) {
            return Self::from_gguf(dir, max_length);
        }
        let json = dir.join("tokenizer.json");
        if json.exists() {
            let inner = tokenizers::Tokenizer::from_file(&json).map_err(|e| tok_err(&json, e))?;
            let mut t = Self::finish(inner, json, max_length)?;
            t.read_folder_settings(dir);
            return Ok(t);
        }
        let vocab = dir.join("vocab.txt");
        if vocab.exists() {
            return Self::from_vocab(&vocab, lower_case(dir), max_length);
        }
        Err(Error::Tokenizer {
            path: dir.to_path_buf(),
            message: "no tokenizer.json or vocab.txt in the model folder; copy the tokenizer files of the base model into it".into(),
        })
    }

    /// The tokenizer a GGUF file's metadata describes.
    pub fn from_gguf(path: &Path, max_length: usize) -> Result<Self> {
        let file = crate::gguf::GgufFile::open(path)?;
        let g = crate::gguf::tokenizer::GgufTokenizer::from_gguf(&file)?;
        let mut t = Self::finish(g.inner.clone(), path.to_path_buf(), max_length)?;
        t.pad_id = g.pad_id().or(g.eos_id()).unwrap_or(0);
        t.eos_ids = g.eos_id().into_iter().collect();
        t.chat_template = g.chat_template().map(str::to_string);
        Ok(t)
    }

    /// A folder's tokenizer_config.json: its padding and end-of-sequence tokens and chat template.
    fn read_folder_settings(&mut self, dir: &Path) {
        let Some(cfg) =
            std::fs::read_to_string(dir.join("tokenizer_config.json")).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            return;
        };
        let token = |key: &str| match cfg.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        if self.inner.token_to_id("[PAD]").is_none() {
            if let Some(id) = token("pad_token").and_then(|t| self.inner.token_to_id(&t)) {
                self.pad_id = id;
            }
        }
        if let Some(id) = token("eos_token").and_then(|t| self.inner.token_to_id(&t)) {
            self.eos_ids = vec![id];
        }
        self.chat_template = cfg.get("chat_template").and_then(Value::as_str).map(str::to_string);
    }

    /// A BERT WordPiece tokenizer from a vocab.txt (as transformers' BertTokenizer builds it).
    pub fn from_vocab(vocab: &Path, lowercase: bool, max_length: usize) -> Result<Self> {
        let path = vocab.to_str().ok_or_else(|| tok_err(vocab, "path is not UTF-8"))?;
        let wp = WordPiece::from_file(path).unk_token("[UNK]".into()).build().map_err(|e| tok_err(vocab, e))?;
        let mut inner = tokenizers::Tokenizer::new(wp);
        let id = |t: &str| inner.token_to_id(t).ok_or_else(|| tok_err(vocab, format!("vocabulary has no {t} token")));
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        Self::finish(inner, vocab.to_path_buf(), max_length)
    }

    fn finish(mut inner: tokenizers::Tokenizer, source: PathBuf, max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::InvalidOption(format!("--max-length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")));
        }
        inner.with_padding(None);
        let untruncated = inner.clone();
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| tok_err(&source, e))?;
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0);
        Ok(Tokenizer { inner, untruncated, source, max_length, pad_id, eos_ids: Vec::new(), chat_template: None })
    }

    /// Token ids of one text, with [CLS] and [SEP].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| tok_err(&self.source, e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of many texts (in parallel).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self.inner.encode_batch(texts.to_vec(), true).map_err(|e| tok_err(&self.source, e))?;
        Ok(encs.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Text of `ids` (special tokens skipped when `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| tok_err(&self.source, e))
    }

    /// Token ids of one text without the model's special tokens and without truncation (pieces
    /// of a prompt that a template assembles).
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.untruncated.encode(text, false).map_err(|e| tok_err(&self.source, e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Size of the vocabulary (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_vocab(dir: &Path) -> PathBuf {
        let p = dir.join("vocab.txt");
        std::fs::write(&p, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nmovie\nwas\ngood\n,\n!\nun\n##believ\n##able\n").unwrap();
        p
    }

    #[test]
    fn vocab_tokenizer_lowercases_splits_and_adds_specials() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokenizer::from_vocab(&tiny_vocab(dir.path()), true, 16).unwrap();
        assert_eq!(t.encode("The movie, UNBELIEVABLE!").unwrap(), vec![2, 5, 6, 9, 11, 12, 13, 10, 3]);
        assert_eq!(t.encode("zzz").unwrap(), vec![2, 1, 3]);
    }

    #[test]
    fn truncates_to_max_length_keeping_specials() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokenizer::from_vocab(&tiny_vocab(dir.path()), true, 4).unwrap();
        assert_eq!(t.encode("the movie was good").unwrap(), vec![2, 5, 6, 3]);
        let batch = t.encode_batch(&["the", "movie was"]).unwrap();
        assert_eq!(batch, vec![vec![2, 5, 3], vec![2, 6, 7, 3]]);
    }

    #[test]
    fn folder_without_tokenizer_files_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Tokenizer::from_model_dir(dir.path(), 128).unwrap_err();
        assert!(e.to_string().contains("vocab.txt"), "{e}");
    }
}
