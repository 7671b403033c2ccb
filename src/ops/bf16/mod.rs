//! bf16 matrix products for the mixed-precision mode: `out = beta·out + alpha·(a·b)` where both
//! operands are rounded to bf16 (round to nearest even, NaN stays NaN) and the products are summed
//! in f32, on one of two kernels chosen once at run time:
//!
//! - [`Kernel::Avx512Bf16`]: the native kernel (`vdpbf16ps` over packed bf16 panels, see
//!   [`pack`] for the layout and `native` for the blocking), on CPUs with AVX512_BF16;
//! - [`Kernel::Portable`]: on every CPU, the operands rounded to bf16 values kept as f32 and the
//!   fp32 [`gemm::matmul`]. bf16 × bf16 products are exact in f32, so both kernels compute the
//!   same products and differ only in the order of the f32 sums.
//!
//! Two entry points: [`matmul_packed`] against a right-hand operand packed once ([`PackedB`],
//! e.g. a frozen weight at load time) and [`matmul`] with both operands f32 views, packed on the
//! fly. The `_with` variants take the kernel explicitly (tests run both). There is no AMX kernel.
//!
//! Dimensions: `m` rows of `a` and `out`, `k` the inner dimension, `n` columns of `b` and `out`.

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod bench;
#[cfg(target_arch = "x86_64")]
mod gemv;
#[cfg(target_arch = "x86_64")]
mod native;
pub mod pack;
pub mod peak;
pub mod reference;
pub mod store;
#[cfg(test)]
mod tests;

pub use pack::PackedB;

use crate::ops::gemm::{self, MatMut, MatRef, Threads};
use reference::round_f32;
use std::cell::Cell;
use std::sync::OnceLock;
use std::thread::LocalKey;

/// Which implementation computes a bf16 product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kernel {
    /// Hand-written AVX-512 kernel on `vdpbf16ps` (needs avx512f, avx512bw and avx512bf16).
    Avx512Bf16,
    /// bf16-rounded f32 operands through the fp32 GEMM; runs everywhere.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU supports (detected now, not cached).
    pub fn detect() -> Kernel {
        if native_available() {
            Kernel::Avx512Bf16
        } else {
            Kernel::Portable
        }
    }

    /// The kernel [`matmul`] and [`matmul_packed`] use: [`Kernel::detect`] once per process, unless
    /// the environment variable `LOWRANK_BF16_KERNEL=portable` forces the portable one (so a bf16
    /// machine can exercise the path CPUs without bf16 take).
    pub fn active() -> Kernel {
        static ACTIVE: OnceLock<Kernel> = OnceLock::new();
        *ACTIVE.get_or_init(|| match std::env::var("LOWRANK_BF16_KERNEL").as_deref() {
            Ok("portable") => Kernel::Portable,
            _ => Kernel::detect(),
        })
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Avx512Bf16 => native_available(),
            Kernel::Portable => true,
        }
    }

    /// A short name for logs and benchmark records ("avx512bf16" or "portable").
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Bf16 => "avx512bf16",
            Kernel::Portable => "portable",
        }
    }
}

/// Whether the CPU has what the native kernel needs: AVX-512 F and BW and AVX512_BF16.
pub fn native_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static FLOPS: Cell<u64> = const { Cell::new(0) };
    /// Scratch of the portable kernel: `a` rounded, [m, k].
    static SCRATCH_A32: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Scratch of the portable kernel: `b` rounded or unpacked, [k, n].
    static SCRATCH_B32: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Number of bf16 products issued from the current thread so far (either kernel; the portable
/// kernel's inner fp32 products are also counted by [`gemm::calls`]).
pub fn calls() -> u64 {
    CALLS.with(|c| c.get())
}

/// Floating-point operations (2·m·n·k per product) of the bf16 products issued from this thread.
pub fn flops() -> u64 {
    FLOPS.with(|c| c.get())
}

/// Runs `f` on `len` elements of this thread's scratch vector `key`, reusing its allocation. The
/// vector is taken out while `f` runs, so a nested call (e.g. from a rayon task that this thread
/// picks up) gets a fresh one instead of aliasing it. Contents on entry are unspecified.
pub(crate) fn with_scratch<T: Clone + Default, R>(key: &'static LocalKey<Cell<Vec<T>>>, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let mut v = key.take();
    if v.len() < len {
        v.resize(len, T::default());
    }
    let r = f(&mut v[..len]);
    key.set(v);
    r
}

/// `out = beta·out + alpha·(round(a)·round(b))` on the [`Kernel::active`] kernel; `beta` 0
/// (old contents ignored, `out` need not be initialised) or 1. `out` [m, n], `a` [m, k],
/// `b` [k, n]: strided f32 views (transposes and column blocks included).
pub fn matmul(out: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, beta: f32, threads: Threads) {
    matmul_with(Kernel::active(), out, a, b, alpha, beta, threads)
}

/// [`matmul`] against a right-hand operand `b` [k, n] packed once; `out` [m, n], `a` [m, k] f32
/// (rounded while packed).
pub fn matmul_packed(out: MatMut<'_>, a: MatRef<'_>, b: &PackedB, alpha: f32, beta: f32, threads: Threads) {
    matmul_packed_with(Kernel::active(), out, a, b, alpha, beta, threads)
}

/// [`matmul`] on an explicit kernel; panics if this CPU cannot run it.
pub fn matmul_with(kernel: Kernel, out: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, beta: f32, threads: Threads) {
    check(&out, &a, b.rows, b.cols, beta);
    check_view("b", &b);
    let mut out = out;
    if trivial(&mut out, a.cols, beta) {
        return;
    }
    let (n, k) = (b.cols, a.cols);
    match kernel {
        Kernel::Portable => with_scratch(&SCRATCH_B32, k * n, |rb| {
            for p in 0..k {
                for j in 0..n {
                    rb[p * n + j] = round_f32(b.data[p * b.rs + j * b.cs]);
                }
            }
            portable(out, a, MatRef::new(rb, k, n), alpha, beta, threads)
        }),
        Kernel::Avx512Bf16 => {
            assert!(native_available(), "the avx512bf16 kernel needs AVX512_BF16");
            #[cfg(target_arch = "x86_64")]
            native::matmul(out, a, b, alpha, beta, threads);
        }
    }
}

/// [`matmul_packed`] on an explicit kernel; panics if this CPU cannot run it.
pub fn matmul_packed_with(kernel: Kernel, out: MatMut<'_>, a: MatRef<'_>, b: &PackedB, alpha: f32, beta: f32, threads: Threads) {
    check(&out, &a, b.k(), b.n(), beta);
    let mut out = out;
    if trivial(&mut out, a.cols, beta) {
        return;
    }
    let (k, n) = (b.k(), b.n());
    match kernel {
        Kernel::Portable => with_scratch(&SCRATCH_B32, k * n, |rb| {
            b.unpack(rb);
            portable(out, a, MatRef::new(rb, k, n), alpha, beta, threads)
        }),
        Kernel::Avx512Bf16 => {
            assert!(native_available(), "the avx512bf16 kernel needs AVX512_BF16");
            #[cfg(target_arch = "x86_64")]
            if a.rows == 1 && a.cs == 1 && out.cs == 1 {
                // One row (a decoding step): the matrix-vector kernel.
                gemv::gemv_packed(&mut out.data[..n], &a.data[..k], b, alpha, beta);
            } else {
                native::gemm(out, a, b.panels(), alpha, beta, threads);
            }
        }
    }
}

/// The portable kernel: `a` rounded into scratch, then the fp32 GEMM against the already rounded
/// `rb` [k, n].
fn portable(out: MatMut<'_>, a: MatRef<'_>, rb: MatRef<'_>, alpha: f32, beta: f32, threads: Threads) {
    let (m, k) = (a.rows, a.cols);
    with_scratch(&SCRATCH_A32, m * k, |ra| {
        for i in 0..m {
            for p in 0..k {
                ra[i * k + p] = round_f32(a.data[i * a.rs + p * a.cs]);
            }
        }
        gemm::matmul(out, MatRef::new(ra, m, k), rb, alpha, beta, threads)
    })
}

/// Counts the product, and finishes it when there is nothing to multiply: an empty output, or
/// k = 0 (then `out = beta·out`). Returns whether it did.
fn trivial(out: &mut MatMut<'_>, k: usize, beta: f32) -> bool {
    let (m, n) = (out.rows, out.cols);
    CALLS.with(|c| c.set(c.get() + 1));
    FLOPS.with(|c| c.set(c.get() + 2 * (m * n * k) as u64));
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if beta == 0.0 {
            for i in 0..m {
                for j in 0..n {
                    out.data[i * out.rs + j * out.cs] = 0.0;
                }
            }
        }
        return true;
    }
    false
}

/// Shapes agree, beta is 0 or 1, and every view lies inside its slice; `out`'s elements are
/// distinct (so the parallel kernel's disjoint tiles really are disjoint).
fn check(out: &MatMut<'_>, a: &MatRef<'_>, b_rows: usize, b_cols: usize, beta: f32) {
    assert_eq!(a.cols, b_rows, "inner dimensions differ");
    assert_eq!(out.rows, a.rows, "output rows differ");
    assert_eq!(out.cols, b_cols, "output columns differ");
    assert!(beta == 0.0 || beta == 1.0, "beta must be 0 (replace) or 1 (accumulate)");
    check_view("a", a);
    let o = MatRef { data: out.data, rows: out.rows, cols: out.cols, rs: out.rs, cs: out.cs };
    check_view("out", &o);
    let (r, c, rs, cs) = (out.rows, out.cols, out.rs, out.cs);
    // Row-major-like (rows do not overlap) or column-major-like; a single row or column only needs
    // a non-zero stride along itself.
    let distinct =
        r == 0 || c == 0 || (r == 1 || rs > (c - 1) * cs) && (c == 1 || cs >= 1) || (c == 1 || cs > (r - 1) * rs) && (r == 1 || rs >= 1);
    assert!(distinct, "output view addresses some element twice");
}

fn check_view(what: &str, v: &MatRef<'_>) {
    if v.rows > 0 && v.cols > 0 {
        let last = (v.rows - 1).checked_mul(v.rs).and_then(|x| (v.cols - 1).checked_mul(v.cs).and_then(|y| x.checked_add(y)));
        assert!(last.is_some_and(|l| l < v.data.len()), "{what}: matrix view out of bounds");
    }
}
