//! The bf16 matrix-vector product of one row against a packed right-hand operand: `out[n] =
//! beta·out + alpha·(round(x) · B)` with B a [`PackedB`] [k, n] — the shape of a decoding step
//! (one token through a frozen weight). The GEMM kernel's micro-tile computes 14 rows at once,
//! of which one row would use 1/14; here each 32-column panel of B is streamed once, in order,
//! against the broadcast pairs of `x`, with four accumulators in flight, and the panels are
//! shared out among the rayon pool. Same products as [`super::matmul_packed`] (bf16 × bf16 is
//! exact in f32); only the order of the f32 sums differs.
//!
//! Dimensions: `k` the inner dimension, `kp` = ceil(k / 2) k-pairs, `n` output columns.

#![deny(unsafe_op_in_unsafe_fn)]

use super::pack::{words, Panels, NR};
use super::reference::round_bf16;
use super::PackedB;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Products below this many multiply-adds run on the calling thread (splitting costs more).
const PAR_MIN: usize = 1 << 17;

/// `out[n] = beta·out + alpha·(round(x[k]) · B)`; `beta` 0 or 1. The caller checked that the
/// native kernel is available and that `x` is k long and `out` n long.
pub(crate) fn gemv_packed(out: &mut [f32], x: &[f32], b: &PackedB, alpha: f32, beta: f32) {
    let p = b.panels();
    let (k, n, kp) = (p.k, p.n, p.kp());
    assert!(x.len() == k && out.len() == n, "gemv shapes");
    assert!(super::native_available(), "the bf16 GEMV needs AVX512_BF16");
    let xp: Vec<u32> = (0..kp)
        .map(|i| {
            let lo = round_bf16(x[2 * i]) as u32;
            let hi = x.get(2 * i + 1).map_or(0, |v| round_bf16(*v) as u32);
            lo | (hi << 16)
        })
        .collect();
    let run = |(jp, o): (usize, &mut [f32])| {
        // SAFETY: the native features are present (asserted above); panel jp exists since its
        // output columns do, and holds kp·32 words.
        unsafe { panel(&p, &xp, jp, o, alpha, beta == 1.0) }
    };
    if k * n >= PAR_MIN && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(NR).enumerate().for_each(run);
    } else {
        out.chunks_mut(NR).enumerate().for_each(run);
    }
}

fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512-bit vector types of the same size; every bit pattern is valid.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// Columns `32·jp ..` (`o.len()` ≤ 32 of them) of the product.
///
/// # Safety
/// avx512f + avx512bw + avx512bf16 are present; panel `jp` of `p` exists and `xp` has its kp pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn panel(p: &Panels<'_>, xp: &[u32], jp: usize, o: &mut [f32], alpha: f32, accumulate: bool) {
    let kp = xp.len();
    let w = words(p.lines);
    let base = &w[jp * kp * NR..(jp + 1) * kp * NR];
    let (mut a0, mut a1, mut b0, mut b1) = (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
    let ptr = base.as_ptr();
    let mut i = 0;
    while i + 2 <= kp {
        // SAFETY: pair rows i and i + 1 < kp lie inside `base` (32 words each), 64-byte aligned
        // (panels are whole lines).
        unsafe {
            let r = ptr.add(i * NR);
            let (x0, x1) = (bh(_mm512_set1_epi32(xp[i] as i32)), bh(_mm512_set1_epi32(xp[i + 1] as i32)));
            a0 = _mm512_dpbf16_ps(a0, x0, bh(_mm512_load_si512(r.cast())));
            a1 = _mm512_dpbf16_ps(a1, x0, bh(_mm512_load_si512(r.add(16).cast())));
            b0 = _mm512_dpbf16_ps(b0, x1, bh(_mm512_load_si512(r.add(32).cast())));
            b1 = _mm512_dpbf16_ps(b1, x1, bh(_mm512_load_si512(r.add(48).cast())));
        }
        i += 2;
    }
    if i < kp {
        // SAFETY: as above, for the last pair row.
        unsafe {
            let r = ptr.add(i * NR);
            let x0 = bh(_mm512_set1_epi32(xp[i] as i32));
            a0 = _mm512_dpbf16_ps(a0, x0, bh(_mm512_load_si512(r.cast())));
            a1 = _mm512_dpbf16_ps(a1, x0, bh(_mm512_load_si512(r.add(16).cast())));
        }
    }
    let mut t = [0.0f32; NR];
    // SAFETY: `t` holds 32 f32.
    unsafe {
        _mm512_storeu_ps(t.as_mut_ptr(), _mm512_add_ps(a0, b0));
        _mm512_storeu_ps(t.as_mut_ptr().add(16), _mm512_add_ps(a1, b1));
    }
    for (d, v) in o.iter_mut().zip(t) {
        *d = if accumulate { alpha.mul_add(v, *d) } else { alpha * v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bf16::{matmul_packed_with, Kernel};
    use crate::ops::gemm::{MatMut, MatRef, Threads};
    use crate::ops::testing::random_vec;

    #[test]
    fn equals_the_portable_product() {
        if !super::super::native_available() {
            eprintln!("no AVX512_BF16 here: the bf16 GEMV is not exercised");
            return;
        }
        // Odd k (a last half pair), n not a multiple of 32, and a size that runs in parallel.
        for (k, n) in [(7, 5), (33, 70), (576, 1000)] {
            let w = random_vec(n * k, 1);
            let b = PackedB::new(MatRef::new(&w, n, k).t());
            let x = random_vec(k, 2);
            for beta in [0.0f32, 1.0] {
                let mut got = random_vec(n, 3);
                let mut want = got.clone();
                gemv_packed(&mut got, &x, &b, 0.5, beta);
                matmul_packed_with(Kernel::Portable, MatMut::new(&mut want, 1, n), MatRef::new(&x, 1, k), &b, 0.5, beta, Threads::One);
                let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(diff < 1e-4, "k={k} n={n} beta={beta}: {diff}");
            }
        }
    }
}
