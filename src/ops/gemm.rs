//! Matrix products: the one entry point to `faer`'s matrix multiply, for strided `f32` matrices
//! with optional transposes and accumulation, and a per-thread call counter (used to prove that
//! frozen weights never get a weight-gradient product).

use std::cell::Cell;

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Number of matrix products issued from the current thread so far.
pub fn calls() -> u64 {
    CALLS.with(|c| c.get())
}

/// A read-only strided matrix view: element (i, j) lives at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    /// Backing storage; every addressed element must lie inside it.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride in elements.
    pub rs: usize,
    /// Column stride in elements.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major matrix `[rows, cols]`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose (a view; nothing moves).
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// A block of columns `[col0, col0 + cols)` of a row-major matrix whose row stride is `rs`.
    pub fn cols_of(data: &'a [f32], rows: usize, rs: usize, col0: usize, cols: usize) -> Self {
        Self { data: &data[col0..], rows, cols, rs, cs: 1 }
    }

    /// Rows `[r0, r1)` of the view (a view; nothing moves).
    pub fn rows(self, r0: usize, r1: usize) -> Self {
        assert!(r0 <= r1 && r1 <= self.rows, "rows {r0}..{r1} of a {}-row view", self.rows);
        let data = if r1 > r0 { &self.data[r0 * self.rs..] } else { &self.data[..0] };
        Self { data, rows: r1 - r0, ..self }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// A mutable strided matrix view, the destination of a product.
pub struct MatMut<'a> {
    /// Backing storage; every addressed element must lie inside it.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride in elements.
    pub rs: usize,
    /// Column stride in elements.
    pub cs: usize,
}

impl<'a> MatMut<'a> {
    /// A dense row-major matrix `[rows, cols]`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// A block of columns `[col0, col0 + cols)` of a row-major matrix whose row stride is `rs`.
    pub fn cols_of(data: &'a mut [f32], rows: usize, rs: usize, col0: usize, cols: usize) -> Self {
        Self { data: &mut data[col0..], rows, cols, rs, cs: 1 }
    }

    /// The transpose (a view; nothing moves).
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

/// How a product may use threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Run on the calling thread only (use inside an outer parallel loop).
    One,
    /// Split the product over the rayon pool.
    Pool,
}

/// `out = beta * out + alpha * (a · b)` with `beta` 0 or 1; with `beta == 0` the old contents of
/// `out` are ignored (so `out` need not be initialised).
pub fn matmul(out: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, beta: f32, threads: Threads) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!(out.rows, a.rows, "output rows differ");
    assert_eq!(out.cols, b.cols, "output columns differ");
    assert!(beta == 0.0 || beta == 1.0, "beta must be 0 (replace) or 1 (accumulate)");
    a.check();
    b.check();
    if out.rows > 0 && out.cols > 0 {
        let last = (out.rows - 1) * out.rs + (out.cols - 1) * out.cs;
        assert!(last < out.data.len(), "output view out of bounds");
    }
    let (m, n, k) = (out.rows, out.cols, a.cols);
    CALLS.with(|c| c.set(c.get() + 1));
    if m == 0 || n == 0 {
        return;
    }
    let par = match threads {
        Threads::One => faer::Par::Seq,
        Threads::Pool => {
            let n_threads = rayon::current_num_threads();
            // Tiny products are faster on one thread than split.
            if n_threads <= 1 || (m * n * k) < 48 * 48 * 48 {
                faer::Par::Seq
            } else {
                faer::Par::rayon(n_threads)
            }
        }
    };
    let accum = if beta == 0.0 { faer::Accum::Replace } else { faer::Accum::Add };
    // SAFETY: every view was bounds-checked above against its slice, and `out` is uniquely
    // borrowed, so it cannot alias `a` or `b`.
    unsafe {
        let dst = faer::MatMut::from_raw_parts_mut(out.data.as_mut_ptr(), m, n, out.rs as isize, out.cs as isize);
        let lhs = faer::MatRef::from_raw_parts(a.data.as_ptr(), m, k, a.rs as isize, a.cs as isize);
        let rhs = faer::MatRef::from_raw_parts(b.data.as_ptr(), k, n, b.rs as isize, b.cs as isize);
        faer::linalg::matmul::matmul(dst, accum, lhs, rhs, alpha, par);
    }
}

/// The naive triple loop, kept as the oracle for [`matmul`] in tests.
#[cfg(test)]
pub fn matmul_naive(out: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, beta: f32) {
    for i in 0..out.rows {
        for j in 0..out.cols {
            let mut acc = 0.0f64;
            for p in 0..a.cols {
                acc += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            let o = &mut out.data[i * out.rs + j * out.cs];
            *o = if beta == 0.0 { 0.0 } else { beta * *o } + alpha * acc as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{max_abs_diff, random_vec};

    #[test]
    fn matches_naive_for_every_transpose_and_accumulation() {
        let (m, k, n) = (37, 70, 29);
        for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
            for &beta in &[0.0f32, 1.0] {
                let a = random_vec(m * k, 1);
                let b = random_vec(k * n, 2);
                let av = if ta { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
                let bv = if tb { MatRef::new(&b, n, k).t() } else { MatRef::new(&b, k, n) };
                let mut fast = random_vec(m * n, 3);
                let mut slow = fast.clone();
                matmul(MatMut::new(&mut fast, m, n), av, bv, 0.7, beta, Threads::Pool);
                matmul_naive(MatMut::new(&mut slow, m, n), av, bv, 0.7, beta);
                assert!(max_abs_diff(&fast, &slow) < 1e-4, "ta={ta} tb={tb} beta={beta}");
            }
        }
    }

    #[test]
    fn column_blocks_address_only_their_block() {
        // out[:, 2..5] = a · b where out has row stride 8.
        let a = random_vec(4 * 3, 4);
        let b = random_vec(3 * 3, 5);
        let mut out = vec![9.0f32; 4 * 8];
        matmul(MatMut::cols_of(&mut out, 4, 8, 2, 3), MatRef::new(&a, 4, 3), MatRef::new(&b, 3, 3), 1.0, 0.0, Threads::One);
        let mut want = vec![0.0f32; 12];
        matmul_naive(MatMut::new(&mut want, 4, 3), MatRef::new(&a, 4, 3), MatRef::new(&b, 3, 3), 1.0, 0.0);
        for i in 0..4 {
            for j in 0..8 {
                let got = out[i * 8 + j];
                if (2..5).contains(&j) {
                    assert!((got - want[i * 3 + j - 2]).abs() < 1e-5);
                } else {
                    assert_eq!(got, 9.0);
                }
            }
        }
    }

    #[test]
    fn counts_calls_on_this_thread() {
        let before = calls();
        let a = vec![1.0f32; 4];
        let mut o = vec![0.0f32; 4];
        matmul(MatMut::new(&mut o, 2, 2), MatRef::new(&a, 2, 2), MatRef::new(&a, 2, 2), 1.0, 0.0, Threads::One);
        assert_eq!(calls(), before + 1);
        assert_eq!(o, vec![2.0; 4]);
    }
}
