//! Element-wise sums (residual connections).

use rayon::prelude::*;

/// dst += src, element-wise (in parallel chunks).
pub fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(4096).zip(src.par_chunks(4096)).for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s));
}
