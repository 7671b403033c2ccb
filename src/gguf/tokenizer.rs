//! The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata, built as a
//! `tokenizers::Tokenizer` the way transformers' GGUF loader builds it
//! (`transformers/integrations/gguf/gguf_tokenizer_mapping.py`, 5.24), for byte-level BPE files
//! (`tokenizer.ggml.model = "gpt2"`):
//!
//! 1. model: BPE over `tokenizer.ggml.tokens` (ids = positions) and `tokenizer.ggml.merges`; a
//!    token written outside the byte-level alphabet is respelled byte by byte into it;
//! 2. pre-tokenizer, from `tokenizer.ggml.pre`: GPT-2's byte-level regex for "gpt-2", "default"
//!    and "smollm", otherwise a `Split` on the named family's regex (llama-3, qwen2, qwen3.5,
//!    tekken, gpt-4o) followed by a byte-level mapping without regex;
//! 3. added tokens: `token_type` 3 (control) as special tokens, so they are never split; 4
//!    (user-defined) as plain added tokens; bos/eos/unk/pad as special tokens;
//! 4. post-processor: bos first when `tokenizer.ggml.add_bos_token` is true, eos last when
//!    `tokenizer.ggml.add_eos_token` is (both default false for "gpt2", and a flag whose token id
//!    is absent adds nothing, as in transformers);
//! 5. decoder: byte-level.
//!
//! Two deliberate differences from transformers: it also adds GPT-2's default `<|endoftext|>` as
//! a special token even when the vocabulary lacks it (giving it an id past the model's
//! embeddings), and a bos/eos/unk/pad token whose text is not its vocabulary entry becomes a new
//! token; lowrank does neither. For "smollm", llama.cpp also splits digits one by one; SmolLM's
//! merges contain no digits, so the ids are the same.

use super::error::{GgufError, Result};
use super::GgufFile;
use std::collections::HashSet;
use std::path::PathBuf;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// `tokenizer.ggml.pre` values and their split regex (`None`: GPT-2's byte-level regex).
const PRE_TOKENIZERS: [(&str, Option<&str>); 26] = [
    ("gpt-2", None),
    ("default", None),
    ("smollm", None),
    ("llama3", Some(LLAMA3_SPLIT)),
    ("llama-v3", Some(LLAMA3_SPLIT)),
    ("llama-bpe", Some(LLAMA3_SPLIT)),
    ("falcon3", Some(LLAMA3_SPLIT)),
    ("falcon-h1", Some(LLAMA3_SPLIT)),
    ("pixtral", Some(LLAMA3_SPLIT)),
    ("midm-2.0", Some(LLAMA3_SPLIT)),
    ("lfm2", Some(LLAMA3_SPLIT)),
    ("jina-v5-nano", Some(LLAMA3_SPLIT)),
    ("dbrx", Some(LLAMA3_SPLIT)),
    ("smaug-bpe", Some(LLAMA3_SPLIT)),
    ("tekken", Some(TEKKEN_SPLIT)),
    ("qwen2", Some(QWEN2_SPLIT)),
    ("deepseek-r1-qwen", Some(QWEN2_SPLIT)),
    ("kormo", Some(QWEN2_SPLIT)),
    ("f2llmv2", Some(QWEN2_SPLIT)),
    ("megrez", Some(QWEN2_SPLIT)),
    ("qwen35", Some(QWEN35_SPLIT)),
    ("gpt-4o", Some(GPT4O_SPLIT)),
    ("llama4", Some(GPT4O_SPLIT)),
    ("kanana2", Some(GPT4O_SPLIT)),
    ("talkie", Some(GPT4O_SPLIT)),
    ("minimax-m2", Some(GPT4O_SPLIT)),
];

/// What the `tokenizer.*` metadata says, gathered before building (fields may be changed to
/// build a variant, e.g. another pre-tokenizer for a test).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model` ("gpt2" is supported).
    pub model: String,
    /// `tokenizer.ggml.pre` (absent means "default").
    pub pre: String,
    /// `tokenizer.ggml.tokens`: token text by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.merges`: "left right" pairs, best first (required for "gpt2"; empty when
    /// absent).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.token_type` by id (1 normal, 3 control, 4 user-defined, ...), if present.
    pub token_types: Option<Vec<i64>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (default false).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token` (default false).
    pub add_eos: bool,
    /// `tokenizer.chat_template`, a Jinja template (ChatML for SmolLM2).
    pub chat_template: Option<String>,
}

impl TokenizerSpec {
    /// Reads the tokenizer metadata of `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let hint = "the file carries no tokenizer; use the model's tokenizer.json instead";
        let id = |key: &str| -> Result<Option<u32>> {
            match file.get_u64(key)? {
                Some(v) => u32::try_from(v).map(Some).map_err(|_| GgufError::BadValue {
                    path: file.path.clone(),
                    key: key.into(),
                    expected: "a token id",
                    found: v.to_string(),
                }),
                None => Ok(None),
            }
        };
        let token_types = match file.get("tokenizer.ggml.token_type") {
            None => None,
            Some(v) => Some(v.as_array().and_then(|a| a.to_i64_vec()).ok_or_else(|| GgufError::BadValue {
                path: file.path.clone(),
                key: "tokenizer.ggml.token_type".into(),
                expected: "an array of integers",
                found: v.describe(),
            })?),
        };
        Ok(Self {
            model: file.require_str("tokenizer.ggml.model", hint)?.to_string(),
            pre: file.get_str("tokenizer.ggml.pre")?.unwrap_or("default").to_string(),
            tokens: file.get_str_array("tokenizer.ggml.tokens")?.ok_or_else(|| missing(file, "tokenizer.ggml.tokens", hint))?.to_vec(),
            merges: file.get_str_array("tokenizer.ggml.merges")?.map(<[String]>::to_vec).unwrap_or_default(),
            token_types,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            unk_id: id("tokenizer.ggml.unknown_token_id")?,
            pad_id: id("tokenizer.ggml.padding_token_id")?,
            add_bos: file.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            add_eos: file.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            chat_template: file.get_str("tokenizer.chat_template")?.map(str::to_string),
        })
    }
}

fn missing(file: &GgufFile, key: &str, hint: &'static str) -> GgufError {
    GgufError::MissingKey { path: file.path.clone(), key: key.into(), hint }
}

/// A tokenizer built from GGUF metadata, with its special token ids and chat template.
#[derive(Clone)]
pub struct GgufTokenizer {
    /// The `tokenizers` pipeline (model, pre-tokenizer, added tokens, post-processor, decoder).
    pub inner: tokenizers::Tokenizer,
    /// The metadata it was built from.
    pub spec: TokenizerSpec,
    /// The GGUF file (for error messages).
    pub path: PathBuf,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("path", &self.path)
            .field("pre", &self.spec.pre)
            .field("tokens", &self.spec.tokens.len())
            .finish()
    }
}

/// GPT-2's byte → character table (`bytes_to_unicode`): printable Latin-1 bytes map to
/// themselves, the other 68 to U+0100 onwards, in byte order.
fn byte_alphabet() -> [char; 256] {
    let keep = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let c = if keep(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(c).unwrap_or('\u{FFFD}'); // c < 0x200: always a valid char
    }
    table
}

impl GgufTokenizer {
    /// Builds the tokenizer of `file` from its metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        Self::from_spec(TokenizerSpec::from_gguf(file)?, file.path.clone())
    }

    /// Builds the tokenizer `spec` describes; `path` names the file in errors.
    pub fn from_spec(spec: TokenizerSpec, path: PathBuf) -> Result<Self> {
        let err = |message: String| GgufError::Tokenizer { path: path.clone(), message };
        if spec.model == "gpt2" && spec.merges.is_empty() {
            return Err(err("tokenizer.ggml.merges is missing or empty; a byte-level BPE tokenizer needs its merges (convert the model again with a current llama.cpp)".into()));
        }
        if spec.model != "gpt2" {
            return Err(err(format!(
                "tokenizer.ggml.model is {:?}; lowrank builds byte-level BPE tokenizers (\"gpt2\") only; use the model's tokenizer.json instead",
                spec.model
            )));
        }
        let split = PRE_TOKENIZERS.iter().find(|(name, _)| *name == spec.pre).map(|(_, r)| *r).ok_or_else(|| {
            let names: Vec<&str> = PRE_TOKENIZERS.iter().map(|(n, _)| *n).collect();
            err(format!("tokenizer.ggml.pre is {:?}, which lowrank does not know; it supports {}", spec.pre, names.join(", ")))
        })?;

        // 1. The BPE model, over the vocabulary respelled into the byte-level alphabet.
        let table = byte_alphabet();
        let alphabet: HashSet<char> = table.iter().copied().collect();
        let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
        let mut vocab = Vocab::default();
        for (id, token) in spec.tokens.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| err("more than 2^32 tokens".into()))?;
            let key = if in_alphabet(token) { token.clone() } else { token.bytes().map(|b| table[b as usize]).collect() };
            vocab.insert(key, id);
        }
        let mut merges = Vec::with_capacity(spec.merges.len());
        for (i, m) in spec.merges.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| err(format!("merge {i} ({m:?}) in tokenizer.ggml.merges is not two tokens separated by a space")))?;
            merges.push((a.to_string(), b.to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab.clone(), merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(String::new())
            .fuse_unk(false)
            .build()
            .map_err(|e| err(format!("the vocabulary and merges do not form a BPE model: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);

        // 2. The pre-tokenizer.
        let pre: PreTokenizerWrapper = match split {
            None => ByteLevel::new(false, true, true).into(),
            Some(regex) => {
                let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
                    .map_err(|e| err(format!("the {:?} split regex does not compile: {e}", spec.pre)))?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
            }
        };
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // 3. Added tokens: control tokens as special, user-defined ones as plain added tokens.
        let types = spec.token_types.as_deref().unwrap_or(&[]);
        let control: Vec<AddedToken> = spec
            .tokens
            .iter()
            .zip(types)
            .filter(|(t, &ty)| ty == 3 && in_alphabet(t))
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        inner.add_special_tokens(&control);
        let user: Vec<AddedToken> = spec
            .tokens
            .iter()
            .zip(types)
            .filter(|(t, &ty)| ty == 4 && inner.token_to_id(t).is_some())
            .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
            .collect();
        inner.add_tokens(&user);
        let named: Vec<AddedToken> = [spec.bos_id, spec.eos_id, spec.unk_id, spec.pad_id]
            .into_iter()
            .flatten()
            .filter_map(|id| spec.tokens.get(id as usize).filter(|t| vocab.get(*t) == Some(&id)))
            .map(|t| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        inner.add_special_tokens(&named);

        // 4. The post-processor (transformers' `update_post_processor`).
        // A flag whose token id is absent adds nothing, as in transformers.
        let token = |add: bool, id: Option<u32>, what: &str| -> Result<Option<(String, u32)>> {
            match id.filter(|_| add) {
                None => Ok(None),
                Some(id) => match spec.tokens.get(id as usize) {
                    Some(text) => Ok(Some((text.clone(), id))),
                    None => Err(err(format!("tokenizer.ggml.{what}_token_id is {id}, past the {} tokens", spec.tokens.len()))),
                },
            }
        };
        let bos = token(spec.add_bos, spec.bos_id, "bos")?;
        let eos = token(spec.add_eos, spec.eos_id, "eos")?;
        let piece = |t: &Option<(String, u32)>, type_id: u32| t.as_ref().map(|(s, _)| format!("{s}:{type_id}"));
        let single: Vec<String> = piece(&bos, 0).into_iter().chain(["$A:0".to_string()]).chain(piece(&eos, 0)).collect();
        let pair: Vec<String> = single.iter().cloned().chain(piece(&bos, 1)).chain(["$B:1".to_string()]).chain(piece(&eos, 1)).collect();
        let specials: Vec<(String, u32)> = bos.iter().chain(eos.iter()).cloned().collect();
        let template = TemplateProcessing::builder()
            .try_single(single)
            .and_then(|b| b.try_pair(pair))
            .map_err(|e| err(format!("cannot build the bos/eos template: {e}")))?
            .special_tokens(specials)
            .build()
            .map_err(|e| err(format!("cannot build the bos/eos template: {e}")))?;
        inner.with_post_processor(Some(template));
        Ok(Self { inner, spec, path })
    }

    /// Token ids of `text`, with bos/eos added as the file asks (`add_bos_token`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| GgufError::Tokenizer { path: self.path.clone(), message: format!("cannot encode {text:?}: {e}") })
    }

    /// The text of `ids`; special tokens are kept unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| GgufError::Tokenizer { path: self.path.clone(), message: format!("cannot decode {} ids: {e}", ids.len()) })
    }

    /// The beginning-of-sequence token id.
    pub fn bos_id(&self) -> Option<u32> {
        self.spec.bos_id
    }

    /// The end-of-sequence token id.
    pub fn eos_id(&self) -> Option<u32> {
        self.spec.eos_id
    }

    /// The padding token id (SmolLM2: `<|im_end|>`, 2).
    pub fn pad_id(&self) -> Option<u32> {
        self.spec.pad_id
    }

    /// The unknown-token id.
    pub fn unk_id(&self) -> Option<u32> {
        self.spec.unk_id
    }

    /// Whether encoding starts with the bos token.
    pub fn add_bos(&self) -> bool {
        self.spec.add_bos
    }

    /// The Jinja chat template (`tokenizer.chat_template`), if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.spec.chat_template.as_deref()
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny byte-level vocabulary: the 256 byte characters, "Ġh", "Ġhi", one control token and
    /// one token stored with a real space (outside the byte alphabet).
    fn spec() -> TokenizerSpec {
        let mut tokens: Vec<String> = byte_alphabet().iter().map(|c| c.to_string()).collect();
        tokens.extend(["Ġh".to_string(), "Ġhi".to_string(), "<|ctl|>".to_string(), "a b".to_string()]);
        let mut types = vec![1i64; tokens.len()];
        types[258] = 3;
        TokenizerSpec {
            model: "gpt2".into(),
            pre: "smollm".into(),
            merges: vec!["Ġ h".into(), "Ġh i".into()],
            token_types: Some(types),
            tokens,
            bos_id: Some(258),
            eos_id: Some(258),
            unk_id: None,
            pad_id: None,
            add_bos: false,
            add_eos: false,
            chat_template: None,
        }
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let t = byte_alphabet();
        assert_eq!((t[b' ' as usize], t[b'\n' as usize], t[b'a' as usize], t[0xAD]), ('Ġ', 'Ċ', 'a', 'Ń'));
        assert_eq!(t.iter().collect::<HashSet<_>>().len(), 256);
    }

    #[test]
    fn merges_control_tokens_and_bos_template() {
        let tok = GgufTokenizer::from_spec(spec(), "t.gguf".into()).unwrap();
        // " hi" → "Ġhi" (256 + 1), the control token stays whole, 'x' is its byte's id.
        assert_eq!(tok.encode(" hi<|ctl|>x").unwrap(), [257, 258, u32::from(b'x')]);
        assert_eq!(tok.decode(&[257, 258], false).unwrap(), " hi<|ctl|>");
        assert_eq!(tok.decode(&[257, 258], true).unwrap(), " hi");
        // "a b" is respelled "aĠb": reachable by id, not by merges (there is no "a Ġ" merge).
        assert_eq!(tok.inner.token_to_id("aĠb"), Some(259));
        let mut s = spec();
        s.add_bos = true;
        s.add_eos = true;
        let tok = GgufTokenizer::from_spec(s, "t.gguf".into()).unwrap();
        assert_eq!(tok.encode(" hi").unwrap(), [258, 257, 258]);
        assert_eq!(tok.encode("").unwrap(), [258, 258]);
    }

    #[test]
    fn unsupported_metadata_is_an_error_naming_it() {
        let mut s = spec();
        s.model = "llama".into();
        let e = GgufTokenizer::from_spec(s, "t.gguf".into()).unwrap_err().to_string();
        assert!(e.contains("t.gguf") && e.contains("\"llama\"") && e.contains("gpt2"), "{e}");
        let mut s = spec();
        s.add_bos = true;
        s.bos_id = Some(1000);
        let e = GgufTokenizer::from_spec(s, "t.gguf".into()).unwrap_err().to_string();
        assert!(e.contains("bos_token_id is 1000, past the 260 tokens"), "{e}");
        let mut s = spec();
        s.add_bos = true;
        s.bos_id = None;
        assert_eq!(GgufTokenizer::from_spec(s, "t.gguf".into()).unwrap().encode(" hi").unwrap(), [257], "no bos id: nothing added");
        let mut s = spec();
        s.merges.clear();
        let e = GgufTokenizer::from_spec(s, "t.gguf".into()).unwrap_err().to_string();
        assert!(e.contains("tokenizer.ggml.merges is missing"), "{e}");
        let mut s = spec();
        s.merges.push("nospace".into());
        let e = GgufTokenizer::from_spec(s, "t.gguf".into()).unwrap_err().to_string();
        assert!(e.contains("merge 2") && e.contains("nospace"), "{e}");
        for (name, _) in PRE_TOKENIZERS {
            let mut s = spec();
            s.pre = name.into();
            assert!(GgufTokenizer::from_spec(s, "t.gguf".into()).is_ok(), "pre-tokenizer {name} does not build");
        }
    }
}
