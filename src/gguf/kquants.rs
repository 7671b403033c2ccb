//! Dequantization of ggml's K-quants (super-blocks of QK_K = 256 elements), following
//! ggml-quants.c's `dequantize_row_q{2,3,4,5,6,8}_K` operation for operation.
//!
//! Block layouts (bytes in order; `d`, `dmin` f16 unless noted):
//! ```text
//! Q2_K  84 B: scales[16] (lo nibble scale, hi nibble min), qs[64] (2 bits), d, dmin
//! Q3_K 110 B: hmask[32] (bit 2 of each value, inverted), qs[64] (2 bits), scales[12] (16 × 6-bit), d
//! Q4_K 144 B: d, dmin, scales[12] (8 × 6-bit scale + 8 × 6-bit min), qs[128] (4 bits)
//! Q5_K 176 B: d, dmin, scales[12] (as Q4_K), qh[32] (bit 4 of each value), qs[128] (4 bits)
//! Q6_K 210 B: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] i8, d
//! Q8_K 292 B: d f32, qs[256] i8, bsums[16] i16 (sums for matmul; unused here)
//! ```
//! Callers pass exactly one block `b` and 256 outputs `y`.

use super::dequant::f16_at;

/// Q2_K: y = d·(sc & 15)·q − dmin·(sc >> 4), sixteen sub-blocks of 16.
pub(super) fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut is = 0;
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for j in 0..4 {
            let shift = 2 * j;
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let base = half * 128 + j * 32 + part * 16;
                for l in 0..16 {
                    y[base + l] = dl * ((q[part * 16 + l] >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// Q3_K: sixteen 6-bit signed scales (offset 32), 3-bit values whose high bit is set when the
/// hmask bit is clear: y = d·(sc − 32)·(q − (hm ? 0 : 4)).
pub(super) fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d_all = f16_at(b, 108);
    // The 12 bytes hold 16 scales: the low 4 bits of scale s are nibble s / 8 of byte s % 8
    // (low nibble first), the high 2 bits are bits 2·(s / 4) of byte 8 + s % 4.
    let mut scales = [0i32; 16];
    for (s, sc) in scales.iter_mut().enumerate() {
        let low = (packed[s % 8] >> (4 * (s / 8))) & 0x0F;
        let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 0x03;
        *sc = (low | (high << 4)) as i32 - 32;
    }
    let mut is = 0;
    let mut m = 1u8;
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for j in 0..4 {
            let shift = 2 * j;
            for part in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                let base = half * 128 + j * 32 + part * 16;
                for l in 0..16 {
                    let idx = part * 16 + l;
                    let low = ((q[idx] >> shift) & 3) as i32;
                    let sub = if hmask[idx] & m != 0 { 0 } else { 4 };
                    y[base + l] = dl * (low - sub) as f32;
                }
            }
            m <<= 1;
        }
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of Q4_K/Q5_K.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K: eight sub-blocks of 32, y = d·sc·q − dmin·m.
pub(super) fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let base = chunk * 64;
        for l in 0..32 {
            y[base + l] = d1 * (q[l] & 0x0F) as f32 - min1;
            y[base + 32 + l] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

/// Q5_K: as Q4_K with a fifth bit from qh: bit 2·chunk (low nibbles) or 2·chunk + 1 (high).
pub(super) fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (chunk, ql) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let base = chunk * 64;
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[base + l] = d1 * ((ql[l] & 0x0F) + h1) as f32 - min1;
            y[base + 32 + l] = d2 * ((ql[l] >> 4) + h2) as f32 - min2;
        }
    }
}

/// Q6_K: 6-bit values (4 low bits in ql, 2 high bits in qh) offset by 32, sixteen i8 scales:
/// y = d·sc·(q − 32).
pub(super) fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql_all, qh_all, sc_all) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for half in 0..2 {
        let (ql, qh) = (&ql_all[half * 64..], &qh_all[half * 32..]);
        let sc = &sc_all[half * 8..];
        let out = &mut y[half * 128..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Q8_K: y = d·q with an f32 scale.
pub(super) fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (yj, &q) in y.iter_mut().zip(&b[4..260]) {
        *yj = d * (q as i8) as f32;
    }
}
