//! Tests of the bf16 products against the scalar reference, on every kernel this CPU has: every
//! shape class the engine uses (edges of every block size, odd k, strided and transposed views,
//! beta 0 / 1, alpha ≠ 1, one thread and the pool, a reused PackedB, empty dimensions).
//!
//! Bounds (u = 2^-24, the f32 unit roundoff; S = Σ_p |round(a_ip)|·|round(b_pj)|):
//! - kernel vs reference: the reference sums the exact bf16 products in f64 and rounds once, so a
//!   kernel's error is its own f32 summation error: k − 1 roundings of partial sums, each relative
//!   ≤ u (≤ (k − 1)·u·S), plus at most one rounding per k-block when a block is scaled and added
//!   into `out` (every kernel here uses blocks of ≥ 64 values of k: ≤ ceil(k / 64) roundings, each
//!   ≤ u·(|alpha|·S + |old|)), plus the reference's final rounding. The test allows
//!   `u·((k + c)·|alpha|·S + c·|old|)`, c = 2·ceil(k / 64) + 4, which covers these with a margin
//!   for second-order terms; a wrong, missing or doubled product costs ~|a||b| ≫ that.
//! - both vs fp32 on the unrounded inputs: each operand moves by ≤ 2^-8 relative (bf16 has 8
//!   significant bits), a product by ≤ 2^-7 + 2^-16, so the sums differ by ≤ (2^-7 + 2^-16)·|alpha|·
//!   S0 (S0 with unrounded values) on top of the bound above.

#[cfg(target_arch = "x86_64")]
use super::native::{KC, MC, MR, NC};
/// The native kernel's block sizes (the shapes below straddle them); fixed where it is absent.
#[cfg(not(target_arch = "x86_64"))]
const MR: usize = 14;
#[cfg(not(target_arch = "x86_64"))]
const KC: usize = 384;
#[cfg(not(target_arch = "x86_64"))]
const MC: usize = 16;
#[cfg(not(target_arch = "x86_64"))]
const NC: usize = 128;
use super::pack::{pack_groups_scalar, Block, Src, AS, NR};
use super::reference::{matmul_ref, round_f32};
use super::*;
use crate::ops::gemm::matmul_naive;
use crate::ops::testing::random_vec;

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Every kernel this CPU runs; says on stderr when the native one is missing.
fn kernels(test: &str) -> Vec<Kernel> {
    let mut v = vec![Kernel::Portable];
    if native_available() {
        v.push(Kernel::Avx512Bf16);
    } else {
        eprintln!("{test}: this CPU lacks avx512bf16: exercised only the portable kernel");
    }
    eprintln!("{test}: kernels exercised: {:?}", v.iter().map(|k| k.name()).collect::<Vec<_>>());
    v
}

/// How an operand is stored: transposed in memory, and extra columns of row stride (the view is
/// then a column block starting at column 1).
#[derive(Clone, Copy, Debug)]
struct Layout {
    t: bool,
    pad: usize,
}

const DENSE: Layout = Layout { t: false, pad: 0 };

/// The shape of a stored operand: a [sr, sc] block at column `col0` of a row-major matrix of row
/// stride `rs`, transposed when `t`.
#[derive(Clone, Copy)]
struct Stored {
    sr: usize,
    sc: usize,
    rs: usize,
    col0: usize,
    t: bool,
}

impl Stored {
    /// The view of `d` (the storage or an element-wise image of it).
    fn view<'a>(&self, d: &'a [f32]) -> MatRef<'a> {
        let v = MatRef { data: &d[self.col0..], rows: self.sr, cols: self.sc, rs: self.rs, cs: 1 };
        if self.t {
            v.t()
        } else {
            v
        }
    }
}

/// Storage for a [rows, cols] operand laid out as `l`, and how to view it.
fn operand(rows: usize, cols: usize, l: Layout, seed: u64) -> (Vec<f32>, Stored) {
    let (sr, sc) = if l.t { (cols, rows) } else { (rows, cols) };
    let st = Stored { sr, sc, rs: sc + l.pad, col0: usize::from(l.pad > 0), t: l.t };
    (random_vec((sr * st.rs).max(1) + st.col0, seed), st)
}

/// Where the output goes: dense, a column block of a wider matrix, or a transposed view.
#[derive(Clone, Copy, Debug, PartialEq)]
enum OutKind {
    Dense,
    Block,
    Transposed,
}

fn out_view(d: &mut [f32], m: usize, n: usize, kind: OutKind) -> MatMut<'_> {
    match kind {
        OutKind::Dense => MatMut::new(d, m, n),
        OutKind::Block => MatMut::cols_of(d, m, n + 3, 2, n),
        OutKind::Transposed => MatMut::new(d, n, m).t(),
    }
}

fn out_len(m: usize, n: usize, kind: OutKind) -> usize {
    if kind == OutKind::Block {
        m * (n + 3)
    } else {
        m * n
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a: Layout,
    b: Layout,
    out: OutKind,
    alpha: f32,
    beta: f32,
}

fn case(m: usize, n: usize, k: usize) -> Case {
    Case { m, n, k, a: DENSE, b: DENSE, out: OutKind::Dense, alpha: 1.0, beta: 0.0 }
}

/// Runs `c` on every kernel, one thread and the pool, on-the-fly and packed, and checks both bounds
/// of the module doc; returns the largest error against fp32 divided by the bf16 part of its bound
/// (so callers can check that rounding really happened).
fn check(c: Case, kernels: &[Kernel]) -> f64 {
    let (m, n, k) = (c.m, c.n, c.k);
    let (ad, av) = operand(m, k, c.a, 1 + k as u64);
    let (bd, bv) = operand(k, n, c.b, 2 + n as u64);
    let (a, b) = (av.view(&ad), bv.view(&bd));
    let abs = |d: &[f32]| d.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let (aa, ba) = (abs(&ad), abs(&bd));
    let old = random_vec(out_len(m, n, c.out), 3);
    let full = |f: &dyn Fn(MatMut<'_>)| {
        let mut o = old.clone();
        f(out_view(&mut o, m, n, c.out));
        o
    };
    let want = full(&|o| matmul_ref(o, a, b, c.alpha, c.beta));
    let s = full(&|o| matmul_ref(o, av.view(&aa), bv.view(&ba), 1.0, 0.0));
    let exact = full(&|o| matmul_naive(o, a, b, c.alpha, c.beta));
    let s0 = full(&|o| matmul_naive(o, av.view(&aa), bv.view(&ba), 1.0, 0.0));
    // Which elements of the storage the output view covers; the others must stay untouched.
    let mut inside = vec![false; old.len()];
    {
        let o = out_view(&mut vec![0.0; old.len()], m, n, c.out).rs;
        let cs = out_view(&mut vec![0.0; old.len()], m, n, c.out).cs;
        let col0 = if c.out == OutKind::Block { 2 } else { 0 };
        for i in 0..m {
            for j in 0..n {
                inside[col0 + i * o + j * cs] = true;
            }
        }
    }
    let packed = PackedB::new(b);
    let cc = 2.0 * k.div_ceil(64) as f64 + 4.0;
    let mut worst_fp32 = 0.0f64;
    for &kernel in kernels {
        for threads in [Threads::One, Threads::Pool] {
            for use_packed in [false, true] {
                let got = full(&|o| {
                    if use_packed {
                        matmul_packed_with(kernel, o, a, &packed, c.alpha, c.beta, threads)
                    } else {
                        matmul_with(kernel, o, a, b, c.alpha, c.beta, threads)
                    }
                });
                for i in 0..got.len() {
                    if !inside[i] {
                        assert_eq!(got[i].to_bits(), old[i].to_bits(), "{c:?} {}: wrote outside the view at {i}", kernel.name());
                        continue;
                    }
                    let o = if c.beta == 0.0 { 0.0 } else { old[i].abs() as f64 };
                    let tol = U * ((k as f64 + cc) * c.alpha.abs() as f64 * s[i] as f64 + cc * o) + 1e-30;
                    let (g, w, e) = (got[i] as f64, want[i] as f64, exact[i] as f64);
                    let what = format!("{c:?} {} {threads:?} packed={use_packed} at {i}: got {g}, reference {w}", kernel.name());
                    assert!((g - w).abs() <= tol, "{what}: |diff| {} > {tol}", (g - w).abs());
                    let bf = (1.0 / 128.0 + 1.0 / 65536.0) * c.alpha.abs() as f64 * s0[i] as f64;
                    assert!((g - e).abs() <= tol + bf + U * e.abs(), "{what}: fp32 {e}, beyond the bf16 bound {bf}");
                    if bf > 0.0 {
                        worst_fp32 = worst_fp32.max((g - e).abs() / bf);
                    }
                }
            }
        }
    }
    worst_fp32
}

#[test]
fn every_block_edge_matches_the_reference() {
    let ks = kernels("every_block_edge_matches_the_reference");
    let (mc, nc, kc) = (MC * MR, NC * NR, 2 * KC);
    for m in [1, MR - 1, MR, MR + 1, mc - 1, mc + 1, 2 * mc + 3] {
        check(case(m, NR + 1, 37), &ks);
    }
    for n in [1, NR - 1, NR, NR + 1, nc - 1, nc + 5] {
        check(case(MR + 3, n, 37), &ks);
    }
    for k in [1, 2, 3, 31, 32, 33, kc - 1, kc, kc + 1, 2 * kc + 3] {
        check(case(MR + 3, NR + 5, k), &ks);
    }
    // Several row and column tasks and k-blocks at once.
    check(case(2 * mc + 3, nc + 5, kc + 3), &ks);
}

#[test]
fn strided_and_transposed_views_match_the_reference() {
    let ks = kernels("strided_and_transposed_views_match_the_reference");
    let layouts = [DENSE, Layout { t: true, pad: 0 }, Layout { t: false, pad: 5 }, Layout { t: true, pad: 3 }];
    for a in layouts {
        for b in layouts {
            for out in [OutKind::Dense, OutKind::Block, OutKind::Transposed] {
                check(Case { a, b, out, ..case(2 * MR + 5, NR + 9, 2 * KC + 7) }, &ks);
            }
        }
    }
}

#[test]
fn alpha_and_beta_match_the_reference() {
    let ks = kernels("alpha_and_beta_match_the_reference");
    for (alpha, beta) in [(1.0, 1.0), (-0.37, 0.0), (2.5, 1.0), (0.0, 1.0)] {
        check(Case { alpha, beta, ..case(MR + 5, 2 * NR + 1, 2 * KC + 9) }, &ks);
        check(Case { alpha, beta, out: OutKind::Transposed, ..case(MR + 5, NR + 1, 11) }, &ks);
    }
}

#[test]
fn engine_shapes_match_the_reference_and_round_to_bf16() {
    let ks = kernels("engine_shapes_match_the_reference_and_round_to_bf16");
    let t = Layout { t: true, pad: 0 };
    // Scaled-down engine products: x·Wᵀ, dy·W, dyᵀ·x, Q·Kᵀ and P·V on head blocks, LoRA.
    let head = Layout { t: false, pad: 64 };
    let cases = [
        Case { b: t, ..case(300, 96, 96) },
        Case { beta: 1.0, ..case(300, 96, 384) },
        Case { a: t, ..case(96, 96, 300) },
        Case { a: head, b: Layout { t: true, pad: 64 }, ..case(64, 64, 16) },
        Case { b: head, ..case(64, 16, 64) },
        Case { b: t, ..case(300, 8, 96) },
        Case { b: t, alpha: 2.0, beta: 1.0, ..case(300, 96, 8) },
    ];
    for c in cases {
        let worst = check(c, &ks);
        // The kernels round their inputs: random data cannot agree with fp32 to fp32 accuracy.
        assert!(worst > 0.01, "{c:?}: results look unrounded (worst error {worst} of the bf16 bound)");
    }
}

#[test]
fn a_packed_weight_serves_several_products() {
    let ks = kernels("a_packed_weight_serves_several_products");
    let (n, k) = (3 * NR + 3, 2 * KC + 5);
    let w = random_vec(n * k, 9);
    let packed = PackedB::new(MatRef::new(&w, n, k).t());
    let packed_t = PackedB::new(MatRef::new(&w, n, k));
    assert_eq!((packed.k(), packed.n(), packed_t.k(), packed_t.n()), (k, n, n, k));
    for &kernel in &ks {
        for (step, m) in [1usize, MR + 2, 3 * MR * MC + 1].into_iter().enumerate() {
            let x = random_vec(m * k, 10 + step as u64);
            let (alpha, beta) = if step % 2 == 0 { (1.0, 0.0) } else { (0.5, 1.0) };
            let mut got = random_vec(m * n, 20);
            let mut want = got.clone();
            matmul_packed_with(kernel, MatMut::new(&mut got, m, n), MatRef::new(&x, m, k), &packed, alpha, beta, Threads::Pool);
            matmul_ref(MatMut::new(&mut want, m, n), MatRef::new(&x, m, k), MatRef::new(&w, n, k).t(), alpha, beta);
            let tol = 1e-5 * k as f32;
            assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= tol), "{} m={m}", kernel.name());
            // The other orientation of the same weight: dy [m, n] · W [n, k].
            let dy = random_vec(m * n, 30 + step as u64);
            let mut got = vec![0.0; m * k];
            let mut want = vec![0.0; m * k];
            matmul_packed_with(kernel, MatMut::new(&mut got, m, k), MatRef::new(&dy, m, n), &packed_t, 1.0, 0.0, Threads::One);
            matmul_ref(MatMut::new(&mut want, m, k), MatRef::new(&dy, m, n), MatRef::new(&w, n, k), 1.0, 0.0);
            assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= 1e-5 * n as f32), "{} dy·W m={m}", kernel.name());
        }
    }
}

#[test]
fn heads_in_parallel_on_one_thread_each_match_the_reference() {
    use rayon::prelude::*;
    let ks = kernels("heads_in_parallel_on_one_thread_each_match_the_reference");
    let (seq, dh, heads) = (70, 16, 6);
    let width = heads * dh;
    let q = random_vec(seq * width, 40);
    let kk = random_vec(seq * width, 41);
    for &kernel in &ks {
        let mut outs = vec![vec![0.0f32; seq * seq]; heads];
        outs.par_iter_mut().enumerate().for_each(|(h, o)| {
            let qh = MatRef::cols_of(&q, seq, width, h * dh, dh);
            let kh = MatRef::cols_of(&kk, seq, width, h * dh, dh).t();
            matmul_with(kernel, MatMut::new(o, seq, seq), qh, kh, 0.25, 0.0, Threads::One);
        });
        for (h, o) in outs.iter().enumerate() {
            let mut want = vec![0.0f32; seq * seq];
            let (qh, kh) = (MatRef::cols_of(&q, seq, width, h * dh, dh), MatRef::cols_of(&kk, seq, width, h * dh, dh).t());
            matmul_ref(MatMut::new(&mut want, seq, seq), qh, kh, 0.25, 0.0);
            assert!(o.iter().zip(&want).all(|(g, w)| (g - w).abs() <= 1e-5), "{} head {h}", kernel.name());
        }
    }
}

#[test]
fn empty_dimensions_and_beta_zero_garbage() {
    for kernel in kernels("empty_dimensions_and_beta_zero_garbage") {
        let a = random_vec(12, 50);
        // k = 0: out = beta·out (beta 0 overwrites NaN garbage with zeros).
        let mut o = vec![f32::NAN; 6];
        matmul_with(kernel, MatMut::new(&mut o, 2, 3), MatRef::new(&a, 2, 0), MatRef::new(&a, 0, 3), 1.0, 0.0, Threads::Pool);
        assert_eq!(o, vec![0.0; 6], "{}", kernel.name());
        let mut o = vec![4.0f32; 6];
        let p = PackedB::new(MatRef::new(&a, 0, 3));
        matmul_packed_with(kernel, MatMut::new(&mut o, 2, 3), MatRef::new(&a, 2, 0), &p, 1.0, 1.0, Threads::One);
        assert_eq!(o, vec![4.0; 6]);
        // m = 0 or n = 0: nothing to write, nothing read out of bounds.
        let mut none: Vec<f32> = vec![];
        matmul_with(kernel, MatMut::new(&mut none, 0, 3), MatRef::new(&a, 0, 4), MatRef::new(&a, 4, 3), 1.0, 0.0, Threads::Pool);
        matmul_with(kernel, MatMut::new(&mut none, 3, 0), MatRef::new(&a, 3, 4), MatRef::new(&a, 4, 0), 1.0, 0.0, Threads::Pool);
        // beta 0 never reads the old contents, even in tiles the kernel fills in several k-blocks.
        let (m, n, k) = (MR + 1, NR + 1, 2 * KC + 3);
        let (x, y) = (random_vec(m * k, 51), random_vec(k * n, 52));
        let mut o = vec![f32::NAN; m * n];
        matmul_with(kernel, MatMut::new(&mut o, m, n), MatRef::new(&x, m, k), MatRef::new(&y, k, n), 1.0, 0.0, Threads::One);
        assert!(o.iter().all(|v| v.is_finite()), "{}: beta 0 read old NaNs", kernel.name());
    }
}

#[test]
fn nan_and_infinity_propagate_like_the_reference() {
    for kernel in kernels("nan_and_infinity_propagate_like_the_reference") {
        let (m, n, k) = (MR + 2, NR + 2, 9);
        let mut x = random_vec(m * k, 60);
        let y = random_vec(k * n, 61);
        x[3 * k + 4] = f32::NAN;
        x[5 * k] = f32::INFINITY;
        let mut o = vec![0.0f32; m * n];
        matmul_with(kernel, MatMut::new(&mut o, m, n), MatRef::new(&x, m, k), MatRef::new(&y, k, n), 1.0, 0.0, Threads::One);
        for i in 0..m {
            for j in 0..n {
                let v = o[i * n + j];
                match i {
                    3 => assert!(v.is_nan(), "{}", kernel.name()),
                    5 => assert!(v.is_infinite() && v.signum() == y[j].signum(), "{}", kernel.name()),
                    _ => assert!(v.is_finite(), "{}", kernel.name()),
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_packing_gives_the_scalar_bits() {
    if !native_available() {
        eprintln!("simd_packing_gives_the_scalar_bits: this CPU lacks avx512bf16: nothing to compare");
        return;
    }
    eprintln!("simd_packing_gives_the_scalar_bits: kernels exercised: [\"avx512bf16\"]");
    // Values that exercise rounding: ties, NaN, infinities, denormals, overflow to infinity.
    let mut data = random_vec(40 * 90, 70);
    let specials = [f32::NAN, f32::INFINITY, -0.0, 1.0e-40, f32::MAX, f32::from_bits(0x3f80_8000), f32::from_bits(0x3f81_8000)];
    let len = data.len();
    for (i, s) in specials.iter().enumerate() {
        data[i * 97 % len] = *s;
    }
    let (nx, nk) = (37, 85);
    // x contiguous, k contiguous, and neither (the scalar path inside the SIMD entry point).
    let sources = [
        Src { data: &data, nx, nk, sx: 1, sk: 40 },
        Src { data: &data, nx, nk, sx: 90, sk: 1 },
        Src { data: &data, nx: 20, nk: 40, sx: 2, sk: 80 },
    ];
    for src in &sources {
        for (xw, stride) in [(MR, AS), (NR, NR), (5, 16), (16, 16), (20, 32)] {
            for (x0, groups, p0, np) in [(0, 1, 0, 1), (0, 3, 0, 43), (7, 2, 3, 17), (30, 2, 40, 6), (0, 1, 16, 33)] {
                let blk = Block { x0, xw, groups, p0, np, stride };
                let mut want = vec![7u32; blk.words()];
                let mut got = vec![9u32; blk.words()];
                pack_groups_scalar(src, &blk, &mut want);
                super::avx512::pack_groups(src, &blk, &mut got);
                assert_eq!(got, want, "{blk:?} sx={} sk={}", src.sx, src.sk);
            }
        }
    }
}

#[test]
fn packed_b_stores_the_rounded_values() {
    let w = random_vec(45 * 70, 80);
    for b in [MatRef::new(&w, 45, 70), MatRef::new(&w, 70, 45).t(), MatRef::cols_of(&w, 40, 70, 3, 33)] {
        let p = PackedB::new(b);
        let mut dense = vec![0.0f32; b.rows * b.cols];
        p.unpack(&mut dense);
        for kk in 0..b.rows {
            for j in 0..b.cols {
                let want = round_f32(b.data[kk * b.rs + j * b.cs]);
                assert_eq!(p.get(kk, j), want);
                assert_eq!(dense[kk * b.cols + j], want);
            }
        }
        assert_eq!(p.bytes(), b.cols.div_ceil(NR) * NR * b.rows.div_ceil(2) * 4);
        let pooled = PackedB::new_with(b, Threads::Pool);
        assert_eq!(pooled.panels().lines.iter().map(|l| l.0).collect::<Vec<_>>(), p.panels().lines.iter().map(|l| l.0).collect::<Vec<_>>());
    }
}

#[test]
fn kernel_names_and_detection() {
    assert_eq!(Kernel::Portable.name(), "portable");
    assert_eq!(Kernel::Avx512Bf16.name(), "avx512bf16");
    assert!(Kernel::Portable.available());
    assert_eq!(Kernel::detect() == Kernel::Avx512Bf16, native_available());
    assert_eq!(Kernel::Avx512Bf16.available(), native_available());
    eprintln!("kernel_names_and_detection: detected {}, active {}", Kernel::detect().name(), Kernel::active().name());
}

#[test]
fn calls_and_flops_are_counted_on_this_thread() {
    let (c0, f0) = (calls(), flops());
    let a = vec![1.0f32; 6];
    let mut o = vec![0.0f32; 4];
    matmul(MatMut::new(&mut o, 2, 2), MatRef::new(&a, 2, 3), MatRef::new(&a, 3, 2), 1.0, 0.0, Threads::One);
    assert_eq!((calls(), flops()), (c0 + 1, f0 + 24));
    assert_eq!(o, vec![3.0; 4]);
}
