//! The GGUF parser: header, metadata key/values, tensor infos and the data offset, from bytes in
//! memory. Every length and offset is checked with checked arithmetic against the bytes that
//! remain, so no input makes it panic or allocate more than a small multiple of the file size.
//!
//! Layout (GGUF v2/v3, little-endian):
//! ```text
//! "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count × (key: string, value_type u32, value)
//! tensor_count × (name: string, n_dims u32, dims u64 × n_dims (ne0 first), ggml_type u32, offset u64)
//! padding to general.alignment (default 32) | tensor data (offsets relative to here)
//! string = len u64 + UTF-8 bytes; array = element_type u32 + count u64 + elements
//! ```

use super::error::{GgufError, Result};
use super::ggml_type::GgmlType;
use super::value::{MetadataArray, MetadataValue, ValueType};
use super::{GgufFile, TensorInfo};
use std::collections::HashMap;
use std::path::Path;

/// GGUF's default alignment of the tensor data section and of every tensor in it.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// ggml's `GGML_MAX_DIMS`: a tensor has at most four dimensions.
pub const MAX_DIMS: u32 = 4;

/// Deepest nesting of arrays in metadata that the parser accepts.
pub const MAX_ARRAY_NESTING: usize = 8;

/// A read position in the file's bytes that reports truncation with the field's name.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn truncated(&self, what: String, needed: u64) -> GgufError {
        GgufError::Truncated { path: self.path.to_path_buf(), what, offset: self.pos as u64, needed, file_len: self.bytes.len() as u64 }
    }

    /// The next `n` bytes; `what` names the field for the error.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(what(), n));
        }
        let start = self.pos;
        self.pos += n as usize; // n <= remaining, so this fits in usize
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let b = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length, then that many UTF-8 bytes.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let start = self.pos as u64;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| GgufError::InvalidUtf8 { path: self.path.to_path_buf(), what: what(), offset: start })
    }

    /// A capacity for `count` items of at least `min_size` bytes each that the remaining bytes
    /// could hold, so a corrupt count cannot make the parser reserve memory the file does not
    /// back (reading the items then fails at the first one that is missing).
    fn capacity(&self, count: u64, min_size: usize) -> usize {
        count.min(self.remaining() / min_size as u64) as usize // <= file length: fits usize
    }

    /// One value of type `ty` (the type code already read); `depth` counts enclosing arrays.
    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<MetadataValue> {
        let what = || format!("value of metadata key {key:?}");
        Ok(match ty {
            ValueType::U8 => MetadataValue::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => MetadataValue::I8(i8::from_le_bytes(self.array(&what)?)),
            ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => MetadataValue::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => MetadataValue::Bool(self.array::<1>(&what)?[0] != 0),
            ValueType::String => MetadataValue::String(self.string(&what)?),
            ValueType::U64 => MetadataValue::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Array => MetadataValue::Array(self.array_value(key, depth + 1)?),
        })
    }

    /// An array: element type u32, count u64, then the elements.
    fn array_value(&mut self, key: &str, depth: usize) -> Result<MetadataArray> {
        if depth > MAX_ARRAY_NESTING {
            return Err(GgufError::NestingTooDeep { path: self.path.to_path_buf(), key: key.to_string(), limit: MAX_ARRAY_NESTING });
        }
        let code = self.u32(&|| format!("array element type of metadata key {key:?}"))?;
        let ty = ValueType::from_code(code).ok_or_else(|| GgufError::UnknownValueType {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            value_type: code,
        })?;
        let count = self.u64(&|| format!("array length of metadata key {key:?}"))?;
        let what = || format!("array elements of metadata key {key:?} ({count} of type {ty:?})");
        let bytes = |size: usize| count.saturating_mul(size as u64);
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const S: usize = std::mem::size_of::<$t>();
                let b = self.take(bytes(S), &what)?;
                MetadataArray::$variant(b.chunks_exact(S).map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; S]))).collect())
            }};
        }
        Ok(match ty {
            ValueType::U8 => MetadataArray::U8(self.take(count, &what)?.to_vec()),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::Bool => MetadataArray::Bool(self.take(count, &what)?.iter().map(|&b| b != 0).collect()),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::String => {
                let mut v = Vec::with_capacity(self.capacity(count, 8));
                for i in 0..count {
                    v.push(self.string(&|| format!("element {i} of metadata key {key:?}"))?);
                }
                MetadataArray::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(self.capacity(count, 12));
                for _ in 0..count {
                    v.push(self.array_value(key, depth + 1)?);
                }
                MetadataArray::Array(v)
            }
        })
    }
}

/// Parses a whole GGUF file held in `bytes`; `path` names it in errors.
pub(super) fn parse(bytes: Vec<u8>, path: &Path) -> Result<GgufFile> {
    let mut c = Cursor { bytes: &bytes, pos: 0, path };
    if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
        return Err(GgufError::BadMagic { path: path.to_path_buf(), found: bytes.iter().take(4).copied().collect() });
    }
    c.pos = 4;
    let version = c.u32(&|| "GGUF version".into())?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version });
    }
    let tensor_count = c.u64(&|| "tensor count".into())?;
    let kv_count = c.u64(&|| "metadata key/value count".into())?;

    // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes.
    let cap = c.capacity(kv_count, 13);
    let mut metadata = Vec::with_capacity(cap);
    let mut index = HashMap::with_capacity(cap);
    for i in 0..kv_count {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let code = c.u32(&|| format!("value type of metadata key {key:?}"))?;
        let ty = ValueType::from_code(code).ok_or_else(|| GgufError::UnknownValueType {
            path: path.to_path_buf(),
            key: key.clone(),
            value_type: code,
        })?;
        let value = c.value(ty, &key, 0)?;
        if index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::Duplicate { path: path.to_path_buf(), what: "metadata key", name: key });
        }
        metadata.push((key, value));
    }

    let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(MetadataValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(other) => return Err(GgufError::BadAlignment { path: path.to_path_buf(), value: other.describe() }),
    };

    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    let cap = c.capacity(tensor_count, 24);
    let mut infos = Vec::with_capacity(cap);
    let mut tensor_index = HashMap::with_capacity(cap);
    for i in 0..tensor_count {
        let info = tensor_info(&mut c, i)?;
        if tensor_index.insert(info.name.clone(), infos.len()).is_some() {
            return Err(GgufError::Duplicate { path: path.to_path_buf(), what: "tensor", name: info.name });
        }
        infos.push(info);
    }

    let data_offset = (c.pos as u64).next_multiple_of(alignment); // pos <= len, alignment <= 2^31: no overflow
    let file_len = bytes.len() as u64;
    for t in &infos {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        let misaligned = !t.offset.is_multiple_of(alignment);
        match end {
            Some(e) if e <= file_len && !misaligned => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                    alignment,
                })
            }
        }
    }
    Ok(GgufFile { path: path.to_path_buf(), version, alignment, data_offset, metadata, index, tensors: infos, tensor_index, bytes })
}

/// One tensor info, validated: at most four dimensions, a known type, whole blocks, no overflow.
fn tensor_info(c: &mut Cursor<'_>, i: u64) -> Result<TensorInfo> {
    let name = c.string(&|| format!("name of tensor {i}"))?;
    let n_dims = c.u32(&|| format!("dimension count of tensor {name:?}"))?;
    let bad_shape = |dims: Vec<u64>, reason: String| GgufError::BadShape { path: c.path.to_path_buf(), tensor: name.clone(), dims, reason };
    if n_dims > MAX_DIMS {
        return Err(bad_shape(vec![], format!("{n_dims} dimensions, ggml allows at most {MAX_DIMS}")));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(c.u64(&|| format!("dimension {d} of tensor {name:?}"))?);
    }
    let type_id = c.u32(&|| format!("ggml type of tensor {name:?}"))?;
    let offset = c.u64(&|| format!("data offset of tensor {name:?}"))?;
    let bad_shape = |reason: String| GgufError::BadShape { path: c.path.to_path_buf(), tensor: name.clone(), dims: dims.clone(), reason };
    // ggml stores dimensions as int64: each must fit, and so must their product.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| if d > i64::MAX as u64 { None } else { acc.checked_mul(d).filter(|&p| p <= i64::MAX as u64) })
        .ok_or_else(|| bad_shape("the element count overflows a 64-bit integer".into()))?;
    let ggml_type = GgmlType::from_code(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
        path: c.path.to_path_buf(),
        tensor: name.clone(),
        type_id,
    })?;
    let ne0 = dims.first().copied().unwrap_or(1);
    if !ne0.is_multiple_of(ggml_type.block_size() as u64) {
        return Err(bad_shape(format!("ne0 = {ne0} is not a multiple of the {ggml_type} block size {}", ggml_type.block_size())));
    }
    let n_bytes = ggml_type.bytes_for(n_elements).ok_or_else(|| bad_shape("the byte size overflows a 64-bit integer".into()))?;
    Ok(TensorInfo { name, dims, ggml_type, offset, n_elements, n_bytes })
}
