//! Exporting to llama.cpp: a model's LoRA layers as a GGUF LoRA adapter ([`adapter`]), which
//! `llama-completion --lora FILE` applies on top of the base GGUF, and a model with its LoRA
//! merged as a full F16 / F32 GGUF ([`merged`]) that keeps the source GGUF's metadata.
//!
//! lowrank keeps every tensor in Hugging Face's layout; llama.cpp's converter stores them
//! differently in two ways, which both files follow:
//! 1. names: `model.layers.N.self_attn.q_proj` is `blk.N.attn_q` (see [`super::hf`]; GPT-2's
//!    `transformer.h.N.attn.c_attn` is `blk.N.attn_qkv`);
//! 2. for the `llama` architecture (Llama, Mistral, SmolLM2) the rows of `attn_q` / `attn_k` are
//!    permuted by [`super::hf::permute_qk`]: `W_gguf = P·W_hf`. A LoRA update `ΔW = B·A` (PEFT's
//!    `lora_B.weight` [out, r] times `lora_A.weight` [r, in]) becomes `P·ΔW = (P·B)·A`, so the
//!    adapter permutes the rows of `lora_b` and leaves `lora_a` as it is. Qwen2 and GPT-2 are
//!    converted without the permutation.

pub mod adapter;
pub mod merged;
mod sources;

#[cfg(test)]
mod tests;

pub use adapter::{adapter_writer, llama_cpp_alpha, write_adapter, AdapterSummary};
pub use merged::{merged_writer, write_merged, MergedSummary};
pub use sources::{cli_export, cli_merge, export_peft_adapter, export_run_adapter, merge_to_gguf};

use super::GgufError;
use crate::model::{DecoderArch, HeadKind, Model};
use std::path::PathBuf;

/// The element type of a merged model's matrices (vectors such as norms and biases are always
/// written as F32, as llama.cpp's converter does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GgufDtype {
    /// Half precision (round to nearest even); `general.file_type` 1 (MOSTLY_F16).
    #[default]
    F16,
    /// Single precision, exact; `general.file_type` 0 (ALL_F32).
    F32,
}

impl GgufDtype {
    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`) for a file of this type.
    pub fn file_type(self) -> u32 {
        match self {
            GgufDtype::F16 => 1,
            GgufDtype::F32 => 0,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            GgufDtype::F16 => "f16",
            GgufDtype::F32 => "f32",
        }
    }
}

/// Why a model or adapter cannot be written for llama.cpp; each message names what to do.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the source GGUF or writing the output failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),

    /// Loading the model, its run or its adapter failed.
    #[error(transparent)]
    Model(#[from] crate::error::Error),

    /// The model is not a decoder llama.cpp can take a LoRA adapter for.
    #[error("a {model_type} model cannot be exported to GGUF: GGUF adapters and models are for llama.cpp's decoder (causal language) models, which lowrank writes for llama, mistral, qwen2 and gpt2 bases; use --format peft for a {model_type} model")]
    UnsupportedModel {
        /// The model's `model_type`.
        model_type: &'static str,
    },

    /// The model carries a sequence-classification head, which llama.cpp cannot load.
    #[error("the model has a {head} head ({module}); llama.cpp runs causal language models only, so a GGUF file would lose the head: GGUF export takes a causal-LM adapter (task_type CAUSAL_LM, lm head); use --format peft for this one")]
    ClassificationHead {
        /// The head kind.
        head: &'static str,
        /// Its module.
        module: String,
    },

    /// A base tensor was trained in full (modules_to_save, last-layers), which a LoRA adapter
    /// cannot carry.
    #[error("{tensor} was trained in full, not with LoRA; a GGUF LoRA adapter holds lora_a / lora_b pairs only: write a merged model instead (lowrank export --run RUN --out DIR, then lowrank merge --model BASE.gguf --adapter DIR --format gguf), or use --format peft")]
    TrainedBaseTensor {
        /// The tensor's Hugging Face name.
        tensor: String,
    },

    /// An adapter feature llama.cpp does not implement.
    #[error("adapter {}: {feature}; llama.cpp applies plain LoRA only (A and B without bias, no DoRA magnitude): retrain without it, or use --format peft", dir.display())]
    UnsupportedAdapter {
        /// The adapter folder.
        dir: PathBuf,
        /// What it uses (`use_dora is true`, ...).
        feature: String,
    },

    /// The model has no LoRA layer to export.
    #[error("the model carries no LoRA layer, so there is no adapter to export: train with --mode lora; a full fine-tune is a whole model (export it with --format peft and convert the folder with llama.cpp's convert_hf_to_gguf.py)")]
    NoLora,

    /// A module has no tensor name in llama.cpp's mapping.
    #[error("module {module} has no GGUF tensor name for llama.cpp's {arch} architecture; {fix}")]
    UnmappedModule {
        /// The module path (Hugging Face naming).
        module: String,
        /// The llama.cpp architecture.
        arch: &'static str,
        /// What to do.
        fix: &'static str,
    },

    /// The LoRA scale cannot be written as llama.cpp's `adapter.lora.alpha / r`.
    #[error("the LoRA scale of {module} ({scale} at rank {rank}) cannot be written as llama.cpp's adapter.lora.alpha / rank: {reason}")]
    Scale {
        /// The module.
        module: String,
        /// lowrank's factor on (x·A)·B.
        scale: f32,
        /// The rank.
        rank: usize,
        /// Why.
        reason: String,
    },

    /// A LoRA tensor or merged weight holds NaN or infinity.
    #[error("{tensor} holds {count} non-finite values; the adapter is corrupt or training diverged (retrain with a lower --lr or --clip-grad-norm), so nothing was written")]
    NonFinite {
        /// The tensor.
        tensor: String,
        /// How many values are NaN or infinite.
        count: usize,
    },

    /// A merged matrix has values beyond f16's range.
    #[error("{tensor} has {count} values beyond ±65504, which f16 cannot hold; write the merged model with --dtype f32")]
    F16Overflow {
        /// The GGUF tensor.
        tensor: String,
        /// How many values overflow.
        count: usize,
    },

    /// A merged GGUF needs a GGUF base model to take its metadata (tokenizer, chat template,
    /// architecture keys) from.
    #[error("{} is not a GGUF file; lowrank merge --format gguf copies the base GGUF's metadata (tokenizer, chat template) and needs --model FILE.gguf (convert a Hugging Face folder with llama.cpp's convert_hf_to_gguf.py first), or use --format peft", path.display())]
    NeedsGgufBase {
        /// The base model given.
        path: PathBuf,
    },

    /// The source GGUF's architecture is not the model's.
    #[error("{}: general.architecture is {source_arch:?} but the model is llama.cpp's {model_arch:?}; pass the GGUF the model was loaded from", path.display())]
    ArchMismatch {
        /// The source GGUF.
        path: PathBuf,
        /// Its general.architecture.
        source_arch: String,
        /// The model's llama.cpp architecture.
        model_arch: &'static str,
    },

    /// lowrank writes merged GGUF models only for the architectures whose GGUF files it reads.
    #[error("lowrank writes merged GGUF models for llama / qwen2 bases only (the GGUF files it reads), not {arch}; merge to a Hugging Face folder (--format peft) and convert it with llama.cpp's convert_hf_to_gguf.py")]
    MergedArch {
        /// The llama.cpp architecture.
        arch: &'static str,
    },

    /// A tensor's shape does not fit the model or the permutation.
    #[error("tensor {tensor}: {reason}")]
    Shape {
        /// The tensor (GGUF or Hugging Face name).
        tensor: String,
        /// What does not fit, and the fix.
        reason: String,
    },
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, ExportError>;

/// The llama.cpp side of a decoder: its `general.architecture` and whether its converter
/// permutes the attn_q / attn_k rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlamaCppArch {
    /// `general.architecture`: "llama" (also Mistral), "qwen2" or "gpt2".
    pub name: &'static str,
    /// Whether attn_q / attn_k rows are in [`super::hf::permute_qk`] order.
    pub permutes_qk: bool,
}

/// The llama.cpp architecture of a lowrank decoder (Mistral converts to "llama").
pub fn llama_cpp_arch(arch: DecoderArch) -> LlamaCppArch {
    match arch {
        DecoderArch::Llama | DecoderArch::Mistral => LlamaCppArch { name: "llama", permutes_qk: true },
        DecoderArch::Qwen2 => LlamaCppArch { name: "qwen2", permutes_qk: false },
        DecoderArch::Gpt2 => LlamaCppArch { name: "gpt2", permutes_qk: false },
    }
}

/// The decoder of `model` with a language-model head, or why llama.cpp cannot take it.
pub(crate) fn lm_decoder(model: &Model) -> Result<&crate::model::decoder::Decoder> {
    let Model::Decoder(d) = model else { return Err(ExportError::UnsupportedModel { model_type: model.model_type() }) };
    if model.head_kind() != HeadKind::Lm {
        let module = d.head_linear().map_or_else(String::new, |l| l.path.clone());
        return Err(ExportError::ClassificationHead { head: model.head_kind().name(), module });
    }
    Ok(d)
}

/// The GGUF name (without `.weight`) of the linear `module` of a decoder: `blk.N.attn_q` for
/// `model.layers.N.self_attn.q_proj`, `blk.N.attn_qkv` for GPT-2's `transformer.h.N.attn.c_attn`,
/// `output` for an untied `lm_head`.
pub fn gguf_module_name(arch: DecoderArch, module: &str) -> Result<String> {
    let cpp = llama_cpp_arch(arch);
    let unmapped = |fix| ExportError::UnmappedModule { module: module.to_string(), arch: cpp.name, fix };
    if arch.is_gpt2() {
        if module == "lm_head" {
            return Ok("output".into());
        }
        let rest = module
            .strip_prefix("transformer.h.")
            .ok_or_else(|| unmapped("GPT-2's linears are transformer.h.N.{attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj}"))?;
        let (n, sub) = rest.split_once('.').ok_or_else(|| unmapped("expected transformer.h.N.<module>"))?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unmapped("expected a layer number after transformer.h."));
        }
        let g = match sub {
            "attn.c_attn" => "attn_qkv",
            "attn.c_proj" => "attn_output",
            "mlp.c_fc" => "ffn_up",
            "mlp.c_proj" => "ffn_down",
            _ => return Err(unmapped("GPT-2's linears are attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj")),
        };
        return Ok(format!("blk.{n}.{g}"));
    }
    let mapping = if arch == DecoderArch::Qwen2 { "qwen2" } else { "llama" };
    let name = super::hf::gguf_tensor_name(mapping, &format!("{module}.weight"))
        .map_err(|_| unmapped("the llama family's linears are q/k/v/o_proj, gate/up/down_proj and lm_head"))?;
    Ok(name.strip_suffix(".weight").unwrap_or(&name).to_string())
}

/// The number of heads whose rows llama.cpp permutes in GGUF tensor `name` (`blk.N.attn_q.*`:
/// the query heads, `blk.N.attn_k.*`: the key/value heads), `None` when it is not permuted.
pub fn permuted_heads(arch: DecoderArch, n_heads: usize, n_kv_heads: usize, name: &str) -> Option<usize> {
    if !llama_cpp_arch(arch).permutes_qk {
        return None;
    }
    let rest = name.strip_prefix("blk.")?;
    let (_, rest) = rest.split_once('.')?;
    if rest.starts_with("attn_q.") {
        Some(n_heads)
    } else if rest.starts_with("attn_k.") {
        Some(n_kv_heads)
    } else {
        None
    }
}

/// `data` ([rows, ·], Hugging Face row order) in llama.cpp's row order for GGUF tensor `name`:
/// permuted by [`super::hf::permute_qk`] when the architecture permutes it, else unchanged.
pub(crate) fn to_gguf_rows(d: &crate::model::decoder::Decoder, name: &str, data: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
    let c = &d.config;
    match permuted_heads(c.arch, c.n_heads, c.n_kv_heads, name) {
        None => Ok(data),
        Some(heads) => super::hf::permute_qk(&data, rows, heads).ok_or_else(|| ExportError::Shape {
            tensor: name.to_string(),
            reason: format!("{rows} rows do not split into {heads} heads of an even size, so llama.cpp's Q/K permutation is undefined; the model config's head counts do not fit its weights"),
        }),
    }
}
