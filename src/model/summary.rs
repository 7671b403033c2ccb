//! Pieces of a printable module tree in the style of PyTorch's `print(model)`, showing
//! `LinearWithLoRA` where LoRA sits (a `DoRALayer` for DoRA, with lora_bias and a residual base
//! marked) and marking what trains; each architecture assembles its own.

use super::{LayerNorm, Linear};

/// The marker appended to a module that trains.
pub(crate) fn mark(trainable: bool) -> &'static str {
    if trainable {
        "  [trains]"
    } else {
        ""
    }
}

/// One linear module (with its LoRA, if any).
pub(crate) fn linear(name: &str, l: &Linear, ind: &str) -> String {
    let bias = if l.bias.is_some() { "True" } else { "False" };
    let base = format!("Linear(in_features={}, out_features={}, bias={bias})", l.in_dim(), l.out_dim());
    match &l.lora {
        None => format!("{ind}({name}): {base}{}\n", mark(l.weight.trainable())),
        Some(lora) => {
            let mut extra = String::new();
            if lora.bias.is_some() {
                extra += ", lora_bias=True";
            }
            if lora.start.is_some() {
                extra += ", base=residual";
            }
            let kind = match &lora.dora {
                Some(d) => format!("DoRALayer(rank={}, scale={}, magnitude=[{}]{extra})", lora.rank(), lora.scale, d.magnitude.numel()),
                None => format!("LoRALayer(rank={}, scale={}{extra})", lora.rank(), lora.scale),
            };
            format!(
                "{ind}({name}): LinearWithLoRA(\n{ind}  (linear): {base}{}\n{ind}  (lora): {kind}{}\n{ind})\n",
                mark(l.weight.trainable()),
                mark(lora.a.trainable())
            )
        }
    }
}

/// One LayerNorm module.
pub(crate) fn layer_norm(name: &str, ln: &LayerNorm, ind: &str) -> String {
    format!("{ind}({name}): LayerNorm(({},), eps={:e}){}\n", ln.weight.numel(), ln.eps, mark(ln.weight.trainable()))
}
