//! The ggml tensor types: their codes, names, block sizes and bytes per block (ggml.h's
//! `ggml_type` and `ggml_type_traits`, gguf-py's `GGML_QUANT_SIZES`).

/// A ggml tensor element type as stored in a GGUF tensor info.
///
/// Every type ggml defines is listed so that files with any of them parse and can be skipped or
/// named in errors; [`GgmlType::dequantizable`] says which ones lowrank can turn into f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half float.
    F16,
    /// 4-bit, 32 per block: f16 scale, symmetric around 8.
    Q4_0,
    /// 4-bit, 32 per block: f16 scale and f16 minimum.
    Q4_1,
    /// 5-bit, 32 per block: f16 scale, symmetric around 16.
    Q5_0,
    /// 5-bit, 32 per block: f16 scale and f16 minimum.
    Q5_1,
    /// 8-bit, 32 per block: f16 scale.
    Q8_0,
    /// 8-bit, 32 per block: f16 scale and f16 sum (ggml's matmul intermediate).
    Q8_1,
    /// 2-bit K-quant, 256 per block.
    Q2K,
    /// 3-bit K-quant, 256 per block.
    Q3K,
    /// 4-bit K-quant, 256 per block.
    Q4K,
    /// 5-bit K-quant, 256 per block.
    Q5K,
    /// 6-bit K-quant, 256 per block.
    Q6K,
    /// 8-bit K-quant, 256 per block: f32 scale (ggml's matmul intermediate).
    Q8K,
    /// i-quant, 2.06 bits per weight.
    Iq2Xxs,
    /// i-quant, 2.31 bits per weight.
    Iq2Xs,
    /// i-quant, 3.06 bits per weight.
    Iq3Xxs,
    /// i-quant, 1.56 bits per weight.
    Iq1S,
    /// Non-linear 4-bit, 32 per block.
    Iq4Nl,
    /// i-quant, 3.44 bits per weight.
    Iq3S,
    /// i-quant, 2.5 bits per weight.
    Iq2S,
    /// Non-linear 4-bit, 256 per block.
    Iq4Xs,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 64-bit float.
    F64,
    /// i-quant, 1.75 bits per weight.
    Iq1M,
    /// bfloat16.
    BF16,
    /// Ternary, 1.69 bits per weight.
    Tq1_0,
    /// Ternary, 2.06 bits per weight.
    Tq2_0,
    /// Microscaling FP4, 32 per block.
    Mxfp4,
    /// NVIDIA FP4, 64 per block.
    Nvfp4,
    /// 1-bit, 128 per block.
    Q1_0,
}

/// (type, code, name, elements per block, bytes per block), in code order.
const TABLE: [(GgmlType, u32, &str, usize, usize); 34] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8K, 15, "Q8_K", 256, 292),
    (GgmlType::Iq2Xxs, 16, "IQ2_XXS", 256, 66),
    (GgmlType::Iq2Xs, 17, "IQ2_XS", 256, 74),
    (GgmlType::Iq3Xxs, 18, "IQ3_XXS", 256, 98),
    (GgmlType::Iq1S, 19, "IQ1_S", 256, 50),
    (GgmlType::Iq4Nl, 20, "IQ4_NL", 32, 18),
    (GgmlType::Iq3S, 21, "IQ3_S", 256, 110),
    (GgmlType::Iq2S, 22, "IQ2_S", 256, 82),
    (GgmlType::Iq4Xs, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::Iq1M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::Tq1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::Tq2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::Mxfp4, 39, "MXFP4", 32, 17),
    (GgmlType::Nvfp4, 40, "NVFP4", 64, 36),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 18),
];

/// The types [`super::dequant::dequantize`] turns into f32.
pub const DEQUANTIZABLE: [GgmlType; 14] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
];

impl GgmlType {
    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        // Every variant is in TABLE (checked by a test), so the fallback is never taken.
        TABLE.iter().find(|r| r.0 == self).unwrap_or(&TABLE[0])
    }

    /// The type with ggml code `code`, or `None` for a code ggml does not define.
    pub fn from_code(code: u32) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == code).map(|r| r.0)
    }

    /// The type named `name` as ggml spells it ("Q4_K", "BF16", ...).
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|r| r.2 == name).map(|r| r.0)
    }

    /// ggml's numeric code for the type.
    pub fn code(self) -> u32 {
        self.row().1
    }

    /// ggml's name for the type ("Q4_1", "Q6_K", ...).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantized ones).
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Whether lowrank can dequantize this type to f32.
    pub fn dequantizable(self) -> bool {
        DEQUANTIZABLE.contains(&self)
    }

    /// Bytes taken by `n_elements` elements, or `None` when `n_elements` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }

    /// Every type ggml defines, in code order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|r| r.0)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_codes_and_names_are_unique_and_round_trip() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(GgmlType::from_code(row.1), Some(row.0));
            assert_eq!(GgmlType::from_name(row.2), Some(row.0));
            assert_eq!(row.0.code(), row.1);
            assert!(TABLE[..i].iter().all(|r| r.0 != row.0 && r.1 != row.1 && r.2 != row.2), "{row:?} repeated");
        }
        assert_eq!(GgmlType::from_code(4), None, "Q4_2 was removed from ggml");
        assert_eq!(GgmlType::from_code(42), None);
    }

    #[test]
    fn bytes_for_counts_whole_blocks_only() {
        assert_eq!(GgmlType::Q4_1.bytes_for(576 * 1536), Some(576 * 1536 / 32 * 20));
        assert_eq!(GgmlType::Q6K.bytes_for(512), Some(420));
        assert_eq!(GgmlType::Q6K.bytes_for(100), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }
}
