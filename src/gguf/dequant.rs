//! Dequantization of ggml blocks to f32: the plain float types and the 32-element block quants
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) here, the 256-element K-quants in `kquants`. Each follows
//! ggml-quants.c's `dequantize_row_*` operation for operation (no fused multiply-add), so the
//! results are bit-identical to ggml's and to gguf-py's `gguf.quants.dequantize`.
//!
//! Block layouts (little-endian, `d`/`m` are f16 unless noted; QK = elements per block):
//! ```text
//! Q4_0 (QK 32, 18 B): d, qs[16]            x[j] = (qs[j] & 15) - 8, x[j+16] = (qs[j] >> 4) - 8; y = d·x
//! Q4_1 (QK 32, 20 B): d, m, qs[16]         as Q4_0 without the -8;                        y = d·x + m
//! Q5_0 (QK 32, 22 B): d, qh u32, qs[16]    bit j of qh is bit 4 of x[j]; x -= 16;       y = d·x
//! Q5_1 (QK 32, 24 B): d, m, qh u32, qs[16] as Q5_0 without the -16;                       y = d·x + m
//! Q8_0 (QK 32, 34 B): d, qs[32] i8                                                         y = d·qs[j]
//! ```

use super::ggml_type::{GgmlType, DEQUANTIZABLE};
use super::kquants;
use half::{bf16, f16};

/// Why a block of bytes could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    /// lowrank has no dequantizer for this type.
    #[error("ggml type {0} is not supported; lowrank dequantizes {list} (requantize the model to one of those with llama.cpp's llama-quantize)", list = supported_list())]
    Unsupported(GgmlType),
    /// The byte count is not the size of the requested number of elements.
    #[error("{bytes} bytes of {ggml_type} do not hold {elements} elements (blocks of {} elements take {} bytes)", ggml_type.block_size(), ggml_type.type_size())]
    Length {
        /// The type.
        ggml_type: GgmlType,
        /// Bytes given.
        bytes: usize,
        /// Elements asked for.
        elements: usize,
    },
}

fn supported_list() -> String {
    DEQUANTIZABLE.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

/// Reads the little-endian f16 at `b[i..i + 2]` as f32.
#[inline]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` (whole blocks of `ty`) into `out`; `out.len()` elements must take exactly
/// `bytes.len()` bytes. `out` is row-major in the order ggml stores the elements.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    if !ty.dequantizable() {
        return Err(DequantError::Unsupported(ty));
    }
    if ty.bytes_for(out.len() as u64) != Some(bytes.len() as u64) {
        return Err(DequantError::Length { ggml_type: ty, bytes: bytes.len(), elements: out.len() });
    }
    let blocks = bytes.chunks_exact(ty.type_size()).zip(out.chunks_exact_mut(ty.block_size()));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = f16_at(b, 0)),
        GgmlType::BF16 => blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
        GgmlType::Q2K => blocks.for_each(|(b, y)| kquants::q2_k(b, y)),
        GgmlType::Q3K => blocks.for_each(|(b, y)| kquants::q3_k(b, y)),
        GgmlType::Q4K => blocks.for_each(|(b, y)| kquants::q4_k(b, y)),
        GgmlType::Q5K => blocks.for_each(|(b, y)| kquants::q5_k(b, y)),
        GgmlType::Q6K => blocks.for_each(|(b, y)| kquants::q6_k(b, y)),
        GgmlType::Q8K => blocks.for_each(|(b, y)| kquants::q8_k(b, y)),
        other => return Err(DequantError::Unsupported(other)),
    }
    Ok(())
}

/// Dequantizes `bytes` (whole blocks of `ty`) into a new vector of `bytes.len() / type_size ×
/// block_size` values. The type is checked before anything is allocated.
pub fn dequantize_to_vec(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, DequantError> {
    if !ty.dequantizable() {
        return Err(DequantError::Unsupported(ty));
    }
    let n = bytes.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0f32; n];
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

/// Q4_0: `[d f16][qs 16]` → 32 values.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: `[d f16][m f16][qs 16]` → 32 values.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// Q5_0: `[d f16][qh u32][qs 16]` → 32 values.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, &q) in b[6..22].iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((q & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// Q5_1: `[d f16][m f16][qh u32][qs 16]` → 32 values.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, &q) in b[8..24].iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((q & 0x0F) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// Q8_0: `[d f16][qs 32 i8]` → 32 values.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yj, &q) in y.iter_mut().zip(&b[2..34]) {
        *yj = (q as i8) as f32 * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_block_by_hand() {
        // d = 0.5 (f16 0x3800); qs[0] = 0x9F: x[0] = 15 - 8 = 7, x[16] = 9 - 8 = 1.
        let mut b = vec![0x00, 0x38];
        b.extend([0x9F]);
        b.extend([0x88; 15]);
        let mut y = [f32::NAN; 32];
        dequantize(GgmlType::Q4_0, &b, &mut y).unwrap();
        assert_eq!(y[0], 3.5);
        assert_eq!(y[16], 0.5);
        assert!(y[1..16].iter().chain(&y[17..]).all(|&v| v == 0.0), "{y:?}");
    }

    #[test]
    fn q5_0_high_bits_come_from_qh() {
        // d = 1, qh has bits 0 and 16 set, qs all 0: x[0] = 16 - 16 = 0, x[16] = 0, others -16.
        let mut b = vec![0x00, 0x3C];
        b.extend(0x0001_0001u32.to_le_bytes());
        b.extend([0u8; 16]);
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q5_0, &b, &mut y).unwrap();
        assert_eq!((y[0], y[16], y[1], y[17]), (0.0, 0.0, -16.0, -16.0));
    }

    #[test]
    fn wrong_length_and_unsupported_type_are_errors() {
        let mut y = [0f32; 32];
        let e = dequantize(GgmlType::Q8_0, &[0u8; 33], &mut y).unwrap_err();
        assert_eq!(e, DequantError::Length { ggml_type: GgmlType::Q8_0, bytes: 33, elements: 32 });
        let e = dequantize(GgmlType::Iq2Xxs, &[0u8; 66], &mut [0f32; 256]).unwrap_err();
        assert!(e.to_string().contains("IQ2_XXS is not supported") && e.to_string().contains("Q6_K"), "{e}");
        assert!(dequantize_to_vec(GgmlType::Q1_0, &[0u8; 18]).is_err());
    }
}
