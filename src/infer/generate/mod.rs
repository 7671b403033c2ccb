//! Text generation with a decoder's language-model head: a prompt prefilled in chunks into a
//! key/value cache ([`kv_cache`]), then one token per step ([`step`]), each chosen by a
//! [`sampler`] (greedy, temperature, top-k, top-p, seeded), until an end-of-sequence token, a
//! stop string ([`stream`]), `max_new_tokens` or the end of the model's context. The text is
//! handed out as it grows (streaming). Without the cache ([`Decoding::Recompute`]) every token
//! reruns the model's ordinary forward pass over the whole sequence: the reference the cache is
//! checked against.
//!
//! A [`Generator`] keeps its cache between requests and reuses the longest prefix a new prompt
//! shares with what the cache holds (a chat's earlier turns are not recomputed).

pub mod adapters;
pub mod kv_cache;
pub mod request;
pub mod sampler;
pub mod step;
pub mod stream;

pub use adapters::{parse_adapter_arg, AdapterSet};
pub use kv_cache::KvCache;
pub use request::{encode_prompt, read_requests, ChatSettings, Prompt, Request};
pub use sampler::{argmax, Sampler, SamplerConfig};
pub use step::{step, Rows, StepBuffers};
pub use stream::TextStream;

use crate::data::batch::{Batch, IGNORE};
use crate::error::{Error, Result};
use crate::model::decoder::Decoder;
use crate::model::{Activations, Model, Pass};
use crate::tokenize::Tokenizer;
use serde::Serialize;
use std::time::Instant;

/// How each next token's logits are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decoding {
    /// Incremental, with the key/value cache.
    #[default]
    Cached,
    /// The model's full forward pass over the whole sequence for every token (slow; the
    /// reference for the cache).
    Recompute,
}

/// What a generation does.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub sampler: SamplerConfig,
    /// Strings that end the generation (the text is cut before them).
    pub stop: Vec<String>,
    /// Token ids that end the generation (kept as the last id, left out of the text).
    pub eos: Vec<u32>,
    /// Cached or recomputed decoding.
    pub decoding: Decoding,
    /// Prompt tokens per prefill step (bounds the attention buffers).
    pub prefill_chunk: usize,
    /// Reuse the cached keys and values of the prompt's prefix shared with the previous request.
    pub reuse_prefix: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            sampler: SamplerConfig::greedy(),
            stop: Vec::new(),
            eos: Vec::new(),
            decoding: Decoding::Cached,
            prefill_chunk: 256,
            reuse_prefix: true,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-sequence token.
    Eos,
    /// A stop string.
    Stop,
    /// `max_new_tokens` tokens.
    MaxNewTokens,
    /// The model's context is full.
    Context,
}

impl StopReason {
    /// The name used in output ("eos", "stop", "max_new_tokens", "context").
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Stop => "stop",
            StopReason::MaxNewTokens => "max_new_tokens",
            StopReason::Context => "context",
        }
    }
}

/// One generation's result.
#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the cache (shared with the previous request) instead of computed.
    pub reused_tokens: usize,
    /// The generated ids (an end-of-sequence id included when one ended it).
    pub ids: Vec<u32>,
    /// Their text (special tokens skipped; cut before a stop string).
    pub text: String,
    /// Why it ended.
    pub stopped: StopReason,
    /// Seconds until the first new token's logits (the prefill).
    pub prefill_s: f64,
    /// Seconds of the generation in all (prefill included).
    pub total_s: f64,
}

impl Generation {
    /// New tokens per second over the whole generation, prefill included (transformers'
    /// `generate` timed end to end).
    pub fn tokens_per_s(&self) -> f64 {
        self.ids.len() as f64 / self.total_s.max(1e-12)
    }

    /// Tokens per second of the decoding steps alone (after the first token).
    pub fn decode_tokens_per_s(&self) -> f64 {
        let steps = self.ids.len().saturating_sub(1) as f64;
        steps / (self.total_s - self.prefill_s).max(1e-12)
    }
}

/// The decoder of a model, or an error saying generation needs one.
pub fn decoder_of(model: &Model) -> Result<&Decoder> {
    match model {
        Model::Decoder(d) => Ok(d),
        Model::Bert(_) => Err(Error::InvalidOption(format!(
            "generation needs a decoder (Llama, Qwen2, Mistral, GPT-2); {} is an encoder",
            model.model_type()
        ))),
    }
}

/// Logits [V] of the next token after `ids` from the model's ordinary forward pass over the
/// whole sequence (no cache).
pub fn full_logits(model: &Model, ids: &[u32], acts: &mut Activations) -> Result<Vec<f32>> {
    let d = decoder_of(model)?;
    let targets = vec![IGNORE; ids.len()];
    let batch = Batch::pack_lm(&[ids], &[&targets]);
    model.forward_loss(&batch, acts, Pass::Infer);
    Ok(d.lm_logits(acts.decoder_acts(), &[ids.len() - 1], false))
}

/// Generates with one model, keeping its key/value cache between requests.
#[derive(Default)]
pub struct Generator {
    cache: Option<KvCache>,
    /// The ids whose keys and values the cache holds, in order.
    held: Vec<u32>,
    buf: StepBuffers,
    acts: Activations,
}

impl Generator {
    /// A generator with an empty cache.
    pub fn new() -> Generator {
        Generator::default()
    }

    /// Forgets the cache (call after the model's weights change, e.g. another adapter).
    pub fn reset(&mut self) {
        self.held.clear();
        if let Some(c) = &mut self.cache {
            c.clear();
        }
    }

    /// Bytes held by the key/value cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.as_ref().map_or(0, KvCache::bytes)
    }

    /// Generates a continuation of `prompt` (token ids); `on_text` receives the text as it
    /// grows. Errors: not a decoder with a language-model head, an empty prompt, or a prompt
    /// longer than the model's context.
    pub fn generate(
        &mut self,
        model: &Model,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let d = decoder_of(model)?;
        let ctx = d.config.max_position_embeddings;
        if prompt.is_empty() {
            return Err(Error::InvalidOption("the prompt is empty: give some text to continue".into()));
        }
        if prompt.len() > ctx {
            return Err(Error::InvalidOption(format!(
                "the prompt has {} tokens but the model's context holds {ctx}; shorten the prompt by at least {} tokens",
                prompt.len(),
                prompt.len() - ctx
            )));
        }
        let mut sampler = Sampler::new(opts.sampler)?;
        if !opts.reuse_prefix {
            self.reset();
        }
        let start = Instant::now();
        let need = (prompt.len() + opts.max_new_tokens).min(ctx);
        let reused = self.prepare(d, prompt, need);
        let mut logits = match opts.decoding {
            Decoding::Cached => self.prefill(d, &prompt[reused..], opts.prefill_chunk.max(1))?,
            Decoding::Recompute => full_logits(model, prompt, &mut self.acts)?,
        };
        let prefill_s = start.elapsed().as_secs_f64();
        let mut stream = TextStream::new(&opts.stop);
        let mut ids: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut all: Vec<u32> = prompt.to_vec();
        let stopped = loop {
            if ids.len() == opts.max_new_tokens {
                break StopReason::MaxNewTokens;
            }
            let id = sampler.sample(&logits);
            ids.push(id);
            all.push(id);
            if opts.eos.contains(&id) {
                break StopReason::Eos;
            }
            text = tokenizer.decode(&ids, true)?;
            let up = stream.update(&text);
            if !up.piece.is_empty() {
                on_text(&up.piece);
            }
            if let Some(t) = up.stopped {
                text = t;
                break StopReason::Stop;
            }
            if ids.len() == opts.max_new_tokens {
                break StopReason::MaxNewTokens;
            }
            if all.len() > ctx {
                break StopReason::Context;
            }
            logits = match opts.decoding {
                Decoding::Cached => {
                    let cache = self.cache.as_mut().expect("prepared");
                    let l = step(d, cache, &[id], Rows::Last, &mut self.buf)?.to_vec();
                    self.held.push(id);
                    l
                }
                Decoding::Recompute => full_logits(model, &all, &mut self.acts)?,
            };
        };
        if stopped != StopReason::Stop {
            text = tokenizer.decode(&ids, true)?;
            let rest = stream.finish(&text);
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        Ok(Generation {
            prompt_tokens: prompt.len(),
            reused_tokens: if opts.decoding == Decoding::Cached { reused } else { 0 },
            ids,
            text,
            stopped,
            prefill_s,
            total_s: start.elapsed().as_secs_f64(),
        })
    }

    /// Makes the cache ready for `prompt` with room for `need` positions; returns how many of
    /// the prompt's leading tokens it already holds (at most all but the last, whose logits are
    /// wanted).
    fn prepare(&mut self, d: &Decoder, prompt: &[u32], need: usize) -> usize {
        let (layers, kv) = (d.layers.len(), d.config.kv_dim());
        let fits = self.cache.as_ref().is_some_and(|c| c.k.len() == layers && c.kv_dim == kv);
        if !fits {
            self.cache = Some(KvCache::new(layers, kv, need));
            self.held.clear();
        }
        let cache = self.cache.as_mut().expect("just made");
        cache.grow(need);
        let shared = self.held.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        cache.truncate(shared);
        self.held.truncate(shared);
        shared
    }

    /// Runs `rest` (the prompt after the reused prefix) through the cache in chunks; returns the
    /// last token's logits.
    fn prefill(&mut self, d: &Decoder, rest: &[u32], chunk: usize) -> Result<Vec<f32>> {
        let cache = self.cache.as_mut().expect("prepared");
        let mut logits = Vec::new();
        for piece in rest.chunks(chunk) {
            logits = step(d, cache, piece, Rows::Last, &mut self.buf)?.to_vec();
            self.held.extend_from_slice(piece);
        }
        Ok(logits)
    }
}
