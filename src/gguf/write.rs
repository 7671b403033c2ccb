//! The GGUF writer: metadata of every value type and F32 / F16 tensors, GGUF v3 with alignment
//! 32, written atomically (a unique temporary file in the same folder, fsync, rename). It is what
//! lowrank uses for llama.cpp LoRA adapters (`general.type = "adapter"`, `adapter.type = "lora"`,
//! `adapter.lora.alpha`, tensors `blk.N.attn_q.weight.lora_a` / `.lora_b`) and merged models.

use super::error::{GgufError, Result};
use super::ggml_type::GgmlType;
use super::read::DEFAULT_ALIGNMENT;
use super::value::{MetadataArray, MetadataValue};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A tensor queued for writing: name, GGUF dims (ne0 first), type and encoded data.
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory: add metadata and tensors, then [`GgufWriter::write`].
///
/// ```no_run
/// # use lowrank::gguf::{GgufWriter, MetadataValue};
/// let mut w = GgufWriter::new();
/// w.add("general.architecture", MetadataValue::String("llama".into())).unwrap();
/// w.add_f32("adapter.lora.alpha", 16.0).unwrap();
/// w.add_tensor_f32("blk.0.attn_q.weight.lora_a", &[8, 576], &vec![0.0; 8 * 576]).unwrap();
/// w.write(std::path::Path::new("adapter.gguf")).unwrap();
/// ```
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor>,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tensors.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("GgufWriter").field("metadata", &self.metadata.len()).field("tensors", &names).finish()
    }
}

impl GgufWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds metadata key `key` with `value` (any type, arrays included); a key may be added once.
    pub fn add(&mut self, key: &str, value: MetadataValue) -> Result<&mut Self> {
        if self.metadata.iter().any(|(k, _)| k == key) {
            return Err(GgufError::BadWriterInput { name: key.to_string(), reason: "this metadata key was already added".into() });
        }
        if key == "general.alignment" {
            return Err(GgufError::BadWriterInput {
                name: key.to_string(),
                reason: "the writer always aligns to 32 bytes and does not take general.alignment".into(),
            });
        }
        self.metadata.push((key.to_string(), value));
        Ok(self)
    }

    /// Adds a u32 value.
    pub fn add_u32(&mut self, key: &str, v: u32) -> Result<&mut Self> {
        self.add(key, MetadataValue::U32(v))
    }

    /// Adds an i32 value.
    pub fn add_i32(&mut self, key: &str, v: i32) -> Result<&mut Self> {
        self.add(key, MetadataValue::I32(v))
    }

    /// Adds an f32 value.
    pub fn add_f32(&mut self, key: &str, v: f32) -> Result<&mut Self> {
        self.add(key, MetadataValue::F32(v))
    }

    /// Adds a bool value.
    pub fn add_bool(&mut self, key: &str, v: bool) -> Result<&mut Self> {
        self.add(key, MetadataValue::Bool(v))
    }

    /// Adds a string value.
    pub fn add_string(&mut self, key: &str, v: &str) -> Result<&mut Self> {
        self.add(key, MetadataValue::String(v.to_string()))
    }

    /// Adds an array of strings.
    pub fn add_string_array(&mut self, key: &str, v: &[String]) -> Result<&mut Self> {
        self.add(key, MetadataValue::Array(MetadataArray::String(v.to_vec())))
    }

    fn push_tensor(&mut self, name: &str, shape: &[usize], n: usize, ggml_type: GgmlType, data: Vec<u8>) -> Result<&mut Self> {
        let bad = |reason: String| GgufError::BadWriterInput { name: name.to_string(), reason };
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(bad("a tensor of this name was already added".into()));
        }
        if shape.len() > 4 {
            return Err(bad(format!("shape {shape:?} has more than the 4 dimensions GGUF allows")));
        }
        if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(n) {
            return Err(bad(format!("shape {shape:?} does not hold the {n} values given")));
        }
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push(PendingTensor { name: name.to_string(), dims, ggml_type, data });
        Ok(self)
    }

    /// Adds an F32 tensor of `shape` (PyTorch order, slowest first) with row-major `data`.
    pub fn add_tensor_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<&mut Self> {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_tensor(name, shape, data.len(), GgmlType::F32, bytes)
    }

    /// Adds an F16 tensor of `shape` (PyTorch order), converting `data` to f16 with
    /// round-to-nearest-even (as numpy's `astype(np.float16)`).
    pub fn add_tensor_f16(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<&mut Self> {
        let bytes = data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        self.push_tensor(name, shape, data.len(), GgmlType::F16, bytes)
    }

    /// The complete file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&value.value_type().code().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&t.ggml_type.code().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(DEFAULT_ALIGNMENT);
        }
        pad(&mut out);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad(&mut out);
        }
        out
    }

    /// Writes the file to `path` atomically: a unique temporary sibling, fsync, then rename.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }
}

fn pad(out: &mut Vec<u8>) {
    out.resize((out.len() as u64).next_multiple_of(DEFAULT_ALIGNMENT) as usize, 0);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetadataValue) {
    match v {
        MetadataValue::U8(x) => out.push(*x),
        MetadataValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Bool(x) => out.push(u8::from(*x)),
        MetadataValue::String(s) => put_string(out, s),
        MetadataValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &MetadataArray) {
    out.extend_from_slice(&a.element_type().code().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            $v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
    }
    match a {
        MetadataArray::U8(v) => out.extend_from_slice(v),
        MetadataArray::I8(v) => each!(v),
        MetadataArray::U16(v) => each!(v),
        MetadataArray::I16(v) => each!(v),
        MetadataArray::U32(v) => each!(v),
        MetadataArray::I32(v) => each!(v),
        MetadataArray::F32(v) => each!(v),
        MetadataArray::Bool(v) => v.iter().for_each(|&b| out.push(u8::from(b))),
        MetadataArray::String(v) => v.iter().for_each(|s| put_string(out, s)),
        MetadataArray::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
        MetadataArray::U64(v) => each!(v),
        MetadataArray::I64(v) => each!(v),
        MetadataArray::F64(v) => each!(v),
    }
}

/// A temporary sibling of `path` no other writer uses: process id, a per-process counter and the
/// clock.
fn unique_temp(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}-{nanos}", std::process::id()))
}

/// Writes `bytes` to `path` atomically; the temporary file is removed on failure.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = unique_temp(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable where the platform allows opening a directory.
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        GgufError::Io { action: "write", path: path.to_path_buf(), source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    #[test]
    fn round_trip_through_the_reader() {
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama").unwrap();
        w.add_string("general.type", "adapter").unwrap();
        w.add_string("adapter.type", "lora").unwrap();
        w.add_f32("adapter.lora.alpha", 16.0).unwrap();
        w.add_u32("u", 7).unwrap().add_i32("i", -3).unwrap().add_bool("b", true).unwrap();
        w.add_string_array("names", &["a".into(), "".into(), "é🙂".into()]).unwrap();
        w.add("nums", MetadataValue::Array(MetadataArray::I32(vec![1, -2, 3]))).unwrap();
        w.add("nested", MetadataValue::Array(MetadataArray::Array(vec![MetadataArray::F64(vec![0.5]), MetadataArray::U8(vec![])])))
            .unwrap();
        let a: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 3.0).collect();
        w.add_tensor_f32("blk.0.attn_q.weight.lora_a", &[4, 6], &a).unwrap();
        let b = [1.0f32, -0.5, 65504.0, 1e-8, 0.1];
        w.add_tensor_f16("blk.0.attn_q.weight.lora_b", &[5, 1], &b).unwrap();
        w.add_tensor_f32("scalar", &[], &[2.5]).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adapter.gguf");
        w.write(&path).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file left behind");
        let f = GgufFile::open(&path).unwrap();
        assert_eq!((f.version, f.alignment), (3, 32));
        assert_eq!(f.metadata().len(), 10);
        assert_eq!(f.get_str("adapter.type").unwrap(), Some("lora"));
        assert_eq!(f.get("adapter.lora.alpha"), Some(&MetadataValue::F32(16.0)));
        assert_eq!(f.get("i"), Some(&MetadataValue::I32(-3)));
        assert_eq!(f.get_bool("b").unwrap(), Some(true));
        assert_eq!(f.get_str_array("names").unwrap().unwrap(), ["a", "", "é🙂"]);
        assert_eq!(f.get("nums").and_then(|v| v.as_array()).and_then(|a| a.to_i64_vec()), Some(vec![1, -2, 3]));
        assert_eq!(f.get("nested"), w.metadata.iter().find(|(k, _)| k == "nested").map(|(_, v)| v));
        let ta = f.read_tensor("blk.0.attn_q.weight.lora_a").unwrap();
        assert_eq!((ta.shape.as_slice(), ta.data.as_slice()), ([4usize, 6].as_slice(), a.as_slice()));
        assert_eq!(f.tensor_info("blk.0.attn_q.weight.lora_a").unwrap().dims, [6, 4]);
        let tb = f.read_tensor("blk.0.attn_q.weight.lora_b").unwrap();
        assert_eq!(tb.shape, [5, 1]);
        let want: Vec<f32> = b.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(tb.data, want);
        assert_eq!(tb.data[3], 0.0, "1e-8 underflows f16 to zero (smallest subnormal 6e-8)");
        assert_eq!(f.read_tensor("scalar").unwrap(), crate::gguf::Tensor { shape: vec![], data: vec![2.5] });
        for t in f.tensors() {
            assert_eq!((f.data_offset + t.offset) % 32, 0, "{} misaligned", t.name);
        }
    }

    #[test]
    fn rejects_bad_tensors_and_repeated_keys() {
        let mut w = GgufWriter::new();
        w.add_u32("k", 1).unwrap();
        assert!(w.add_u32("k", 2).unwrap_err().to_string().contains("already added"));
        assert!(w.add_u32("general.alignment", 64).is_err());
        let e = w.add_tensor_f32("t", &[2, 3], &[0.0; 5]).err().unwrap().to_string();
        assert!(e.contains("\"t\"") && e.contains("[2, 3]") && e.contains('5'), "{e}");
        w.add_tensor_f32("t", &[5], &[0.0; 5]).unwrap();
        assert!(w.add_tensor_f16("t", &[5], &[0.0; 5]).is_err());
        assert!(w.add_tensor_f32("u", &[1, 1, 1, 1, 1], &[0.0]).is_err());
    }

    #[test]
    fn failed_write_names_the_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder/out.gguf");
        let e = GgufWriter::new().write(&path).unwrap_err().to_string();
        assert!(e.contains("out.gguf"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
