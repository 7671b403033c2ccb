//! The key/value cache of incremental decoding: for every layer, the rotated keys and the values
//! of every position decoded so far, so that a new token attends to them without recomputing
//! them.
//!
//! Layout: per layer one key and one value matrix [T, Hkv·D] (row t = position t, the heads side
//! by side), the layout the attention kernel ([`crate::ops::attention`]) reads keys and values
//! in, so a decoding step calls the same kernel as training. T grows up to the capacity, which
//! is allocated once.

use crate::error::{Error, Result};

/// Keys and values of the positions decoded so far, for every layer.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// Keys after the rotation, per layer [capacity, Hkv·D] (rows `..len` valid).
    pub k: Vec<Vec<f32>>,
    /// Values, per layer [capacity, Hkv·D] (rows `..len` valid).
    pub v: Vec<Vec<f32>>,
    /// Width Hkv·D of one row.
    pub kv_dim: usize,
    /// Positions held.
    len: usize,
    /// Positions it can hold (the model's context, or less).
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of key/value width `kv_dim`, holding up to `capacity`
    /// positions (allocated now).
    pub fn new(layers: usize, kv_dim: usize, capacity: usize) -> KvCache {
        let buf = || (0..layers).map(|_| vec![0.0f32; capacity * kv_dim]).collect();
        KvCache { k: buf(), v: buf(), kv_dim, len: 0, capacity }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes room for `capacity` positions at least, keeping what is held.
    pub fn grow(&mut self, capacity: usize) {
        if capacity > self.capacity {
            for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
                buf.resize(capacity * self.kv_dim, 0.0);
            }
            self.capacity = capacity;
        }
    }

    /// Forgets every position (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `len` positions (e.g. a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Checks that `n` more positions fit.
    pub fn reserve(&self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            return Err(Error::InvalidOption(format!(
                "{} positions do not fit the model's context of {} (already {} held); shorten the prompt or lower --max-new-tokens",
                self.len + n,
                self.capacity,
                self.len
            )));
        }
        Ok(())
    }

    /// Writes `n` rows of keys `k` and values `v` ([n, Hkv·D] each) of layer `layer` at positions
    /// `len..len + n` (the caller checked [`KvCache::reserve`]); they count once
    /// [`KvCache::advance`] is called after the last layer.
    pub fn write(&mut self, layer: usize, k: &[f32], v: &[f32], n: usize) {
        let (at, w) = (self.len * self.kv_dim, n * self.kv_dim);
        self.k[layer][at..at + w].copy_from_slice(&k[..w]);
        self.v[layer][at..at + w].copy_from_slice(&v[..w]);
    }

    /// Keys and values of layer `layer` up to `upto` positions: [upto, Hkv·D] each.
    pub fn layer(&self, layer: usize, upto: usize) -> (&[f32], &[f32]) {
        let w = upto * self.kv_dim;
        (&self.k[layer][..w], &self.v[layer][..w])
    }

    /// Counts `n` more positions as held (after every layer wrote them).
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.len <= self.capacity);
    }

    /// Bytes held by the buffers.
    pub fn bytes(&self) -> usize {
        2 * self.k.len() * self.capacity * self.kv_dim * std::mem::size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rows_at_the_end_and_refuses_overflow() {
        let mut c = KvCache::new(2, 3, 4);
        c.reserve(4).unwrap();
        c.write(0, &[1.0; 6], &[2.0; 6], 2);
        c.write(1, &[3.0; 6], &[4.0; 6], 2);
        c.advance(2);
        c.write(0, &[5.0; 3], &[6.0; 3], 1);
        c.advance(1);
        let (k, v) = c.layer(0, 3);
        assert_eq!(k, &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0]);
        assert_eq!(v[6..], [6.0; 3]);
        assert_eq!(c.len(), 3);
        let e = c.reserve(2).unwrap_err().to_string();
        assert!(e.contains("context of 4") && e.contains("shorten"), "{e}");
        c.grow(8);
        assert_eq!((c.capacity(), c.layer(0, 3).0[6]), (8, 5.0));
        c.truncate(1);
        assert_eq!(c.len(), 1);
        c.clear();
        assert!(c.is_empty());
    }
}
