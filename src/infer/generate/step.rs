//! One incremental forward step of a decoder: the new tokens' rows (one token while decoding, a
//! chunk of the prompt while prefilling) through every layer, attending to the positions in the
//! [`KvCache`] and to each other causally, their keys and values appended to the cache, and the
//! language-model logits of the last row (or of every row).
//!
//! It runs the layer's own modules and kernels — norms, [`crate::model::Linear`] (LoRA included,
//! merged or not), rotary tables, the attention kernel over the cached keys, SwiGLU / GELU — in
//! inference form: no dropout, nothing kept for backward, one set of buffers reused by every layer
//! and every step.
//!
//! Dimensions: n new rows, T = cached + n positions, C width, F feed-forward width,
//! Q = H·D query width, KV = Hkv·D key/value width, V vocabulary.

use super::kv_cache::KvCache;
use crate::error::{Error, Result};
use crate::model::decoder::{Decoder, DecoderHead, DecoderLayer, Mlp, Qkv};
use crate::model::linear::grow;
use crate::model::norm::NormCache;
use crate::ops::activation::swiglu_forward;
use crate::ops::add::add_into;
use crate::ops::attention::{attention_forward, AttnSpan};
use crate::ops::dropout::Dropout;
use crate::ops::embedding::embedding_forward;
use crate::ops::rope::rope_forward;

/// The buffers of decoding steps, grown to the largest step seen and reused.
#[derive(Default, Debug)]
pub struct StepBuffers {
    /// Residual stream entering a layer [n, C].
    x: Vec<f32>,
    /// Residual stream leaving a layer [n, C].
    out: Vec<f32>,
    /// A norm's output [n, C].
    xn: Vec<f32>,
    /// Norm statistics (scratch).
    stats: NormCache,
    /// Queries [n, Q].
    q: Vec<f32>,
    /// New keys [n, KV].
    k: Vec<f32>,
    /// New values [n, KV].
    v: Vec<f32>,
    /// Fused projection output (GPT-2) [n, Q + 2·KV].
    qkv: Vec<f32>,
    /// Attention context [n, Q].
    ctx: Vec<f32>,
    /// Attention probabilities [H·n·T] and their (unused) dropout scratch.
    probs: Vec<f32>,
    probs_drop: Vec<f32>,
    /// Residual stream after attention [n, C].
    h1: Vec<f32>,
    /// MLP buffers [n, F].
    f1: Vec<f32>,
    f2: Vec<f32>,
    act: Vec<f32>,
    /// LoRA x·A of the current linear, and the LoRA dropout scratch (unused).
    lora_h: Vec<f32>,
    lora_x: Vec<f32>,
    /// Rotary tables [n, D/2].
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Positions of the new rows [n].
    positions: Vec<u32>,
    /// The final norm's output over the rows whose logits are wanted [R, C].
    normed: Vec<f32>,
    /// Logits [R, V].
    logits: Vec<f32>,
}

/// Which rows' logits a step returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// The last new row only: [V] (generation).
    Last,
    /// Every new row: [n, V] (tests, scoring).
    All,
}

/// Runs `ids` (the tokens at positions `cache.len()..`) through `decoder`, appending their keys
/// and values to `cache`; returns the logits of `rows`. An error (nothing changed) when the
/// decoder has no language-model head, an id is outside the vocabulary or the cache is full.
pub fn step<'a>(decoder: &Decoder, cache: &mut KvCache, ids: &[u32], rows: Rows, buf: &'a mut StepBuffers) -> Result<&'a [f32]> {
    let cfg = &decoder.config;
    if !matches!(decoder.head, DecoderHead::Lm(_)) {
        return Err(Error::InvalidOption("generation needs a language-model head; load the model with --head lm".into()));
    }
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
        return Err(Error::InvalidOption(format!("token id {bad} is outside the vocabulary of {} ids", cfg.vocab_size)));
    }
    let n = ids.len();
    if n == 0 {
        return Err(Error::InvalidOption("nothing to decode: the prompt is empty".into()));
    }
    cache.reserve(n)?;
    let (c, past) = (cfg.dim, cache.len());
    let total = past + n;
    buf.positions.clear();
    buf.positions.extend((past..total).map(|p| p as u32));
    grow(&mut buf.x, n * c);
    grow(&mut buf.out, n * c);
    let pos_table = decoder.positions.as_ref().map(|p| p.data.as_slice());
    embedding_forward(&mut buf.x, ids, &buf.positions, None, &decoder.embed.data, pos_table, None, c);
    if let Some(rope) = &decoder.rope {
        rope.tables(&buf.positions, &mut buf.cos, &mut buf.sin);
    }
    for (l, layer) in decoder.layers.iter().enumerate() {
        layer_step(layer, l, cache, Span { n, past, rope: decoder.rope.is_some() }, buf);
        std::mem::swap(&mut buf.x, &mut buf.out);
    }
    cache.advance(n);
    let (first, r) = match rows {
        Rows::Last => (n - 1, 1),
        Rows::All => (0, n),
    };
    grow(&mut buf.normed, r * c);
    decoder.norm.forward(&mut buf.normed, &mut buf.stats, &buf.x[first * c..(first + r) * c], r);
    let v = cfg.vocab_size;
    grow(&mut buf.logits, r * v);
    decoder.lm_head_forward(&mut buf.logits[..r * v], &buf.normed[..r * c], r);
    Ok(&buf.logits[..r * v])
}

/// Where a step's rows sit: `n` new rows after `past` cached positions, rotated or not.
#[derive(Clone, Copy)]
struct Span {
    n: usize,
    past: usize,
    rope: bool,
}

/// One layer over the `n` new rows in `buf.x`, into `buf.out`; writes their keys and values into
/// the cache at positions `past..past + n` (counted by the caller after the last layer).
fn layer_step(layer: &DecoderLayer, l: usize, cache: &mut KvCache, at: Span, buf: &mut StepBuffers) {
    let Span { n, past, rope } = at;
    let heads = layer.heads;
    let (qd, kvd) = (heads.q * heads.dim, heads.kv * heads.dim);
    let c = layer.o.out_dim();
    let total = past + n;
    let StepBuffers { x, out, xn, stats, q, k, v, qkv, ctx, probs, probs_drop, h1, f1, f2, act, lora_h, lora_x, cos, sin, .. } = buf;
    let x = &x[..n * c];
    grow(xn, n * c);
    layer.attn_norm.forward(xn, stats, x, n);
    let xn1 = &xn[..n * c];
    grow(q, n * qd);
    grow(k, n * kvd);
    grow(v, n * kvd);
    match &layer.qkv {
        Qkv::Separate([lq, lk, lv]) => {
            lq.forward(q, lora_h, xn1, lora_x, n, Dropout::OFF);
            lk.forward(k, lora_h, xn1, lora_x, n, Dropout::OFF);
            lv.forward(v, lora_h, xn1, lora_x, n, Dropout::OFF);
        }
        Qkv::Fused(lin) => {
            let w = qd + 2 * kvd;
            grow(qkv, n * w);
            lin.forward(qkv, lora_h, xn1, lora_x, n, Dropout::OFF);
            for (r, row) in qkv[..n * w].chunks_exact(w).enumerate() {
                q[r * qd..(r + 1) * qd].copy_from_slice(&row[..qd]);
                k[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                v[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
            }
        }
    }
    if rope {
        rope_forward(q, cos, sin, n, heads.q, heads.dim);
        rope_forward(k, cos, sin, n, heads.kv, heads.dim);
    }
    cache.write(l, k, v, n);
    let span = AttnSpan { q_start: 0, q_len: n, k_start: 0, k_valid: total, k_total: total, causal: true, q_pos: past };
    let p = heads.q * n * total;
    grow(probs, p);
    grow(ctx, n * qd);
    let (kc, vc) = cache.layer(l, total);
    attention_forward(ctx, &mut probs[..p], probs_drop, &q[..n * qd], kc, vc, &[span], heads, Dropout::OFF, layer.o.precision);
    grow(h1, n * c);
    layer.o.forward(h1, lora_h, &ctx[..n * qd], lora_x, n, Dropout::OFF);
    add_into(&mut h1[..n * c], x);
    layer.mlp_norm.forward(xn, stats, &h1[..n * c], n);
    let xn2 = &xn[..n * c];
    match &layer.mlp {
        Mlp::Gated { gate, up, down } => {
            let fw = gate.out_dim();
            grow(f1, n * fw);
            grow(f2, n * fw);
            grow(act, n * fw);
            gate.forward(f1, lora_h, xn2, lora_x, n, Dropout::OFF);
            up.forward(f2, lora_h, xn2, lora_x, n, Dropout::OFF);
            swiglu_forward(&mut act[..n * fw], &f1[..n * fw], &f2[..n * fw]);
            down.forward(out, lora_h, &act[..n * fw], lora_x, n, Dropout::OFF);
        }
        Mlp::Plain { fc, proj, activation } => {
            let fw = fc.out_dim();
            grow(f1, n * fw);
            grow(act, n * fw);
            fc.forward(f1, lora_h, xn2, lora_x, n, Dropout::OFF);
            activation.forward(&mut act[..n * fw], &f1[..n * fw]);
            proj.forward(out, lora_h, &act[..n * fw], lora_x, n, Dropout::OFF);
        }
    }
    add_into(&mut out[..n * c], &h1[..n * c]);
}
