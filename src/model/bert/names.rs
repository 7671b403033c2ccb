//! Hugging Face tensor and module names for each architecture, so that lowrank's parameters
//! keep upstream keys (and PEFT adapters line up with them).

use super::config::Arch;
use crate::lora::Role;

/// The module path of an encoder layer, e.g. `distilbert.transformer.layer.3`.
pub fn layer_prefix(arch: Arch, layer: usize) -> String {
    match arch {
        Arch::DistilBert => format!("distilbert.transformer.layer.{layer}"),
        Arch::Bert => format!("bert.encoder.layer.{layer}"),
    }
}

/// The module path of an encoder linear layer with `role` in `layer`.
pub fn layer_linear(arch: Arch, layer: usize, role: Role) -> String {
    let p = layer_prefix(arch, layer);
    let leaf = match (arch, role) {
        (Arch::DistilBert, Role::Query) => "attention.q_lin",
        (Arch::DistilBert, Role::Key) => "attention.k_lin",
        (Arch::DistilBert, Role::Value) => "attention.v_lin",
        (Arch::DistilBert, Role::Projection) => "attention.out_lin",
        (Arch::DistilBert, Role::FfnIn) => "ffn.lin1",
        (Arch::DistilBert, Role::FfnOut) => "ffn.lin2",
        (Arch::Bert, Role::Query) => "attention.self.query",
        (Arch::Bert, Role::Key) => "attention.self.key",
        (Arch::Bert, Role::Value) => "attention.self.value",
        (Arch::Bert, Role::Projection) => "attention.output.dense",
        (Arch::Bert, Role::FfnIn) => "intermediate.dense",
        (Arch::Bert, Role::FfnOut) => "output.dense",
        (_, Role::HeadHidden | Role::Classifier | Role::Qkv) => unreachable!("encoder layers have separate q, k, v and no head linears"),
    };
    format!("{p}.{leaf}")
}

/// The module paths of the layer's two LayerNorms (after attention, after the feed-forward).
pub fn layer_norms(arch: Arch, layer: usize) -> (String, String) {
    let p = layer_prefix(arch, layer);
    match arch {
        Arch::DistilBert => (format!("{p}.sa_layer_norm"), format!("{p}.output_layer_norm")),
        Arch::Bert => (format!("{p}.attention.output.LayerNorm"), format!("{p}.output.LayerNorm")),
    }
}

/// The embeddings module path.
pub fn embeddings(arch: Arch) -> String {
    format!("{}.embeddings", arch.prefix())
}

/// The module path of a head linear for a head of `kind`.
pub fn head_linear(kind: crate::model::HeadKind, role: Role) -> String {
    use crate::model::HeadKind;
    match (kind, role) {
        (HeadKind::DistilBert, Role::HeadHidden) => "pre_classifier".into(),
        (HeadKind::Bert, Role::HeadHidden) => "bert.pooler.dense".into(),
        (_, Role::HeadHidden) => "pre_classifier".into(),
        (_, Role::Classifier) => "classifier".into(),
        _ => unreachable!("only head roles"),
    }
}
