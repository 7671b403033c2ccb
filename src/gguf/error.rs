//! The GGUF error type: every variant names the file and the key or tensor concerned, and its
//! message ends with what to do about it.

use super::dequant::DequantError;
use std::path::PathBuf;

/// Errors raised while reading, dequantizing, mapping or writing GGUF files.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "rename", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The file does not start with the bytes `GGUF`.
    #[error("{} is not a GGUF file: it starts with {found:02x?}, not \"GGUF\" (47 47 55 46); pass a .gguf model file", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first bytes found (up to four).
        found: Vec<u8>,
    },

    /// The GGUF version is not 2 or 3.
    #[error("{} is GGUF version {version}; lowrank reads versions 2 and 3 (convert the file again with a current llama.cpp)", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },

    /// The file ends before a field it declares.
    #[error("{} is truncated: {what} needs {needed} bytes at offset {offset}, but the file has {file_len} bytes; download the file again", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The field being read (with its key or tensor name).
        what: String,
        /// Where the field starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The length of the file.
        file_len: u64,
    },

    /// A metadata value has a type code outside the GGUF specification.
    #[error("{}: metadata key {key:?} has unknown value type {value_type} (GGUF defines 0..=12); the file is corrupt or from a newer GGUF version", path.display())]
    UnknownValueType {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// The type code found.
        value_type: u32,
    },

    /// A metadata array nests deeper than lowrank accepts.
    #[error("{}: metadata key {key:?} nests arrays deeper than {limit} levels; the file is corrupt", path.display())]
    NestingTooDeep {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// The deepest nesting accepted.
        limit: usize,
    },

    /// A string in the file is not valid UTF-8.
    #[error("{}: {what} is not valid UTF-8 (at offset {offset}); the file is corrupt", path.display())]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// Which string (key name, value of a key, tensor name).
        what: String,
        /// Where the string's bytes start.
        offset: u64,
    },

    /// A metadata key or tensor name occurs twice.
    #[error("{}: {what} {name:?} occurs twice; the file is corrupt", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// "metadata key" or "tensor".
        what: &'static str,
        /// The repeated name.
        name: String,
    },

    /// `general.alignment` is zero, not a power of two, or not a u32.
    #[error("{}: general.alignment is {value}; it must be a u32 power of two (GGUF's default is 32)", path.display())]
    BadAlignment {
        /// The file.
        path: PathBuf,
        /// The value found, as text.
        value: String,
    },

    /// A tensor's ggml type code is not one ggml defines.
    #[error("{}: tensor {tensor:?} has unknown ggml type {type_id}; the file is corrupt or uses a type newer than lowrank knows", path.display())]
    UnknownGgmlType {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// The type code found.
        type_id: u32,
    },

    /// A tensor's dimensions are invalid (too many, overflowing, or not whole blocks).
    #[error("{}: tensor {tensor:?} has dimensions {dims:?} (GGUF order, fastest first): {reason}; the file is corrupt", path.display())]
    BadShape {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// The dimensions as stored (ne0 first).
        dims: Vec<u64>,
        /// What is wrong with them.
        reason: String,
    },

    /// A tensor's data lies (partly) beyond the end of the file, or is misaligned.
    #[error("{}: tensor {tensor:?} data [{start}, {end}) lies beyond the end of the file ({file_len} bytes) or is not aligned to {alignment} bytes; the file is truncated or corrupt, download it again", path.display())]
    TensorOutOfBounds {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// Absolute offset of its first byte (saturated on overflow).
        start: u64,
        /// Absolute offset one past its last byte (saturated on overflow).
        end: u64,
        /// The length of the file.
        file_len: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// A tensor could not be dequantized (unsupported ggml type).
    #[error("{}: cannot read tensor {tensor:?}: {source}", path.display())]
    Dequant {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// Why.
        source: DequantError,
    },

    /// A tensor that is needed is not in the file.
    #[error("{}: no tensor named {tensor:?}; is this the right model file?", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
    },

    /// A metadata key that is needed is absent.
    #[error("{}: metadata key {key:?} is missing; {hint}", path.display())]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What to do.
        hint: &'static str,
    },

    /// A metadata key has a value of the wrong type or an invalid value.
    #[error("{}: metadata key {key:?} is {found}, expected {expected}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was expected ("an unsigned integer", "an array of strings", ...).
        expected: &'static str,
        /// What was found (type and value, shortened).
        found: String,
    },

    /// The model architecture has no Hugging Face mapping in lowrank.
    #[error("{}: general.architecture is {arch:?}; lowrank maps {supported} GGUF models to Hugging Face", path.display())]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture found.
        arch: String,
        /// The supported architectures.
        supported: &'static str,
    },

    /// A GGUF tensor name has no Hugging Face equivalent (or the reverse).
    #[error("tensor {name:?} has no {target} name in lowrank's {arch} mapping; {hint}")]
    UnmappedTensor {
        /// The name that could not be mapped.
        name: String,
        /// The naming scheme asked for ("Hugging Face" or "GGUF").
        target: &'static str,
        /// The architecture.
        arch: String,
        /// What to do.
        hint: &'static str,
    },

    /// The tokenizer described by the metadata is not supported or not buildable.
    #[error("{}: cannot build the tokenizer: {message}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What went wrong and how to fix it.
        message: String,
    },

    /// A metadata key or tensor handed to the writer is invalid.
    #[error("cannot write {name:?} to GGUF: {reason}")]
    BadWriterInput {
        /// The metadata key or tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias for the GGUF module.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
