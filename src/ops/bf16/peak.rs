//! The machine's bf16 arithmetic peak: every rayon thread runs independent `vdpbf16ps` on zmm
//! registers with nothing to load or store (like `bench::peak` does for fp32 FMAs), so the rate is
//! the best the cores can do on bf16 dot products. One instruction = 16 lanes × 2 products × 2
//! FLOP (multiply and add) = 64 FLOP.

#![deny(unsafe_op_in_unsafe_fn)]

use serde::Serialize;
use std::time::Instant;

/// The measured bf16 peak of the worker threads.
#[derive(Clone, Debug, Serialize)]
pub struct Bf16Peak {
    /// The instruction the loop used ("avx512bf16 vdpbf16ps zmm").
    pub isa: &'static str,
    /// Worker threads that ran the loop at once.
    pub threads: usize,
    /// Total GFLOP/s of all threads together.
    pub gflops: f64,
}

/// Rounds of ACC instructions per thread in one measurement: about 0.1-0.3 s on a current core.
const ITERS: u64 = 2_000_000;

/// Independent accumulators: enough to hide the instruction's latency on two pipes.
const ACC: usize = 16;

/// Runs the loop on every thread of the current rayon pool at once, `reps` times, and returns the
/// best total rate; None on CPUs without AVX512_BF16.
pub fn bf16_peak(reps: usize) -> Option<Bf16Peak> {
    if !super::native_available() {
        return None;
    }
    let threads = rayon::current_num_threads();
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let sinks = rayon::broadcast(|_| run(std::hint::black_box(ITERS)));
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(sinks);
        let flop = threads as f64 * ITERS as f64 * ACC as f64 * 64.0;
        best = best.max(flop / s / 1e9);
    }
    Some(Bf16Peak { isa: "avx512bf16 vdpbf16ps zmm", threads, gflops: best })
}

/// `n` rounds of ACC independent `acc += 1·2^-20 + 1·2^-20` on 16 lanes from 0; returns the sum of
/// all lanes, n·2^-19·16·ACC exactly while n ≤ 2^21 (every partial sum is a multiple of 2^-19
/// below 2^5, so no addition rounds). Panics without the feature.
fn run(n: u64) -> f32 {
    assert!(super::native_available());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features were just checked.
    unsafe {
        x86::dot_loop(n)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ACC;
    use std::arch::x86_64::*;

    /// See `run`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub fn dot_loop(n: u64) -> f32 {
        // bf16 pairs: 1.0 = 0x3f80, 2^-20 = 0x3580.
        // SAFETY (both): a 512-bit integer vector reinterpreted as 32 bf16, same size, and every
        // bit pattern is a valid bf16.
        let a: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(std::hint::black_box(0x3f80_3f80))) };
        let b: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(std::hint::black_box(0x3580_3580))) };
        let mut acc = [_mm512_setzero_ps(); ACC];
        for _ in 0..n {
            for c in acc.iter_mut() {
                *c = _mm512_dpbf16_ps(*c, a, b);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for c in acc {
            sum = _mm512_add_ps(sum, c);
        }
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_computes_every_round() {
        if !super::super::native_available() {
            eprintln!("bf16 peak: this CPU lacks avx512bf16; only checked that the peak is None");
            assert!(bf16_peak(1).is_none());
            return;
        }
        // A loop that skipped rounds or accumulators would give another sum.
        let want = 1000.0 * 2f32.powi(-19) * (16 * ACC) as f32;
        assert_eq!(run(1000), want);
        let p = bf16_peak(1).unwrap();
        assert!(p.gflops > 0.0 && p.threads >= 1);
        eprintln!("bf16 peak (1 rep, test build): {:.0} GFLOP/s on {} threads", p.gflops, p.threads);
    }
}
