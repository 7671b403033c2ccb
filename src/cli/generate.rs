//! `lowrank generate`: text from a decoder with zero or more adapters — a prompt, a file of
//! requests, or an interactive chat — streamed to the terminal (or one JSON object per request),
//! with tokens per second.

use crate::data::lm::{ChatTemplate, Message, Role};
use crate::infer::generate::{
    decoder_of, encode_prompt, parse_adapter_arg, read_requests, AdapterSet, ChatSettings, Decoding, GenerateOptions, Generation,
    Generator, Prompt, Request, SamplerConfig,
};
use crate::model::precision::{kernel_name, PrecisionChoice};
use crate::model::{HeadKind, LoadOptions, Model};
use crate::tokenize::Tokenizer;
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `lowrank generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The model: a folder, a .gguf file or a Hugging Face id.
    #[arg(long, value_name = "DIR|FILE|ID")]
    pub model: String,
    /// A LoRA adapter folder, as DIR or NAME=DIR; repeat to serve several (see --adapter-name).
    #[arg(long, value_name = "[NAME=]DIR")]
    pub adapter: Vec<String>,
    /// Which adapter answers (its NAME, or "base" for none); a request's "adapter" field overrides it.
    #[arg(long, value_name = "NAME")]
    pub adapter_name: Option<String>,
    /// The text to continue (with --chat: the user's message).
    #[arg(long, value_name = "TEXT", conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Use the model's chat template: --prompt and plain --file lines become a user turn; alone,
    /// an interactive conversation on standard input.
    #[arg(long)]
    pub chat: bool,
    /// Requests: .txt (one prompt per line) or .jsonl ("prompt" or "messages", optional "adapter").
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// A system prompt for chats that have none.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// A Jinja chat template file instead of the model's own.
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// New tokens at most.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample among the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// Sample among the most likely tokens up to this cumulative probability.
    #[arg(long, default_value_t = 1.0, value_name = "P", allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A string that ends the generation (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Do not stop at the end-of-sequence token (timing exactly --max-new-tokens tokens).
    #[arg(long)]
    pub ignore_eos: bool,
    /// One JSON object per request on stdout instead of streamed text.
    #[arg(long)]
    pub json: bool,
    /// Arithmetic of the weights' products: fp32, bf16 or auto.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Recompute the whole sequence for every token instead of using the key/value cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Compute every prompt in full, not reusing the prefix it shares with the previous one.
    #[arg(long)]
    pub no_prefix_reuse: bool,
}

/// Runs `lowrank generate`.
pub fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let precision = a.precision.parse::<PrecisionChoice>()?.resolve()?;
    let base_dir = crate::hub::resolve_model(&a.model)?;
    super::require_decoder(
        &base_dir,
        "generate continues texts with a decoder language model",
        "an encoder classifies: use lowrank predict",
    )?;
    let (mut model, _) = Model::from_pretrained(&base_dir, &LoadOptions { head: Some(HeadKind::Lm), num_labels: None, seed: 0 })?;
    let tokenizer = Tokenizer::from_model_dir(&base_dir, 1 << 24)?;
    let d = decoder_of(&model)?;
    let mut eos: Vec<u32> = tokenizer.eos_ids.clone();
    eos.extend(d.config.eos_token_ids.iter().filter(|e| !tokenizer.eos_ids.contains(e)));
    model.set_precision(precision, false);
    let mut set = AdapterSet::new(model, a.adapter.iter().map(|s| parse_adapter_arg(s)).collect())?;
    let chat = chat_settings(&a, &tokenizer)?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampler: SamplerConfig { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed },
        stop: a.stop.clone(),
        eos: if a.ignore_eos { Vec::new() } else { eos },
        decoding: if a.no_cache { Decoding::Recompute } else { Decoding::Cached },
        reuse_prefix: !a.no_prefix_reuse,
        ..Default::default()
    };
    opts.sampler.validate()?;
    crate::cli::log(&format!("lowrank generate: {} ({}), {}", base_dir.display(), set.model().model_type(), kernel_name(precision)));
    let mut gen = Generator::new();
    let requests: Vec<Request> = match (&a.file, &a.prompt) {
        (Some(f), _) => read_requests(f)?,
        (None, Some(p)) => vec![Request { prompt: Prompt::Text(p.clone()), adapter: None }],
        (None, None) if a.chat => return interactive(&a, &mut set, &tokenizer, chat.as_ref(), &opts, &mut gen),
        (None, None) => anyhow::bail!("nothing to generate from: pass --prompt TEXT, --file PATH, or --chat for a conversation"),
    };
    let mut out = crate::cli::stdout();
    for r in &requests {
        let name = r.adapter.as_deref().or(a.adapter_name.as_deref());
        if set.select(name)? {
            gen.reset();
        }
        // Plain prompts stay plain text unless --chat makes each one a user turn.
        let template = match r.prompt {
            Prompt::Text(_) if !a.chat => None,
            _ => chat.as_ref(),
        };
        let ids = encode_prompt(&tokenizer, &r.prompt, template)?;
        let g = if a.json {
            gen.generate(set.model(), &tokenizer, &ids, &opts, &mut |_| {})?
        } else {
            let g = gen.generate(set.model(), &tokenizer, &ids, &opts, &mut |piece| {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            })?;
            writeln!(out)?;
            g
        };
        report(&mut out, &a, set.current(), r, &ids, &g)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The chat settings when prompts go through the chat template (--chat, or a file with chats):
/// the template training renders with ([`ChatTemplate`]), `--chat-template` or the tokenizer's.
fn chat_settings(a: &GenerateArgs, tokenizer: &Tokenizer) -> anyhow::Result<Option<ChatSettings>> {
    let template = match (&a.chat_template, &tokenizer.chat_template) {
        (Some(p), _) => Some(ChatTemplate::from_file(p, tokenizer)?),
        (None, Some(_)) => Some(ChatTemplate::from_tokenizer(tokenizer)?),
        (None, None) => None,
    };
    match template {
        Some(template) => {
            let s = ChatSettings { template, system: a.system.clone() };
            // Without --chat, only requests that hold messages use it.
            Ok(Some(s).filter(|_| a.chat || a.file.is_some()))
        }
        None if a.chat => anyhow::bail!("--chat needs a chat template and the model has none; pass one with --chat-template FILE"),
        None => Ok(None),
    }
}

/// Writes a request's JSON object (with --json) or its statistics line (stderr).
fn report(out: &mut impl Write, a: &GenerateArgs, adapter: Option<&str>, r: &Request, ids: &[u32], g: &Generation) -> anyhow::Result<()> {
    if a.json {
        let prompt = match &r.prompt {
            Prompt::Text(t) => serde_json::json!(t),
            Prompt::Chat(m) => serde_json::json!(m),
        };
        let v = serde_json::json!({
            "prompt": prompt, "adapter": adapter, "prompt_ids": ids, "ids": g.ids, "text": g.text,
            "stopped": g.stopped.name(), "prompt_tokens": g.prompt_tokens, "new_tokens": g.ids.len(),
            "reused_tokens": g.reused_tokens, "prefill_s": g.prefill_s, "total_s": g.total_s,
            "tokens_per_s": g.tokens_per_s(), "decode_tokens_per_s": g.decode_tokens_per_s(),
        });
        writeln!(out, "{v}")?;
    }
    crate::cli::log(&format!(
        "[{}] {} tokens in {:.2} s: {:.1} tokens/s (prompt {} tokens, prefill {:.3} s; decoding {:.1} tokens/s); stopped: {}",
        adapter.unwrap_or("base"),
        g.ids.len(),
        g.total_s,
        g.tokens_per_s(),
        g.prompt_tokens,
        g.prefill_s,
        g.decode_tokens_per_s(),
        g.stopped.name()
    ));
    Ok(())
}

/// A conversation on standard input: each line a user turn, answered and kept in the history.
fn interactive(
    a: &GenerateArgs,
    set: &mut AdapterSet,
    tokenizer: &Tokenizer,
    chat: Option<&ChatSettings>,
    opts: &GenerateOptions,
    gen: &mut Generator,
) -> anyhow::Result<ExitCode> {
    set.select(a.adapter_name.as_deref())?;
    let chat = chat.expect("--chat has a template");
    let tty = std::io::stdin().is_terminal();
    let mut history: Vec<Message> = Vec::new();
    let mut out = crate::cli::stdout();
    if tty {
        crate::cli::log("(one message per line; an empty line or end of input ends the chat)");
    }
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            break;
        }
        history.push(Message::user(line.as_str()));
        let r = Request { prompt: Prompt::Chat(history.clone()), adapter: None };
        let ids = encode_prompt(tokenizer, &r.prompt, Some(chat))?;
        let g = gen.generate(set.model(), tokenizer, &ids, opts, &mut |piece| {
            if !a.json {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
        })?;
        if !a.json {
            writeln!(out)?;
        }
        report(&mut out, a, set.current(), &r, &ids, &g)?;
        history.push(Message::new(Role::Assistant, g.text.as_str()));
    }
    Ok(ExitCode::SUCCESS)
}
