//! bf16 storage of f32 buffers kept between a forward and its backward: rounding a buffer in place
//! while writing its bf16 bits elsewhere, and widening bits back (exact: bf16 is the top half of
//! an f32), both with the rounding of [`super::reference::round_bf16`] (ties to even, NaN stays
//! NaN), on rayon's pool.

use super::reference::{bf16_to_f32, round_bf16};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Rounds every value of `values` to bf16 in place and writes the bits to `bits` (same length).
pub fn round_keep(values: &mut [f32], bits: &mut [u16]) {
    assert_eq!(values.len(), bits.len(), "bf16 store: lengths differ");
    values.par_chunks_mut(CHUNK).zip(bits.par_chunks_mut(CHUNK)).for_each(|(v, b)| {
        for (x, o) in v.iter_mut().zip(b.iter_mut()) {
            *o = round_bf16(*x);
            *x = bf16_to_f32(*o);
        }
    });
}

/// Widens `bits` into `out` (same length).
pub fn widen(bits: &[u16], out: &mut [f32]) {
    assert_eq!(bits.len(), out.len(), "bf16 store: lengths differ");
    out.par_chunks_mut(CHUNK).zip(bits.par_chunks(CHUNK)).for_each(|(o, b)| {
        for (x, w) in o.iter_mut().zip(b) {
            *x = bf16_to_f32(*w);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bf16::reference::round_f32;

    #[test]
    fn round_keep_then_widen_gives_the_rounded_values_everywhere() {
        let n = 3 * CHUNK + 17; // several chunks and a ragged end
        let orig: Vec<f32> = (0..n)
            .map(|i| match i % 9 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -0.0,
                3 => 1.0e-40, // subnormal
                4 => f32::MAX,
                _ => ((i as f32) * 0.377).sin() * 10f32.powi((i % 7) as i32 - 3),
            })
            .collect();
        let mut v = orig.clone();
        let mut bits = vec![0u16; n];
        round_keep(&mut v, &mut bits);
        let mut back = vec![0.0f32; n];
        widen(&bits, &mut back);
        for i in 0..n {
            let want = round_f32(orig[i]);
            assert!(want.to_bits() == v[i].to_bits() || (want.is_nan() && v[i].is_nan()), "rounded in place at {i}");
            assert_eq!(back[i].to_bits(), v[i].to_bits(), "widened at {i}");
        }
    }
}
