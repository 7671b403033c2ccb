//! The module tree of a decoder, as PyTorch's `print(model)` shows it.

use super::{Decoder, DecoderHead, DecoderLayer, Mlp, Qkv};
use crate::model::norm::Norm;
use crate::model::summary::{layer_norm, linear, mark};

fn norm(name: &str, n: &Norm, ind: &str) -> String {
    match n {
        Norm::Layer(l) => layer_norm(name, l, ind),
        Norm::Rms(r) => format!("{ind}({name}): RMSNorm(({},), eps={:e}){}\n", r.weight.numel(), r.eps, mark(r.weight.trainable())),
    }
}

fn block(l: &DecoderLayer, gpt2: bool, ind: &str) -> String {
    let i2 = format!("{ind}  ");
    let mut s = String::new();
    if gpt2 {
        s += &norm("ln_1", &l.attn_norm, ind);
        s += &format!("{ind}(attn): GPT2Attention(\n");
        if let Qkv::Fused(c) = &l.qkv {
            s += &linear("c_attn", c, &i2);
        }
        s += &linear("c_proj", &l.o, &i2);
        s += &format!("{ind})\n");
        s += &norm("ln_2", &l.mlp_norm, ind);
    } else {
        s += &format!("{ind}(self_attn): Attention(\n");
        if let Qkv::Separate([q, k, v]) = &l.qkv {
            for (n, x) in [("q_proj", q), ("k_proj", k), ("v_proj", v)] {
                s += &linear(n, x, &i2);
            }
        }
        s += &linear("o_proj", &l.o, &i2);
        s += &format!("{ind})\n");
    }
    s += &format!("{ind}(mlp): MLP(\n");
    match &l.mlp {
        Mlp::Gated { gate, up, down } => {
            for (n, x) in [("gate_proj", gate), ("up_proj", up), ("down_proj", down)] {
                s += &linear(n, x, &i2);
            }
            s += &format!("{i2}(act_fn): SiLU()\n");
        }
        Mlp::Plain { fc, proj, activation } => {
            s += &linear("c_fc", fc, &i2);
            s += &linear("c_proj", proj, &i2);
            s += &format!("{i2}(act): {activation:?}\n");
        }
    }
    s += &format!("{ind})\n");
    if !gpt2 {
        s += &norm("input_layernorm", &l.attn_norm, ind);
        s += &norm("post_attention_layernorm", &l.mlp_norm, ind);
    }
    s
}

/// The module tree of `m`.
pub fn module_tree(m: &Decoder) -> String {
    let c = &m.config;
    let gpt2 = c.arch.is_gpt2();
    let family = match c.arch.model_type() {
        "qwen2" => "Qwen2",
        "mistral" => "Mistral",
        "gpt2" => "GPT2",
        _ => "Llama",
    };
    let top = match m.head {
        DecoderHead::Score(_) => format!("{family}ForSequenceClassification"),
        DecoderHead::Lm(_) => format!("{family}ForCausalLM"),
    };
    let (body, layers, embed) = if gpt2 { ("transformer", "h", "wte") } else { ("model", "layers", "embed_tokens") };
    let mut s = format!("{top}(\n  ({body}): {family}Model(\n");
    s += &format!("    ({embed}): Embedding({}, {}){}\n", m.embed.shape[0], m.embed.shape[1], mark(m.embed.trainable()));
    if let Some(p) = &m.positions {
        s += &format!("    (wpe): Embedding({}, {}){}\n", p.shape[0], p.shape[1], mark(p.trainable()));
    }
    s += &format!("    ({layers}): ModuleList(\n");
    let blocks: Vec<String> = m.layers.iter().map(|l| block(l, gpt2, "        ")).collect();
    let mut i = 0;
    while i < blocks.len() {
        let mut j = i;
        while j + 1 < blocks.len() && blocks[j + 1] == blocks[i] {
            j += 1;
        }
        let idx = if i == j { format!("({i})") } else { format!("({i}-{j}): {} x", j - i + 1) };
        s += &format!("      {idx} DecoderLayer(\n{}      )\n", blocks[i]);
        i = j + 1;
    }
    s += "    )\n";
    s += &norm(if gpt2 { "ln_f" } else { "norm" }, &m.norm, "    ");
    s += "  )\n";
    match &m.head {
        DecoderHead::Score(h) => s += &linear("score", h, "  "),
        DecoderHead::Lm(Some(h)) => s += &linear("lm_head", h, "  "),
        DecoderHead::Lm(None) => s += &format!("  (lm_head): tied to {embed}\n"),
    }
    s += ")\n";
    s
}
