//! GGUF files (llama.cpp's model format): read them, dequantize their tensors to f32, map llama
//! models to Hugging Face names and config, build their tokenizer, and write new GGUF files.
//!
//! The pipeline, one module per step:
//! 1. [`read`] parses the header, the metadata ([`value`]) and the tensor infos ([`ggml_type`]);
//! 2. [`dequant`] turns a tensor's blocks into f32 ([`GgufFile::read_tensor`] returns it in
//!    PyTorch order: GGUF dims `ne = [576, 1536]` are the PyTorch matrix `[1536, 576]`);
//! 3. [`hf`] gives the Hugging Face `config.json` and tensor names, undoing llama.cpp's Q/K row
//!    permutation;
//! 4. [`tokenizer`] builds a `tokenizers::Tokenizer` from the `tokenizer.ggml.*` metadata;
//! 5. [`write`](mod@write) writes metadata and F32/F16 tensors back out (LoRA adapters, merged models).

#![deny(missing_docs)]

pub mod dequant;
pub mod error;
pub mod ggml_type;
pub mod hf;
mod kquants;
pub mod read;
pub mod tokenizer;
pub mod value;
pub mod write;

#[cfg(test)]
mod tests;

pub use dequant::{dequantize, DequantError};
pub use error::{GgufError, Result};
pub use ggml_type::GgmlType;
pub use value::{MetadataArray, MetadataValue, ValueType};
pub use write::GgufWriter;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One tensor's entry in the file's tensor-info table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as GGUF stores them, fastest-varying first: `dims[0]` (ne0) is the number of
    /// columns. At most four.
    pub dims: Vec<u64>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section (a multiple of the alignment).
    pub offset: u64,
    /// Product of the dimensions (1 for a tensor with no dimensions).
    pub n_elements: u64,
    /// Bytes of data: whole blocks of the type.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The shape in PyTorch order (slowest-varying first): `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        // n_elements fits in the file (data is in bounds), so every dimension fits in usize
        // except when another is 0; saturate rather than wrap in that case.
        self.dims.iter().rev().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect()
    }
}

/// A dequantized tensor: row-major f32 values in PyTorch order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Shape, slowest-varying first (`[out_features, in_features]` for a linear weight).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

/// A parsed GGUF file, held in memory with its tensor data.
#[derive(Clone)]
pub struct GgufFile {
    /// The file it was read from (or the name given to [`GgufFile::from_bytes`]).
    pub path: PathBuf,
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Alignment of the data section and of each tensor (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Reads and parses the GGUF file at `path` (the whole file is read into memory).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| GgufError::Io { action: "read", path: path.to_path_buf(), source })?;
        Self::from_bytes(bytes, path)
    }

    /// Parses a GGUF file already in memory; `path` only names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        read::parse(bytes, path)
    }

    /// All metadata key/values, in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// The value of metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// `general.architecture` ("llama", "qwen2", ...).
    pub fn architecture(&self) -> Result<&str> {
        self.require_str("general.architecture", "every GGUF model file states its architecture; is this a model file?")
    }

    fn bad_value(&self, key: &str, expected: &'static str, found: &MetadataValue) -> GgufError {
        GgufError::BadValue { path: self.path.clone(), key: key.to_string(), expected, found: found.describe() }
    }

    fn missing(&self, key: &str, hint: &'static str) -> GgufError {
        GgufError::MissingKey { path: self.path.clone(), key: key.to_string(), hint }
    }

    /// Key `key` as a non-negative integer of any integer type; `None` when absent, an error
    /// when it has another type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| v.as_u64().ok_or_else(|| self.bad_value(key, "a non-negative integer", v))).transpose()
    }

    /// Key `key` as a number (float or integer types); `None` when absent.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| self.bad_value(key, "a number", v))).transpose()
    }

    /// Key `key` as a bool; `None` when absent.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| self.bad_value(key, "a bool", v))).transpose()
    }

    /// Key `key` as a string; `None` when absent.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| self.bad_value(key, "a string", v))).transpose()
    }

    /// Key `key` as an array of strings; `None` when absent.
    pub fn get_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        self.get(key).map(|v| v.as_str_array().ok_or_else(|| self.bad_value(key, "an array of strings", v))).transpose()
    }

    /// Key `key` as a non-negative integer; an error naming `hint` when absent.
    pub fn require_u64(&self, key: &str, hint: &'static str) -> Result<u64> {
        self.get_u64(key)?.ok_or_else(|| self.missing(key, hint))
    }

    /// Key `key` as a number; an error naming `hint` when absent.
    pub fn require_f64(&self, key: &str, hint: &'static str) -> Result<f64> {
        self.get_f64(key)?.ok_or_else(|| self.missing(key, hint))
    }

    /// Key `key` as a string; an error naming `hint` when absent.
    pub fn require_str(&self, key: &str, hint: &'static str) -> Result<&str> {
        self.get_str(key)?.ok_or_else(|| self.missing(key, hint))
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    fn info_or_missing(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_info(name).ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), tensor: name.to_string() })
    }

    /// The raw bytes of tensor `name` (blocks of its ggml type), bounds-checked at parse time.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info_or_missing(name)?;
        Ok(self.bytes_of(info))
    }

    fn bytes_of(&self, info: &TensorInfo) -> &[u8] {
        // parse() checked data_offset + offset + n_bytes <= bytes.len(), so these fit in usize.
        let start = (self.data_offset + info.offset) as usize;
        self.bytes.get(start..start + info.n_bytes as usize).unwrap_or(&[])
    }

    /// Tensor `name` dequantized to f32, shape in PyTorch order.
    pub fn read_tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info_or_missing(name)?;
        let data = dequant::dequantize_to_vec(info.ggml_type, self.bytes_of(info)).map_err(|source| GgufError::Dequant {
            path: self.path.clone(),
            tensor: info.name.clone(),
            source,
        })?;
        Ok(Tensor { shape: info.shape(), data })
    }
}
