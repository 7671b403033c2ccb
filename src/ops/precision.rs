//! The arithmetic of a linear layer's products ([`Precision`]) and frozen weights packed once as
//! bf16 for the bf16 kernels ([`PackedWeight`]).

use super::bf16::PackedB;
use super::gemm::{MatRef, Threads};
use serde::{Deserialize, Serialize};

/// The arithmetic of the base weights' products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    Fp32,
    /// bf16 operands, f32 accumulation.
    Bf16,
}

/// A cheap fingerprint of a weight: 32 of its values, evenly spaced, bit for bit. A packed copy
/// is used only while the weight still has the fingerprint it was packed with.
fn fingerprint(w: &[f32]) -> [u32; 32] {
    let step = (w.len() / 32).max(1);
    std::array::from_fn(|i| w.get(i * step).map_or(0, |v| v.to_bits()))
}

/// A frozen weight W [O, I] packed as bf16 for the kernel: Wᵀ for the forward product and, when
/// the input gradient is wanted, W for the backward one.
#[derive(Debug)]
pub struct PackedWeight {
    /// Wᵀ [I, O]: right operand of y = x·Wᵀ.
    pub wt: PackedB,
    /// W [O, I]: right operand of dx = dy·W.
    pub w: Option<PackedB>,
    print: [u32; 32],
}

impl PackedWeight {
    /// Packs `w` [O, I] (and its transpose for backward when `backward`).
    pub fn new(w: &[f32], o: usize, i: usize, backward: bool) -> PackedWeight {
        let view = MatRef::new(&w[..o * i], o, i);
        PackedWeight {
            wt: PackedB::new_with(view.t(), Threads::Pool),
            w: backward.then(|| PackedB::new_with(view, Threads::Pool)),
            print: fingerprint(w),
        }
    }

    /// Whether this copy still matches `w`.
    pub fn matches(&self, w: &[f32]) -> bool {
        self.print == fingerprint(w)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.wt.bytes() + self.w.as_ref().map_or(0, PackedB::bytes)
    }
}
