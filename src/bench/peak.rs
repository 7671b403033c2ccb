//! The machine's fp32 arithmetic peak: every worker thread runs independent fused multiply-adds
//! on the widest vectors the CPU has (AVX-512 or AVX2 + FMA) with nothing to load or store, so
//! the rate is what the cores can do at best. `lowrank bench --gemm` reports it beside the GEMM
//! ceiling, so both the GEMMs' and the whole step's efficiency are numbers.

use serde::Serialize;
use std::time::Instant;

/// The measured fp32 peak of the worker threads.
#[derive(Clone, Debug, Serialize)]
pub struct FmaPeak {
    /// The instruction set the loop used ("avx512f" or "avx2+fma").
    pub isa: &'static str,
    /// Worker threads that ran the loop at once.
    pub threads: usize,
    /// Total GFLOP/s of all threads together (one FMA = 2 FLOP per lane).
    pub gflops: f64,
}

/// FMAs per thread in one measurement: about 0.1-0.3 s on a current core.
const ITERS: u64 = 2_000_000;

/// Runs the FMA loop on every thread of the current rayon pool at once, `reps` times, and returns
/// the best total rate; None on CPUs without FMA (the loop would not measure the peak there).
pub fn fma_peak(reps: usize) -> Option<FmaPeak> {
    let (isa, per_iter): (&'static str, Kernel) = pick()?;
    let threads = rayon::current_num_threads();
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let sinks = rayon::broadcast(|_| per_iter(std::hint::black_box(ITERS), std::hint::black_box(0.5)));
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(sinks);
        let lanes = if isa == "avx512f" { 16.0 } else { 8.0 };
        let flop = threads as f64 * ITERS as f64 * ACC as f64 * lanes * 2.0;
        best = best.max(flop / s / 1e9);
    }
    Some(FmaPeak { isa, threads, gflops: best })
}

/// Independent accumulators per loop: enough to hide the FMA latency on two pipes.
const ACC: usize = 12;

/// `kernel(n, a0)`: n rounds of ACC independent FMAs a <- 0.999 a + 0.001 from a = a0 in every
/// lane; returns the sum of all lanes (so no round can be optimised away).
type Kernel = fn(u64, f32) -> f32;

#[cfg(target_arch = "x86_64")]
fn pick() -> Option<(&'static str, Kernel)> {
    if is_x86_feature_detected!("avx512f") {
        Some(("avx512f", |n, a0| unsafe { x86::fma_avx512(n, a0) }))
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some(("avx2+fma", |n, a0| unsafe { x86::fma_avx2(n, a0) }))
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn pick() -> Option<(&'static str, Kernel)> {
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ACC;
    use std::arch::x86_64::*;

    /// The `Kernel` on 8-lane vectors.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_avx2(n: u64, a0: f32) -> f32 {
        let b = _mm256_set1_ps(std::hint::black_box(0.999));
        let c = _mm256_set1_ps(std::hint::black_box(0.001));
        let mut acc = [_mm256_set1_ps(a0); ACC];
        for _ in 0..n {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let mut out = [0.0f32; 8];
        let mut sum = _mm256_setzero_ps();
        for a in acc {
            sum = _mm256_add_ps(sum, a);
        }
        _mm256_storeu_ps(out.as_mut_ptr(), sum);
        out.iter().sum()
    }

    /// The `Kernel` on 16-lane vectors.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_avx512(n: u64, a0: f32) -> f32 {
        let b = _mm512_set1_ps(std::hint::black_box(0.999));
        let c = _mm512_set1_ps(std::hint::black_box(0.001));
        let mut acc = [_mm512_set1_ps(a0); ACC];
        for _ in 0..n {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for a in acc {
            sum = _mm512_add_ps(sum, a);
        }
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_computes_every_round() {
        // Compare with the same recurrence done one scalar at a time: a kernel that skipped
        // rounds or accumulators would give another sum.
        if let Some((isa, f)) = pick() {
            let lanes = if isa == "avx512f" { 16 } else { 8 };
            let mut a = 0.5f32;
            for _ in 0..1000 {
                a = a.mul_add(0.999, 0.001);
            }
            let want = a * (ACC * lanes) as f32;
            assert!((f(1000, 0.5) - want).abs() < 1e-3 * want, "{isa}: {} vs {want}", f(1000, 0.5));
            let p = fma_peak(1).unwrap();
            assert!(p.gflops > 0.0 && p.threads >= 1);
        }
    }
}
