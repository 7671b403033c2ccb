//! The packed bf16 layouts the native kernel reads, and [`PackedB`], a right-hand operand packed
//! once (e.g. a frozen weight at load time).
//!
//! A *pair* is one 32-bit word holding two bf16 values adjacent along k: bits 0..16 the element
//! at even k = 2p, bits 16..32 the one at k = 2p + 1 (0 past the end of k). `vdpbf16ps` multiplies
//! pairs lane by lane and adds both products into one f32 lane.
//!
//! - **B** [k, n] is cut into panels of [`NR`] = 32 columns (the last one padded with zero
//!   columns). Panel `jp` is `kp = ceil(k / 2)` rows of 32 pairs, row `p` holding columns
//!   `32·jp .. 32·jp + 32` at k-pair `p`; each row is two 64-byte lines, one zmm register each.
//!   Panels follow each other: pair (p, column j) is word `(j / 32)·kp·32 + p·32 + j % 32`.
//! - **A** [m, k] is packed per task into micro-panels of `MR` rows (the last padded with zero
//!   rows): micro-panel `ip` over a k-block of `kc` pairs is `kc` rows of [`AS`] = 16 words,
//!   word `p·16 + r` (r < MR) holding row `MR·ip + r` at k-pair `p` (one broadcast per row and
//!   pair), words r ≥ MR zero.
//!
//! Dimensions: `k` inner, `n` columns of b, `kp` k-pairs, `x` the packed row/column index.

use super::reference::{bf16_to_f32, round_bf16};
use crate::ops::gemm::{MatRef, Threads};
use rayon::prelude::*;

/// Columns per B panel: two zmm registers of 16 f32 lanes.
pub const NR: usize = 32;

/// Words per pair row of an A micro-panel: one 64-byte line, of which the kernel's MR ≤ 16 rows
/// use the first MR (the rest are zero), so rows are stored whole and broadcasts never straddle
/// a line.
pub const AS: usize = 16;

/// One 64-byte, 64-byte-aligned line of 16 pairs (one zmm load).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub struct Line(pub [u32; 16]);

/// The pairs of `lines`, as one flat slice of words.
pub(crate) fn words_mut(lines: &mut [Line]) -> &mut [u32] {
    // SAFETY: `Line` is `repr(C)` around `[u32; 16]` and exactly 64 bytes (its alignment), so
    // `lines` is `16·len` consecutive, initialised, suitably aligned u32 words, borrowed uniquely.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u32>(), lines.len() * 16) }
}

/// Read-only flat words of `lines` (see [`words_mut`]).
pub(crate) fn words(lines: &[Line]) -> &[u32] {
    // SAFETY: as in `words_mut`, for a shared borrow.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<u32>(), lines.len() * 16) }
}

/// A strided f32 source seen as [nx, nk]: element (x, kk) at `data[x·sx + kk·sk]`. For A, x is the
/// row (sx = a.rs, sk = a.cs); for B, x is the column (sx = b.cs, sk = b.rs).
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    pub data: &'a [f32],
    pub nx: usize,
    pub nk: usize,
    pub sx: usize,
    pub sk: usize,
}

impl<'a> Src<'a> {
    /// A [m, k] with x = row.
    pub fn rows_of(a: &MatRef<'a>) -> Self {
        Self { data: a.data, nx: a.rows, nk: a.cols, sx: a.rs, sk: a.cs }
    }

    /// B [k, n] with x = column.
    pub fn cols_of(b: &MatRef<'a>) -> Self {
        Self { data: b.data, nx: b.cols, nk: b.rows, sx: b.cs, sk: b.rs }
    }
}

/// What to pack: `groups` consecutive groups of `xw` source rows from `x0` (group g: rows
/// `x0 + g·xw ..`), pairs `p0 .. p0 + np`. Group g goes to words `g·np·stride ..` of the
/// destination, pair p of row x of the group to word `p·stride + x`; words with x ≥ xw are zero.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub x0: usize,
    pub xw: usize,
    pub groups: usize,
    pub p0: usize,
    pub np: usize,
    pub stride: usize,
}

impl Block {
    /// Words the destination has: every one of them is written.
    pub fn words(&self) -> usize {
        self.groups * self.np * self.stride
    }
}

/// Packs `blk` of `src` into `dst`: word = (round(src[x, 2p]), round(src[x, 2p + 1])), zero
/// where the source ends. The portable, obviously correct version; the AVX-512 one gives the
/// same bits.
pub(crate) fn pack_groups_scalar(src: &Src<'_>, blk: &Block, dst: &mut [u32]) {
    assert!(blk.xw <= blk.stride && dst.len() >= blk.words(), "pack destination too small");
    let get = |x: usize, kk: usize| if x < src.nx && kk < src.nk { round_bf16(src.data[x * src.sx + kk * src.sk]) as u32 } else { 0 };
    for g in 0..blk.groups {
        let x0 = blk.x0 + g * blk.xw;
        for p in 0..blk.np {
            let kk = 2 * (blk.p0 + p);
            let row = &mut dst[(g * blk.np + p) * blk.stride..][..blk.stride];
            for (x, w) in row.iter_mut().enumerate() {
                *w = if x < blk.xw { get(x0 + x, kk) | (get(x0 + x, kk + 1) << 16) } else { 0 };
            }
        }
    }
}

/// [`pack_groups_scalar`] on the fastest packer this CPU has (same bits).
pub(crate) fn pack_groups(src: &Src<'_>, blk: &Block, dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if super::native_available() {
        super::avx512::pack_groups(src, blk, dst);
        return;
    }
    pack_groups_scalar(src, blk, dst);
}

/// Lines B [k, n] takes packed: `ceil(n / 32)` panels of `ceil(k / 2)` rows of two lines.
pub(crate) fn b_lines(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k.div_ceil(2) * 2
}

/// Packs B [k, n] into `lines` (exactly [`b_lines`] long), panel by panel, on the rayon pool with
/// `Threads::Pool`.
pub(crate) fn pack_b_into(lines: &mut [Line], b: &MatRef<'_>, threads: Threads) {
    let (k, n) = (b.rows, b.cols);
    assert_eq!(lines.len(), b_lines(k, n));
    let kp = k.div_ceil(2);
    if kp == 0 || n == 0 {
        return;
    }
    let src = Src::cols_of(b);
    let np = n.div_ceil(NR);
    // Panels per call: all on one thread, else about four chunks per worker.
    let per = match threads {
        Threads::Pool if k * n >= 1 << 16 => np.div_ceil(4 * rayon::current_num_threads()),
        _ => np,
    };
    let one = |(c, chunk): (usize, &mut [Line])| {
        let blk = Block { x0: c * per * NR, xw: NR, groups: chunk.len() / (2 * kp), p0: 0, np: kp, stride: NR };
        pack_groups(&src, &blk, words_mut(chunk))
    };
    if per < np {
        lines.par_chunks_mut(per * 2 * kp).enumerate().for_each(one);
    } else {
        one((0, lines));
    }
}

/// The packed panels of a B [k, n], borrowed (from a [`PackedB`] or a scratch buffer).
#[derive(Clone, Copy)]
pub(crate) struct Panels<'a> {
    pub k: usize,
    pub n: usize,
    pub lines: &'a [Line],
}

impl Panels<'_> {
    /// k-pairs per panel.
    pub fn kp(&self) -> usize {
        self.k.div_ceil(2)
    }
}

/// A right-hand operand B [k, n] rounded to bf16 and packed once into the native kernel's panel
/// layout (see the module doc); usable by both kernels (the portable one unpacks it).
#[derive(Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    lines: Vec<Line>,
}

impl PackedB {
    /// Packs `b` [k, n], any strides: a weight W [out, in] stored row-major is `MatRef::new(w,
    /// out, in).t()` for x·Wᵀ (k = in, n = out) and `MatRef::new(w, out, in)` for dy·W (k = out,
    /// n = in).
    pub fn new(b: MatRef<'_>) -> Self {
        Self::new_with(b, Threads::One)
    }

    /// [`PackedB::new`], packing the panels on the rayon pool with `Threads::Pool`.
    pub fn new_with(b: MatRef<'_>, threads: Threads) -> Self {
        super::check_view("b", &b);
        let mut lines = vec![Line::default(); b_lines(b.rows, b.cols)];
        pack_b_into(&mut lines, &b, threads);
        Self { k: b.rows, n: b.cols, lines }
    }

    /// Rows of B (the inner dimension of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B (the output columns).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes of packed storage (k and n padded to the panel shape, 2 bytes an element).
    pub fn bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    /// Element (kk, j) as stored: B[kk, j] rounded to bf16, widened to f32.
    pub fn get(&self, kk: usize, j: usize) -> f32 {
        assert!(kk < self.k && j < self.n, "PackedB index out of range");
        let kp = self.k.div_ceil(2);
        let w = words(&self.lines)[(j / NR) * kp * NR + (kk / 2) * NR + j % NR];
        bf16_to_f32((w >> (16 * (kk % 2))) as u16)
    }

    /// Writes the stored values as a dense row-major f32 matrix [k, n] into `dst` (k·n long).
    pub fn unpack(&self, dst: &mut [f32]) {
        let (k, n, kp) = (self.k, self.n, self.k.div_ceil(2));
        assert_eq!(dst.len(), k * n);
        let w = words(&self.lines);
        for kk in 0..k {
            let row = &mut dst[kk * n..(kk + 1) * n];
            for (j, d) in row.iter_mut().enumerate() {
                *d = bf16_to_f32((w[(j / NR) * kp * NR + (kk / 2) * NR + j % NR] >> (16 * (kk % 2))) as u16);
            }
        }
    }

    /// The panels, for the native kernel.
    pub(crate) fn panels(&self) -> Panels<'_> {
        Panels { k: self.k, n: self.n, lines: &self.lines }
    }
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB").field("k", &self.k).field("n", &self.n).field("bytes", &self.bytes()).finish()
    }
}
