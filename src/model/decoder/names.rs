//! Hugging Face tensor and module names of the decoder families, so that lowrank's parameters
//! keep upstream keys (and PEFT adapters line up with them): `model.layers.N.self_attn.q_proj`
//! for the Llama family, `transformer.h.N.attn.c_attn` for GPT-2.

use super::config::DecoderArch;

/// The module path of decoder layer `l`.
pub fn layer(arch: DecoderArch, l: usize) -> String {
    if arch.is_gpt2() {
        format!("transformer.h.{l}")
    } else {
        format!("model.layers.{l}")
    }
}

/// The token embedding module.
pub fn embed(arch: DecoderArch) -> &'static str {
    if arch.is_gpt2() {
        "transformer.wte"
    } else {
        "model.embed_tokens"
    }
}

/// GPT-2's learned position embedding module.
pub const POSITIONS: &str = "transformer.wpe";

/// The final norm module.
pub fn final_norm(arch: DecoderArch) -> &'static str {
    if arch.is_gpt2() {
        "transformer.ln_f"
    } else {
        "model.norm"
    }
}

/// The norms of layer `l`: (before attention, before the MLP).
pub fn layer_norms(arch: DecoderArch, l: usize) -> (String, String) {
    let p = layer(arch, l);
    if arch.is_gpt2() {
        (format!("{p}.ln_1"), format!("{p}.ln_2"))
    } else {
        (format!("{p}.input_layernorm"), format!("{p}.post_attention_layernorm"))
    }
}

/// The attention projections of layer `l`: the Llama family's q, k, v and o, or GPT-2's fused
/// c_attn and its c_proj.
pub fn attention(arch: DecoderArch, l: usize) -> Vec<String> {
    let p = layer(arch, l);
    if arch.is_gpt2() {
        vec![format!("{p}.attn.c_attn"), format!("{p}.attn.c_proj")]
    } else {
        ["q_proj", "k_proj", "v_proj", "o_proj"].iter().map(|m| format!("{p}.self_attn.{m}")).collect()
    }
}

/// The MLP linears of layer `l`: gate, up and down (Llama family), or c_fc and c_proj (GPT-2).
pub fn mlp(arch: DecoderArch, l: usize) -> Vec<String> {
    let p = layer(arch, l);
    if arch.is_gpt2() {
        vec![format!("{p}.mlp.c_fc"), format!("{p}.mlp.c_proj")]
    } else {
        ["gate_proj", "up_proj", "down_proj"].iter().map(|m| format!("{p}.mlp.{m}")).collect()
    }
}

/// The sequence-classification head.
pub const SCORE: &str = "score";

/// The language-model head.
pub const LM_HEAD: &str = "lm_head";

/// The prefix a bare checkpoint may lack ("transformer." for GPT-2 checkpoints saved from
/// GPT2Model; "model." for ones saved from LlamaModel).
pub fn prefix(arch: DecoderArch) -> &'static str {
    if arch.is_gpt2() {
        "transformer."
    } else {
        "model."
    }
}

/// Whether GPT-2 stores this module's weight as Conv1D ([in, out], transposed).
pub fn is_conv1d(arch: DecoderArch, module: &str) -> bool {
    arch.is_gpt2() && (module.ends_with(".c_attn") || module.ends_with(".c_proj") || module.ends_with(".c_fc"))
}
