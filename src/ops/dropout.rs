//! Dropout with counter-based randomness: the mask is a pure function of (seed, element index),
//! so forward and backward regenerate it instead of storing it, and any thread split of the work
//! gives the same mask.

/// A dropout mask over one tensor: element `i` is kept with probability `1 - p` and scaled by
/// `1 / (1 - p)`; dropped elements become 0. `p == 0` (or evaluation mode) is the identity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of dropping an element.
    pub p: f32,
    /// Seed of this mask; derive a distinct one per step and per site with [`Dropout::site`].
    pub seed: u64,
}

/// SplitMix64 finaliser: a strong 64-bit mixing function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// murmur3's 32-bit finaliser.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// A 32-bit hash of (seed, index) that vectorises (32-bit multiplies only).
#[inline(always)]
fn hash32(seed: u64, index: u32) -> u32 {
    fmix32(fmix32(index.wrapping_mul(0x9E37_79B1) ^ seed as u32) ^ (seed >> 32) as u32)
}

#[inline(always)]
fn keep_factor(seed: u64, threshold: u32, scale: f32, index: u32) -> f32 {
    if (hash32(seed, index) >> 8) < threshold {
        0.0
    } else {
        scale
    }
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma", "x86_64+avx2+fma"))]
fn apply_mask(x: &mut [f32], seed: u64, threshold: u32, scale: f32, offset: u32) {
    for (i, v) in x.iter_mut().enumerate() {
        *v *= keep_factor(seed, threshold, scale, offset.wrapping_add(i as u32));
    }
}

impl Dropout {
    /// The identity (evaluation mode).
    pub const OFF: Dropout = Dropout { p: 0.0, seed: 0 };

    /// A mask for `site` (a distinct number per dropout location in the model) at training `step`.
    pub fn site(p: f32, run_seed: u64, step: u64, site: u64) -> Dropout {
        Dropout { p, seed: mix(mix(run_seed ^ mix(step)) ^ site.wrapping_mul(0xA24B_AED4_963E_E407)) }
    }

    /// Whether this mask changes anything.
    pub fn active(&self) -> bool {
        self.p > 0.0
    }

    /// The multiplier of element `index`: 0 or 1/(1-p).
    #[inline(always)]
    pub fn factor(&self, index: usize) -> f32 {
        if self.p <= 0.0 {
            return 1.0;
        }
        keep_factor(self.seed, self.threshold(), 1.0 / (1.0 - self.p), index as u32)
    }

    /// Elements whose 24-bit hash falls below this are dropped.
    fn threshold(&self) -> u32 {
        (self.p as f64 * (1u32 << 24) as f64) as u32
    }

    /// The gradient through this dropout of the gradient `d` (its first `len` elements, global
    /// indices from 0): `d` itself when inactive, else the masked copy written into `tmp`.
    pub fn backward_of<'a>(&self, d: &'a [f32], tmp: &'a mut [f32], len: usize) -> &'a [f32] {
        if !self.active() {
            return d;
        }
        tmp[..len].copy_from_slice(&d[..len]);
        self.apply(&mut tmp[..len], 0);
        tmp
    }

    /// Applies the mask in place to `x`, whose first element has global index `offset`.
    /// The same call is the backward pass (the mask is its own Jacobian).
    pub fn apply(&self, x: &mut [f32], offset: usize) {
        if !self.active() {
            return;
        }
        apply_mask(x, self.seed, self.threshold(), 1.0 / (1.0 - self.p), offset as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p_and_rescales() {
        let d = Dropout::site(0.25, 7, 3, 11);
        let mut x = vec![1.0f32; 100_000];
        d.apply(&mut x, 0);
        let kept = x.iter().filter(|v| **v != 0.0).count() as f64 / x.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept fraction {kept}");
        assert!(x.iter().all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
        let mean = x.iter().map(|v| *v as f64).sum::<f64>() / x.len() as f64;
        assert!((mean - 1.0).abs() < 0.02);
    }

    #[test]
    fn mask_is_independent_of_how_the_tensor_is_split() {
        let d = Dropout::site(0.5, 1, 2, 3);
        let mut whole = vec![1.0f32; 64];
        d.apply(&mut whole, 0);
        let mut parts = vec![1.0f32; 64];
        let (a, b) = parts.split_at_mut(20);
        d.apply(a, 0);
        d.apply(b, 20);
        assert_eq!(whole, parts);
    }

    #[test]
    fn different_sites_and_steps_give_different_masks() {
        let m = |d: Dropout| (0..256).map(|i| d.factor(i) == 0.0).collect::<Vec<_>>();
        assert_ne!(m(Dropout::site(0.5, 1, 0, 0)), m(Dropout::site(0.5, 1, 0, 1)));
        assert_ne!(m(Dropout::site(0.5, 1, 0, 0)), m(Dropout::site(0.5, 1, 1, 0)));
    }

    #[test]
    fn backward_regenerates_the_forward_mask_and_the_hash_is_stable() {
        // Backward does not store masks: it asks factor(i) again. The mask applied in forward must
        // be exactly factor(i), element by element (not merely the same on two calls).
        let d = Dropout::site(0.3, 42, 9, 5);
        let x: Vec<f32> = (0..512).map(|i| 1.0 + i as f32 * 1e-3).collect();
        let mut y = x.clone();
        d.apply(&mut y, 100);
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            assert_eq!(*b, a * d.factor(100 + i), "element {i}");
        }
        // The masks of a given (p, seed, step, site) are part of every run's record (resumed runs
        // must draw the same ones): the first 64 of this site, recorded when the hash was written.
        let bits: String = (0..64).map(|i| if Dropout::site(0.5, 1, 4, 2).factor(i) == 0.0 { '0' } else { '1' }).collect();
        assert_eq!(bits, GOLDEN_BITS, "the dropout hash changed: resumed runs would differ from their first part");
    }

    /// Keep (1) / drop (0) of elements 0..64 of Dropout::site(0.5, 1, 4, 2).
    const GOLDEN_BITS: &str = "1000100011100100010111011101011111000011010000110110010110111001";

    #[test]
    fn off_is_identity() {
        let mut x = vec![0.3f32; 10];
        Dropout::OFF.apply(&mut x, 0);
        assert_eq!(x, vec![0.3; 10]);
    }
}
