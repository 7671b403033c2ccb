//! Mixed precision: which arithmetic the base linears use ([`Precision`], with the frozen weights
//! packed once as bf16: [`PackedWeight`]) and how the command line chooses it
//! ([`PrecisionChoice`], `auto` picking bf16 where the CPU has it).
//!
//! In bf16 mode the products of base weights — forward x·Wᵀ, input gradient dy·W and, for weights
//! that train, the weight gradient dyᵀ·x — round both operands to bf16 and accumulate in f32.
//! Everything else stays f32: LoRA's A and B and their gradients, norms, softmax, the loss,
//! Adam's state, and the f32 master copy of every weight (full fine-tuning updates it).

use crate::error::{Error, Result};
use crate::ops::bf16::{self, Kernel};
pub use crate::ops::precision::{PackedWeight, Precision};
use serde::{Deserialize, Serialize};

/// What the command line asks for: a precision, or `auto` (bf16 where the CPU has native bf16
/// dot products, fp32 elsewhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// f32.
    #[default]
    Fp32,
    /// bf16; an error on a CPU without native bf16 dot products.
    Bf16,
    /// bf16 when the CPU has native bf16 dot products, else fp32.
    Auto,
}

impl std::str::FromStr for PrecisionChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(PrecisionChoice::Fp32),
            "bf16" => Ok(PrecisionChoice::Bf16),
            "auto" => Ok(PrecisionChoice::Auto),
            other => Err(Error::InvalidOption(format!("unknown precision {other:?}; use fp32, bf16 or auto"))),
        }
    }
}

impl PrecisionChoice {
    /// The precision to run with on this CPU.
    pub fn resolve(self) -> Result<Precision> {
        match self {
            PrecisionChoice::Fp32 => Ok(Precision::Fp32),
            PrecisionChoice::Auto if bf16::native_available() => Ok(Precision::Bf16),
            PrecisionChoice::Auto => Ok(Precision::Fp32),
            PrecisionChoice::Bf16 if bf16::native_available() => Ok(Precision::Bf16),
            PrecisionChoice::Bf16 => Err(Error::InvalidOption(
                "--precision bf16 needs a CPU with native bf16 dot products (AVX512_BF16: AMD Zen 4 and later, Intel Cooper Lake and Sapphire Rapids and later); this one has none. Use --precision fp32, or auto (bf16 where available)".into(),
            )),
        }
    }
}

impl PrecisionChoice {
    /// The precision to evaluate or predict with: as chosen, except that bf16 falls back to fp32
    /// on a CPU without native bf16 (inference in fp32 is only more exact).
    pub fn for_inference(self) -> Precision {
        match self {
            PrecisionChoice::Fp32 => Precision::Fp32,
            _ if bf16::native_available() => Precision::Bf16,
            _ => Precision::Fp32,
        }
    }
}

/// Names the kernel a bf16 run computes with, for logs and records.
pub fn kernel_name(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => Kernel::active().name(),
    }
}
