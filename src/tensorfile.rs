//! safetensors I/O: reads tensors of any float dtype as `f32` (and integer tensors as `i64`), and
//! writes `f32` tensors atomically with metadata.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One tensor read from a file.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values of a float tensor (F32, F16, BF16 converted to f32); empty for integer tensors.
    pub f32: Vec<f32>,
    /// Values of an integer tensor (I64, I32, U8, ...); empty for float tensors.
    pub i64: Vec<i64>,
}

/// All tensors of one safetensors file, by name.
#[derive(Debug)]
pub struct TensorFile {
    /// The file they came from (for error messages).
    pub path: PathBuf,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The file's `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads every tensor of `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let bad = |message: String| Error::Safetensors { path: path.to_path_buf(), message };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let shape = view.shape().to_vec();
            let (mut f, mut i) = (Vec::new(), Vec::new());
            match view.dtype() {
                Dtype::F32 => f = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => f = data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => f = data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::F64 => f = data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
                Dtype::I64 => i = data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
                Dtype::I32 => i = data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64).collect(),
                Dtype::U8 => i = data.iter().map(|v| *v as i64).collect(),
                Dtype::BOOL => i = data.iter().map(|v| (*v != 0) as i64).collect(),
                other => return Err(Error::UnsupportedDtype { name, dtype: format!("{other:?}") }),
            }
            tensors.insert(name, Tensor { shape, f32: f, i64: i });
        }
        Ok(TensorFile { path: path.to_path_buf(), tensors, metadata: meta.metadata().clone().unwrap_or_default() })
    }

    /// A float tensor by name, checked against `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<&[f32]> {
        let t = self.tensors.get(name).ok_or_else(|| Error::TensorNotFound { name: name.to_string(), file: self.path.clone() })?;
        if t.shape != shape {
            return Err(Error::ShapeMismatch { name: name.into(), expected: shape.to_vec(), got: t.shape.clone() });
        }
        if t.f32.is_empty() && !shape.contains(&0) {
            return Err(Error::UnsupportedDtype { name: name.into(), dtype: "integer".into() });
        }
        Ok(&t.f32)
    }
}

/// A named `f32` tensor to write.
pub struct OutTensor<'a> {
    /// Tensor name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values (row-major).
    pub data: &'a [f32],
}

struct F32View<'a>(&'a [f32], Vec<usize>);

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(self.0.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.len() * 4
    }
}

/// Writes `tensors` to `path` (atomically) with `metadata` (e.g. {"format": "pt"}).
pub fn write(path: &Path, tensors: &[OutTensor<'_>], metadata: &[(&str, &str)]) -> Result<()> {
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let views: Vec<(String, F32View<'_>)> = tensors.iter().map(|t| (t.name.clone(), F32View(t.data, t.shape.clone()))).collect();
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Safetensors { path: path.to_path_buf(), message: e.to_string() })?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_shapes_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let a = [1.0f32, -2.5, 3.25, 0.0, 5.0, 6.0];
        write(&p, &[OutTensor { name: "w".into(), shape: vec![2, 3], data: &a }], &[("format", "pt")]).unwrap();
        let f = TensorFile::read(&p).unwrap();
        assert_eq!(f.f32("w", &[2, 3]).unwrap(), &a);
        assert_eq!(f.metadata.get("format").map(String::as_str), Some("pt"));
        let e = f.f32("w", &[3, 2]).unwrap_err();
        assert!(e.to_string().contains("[2, 3]") && e.to_string().contains("[3, 2]"), "{e}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, b"not a safetensors file").unwrap();
        let e = TensorFile::read(&p).unwrap_err();
        assert!(e.to_string().contains("bad.safetensors"), "{e}");
    }
}
