//! Token embedding lookup: out[t] = word[id_t] (+ position[pos_t]) (+ token_type[type_t]).
//!
//! Dimensions: N packed tokens, C features.

use rayon::prelude::*;

/// Forward: one row per token.
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    out: &mut [f32],
    ids: &[u32],
    positions: &[u32],
    type_ids: Option<&[u32]>,
    word: &[f32],
    position: Option<&[f32]>,
    token_type: Option<&[f32]>,
    c: usize,
) {
    out[..ids.len() * c].par_chunks_mut(c).enumerate().with_min_len(32).for_each(|(t, row)| {
        row.copy_from_slice(&word[ids[t] as usize * c..][..c]);
        if let Some(position) = position {
            let p = &position[positions[t] as usize * c..][..c];
            for (o, b) in row.iter_mut().zip(p) {
                *o += b;
            }
        }
        if let (Some(types), Some(table)) = (type_ids, token_type) {
            let e = &table[types[t] as usize * c..][..c];
            for (o, v) in row.iter_mut().zip(e) {
                *o += v;
            }
        }
    });
}

/// Backward: scatter-adds each token's gradient row into the table rows it read.
pub fn embedding_backward(table_grad: &mut [f32], index: &[u32], dout: &[f32], c: usize) {
    for (t, &i) in index.iter().enumerate() {
        let g = &mut table_grad[i as usize * c..][..c];
        for (g, d) in g.iter_mut().zip(&dout[t * c..(t + 1) * c]) {
            *g += d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_gradient, dot, random_vec};

    #[test]
    fn backward_matches_finite_differences() {
        let (c, v) = (4, 6);
        let ids = [1u32, 5, 1, 0];
        let pos = [0u32, 1, 2, 0];
        let types = [0u32, 1, 1, 0];
        let (word, position, tt) = (random_vec(v * c, 1), random_vec(3 * c, 2), random_vec(2 * c, 3));
        let probe = random_vec(ids.len() * c, 4);
        let f = |word: &[f32], position: &[f32], tt: &[f32]| {
            let mut out = vec![0.0; ids.len() * c];
            embedding_forward(&mut out, &ids, &pos, Some(&types), word, Some(position), Some(tt), c);
            dot(&out, &probe)
        };
        let (mut gw, mut gp, mut gt) = (vec![0.0; v * c], vec![0.0; 3 * c], vec![0.0; 2 * c]);
        embedding_backward(&mut gw, &ids, &probe, c);
        embedding_backward(&mut gp, &pos, &probe, c);
        embedding_backward(&mut gt, &types, &probe, c);
        check_gradient("word", &word, &gw, 1, |w| f(w, &position, &tt));
        check_gradient("position", &position, &gp, 1, |p| f(&word, p, &tt));
        check_gradient("token type", &tt, &gt, 1, |t| f(&word, &position, t));
    }
}
