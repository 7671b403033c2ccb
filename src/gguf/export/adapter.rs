//! A model's LoRA layers as a GGUF LoRA adapter in the layout llama.cpp's
//! `convert_lora_to_gguf.py` writes and `llama_adapter_lora_init` (src/llama-adapter.cpp) reads.
//!
//! The file (GGUF v3, alignment 32):
//! - metadata, in this order: `general.architecture` (string: "llama", "qwen2" or "gpt2"; it must
//!   equal the base model's), `general.type` = "adapter", `adapter.type` = "lora",
//!   `adapter.lora.alpha` (f32), `general.quantization_version` = 2 (u32, as the converter
//!   writes);
//! - per LoRA module, in [`Model::linears`] order, two F32 tensors named after the base tensor
//!   (`blk.N.attn_q.weight`): `….lora_a` with GGUF dims `[in, r]` (PyTorch shape `[r, in]`, PEFT's
//!   `lora_A.weight`, lowrank's Aᵀ) and `….lora_b` with GGUF dims `[r, out]` (PyTorch `[out, r]`,
//!   PEFT's `lora_B.weight`, lowrank's Bᵀ), its rows permuted for attn_q / attn_k of the llama
//!   architecture (see [`super`]).
//!
//! llama.cpp computes each module's factor as `alpha / r` in f32 (`get_scale`, with the default
//! `--lora` scale 1, r = `lora_b`'s ne0), so `adapter.lora.alpha` is `scale · r` (the seed's
//! raschka scaling, scale = alpha: `alpha · r`; PEFT: `lora_alpha`; rsLoRA: `lora_alpha · √r`),
//! adjusted by a few f32 steps where needed so that llama.cpp's division gives lowrank's scale
//! exactly (see [`llama_cpp_alpha`] for the scales where no f32 does, one f32 step off).

use super::{lm_decoder, to_gguf_rows, ExportError, Result};
use crate::adapter::save::transpose;
use crate::gguf::GgufWriter;
use crate::model::Model;
use std::path::Path;

/// What [`write_adapter`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterSummary {
    /// `general.architecture`.
    pub arch: &'static str,
    /// `adapter.lora.alpha`.
    pub alpha: f32,
    /// The LoRA rank of every module.
    pub rank: usize,
    /// The factor llama.cpp applies (`alpha / rank`): every module's lowrank scale, exactly
    /// unless [`AdapterSummary::scale_exact`] is false (then one f32 step from it).
    pub scale: f32,
    /// Whether `scale` equals lowrank's scale exactly (see [`llama_cpp_alpha`]).
    pub scale_exact: bool,
    /// (module path, GGUF base tensor name) of each LoRA module, in file order.
    pub modules: Vec<(String, String)>,
}

/// Distance in f32 steps between two finite floats of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    a.to_bits().abs_diff(b.to_bits())
}

/// The `adapter.lora.alpha` for which llama.cpp's `alpha / rank` (f32) equals `scale` exactly:
/// `scale · rank`, or an f32 a few steps away that divides back exactly. For the seed's raschka
/// scaling (`alpha`) and PEFT's (`lora_alpha / r`) from integer or half-integer alphas this
/// always exists (the test sweeps every rank to 1024); for other factors (rsLoRA's
/// `lora_alpha / √r`, or arbitrary ones) it exists for about nine in ten (measured over 10⁵ of
/// each): where neighbouring alphas divide to quotients more than one f32 step of `scale` apart,
/// `scale` can fall between them, and the alpha whose quotient is nearest, one f32 step
/// (6·10⁻⁸ relative) from `scale`, is returned; [`AdapterSummary::scale`] reports the factor
/// llama.cpp will use.
pub fn llama_cpp_alpha(module: &str, scale: f32, rank: usize) -> Result<f32> {
    let err = |reason: String| ExportError::Scale { module: module.to_string(), scale, rank, reason };
    if !scale.is_finite() || scale == 0.0 {
        return Err(err("llama.cpp reads alpha 0 as \"no scaling\" (factor 1), and a non-finite factor is a corrupt adapter".into()));
    }
    let r = rank as f32;
    if rank == 0 || r as usize != rank {
        return Err(err("the rank must be a positive integer that f32 holds exactly".into()));
    }
    let guess = scale * r;
    if !guess.is_finite() {
        return Err(err("scale · rank overflows f32".into()));
    }
    let bits = guess.to_bits();
    let candidates = (-4i64..=4).map(|k| f32::from_bits((i64::from(bits) + k) as u32));
    let valid = candidates.filter(|c| c.is_finite() && *c != 0.0 && c.signum() == guess.signum() && (c / r).is_finite());
    let best = valid.min_by_key(|c| (ulps(c / r, scale), ulps(*c, guess))).ok_or_else(|| err(format!("no f32 alpha near {guess}")))?;
    if ulps(best / r, scale) > 1 {
        return Err(err(format!("the nearest alpha, {best}, gives {} (more than one f32 step away)", best / r)));
    }
    Ok(best)
}

fn count_non_finite(data: &[f32]) -> usize {
    data.iter().filter(|v| !v.is_finite()).count()
}

/// The adapter file of `model` in memory (see the module documentation for its layout). Refuses
/// models llama.cpp cannot take an adapter for: a classification head, base tensors trained in
/// full, no LoRA at all, LoRA scales that need different alphas.
pub fn adapter_writer(model: &Model) -> Result<(GgufWriter, AdapterSummary)> {
    let d = lm_decoder(model)?;
    if let Some(p) = model.base_params().into_iter().find(|p| p.trainable()) {
        return Err(ExportError::TrainedBaseTensor { tensor: p.name.clone() });
    }
    let arch = super::llama_cpp_arch(d.config.arch);
    let lora: Vec<_> = model.linears().into_iter().filter_map(|l| l.lora.as_ref().map(|lora| (l, lora))).collect();
    let Some((first, first_lora)) = lora.first() else { return Err(ExportError::NoLora) };
    let alpha = llama_cpp_alpha(&first.path, first_lora.scale, first_lora.rank())?;
    let mut tensors = Vec::with_capacity(2 * lora.len());
    let mut modules = Vec::with_capacity(lora.len());
    for (lin, l) in &lora {
        let (i, r, o) = (lin.in_dim(), l.rank(), lin.out_dim());
        let scale = alpha / r as f32;
        if l.scale.signum() != scale.signum() || ulps(scale, l.scale) > 1 {
            let reason = format!(
                "llama.cpp reads one adapter.lora.alpha for the whole file, and {} (rank {}, scale {}) needs alpha {alpha}, which gives {scale} here; export modules with one scale and rank",
                first.path,
                first_lora.rank(),
                first_lora.scale
            );
            return Err(ExportError::Scale { module: lin.path.clone(), scale: l.scale, rank: r, reason });
        }
        if l.a.shape != [i, r] || l.b.shape != [r, o] {
            return Err(ExportError::Shape {
                tensor: lin.path.clone(),
                reason: format!("LoRA A {:?} / B {:?} do not fit the linear {i} → {o} at rank {r}", l.a.shape, l.b.shape),
            });
        }
        let base = super::gguf_module_name(d.config.arch, &lin.path)?;
        let name_a = format!("{base}.weight.lora_a");
        let name_b = format!("{base}.weight.lora_b");
        for (name, data) in [(&name_a, &l.a.data), (&name_b, &l.b.data)] {
            let count = count_non_finite(data);
            if count > 0 {
                return Err(ExportError::NonFinite { tensor: format!("{name} ({})", lin.path), count });
            }
        }
        // lora_a: PyTorch [r, in] = Aᵀ; lora_b: PyTorch [out, r] = Bᵀ, rows in llama.cpp's order.
        let a = transpose(&l.a.data, i, r);
        let b = to_gguf_rows(d, &format!("{base}.weight"), transpose(&l.b.data, r, o), o)?;
        tensors.push((name_a, vec![r, i], a));
        tensors.push((name_b, vec![o, r], b));
        modules.push((lin.path.clone(), format!("{base}.weight")));
    }
    let mut w = GgufWriter::new();
    w.add_string("general.architecture", arch.name)?;
    w.add_string("general.type", "adapter")?;
    w.add_string("adapter.type", "lora")?;
    w.add_f32("adapter.lora.alpha", alpha)?;
    w.add_u32("general.quantization_version", 2)?;
    for (name, shape, data) in &tensors {
        w.add_tensor_f32(name, shape, data)?;
    }
    let rank = first_lora.rank();
    let scale = alpha / rank as f32;
    Ok((w, AdapterSummary { arch: arch.name, alpha, rank, scale, scale_exact: scale == first_lora.scale, modules }))
}

/// Writes the LoRA adapter of `model` to `out` (atomically) as llama.cpp's GGUF adapter file.
pub fn write_adapter(model: &Model, out: &Path) -> Result<AdapterSummary> {
    let (w, summary) = adapter_writer(model)?;
    w.write(out)?;
    Ok(summary)
}
