//! The native kernel's driver: cache blocking and threading around `avx512::tile`.
//!
//! The output is cut into tasks of up to [`MC`] micro-panels of rows × [`NC`] panels of columns
//! (rayon tasks with `Threads::Pool`, writing disjoint tiles). k is walked in near-equal blocks of
//! at most [`KC`] pairs. For each block a task packs its A rows into thread-local scratch (MC·MR
//! rows × KC pairs ≈ 384 KiB, in L2) and then, B panel by B panel (KC × 32 pairs = 48 KiB, from
//! L2 while reused), runs the micro-kernel down all its micro-panels. The first k-block applies
//! beta, later ones accumulate. An A stored transposed (contiguous along m, e.g. dyᵀ of a weight
//! gradient) is instead packed whole before the tasks, each worker reading long runs of its rows:
//! per-task packing would read it in short strided pieces, several times slower.
//!
//! Dimensions: `m`, `n`, `k` of the product, `kp` k-pairs, `mp` = ceil(m / MR) micro-panels,
//! `np` = ceil(n / 32) panels.

use super::avx512::{self, tile, OutTile};
use super::pack::{b_lines, pack_b_into, words, words_mut, Block, Line, Panels, Src, AS, NR};
use super::with_scratch;
const _: () = assert!(MR <= AS);
use crate::ops::gemm::{MatMut, MatRef, Threads};
use rayon::prelude::*;
use std::cell::Cell;

/// Rows of the micro-kernel's output tile (2·MR accumulators + 2 B registers of the 32).
pub(crate) const MR: usize = 14;
/// k-pairs per cache block at most (2·KC values of k); blocks are made near-equal.
pub(crate) const KC: usize = 384;
/// Micro-panels of rows per task at most (MC·MR rows).
pub(crate) const MC: usize = 16;
/// Panels of columns per task at most (NC·32 columns): a task packs its A rows once per k-block
/// and walks all its panels, so wide products (n = 3072) should not be cut into several column
/// chunks that each pack the same rows again; columns are split only to give every worker work.
pub(crate) const NC: usize = 128;

thread_local! {
    /// A rows packed for one task and k-block, [MC micro-panels × KC pairs × AS words] at most.
    static A_PACK: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    /// A packed whole when stored transposed, [mp micro-panels × kp pairs × AS words].
    static A_WHOLE: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    /// B packed on the fly by [`matmul`], [ceil(n/32) panels × kp × 32 pairs].
    static B_PACK: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// `out` [m, n] = beta·out + alpha·(a [m, k] · b [k, n]), packing `b` on the fly (in parallel
/// with `Threads::Pool`). Shapes and bounds were checked by the caller; k ≥ 1, m, n ≥ 1.
pub(crate) fn matmul(out: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, beta: f32, threads: Threads) {
    let (k, n) = (b.rows, b.cols);
    with_scratch(&B_PACK, b_lines(k, n), |lines| {
        pack_b_into(lines, &b, threads);
        gemm(out, a, Panels { k, n, lines }, alpha, beta, threads)
    })
}

/// The output base pointer and strides, shared by the tasks (each writes its own tiles).
struct OutPtr {
    ptr: *mut f32,
    rs: usize,
    cs: usize,
}

// SAFETY: the tasks write pairwise disjoint sets of output elements (distinct tiles of a view
// whose elements are distinct, checked by the caller), and the `MatMut` the pointer came from is
// uniquely borrowed for the whole parallel region.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn tile(&self, i: usize, j: usize, rows: usize, cols: usize) -> OutTile {
        OutTile { ptr: self.ptr.wrapping_add(i * self.rs + j * self.cs), rs: self.rs, cs: self.cs, rows, cols }
    }
}

/// Rows and columns of one task in micro-panels and panels: at most MC × NC, and (when there are
/// several workers) enough row chunks that the task count is a multiple of the worker count.
fn split(mp: usize, np: usize, workers: usize) -> (usize, usize) {
    let mut cc = np.div_ceil(NC);
    let mut rc = mp.div_ceil(MC);
    if workers > 1 {
        while !(rc * cc).is_multiple_of(workers) && rc < mp {
            rc += 1;
        }
        // Too few rows to go round (a few [CLS] rows): cut the columns too.
        while !(rc * cc).is_multiple_of(workers) && cc < np {
            cc += 1;
        }
    }
    (mp.div_ceil(rc), np.div_ceil(cc))
}

/// The product against packed panels `b`; `out` [m, n], `a` [m, k] f32 (rounded while packing).
/// Shapes and bounds were checked by the caller; k ≥ 1, m, n ≥ 1.
pub(crate) fn gemm(out: MatMut<'_>, a: MatRef<'_>, b: Panels<'_>, alpha: f32, beta: f32, threads: Threads) {
    assert!(super::native_available());
    let (m, n, k, kp) = (a.rows, b.n, b.k, b.kp());
    assert!(a.cols == k && out.rows == m && out.cols == n && b.lines.len() == b_lines(k, n));
    let kcb = kp.div_ceil(kp.div_ceil(KC));
    let (mp, np) = (m.div_ceil(MR), n.div_ceil(NR));
    let workers = match threads {
        Threads::Pool if m * n * k >= 48 * 48 * 48 => rayon::current_num_threads(),
        _ => 1,
    };
    let (mcp, ncp) = split(mp, np, workers);
    let (rc, cc) = (mp.div_ceil(mcp), np.div_ceil(ncp));
    let o = OutPtr { ptr: out.data.as_mut_ptr(), rs: out.rs, cs: out.cs };
    let src = Src::rows_of(&a);
    let whole = src.sx == 1 && src.sk != 1 && m > 1;
    let bw = words(b.lines);
    with_scratch(&A_WHOLE, if whole { mp * kp * AS / 16 } else { 0 }, |lines| {
        if whole {
            // Contiguous runs of micro-panels per worker, all pairs each: every source row is
            // read in runs of mp / workers micro-panels.
            let per = mp.div_ceil(workers) * kp * AS / 16;
            let one = |(c, chunk): (usize, &mut [Line])| {
                let x0 = c * (per * 16 / (kp * AS)) * MR;
                let blk = Block { x0, xw: MR, groups: chunk.len() * 16 / (kp * AS), p0: 0, np: kp, stride: AS };
                avx512::pack_groups(&src, &blk, words_mut(chunk));
            };
            if workers > 1 {
                lines.par_chunks_mut(per).enumerate().for_each(one);
            } else {
                one((0, lines));
            }
        }
        let whole_words = words(lines);
        let task = |t: usize| {
            let (ip0, jp0) = ((t / cc) * mcp, (t % cc) * ncp);
            let (ip1, jp1) = ((ip0 + mcp).min(mp), (jp0 + ncp).min(np));
            let local = if whole { 0 } else { (ip1 - ip0) * kcb * AS / 16 };
            with_scratch(&A_PACK, local, |lines| {
                let aw = words_mut(lines);
                for pc in (0..kp).step_by(kcb) {
                    let kc = kcb.min(kp - pc);
                    if !whole {
                        avx512::pack_groups(&src, &Block { x0: ip0 * MR, xw: MR, groups: ip1 - ip0, p0: pc, np: kc, stride: AS }, aw);
                    }
                    for jp in jp0..jp1 {
                        let bp = &bw[jp * kp * NR + pc * NR..][..kc * NR];
                        let cols = (n - jp * NR).min(NR);
                        for ip in ip0..ip1 {
                            let ap = if whole { &whole_words[(ip * kp + pc) * AS..] } else { &aw[(ip - ip0) * kc * AS..] };
                            let ap = &ap[..kc * AS];
                            let rows = (m - ip * MR).min(MR);
                            // SAFETY: the features are present (asserted above); `ap` and `bp` hold
                            // kc rows of AS ≥ MR and 32 pairs, and `bp` starts on a 64-byte line
                            // (panels and pair rows are whole lines); the tile's rows × cols lie
                            // inside `out` (bounds-checked view) and belong to this task only.
                            unsafe {
                                tile::<MR>(kc, ap.as_ptr(), bp.as_ptr(), o.tile(ip * MR, jp * NR, rows, cols), alpha, beta == 1.0 || pc > 0)
                            };
                        }
                    }
                }
            })
        };
        if workers == 1 {
            (0..rc * cc).for_each(task);
        } else {
            (0..rc * cc).into_par_iter().for_each(task);
        }
    })
}
