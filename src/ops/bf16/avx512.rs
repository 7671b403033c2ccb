//! AVX-512 code of the native kernel: f32 -> bf16 rounding and pair packing 16 lanes at a time
//! (bit-identical to `reference::round_bf16` and `pack::pack_groups_scalar`, denormals included,
//! which `vcvtne2ps2bf16` would flush), and the MR×32 register-blocked micro-kernel on
//! `vdpbf16ps`. Every entry point here requires avx512f + avx512bw + avx512bf16 (callers check
//! `native_available`).
//!
//! Dimensions: `kc` k-pairs of one block, `MR` rows × `NR` = 32 columns of one output tile,
//! `x`/`k` the packed row/column and inner index of a `Src`.

#![deny(unsafe_op_in_unsafe_fn)]

use super::pack::{pack_groups_scalar, Block, Src, AS, NR};
use std::arch::asm;
use std::arch::x86_64::*;

/// Mask of the low `n` (≤ 16) lanes.
fn low_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Rounds 16 f32 lanes to bf16 (ties to even, NaN quieted): each lane's bf16 bits end up in its
/// high half (the low half is garbage).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn round16(v: __m512) -> __m512i {
    let bits = _mm512_castps_si512(v);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000)))
}

/// Pairs lane by lane: word i = (bf16(even[i]), bf16(odd[i])).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pair_lanes(even: __m512, odd: __m512) -> __m512i {
    let lo = _mm512_srli_epi32::<16>(round16(even));
    let hi = _mm512_and_si512(round16(odd), _mm512_set1_epi32(0xffff_0000u32 as i32));
    _mm512_or_si512(lo, hi)
}

/// Pairs 32 consecutive values `v[0..16] ++ v[16..32]`: word q = (bf16(v[2q]), bf16(v[2q+1])).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pair_consecutive(v0: __m512, v1: __m512) -> __m512i {
    // The bf16 of element e is 16-bit lane 2e + 1 of (round16(v0), round16(v1)).
    const IDX: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut q = 0;
        while q < 16 {
            idx[2 * q] = 4 * q as u16 + 1;
            idx[2 * q + 1] = 4 * q as u16 + 3;
            q += 1;
        }
        idx
    };
    // SAFETY: IDX is 64 bytes, the size of the unaligned load.
    let idx = unsafe { _mm512_loadu_si512(IDX.as_ptr().cast()) };
    _mm512_permutex2var_epi16(round16(v0), idx, round16(v1))
}

/// Transposes a 16×16 matrix of 32-bit words held as 16 rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn transpose16(r: &mut [__m512i; 16]) {
    let mut a = [_mm512_setzero_si512(); 16];
    for i in (0..16).step_by(2) {
        a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    // b[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g + 4.
    let mut b = [_mm512_setzero_si512(); 16];
    for i in (0..16).step_by(4) {
        b[i] = _mm512_unpacklo_epi64(a[i], a[i + 2]);
        b[i + 1] = _mm512_unpackhi_epi64(a[i], a[i + 2]);
        b[i + 2] = _mm512_unpacklo_epi64(a[i + 1], a[i + 3]);
        b[i + 3] = _mm512_unpackhi_epi64(a[i + 1], a[i + 3]);
    }
    // A 4×4 transpose of 128-bit lanes for each c: out[4L + c] lane M = b[4M + c] lane L.
    for c in 0..4 {
        let e0 = _mm512_shuffle_i32x4::<0x44>(b[c], b[4 + c]);
        let e1 = _mm512_shuffle_i32x4::<0xee>(b[c], b[4 + c]);
        let e2 = _mm512_shuffle_i32x4::<0x44>(b[8 + c], b[12 + c]);
        let e3 = _mm512_shuffle_i32x4::<0xee>(b[8 + c], b[12 + c]);
        r[c] = _mm512_shuffle_i32x4::<0x88>(e0, e2);
        r[4 + c] = _mm512_shuffle_i32x4::<0xdd>(e0, e2);
        r[8 + c] = _mm512_shuffle_i32x4::<0x88>(e1, e3);
        r[12 + c] = _mm512_shuffle_i32x4::<0xdd>(e1, e3);
    }
}

/// [`pack_groups_scalar`]'s result, 16 lanes at a time when the source is contiguous along x or
/// along k (other strides take the scalar path). Requires the native features.
pub(crate) fn pack_groups(src: &Src<'_>, blk: &Block, dst: &mut [u32]) {
    assert!(super::native_available());
    assert!(blk.xw <= blk.stride && dst.len() >= blk.words(), "pack destination too small");
    if src.nx > 0 && src.nk > 0 {
        assert!((src.nx - 1) * src.sx + (src.nk - 1) * src.sk < src.data.len(), "pack source out of bounds");
    }
    // SAFETY: the features are present (asserted); the source bound was checked above and the
    // destination bound is asserted, which is all the inner functions rely on.
    unsafe {
        if src.sx == 1 {
            pack_x_contiguous(src, blk, dst)
        } else if src.sk == 1 {
            pack_k_contiguous(src, blk, dst)
        } else {
            pack_groups_scalar(src, blk, dst)
        }
    }
}

/// Stores the 16 words `v` at lanes `xb ..` of a destination row of `stride` words: one full
/// store when the row has room (lanes past xw carry zeros), masked at the row's end otherwise.
///
/// # Safety
/// `row` points at a row of `stride` valid words, xb < stride.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn store_row(row: *mut u32, xb: usize, stride: usize, v: __m512i) {
    // SAFETY: lanes xb .. min(xb + 16, stride) of the row are valid (caller's contract).
    unsafe {
        if xb + 16 <= stride {
            _mm512_storeu_si512(row.add(xb).cast(), v)
        } else {
            _mm512_mask_storeu_epi32(row.add(xb).cast(), low_mask(stride - xb), v)
        }
    }
}

/// Source contiguous along x (e.g. B = W or x, A = dyᵀ): for each pair, the rows 2p and 2p + 1
/// are read front to back across all groups (masked loads of 16 x's), so every source line is
/// loaded once.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_x_contiguous(src: &Src<'_>, blk: &Block, dst: &mut [u32]) {
    let ptr = src.data.as_ptr();
    for p in 0..blk.np {
        let kk = 2 * (blk.p0 + p);
        for g in 0..blk.groups {
            let row = dst.as_mut_ptr().wrapping_add((g * blk.np + p) * blk.stride);
            for xb in (0..blk.stride).step_by(16) {
                let gx = blk.x0 + g * blk.xw + xb;
                let vx = if xb < blk.xw { src.nx.saturating_sub(gx).min(blk.xw - xb).min(16) } else { 0 };
                let load = |kk: usize| {
                    if vx > 0 && kk < src.nk {
                        // SAFETY: element (gx, kk) is in the source (gx < nx, kk < nk, bound
                        // checked by the caller) and the vx masked lanes after it are x's of
                        // the same k.
                        unsafe { _mm512_maskz_loadu_ps(low_mask(vx), ptr.add(gx + kk * src.sk)) }
                    } else {
                        _mm512_setzero_ps()
                    }
                };
                let d = pair_lanes(load(kk), load(kk + 1));
                // SAFETY: `row` is row p of group g, inside dst (asserted by the caller).
                unsafe { store_row(row, xb, blk.stride, d) };
            }
        }
    }
}

/// Source contiguous along k (e.g. B = Wᵀ or Kᵀ, A = x): 16 x's × 16 pairs loaded as rows, paired
/// and transposed in registers.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_k_contiguous(src: &Src<'_>, blk: &Block, dst: &mut [u32]) {
    let ptr = src.data.as_ptr();
    for g in 0..blk.groups {
        for xb in (0..blk.stride).step_by(16) {
            let gx = blk.x0 + g * blk.xw + xb;
            let vx = if xb < blk.xw { src.nx.saturating_sub(gx).min(blk.xw - xb).min(16) } else { 0 };
            for pb in (0..blk.np).step_by(16) {
                let pc = (blk.np - pb).min(16);
                let kk0 = 2 * (blk.p0 + pb);
                let kv = src.nk.saturating_sub(kk0).min(32);
                let (m0, m1) = (low_mask(kv.min(16)), low_mask(kv.saturating_sub(16)));
                let mut rows = [_mm512_setzero_si512(); 16];
                if kv > 0 {
                    for (r, row) in rows.iter_mut().enumerate().take(vx) {
                        let base = ptr.wrapping_add((gx + r) * src.sx + kk0);
                        // SAFETY: element (gx + r, kk0) is in the source and the kv masked
                        // lanes after it are elements kk0 .. kk0 + kv of the same x; with
                        // kv ≤ 16 the second mask is empty and reads nothing.
                        let (v0, v1) = unsafe { (_mm512_maskz_loadu_ps(m0, base), _mm512_maskz_loadu_ps(m1, base.wrapping_add(16))) };
                        *row = pair_consecutive(v0, v1);
                    }
                }
                transpose16(&mut rows);
                for (q, v) in rows.iter().enumerate().take(pc) {
                    let row = dst.as_mut_ptr().wrapping_add((g * blk.np + pb + q) * blk.stride);
                    // SAFETY: row pb + q < np of group g lies inside dst (asserted by the caller).
                    unsafe { store_row(row, xb, blk.stride, *v) };
                }
            }
        }
    }
}

/// Where one output tile goes: `rows` ≤ MR × `cols` ≤ 32 elements at `ptr + i·rs + j·cs`.
pub(crate) struct OutTile {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
    pub rows: usize,
    pub cols: usize,
}

/// One MR×32 tile over `kc` k-pairs: tile = alpha·(A·B) (+ tile if `accumulate`). `a` is an A
/// micro-panel (`kc` rows of [`AS`] words, the first MR used), `b` a 64-byte-aligned B panel slice
/// (`kc` rows of 32 pairs).
///
/// # Safety
/// The native features are present; MR ≤ AS; `a` has `kc·AS` words, `b` `kc·32` words and is 64-byte
/// aligned; every element of `out` (rows × cols) is valid to read and write and no other thread
/// touches it.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn tile<const MR: usize>(kc: usize, a: *const u32, b: *const u32, out: OutTile, alpha: f32, accumulate: bool) {
    let mut c0 = [_mm512_setzero_ps(); MR];
    let mut c1 = [_mm512_setzero_ps(); MR];
    if out.cs == 1 {
        // Fetch the output tile while the dot products run: its rows are far apart (a row stride
        // each), so the hardware prefetcher does not see them coming and the final loads and
        // stores would otherwise wait on L3 or memory.
        for r in 0..out.rows {
            let o = out.ptr.wrapping_add(r * out.rs);
            _mm_prefetch::<_MM_HINT_T0>(o.cast());
            _mm_prefetch::<_MM_HINT_T0>(o.wrapping_add(out.cols - 1).cast());
        }
    }
    for p in 0..kc {
        // SAFETY: pair row p < kc of both panels is in bounds (caller's contract).
        let (b0, b1, ap) = unsafe {
            let bp = b.add(p * NR);
            (_mm512_load_ps(bp.cast()), _mm512_load_ps(bp.add(16).cast()), a.add(p * AS))
        };
        // Row r of the tile: both halves += pair (r, p) of A broadcast from memory · the B row.
        // The broadcast is the instruction's embedded `{1to16}` operand (LLVM would emit a
        // separate `vbroadcastss` per row); on hot data this loop runs at 98% of the measured
        // `vdpbf16ps` peak.
        macro_rules! rows {
            ($($r:literal)*) => {$(
                if $r < MR {
                    // SAFETY: reads the word r < MR of pair row p of the A micro-panel (in bounds
                    // by the caller's contract); registers only otherwise, no stack, flags kept.
                    unsafe {
                        asm!(
                            "vdpbf16ps {c0}, {b0}, dword ptr [{a} + {off}]{{1to16}}",
                            "vdpbf16ps {c1}, {b1}, dword ptr [{a} + {off}]{{1to16}}",
                            c0 = inout(zmm_reg) c0[$r], c1 = inout(zmm_reg) c1[$r], b0 = in(zmm_reg) b0, b1 = in(zmm_reg) b1,
                            a = in(reg) ap, off = const 4 * $r, options(pure, readonly, nostack, preserves_flags),
                        );
                    }
                }
            )*};
        }
        rows!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }
    let va = _mm512_set1_ps(alpha);
    if out.cs == 1 {
        let (m0, m1) = (low_mask(out.cols.min(16)), low_mask(out.cols.saturating_sub(16)));
        let full = out.cols == NR;
        for r in 0..MR {
            if r >= out.rows {
                break;
            }
            let o = out.ptr.wrapping_add(r * out.rs);
            // SAFETY: row r < rows, columns < cols of the tile are valid (caller's contract); the
            // masks cover exactly those columns, and an empty mask touches nothing.
            unsafe {
                let (o0, o1) = (o, o.wrapping_add(16));
                let (mut v0, mut v1) = (_mm512_mul_ps(va, c0[r]), _mm512_mul_ps(va, c1[r]));
                if accumulate {
                    let (old0, old1) = if full {
                        (_mm512_loadu_ps(o0), _mm512_loadu_ps(o1))
                    } else {
                        (_mm512_maskz_loadu_ps(m0, o0), _mm512_maskz_loadu_ps(m1, o1))
                    };
                    v0 = _mm512_fmadd_ps(va, c0[r], old0);
                    v1 = _mm512_fmadd_ps(va, c1[r], old1);
                }
                if full {
                    _mm512_storeu_ps(o0, v0);
                    _mm512_storeu_ps(o1, v1);
                } else {
                    _mm512_mask_storeu_ps(o0, m0, v0);
                    _mm512_mask_storeu_ps(o1, m1, v1);
                }
            }
        }
    } else {
        let mut t = [[0.0f32; NR]; MR];
        for r in 0..MR {
            // SAFETY: each row of `t` is 32 f32.
            unsafe {
                _mm512_storeu_ps(t[r].as_mut_ptr(), c0[r]);
                _mm512_storeu_ps(t[r].as_mut_ptr().add(16), c1[r]);
            }
        }
        for (r, row) in t.iter().enumerate().take(out.rows) {
            for (j, v) in row.iter().enumerate().take(out.cols) {
                // SAFETY: (r, j) is inside the tile (caller's contract).
                unsafe {
                    let o = out.ptr.add(r * out.rs + j * out.cs);
                    *o = if accumulate { alpha.mul_add(*v, *o) } else { alpha * *v };
                }
            }
        }
    }
}
