//! Tests of the reader and dequantizer against tests/fixtures/gguf (written by gguf-py through
//! scripts/golden/make_gguf_fixtures.py), and of every error path on corrupted copies of it.

use super::*;
use serde_json::Value;
use std::path::Path;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture_dir().join("types.gguf")).unwrap()
}

fn fixture() -> GgufFile {
    GgufFile::open(&fixture_dir().join("types.gguf")).unwrap()
}

/// (shape, values) of each tensor in expected.safetensors (gguf-py's dequantization).
fn expected() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture_dir().join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (name, view.shape().to_vec(), data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_type_dequantizes_bit_exactly_like_gguf_py() {
    let f = fixture();
    let want = expected();
    assert_eq!(want.len(), 14);
    let mut types = Vec::new();
    for (name, shape, values) in &want {
        let got = f.read_tensor(name).unwrap();
        assert_eq!(&got.shape, shape, "{name}");
        let mismatches: Vec<_> = got.data.iter().zip(values).enumerate().filter(|(_, (g, w))| g.to_bits() != w.to_bits()).take(5).collect();
        assert!(mismatches.is_empty(), "{name}: (index, (lowrank, gguf-py)) {mismatches:?}");
        assert_eq!(got.data.len(), values.len());
        types.push(f.tensor_info(name).unwrap().ggml_type);
    }
    for t in ggml_type::DEQUANTIZABLE {
        assert!(types.contains(&t), "the fixture has no {t} tensor");
    }
    // Values are not trivially equal: the fixtures hold distinct, non-zero data.
    let q4k = &want.iter().find(|w| w.0 == "t.q4_k").unwrap().2;
    assert!(q4k.iter().filter(|v| **v != 0.0).count() > 500);
}

#[test]
fn tensor_infos_keep_gguf_dims_and_give_pytorch_shapes() {
    let f = fixture();
    let info: Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("types.json")).unwrap()).unwrap();
    let tensors = info["tensors"].as_object().unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    for (name, t) in tensors {
        let i = f.tensor_info(name).unwrap();
        assert_eq!(i.ggml_type.name(), t["type"].as_str().unwrap(), "{name}");
        let dims: Vec<u64> = serde_json::from_value(t["dims"].clone()).unwrap();
        let shape: Vec<usize> = serde_json::from_value(t["shape"].clone()).unwrap();
        assert_eq!((&i.dims, i.shape()), (&dims, shape), "{name}");
        assert_eq!((f.data_offset + i.offset) % f.alignment, 0);
    }
    assert_eq!(f.tensor_info("t.f32").unwrap().dims, [32, 3, 2]);
}

#[test]
fn type_table_matches_gguf_py() {
    let info: Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("types.json")).unwrap()).unwrap();
    let sizes = info["quant_sizes"].as_object().unwrap();
    assert_eq!(sizes.len(), GgmlType::all().count(), "gguf-py and lowrank know different type lists");
    for (name, v) in sizes {
        let t = GgmlType::from_name(name).unwrap_or_else(|| panic!("lowrank lacks {name}"));
        let mut v: Vec<u64> = serde_json::from_value(v.clone()).unwrap();
        if t == GgmlType::Q8_1 {
            // gguf-py still has the old f32 d and s (40 bytes); ggml's block_q8_1 has f16 ones (36).
            assert_eq!(v[2], 40);
            v[2] = 36;
        }
        assert_eq!(v, [t.code() as u64, t.block_size() as u64, t.type_size() as u64], "{name}");
    }
}

#[test]
fn metadata_of_every_value_type() {
    let f = fixture();
    assert_eq!((f.version, f.alignment), (3, 32));
    assert_eq!(f.metadata().len(), 23);
    assert_eq!(f.architecture().unwrap(), "llama");
    use MetadataValue as M;
    let want = [
        ("test.u8", M::U8(200)),
        ("test.i8", M::I8(-100)),
        ("test.u16", M::U16(60000)),
        ("test.i16", M::I16(-30000)),
        ("test.u32", M::U32(4_000_000_000)),
        ("test.i32", M::I32(-2_000_000_000)),
        ("test.f32", M::F32(0.1)),
        ("test.bool_true", M::Bool(true)),
        ("test.bool_false", M::Bool(false)),
        ("test.string", M::String("héllo wörld 🙂".into())),
        ("test.empty_string", M::String(String::new())),
        ("test.u64", M::U64(18_000_000_000_000_000_000)),
        ("test.i64", M::I64(-9_000_000_000_000_000_000)),
        ("test.f64", M::F64(0.1)),
    ];
    for (key, value) in want {
        assert_eq!(f.get(key), Some(&value), "{key}");
    }
    let strings = ["a", "", "Ġhello", "<|im_start|>", "日本"];
    assert_eq!(f.get_str_array("test.array_string").unwrap().unwrap(), strings);
    let arr = |k: &str| f.get(k).and_then(MetadataValue::as_array).unwrap().clone();
    assert_eq!(arr("test.array_i32"), MetadataArray::I32(vec![1, -2, 3, i32::MAX]));
    assert_eq!(arr("test.array_f32"), MetadataArray::F32(vec![0.5, -1.25, 3.0e38]));
    assert_eq!(arr("test.array_u8"), MetadataArray::U8(vec![0, 1, 255]));
    assert_eq!(arr("test.array_bool"), MetadataArray::Bool(vec![true, false, true]));
    assert_eq!(arr("test.array_u64"), MetadataArray::U64(vec![0, u64::MAX]));
    assert_eq!(arr("test.array_f64"), MetadataArray::F64(vec![1.0e-300, -2.5]));
    assert_eq!(arr("test.array_nested"), MetadataArray::Array(vec![MetadataArray::I32(vec![1, 2]), MetadataArray::I32(vec![3])]));
    // Typed accessors convert integer types and refuse other types, naming the key.
    assert_eq!(f.get_u64("test.u8").unwrap(), Some(200));
    assert!(f.get_u64("test.array_u64").unwrap_err().to_string().contains("test.array_u64"));
    assert!(f.get_u64("test.i8").is_err(), "negative values are not u64");
    assert_eq!(f.get_f64("test.i32").unwrap(), Some(-2e9));
    assert_eq!(f.get_u64("absent").unwrap(), None);
    let e = f.require_str("absent.key", "add it").unwrap_err().to_string();
    assert!(e.contains("absent.key") && e.contains("add it") && e.contains("types.gguf"), "{e}");
}

/// Absolute offset of the tensor info of `name` in `bytes` (where its name's length starts).
fn tensor_info_offset(bytes: &[u8], name: &str) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(name.as_bytes());
    bytes.windows(pat.len()).position(|w| w == pat.as_slice()).unwrap()
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile> {
    GgufFile::from_bytes(bytes, Path::new("corrupt.gguf"))
}

#[test]
fn bad_magic_and_version() {
    let mut b = fixture_bytes();
    b[0] = b'X';
    let e = parse(b).unwrap_err().to_string();
    assert!(e.contains("corrupt.gguf is not a GGUF file") && e.contains("58, 47, 55, 46"), "{e}");
    assert!(parse(vec![]).unwrap_err().to_string().contains("not a GGUF file"));
    // Version 2 has the same layout as 3 (only version 1 had 32-bit counts).
    let mut b = fixture_bytes();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let v2 = parse(b).unwrap();
    assert_eq!((v2.version, v2.read_tensor("t.q4_k").unwrap()), (2, fixture().read_tensor("t.q4_k").unwrap()));
    let mut b = fixture_bytes();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = parse(b).unwrap_err().to_string();
    assert!(e.contains("version 1") && e.contains("versions 2 and 3"), "{e}");
}

#[test]
fn truncation_anywhere_is_an_error_naming_the_field() {
    let b = fixture_bytes();
    let f = fixture();
    let last_end = f.tensors().iter().map(|t| f.data_offset + t.offset + t.n_bytes).max().unwrap() as usize;
    for n in 0..last_end {
        let err = parse(b[..n].to_vec()).expect_err(&format!("a file cut at {n} bytes parsed"));
        let msg = err.to_string();
        match err {
            GgufError::BadMagic { .. } => assert!(n < 4),
            GgufError::Truncated { .. } => assert!(msg.contains("is truncated") && msg.contains(&format!("has {n} bytes")), "{msg}"),
            GgufError::TensorOutOfBounds { .. } => assert!(n as u64 >= f.data_offset.saturating_sub(32), "{n}: {msg}"),
            other => panic!("cut at {n}: unexpected {other}"),
        }
    }
    // Two cuts named precisely: inside a metadata value, and inside the last tensor's data.
    let key_at = b.windows(15).position(|w| w == b"test.string\x08\x00\x00\x00").unwrap();
    let e = parse(b[..key_at + 20].to_vec()).unwrap_err().to_string();
    assert!(e.contains("value of metadata key \"test.string\""), "{e}");
    let e = parse(b[..last_end - 1].to_vec()).unwrap_err().to_string();
    assert!(e.contains("tensor \"t.q8_k\"") && e.contains("beyond the end of the file"), "{e}");
}

#[test]
fn tensor_offset_beyond_the_end_is_an_error() {
    let mut b = fixture_bytes();
    let at = tensor_info_offset(&b, "t.q4_1") + 8 + "t.q4_1".len() + 4 + 2 * 8 + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = parse(b.clone()).unwrap_err().to_string();
    assert!(e.contains("tensor \"t.q4_1\"") && e.contains("beyond the end"), "{e}");
    b[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes()); // data_offset + offset overflows
    assert!(parse(b.clone()).unwrap_err().to_string().contains("t.q4_1"));
    b[at..at + 8].copy_from_slice(&33u64.to_le_bytes()); // misaligned
    let e = parse(b).unwrap_err().to_string();
    assert!(e.contains("t.q4_1") && e.contains("not aligned to 32"), "{e}");
}

#[test]
fn unknown_types_are_errors_naming_them() {
    let b = fixture_bytes();
    // Tensor type code 99: unknown to ggml.
    let type_at = |b: &[u8], name: &str, n_dims: usize| tensor_info_offset(b, name) + 8 + name.len() + 4 + n_dims * 8;
    let mut c = b.clone();
    let at = type_at(&c, "t.q6_k", 2);
    assert_eq!(u32::from_le_bytes(c[at..at + 4].try_into().unwrap()), GgmlType::Q6K.code());
    c[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = parse(c).unwrap_err().to_string();
    assert!(e.contains("tensor \"t.q6_k\" has unknown ggml type 99"), "{e}");
    // A known type lowrank cannot dequantize: the file parses, reading the tensor names the type.
    let mut c = b.clone();
    let at = type_at(&c, "t.q6_k", 2);
    c[at..at + 4].copy_from_slice(&GgmlType::Iq2Xxs.code().to_le_bytes());
    let f = parse(c).unwrap();
    let e = f.read_tensor("t.q6_k").unwrap_err().to_string();
    assert!(e.contains("t.q6_k") && e.contains("IQ2_XXS is not supported"), "{e}");
    // Metadata value type 13: not in the specification.
    let mut c = b.clone();
    let at = c.windows(7).position(|w| w == b"test.u8").unwrap() + 7;
    c[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    let e = parse(c).unwrap_err().to_string();
    assert!(e.contains("metadata key \"test.u8\" has unknown value type 13"), "{e}");
    // A block size that does not divide ne0.
    let mut c = b;
    let at = tensor_info_offset(&c, "t.q8_0") + 8 + "t.q8_0".len() + 4;
    c[at..at + 8].copy_from_slice(&48u64.to_le_bytes());
    let e = parse(c).unwrap_err().to_string();
    assert!(e.contains("t.q8_0") && e.contains("not a multiple of the Q8_0 block size 32"), "{e}");
}

#[test]
fn huge_counts_do_not_allocate_and_are_truncation_errors() {
    let mut b = fixture_bytes();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert!(matches!(parse(b.clone()).unwrap_err(), GgufError::Truncated { .. }));
    let mut b = fixture_bytes();
    let at = b.windows(17).position(|w| w == b"test.array_string").unwrap() + 17 + 4 + 4;
    b[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes()); // array length
    let e = parse(b).unwrap_err().to_string();
    assert!(e.contains("of metadata key \"test.array_string\""), "{e}");
    let mut b = fixture_bytes();
    let at = b.windows(14).position(|w| w == b"test.array_u64").unwrap() + 14 + 4 + 4;
    b[at..at + 8].copy_from_slice(&(u64::MAX / 4).to_le_bytes()); // count × 8 overflows u64
    let e = parse(b).unwrap_err().to_string();
    assert!(e.contains("array elements of metadata key \"test.array_u64\"") && e.contains("is truncated"), "{e}");
}

#[test]
fn random_corruption_never_panics() {
    use rand::{Rng, SeedableRng};
    let b = fixture_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let header_end = fixture().data_offset as usize;
    for _ in 0..3000 {
        let mut c = b.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..header_end);
            c[i] = rng.random();
        }
        if let Ok(f) = parse(c) {
            for t in f.tensors() {
                let _ = f.read_tensor(&t.name);
            }
        }
    }
}
