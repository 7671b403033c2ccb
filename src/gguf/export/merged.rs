//! A model with its LoRA merged, written as a full GGUF model in the source GGUF's image: the
//! same metadata (architecture keys, tokenizer, chat template, in the same order; only
//! `general.file_type` is set to the new type and `general.alignment` dropped, the writer
//! aligning to 32) and the same tensors in the same order under the same names, each in
//! llama.cpp's layout (attn_q / attn_k rows permuted for llama) as F16 or F32. Vectors (norms,
//! biases) are always F32, as llama.cpp's converter writes them.

use super::{lm_decoder, to_gguf_rows, ExportError, GgufDtype, Result};
use crate::gguf::{GgufFile, GgufWriter, MetadataValue};
use crate::model::Model;
use crate::param::Param;
use std::collections::HashMap;
use std::path::Path;

/// What [`write_merged`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MergedSummary {
    /// `general.architecture`.
    pub arch: String,
    /// The matrices' element type.
    pub dtype: GgufDtype,
    /// Number of tensors written.
    pub tensors: usize,
    /// Number of metadata keys written.
    pub metadata: usize,
    /// Modules whose LoRA update was added into the written weight.
    pub merged_modules: Vec<String>,
}

/// The largest finite f16.
const F16_MAX: f32 = 65504.0;

/// Merged weights by Hugging Face name, and the modules whose LoRA they hold.
type MergedWeights = (HashMap<String, Vec<f32>>, Vec<String>);

/// The base weights of `model` with every unmerged LoRA update added, by Hugging Face name
/// (only the weights that change are computed here; the others are read from the model).
fn merged_weights(model: &Model) -> Result<MergedWeights> {
    let mut out = HashMap::new();
    let mut modules = Vec::new();
    for lin in model.linears() {
        let Some(l) = lin.lora.as_ref().filter(|l| !l.merged) else { continue };
        let data: Vec<f32> = lin.weight.data.iter().zip(l.delta_weight()).map(|(w, d)| w + d).collect();
        let count = data.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(crate::error::Error::NonFiniteMerge { module: lin.path.clone(), count }.into());
        }
        out.insert(lin.weight.name.clone(), data);
        modules.push(lin.path.clone());
    }
    Ok((out, modules))
}

/// The merged GGUF of `model` in memory, shaped after `source`, the GGUF the model was loaded
/// from (see the module documentation). Every tensor of `source` must be a parameter of the
/// model and every parameter a tensor of `source`.
pub fn merged_writer(model: &Model, source: &GgufFile, dtype: GgufDtype) -> Result<(GgufWriter, MergedSummary)> {
    let d = lm_decoder(model)?;
    let cpp = super::llama_cpp_arch(d.config.arch);
    if d.config.arch.is_gpt2() {
        return Err(ExportError::MergedArch { arch: cpp.name });
    }
    let source_arch = source.architecture()?;
    if source_arch != cpp.name {
        return Err(ExportError::ArchMismatch { path: source.path.clone(), source_arch: source_arch.to_string(), model_arch: cpp.name });
    }
    let (merged, merged_modules) = merged_weights(model)?;
    let params: HashMap<&str, &Param> = model.base_params().into_iter().map(|p| (p.name.as_str(), p)).collect();

    let mut w = GgufWriter::new();
    let mut wrote_file_type = false;
    for (key, value) in source.metadata() {
        match key.as_str() {
            "general.alignment" => continue,
            "general.file_type" => {
                w.add_u32(key, dtype.file_type())?;
                wrote_file_type = true;
            }
            _ => {
                w.add(key, value.clone())?;
            }
        }
    }
    if !wrote_file_type {
        w.add("general.file_type", MetadataValue::U32(dtype.file_type()))?;
    }

    let mut used = std::collections::HashSet::new();
    for info in source.tensors() {
        let hf = crate::gguf::hf::hf_tensor_name(cpp.name, &info.name)?;
        let p = params.get(hf.as_str()).ok_or_else(|| ExportError::Shape {
            tensor: info.name.clone(),
            reason: format!("the model has no tensor {hf}; pass the GGUF the model was loaded from"),
        })?;
        if info.shape() != p.shape {
            return Err(ExportError::Shape {
                tensor: info.name.clone(),
                reason: format!(
                    "{} has dims {:?} (PyTorch shape {:?}) but the model's {hf} is {:?}; pass the GGUF the model was loaded from",
                    source.path.display(),
                    info.dims,
                    info.shape(),
                    p.shape
                ),
            });
        }
        used.insert(hf.clone());
        let data = merged.get(&hf).cloned().unwrap_or_else(|| p.data.clone());
        let rows = p.shape.first().copied().unwrap_or(1);
        let data = to_gguf_rows(d, &info.name, data, rows)?;
        if p.shape.len() >= 2 && dtype == GgufDtype::F16 {
            let count = data.iter().filter(|v| v.abs() > F16_MAX).count();
            if count > 0 {
                return Err(ExportError::F16Overflow { tensor: info.name.clone(), count });
            }
            w.add_tensor_f16(&info.name, &p.shape, &data)?;
        } else {
            w.add_tensor_f32(&info.name, &p.shape, &data)?;
        }
    }
    if let Some(p) = model.base_params().into_iter().find(|p| !used.contains(&p.name)) {
        return Err(ExportError::Shape {
            tensor: p.name.clone(),
            reason: format!(
                "{} has no tensor for this parameter of the model (e.g. a trained lm_head on a GGUF with tied embeddings), so the merged file would lose it; use --format peft",
                source.path.display()
            ),
        });
    }
    let summary = MergedSummary {
        arch: source_arch.to_string(),
        dtype,
        tensors: source.tensors().len(),
        metadata: source.metadata().iter().filter(|(k, _)| k != "general.alignment").count() + usize::from(!wrote_file_type),
        merged_modules,
    };
    Ok((w, summary))
}

/// Writes `model` with its LoRA merged to `out` (atomically) as a GGUF shaped after `source`.
pub fn write_merged(model: &Model, source: &GgufFile, out: &Path, dtype: GgufDtype) -> Result<MergedSummary> {
    let (w, summary) = merged_writer(model, source, dtype)?;
    w.write(out)?;
    Ok(summary)
}
