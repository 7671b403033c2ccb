//! How A and B start: PEFT's `init_lora_weights` (kaiming-uniform `true`, `gaussian`, `pissa`,
//! `pissa_niter_K`, `olora`) and the seed's N(0, 1/r). PiSSA and OLoRA take A and B from the base
//! weight's SVD or QR (faer, in f64, on one thread so the result never depends on the thread
//! count) and turn the weight into the residual W₀ − scale·(A·B)ᵀ, as PEFT's `pissa_init` /
//! `olora_init` do.
//!
//! Dimensions: O output features, I input features, r rank; W [O, I], A [I, r], B [r, O]
//! (PEFT: lora_A.weight = Aᵀ [r, I], lora_B.weight = Bᵀ [O, r]).

use super::config::Init;
use crate::error::{Error, Result};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::{Mat, MatRef, Par};
use rand::Rng;
use rand_distr::{Distribution, Normal, StandardNormal, Uniform};

/// A and B of a fresh layer: A [I, r], B [r, O].
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    /// A [I, r].
    pub a: Vec<f32>,
    /// B [r, O].
    pub b: Vec<f32>,
}

/// Initialises A and B of `module` (weight `w` [O, I]) per `init`; the residual inits rewrite `w`.
/// The random ones draw A from `rng` in A's row-major order (the seed's order).
#[allow(clippy::too_many_arguments)]
pub fn initialise(init: Init, module: &str, w: &mut [f32], o: usize, i: usize, r: usize, scale: f32, rng: &mut impl Rng) -> Result<Start> {
    let random = |dist: &dyn Fn(&mut dyn rand::RngCore) -> f32, rng: &mut dyn rand::RngCore| {
        let a: Vec<f32> = (0..i * r).map(|_| dist(rng)).collect();
        Start { a, b: vec![0.0; r * o] }
    };
    match init {
        Init::Raschka => {
            let normal = Normal::new(0.0f32, 1.0 / (r as f32).sqrt()).expect("valid std");
            Ok(random(&|g| normal.sample(g), rng))
        }
        Init::Gaussian => {
            // nn.init.normal_(lora_A.weight, std=1/r)
            let normal = Normal::new(0.0f32, 1.0 / r as f32).expect("valid std");
            Ok(random(&|g| normal.sample(g), rng))
        }
        Init::Kaiming => {
            // kaiming_uniform_(a=√5) on lora_A.weight [r, in]: bound = 1/√in.
            let bound = 1.0 / (i as f32).sqrt();
            let u = Uniform::new(-bound, bound).expect("valid bounds");
            Ok(random(&|g| u.sample(g), rng))
        }
        Init::Pissa | Init::PissaNiter(_) => {
            check_rank(module, "PiSSA", o, i, r)?;
            let wm = to_mat(w, o, i);
            let (u, s, v) = match init {
                Init::Pissa => thin_svd(wm.as_ref(), module)?,
                Init::PissaNiter(niter) => svd_lowrank(wm.as_ref(), r, niter, rng, module)?,
                _ => unreachable!(),
            };
            let tol = s[0] * o.max(i) as f64 * f32::EPSILON as f64;
            let rank = s.iter().filter(|v| **v > tol).count();
            if rank < r {
                return Err(Error::LoraModule {
                    module: module.into(),
                    message: format!(
                        "PiSSA needs r <= the weight's rank, but its rank is {rank} < r = {r}: {} components would start (and stay) zero; lower --lora-r or set this module's rank with --rank-pattern",
                        r - rank
                    ),
                });
            }
            // lora_A.weight = diag(√(S/scale)) Vᵀ, lora_B.weight = U diag(√(S/scale)).
            let sq: Vec<f64> = s[..r].iter().map(|v| (v / scale as f64).sqrt()).collect();
            let a = (0..i * r).map(|idx| (sq[idx % r] * v[(idx / r, idx % r)]) as f32).collect();
            let b = (0..r * o).map(|idx| (u[(idx % o, idx / o)] * sq[idx / o]) as f32).collect();
            let start = Start { a, b };
            subtract(w, &start, o, i, r, scale);
            Ok(start)
        }
        Init::Olora => {
            check_rank(module, "OLoRA", o, i, r)?;
            let (q, rr) = thin_qr(to_mat(w, o, i).as_ref());
            // lora_A.weight = R[:r] [r, I], lora_B.weight = Q[:, :r] [O, r].
            let a = (0..i * r).map(|idx| rr[(idx % r, idx / r)] as f32).collect();
            let b = (0..r * o).map(|idx| q[(idx % o, idx / o)] as f32).collect();
            let start = Start { a, b };
            subtract(w, &start, o, i, r, scale);
            Ok(start)
        }
    }
}

fn check_rank(module: &str, what: &str, o: usize, i: usize, r: usize) -> Result<()> {
    if r > o.min(i) {
        return Err(Error::LoraModule {
            module: module.into(),
            message: format!(
                "{what} needs r <= min(out, in) = {} (the largest rank a {o}×{i} weight can have), got r = {r}; lower --lora-r or set this module's rank with --rank-pattern",
                o.min(i)
            ),
        });
    }
    Ok(())
}

/// w ← w − scale·(A·B)ᵀ, accumulated in f64 from the f32 factors (so w + scale·(A·B)ᵀ gives
/// back the original to f32 rounding).
fn subtract(w: &mut [f32], s: &Start, o: usize, i: usize, r: usize, scale: f32) {
    for j in 0..o {
        for k in 0..i {
            let d: f64 = (0..r).map(|t| s.a[k * r + t] as f64 * s.b[t * o + j] as f64).sum();
            let idx = j * i + k;
            w[idx] = (w[idx] as f64 - scale as f64 * d) as f32;
        }
    }
}

fn to_mat(w: &[f32], o: usize, i: usize) -> Mat<f64> {
    Mat::from_fn(o, i, |j, k| w[j * i + k] as f64)
}

/// Thin SVD A = U diag(S) Vᵀ (U [m, k], S [k] non-increasing, V [n, k], k = min(m, n)).
pub fn thin_svd(a: MatRef<'_, f64>, module: &str) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>)> {
    use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors};
    let (m, n) = a.shape();
    let k = m.min(n);
    let (mut u, mut v, mut s) = (Mat::<f64>::zeros(m, k), Mat::<f64>::zeros(n, k), faer::diag::Diag::<f64>::zeros(k));
    let req = svd_scratch::<f64>(m, n, ComputeSvdVectors::Thin, ComputeSvdVectors::Thin, Par::Seq, Default::default());
    svd(a, s.as_mut(), Some(u.as_mut()), Some(v.as_mut()), Par::Seq, MemStack::new(&mut MemBuffer::new(req)), Default::default())
        .map_err(|e| Error::LoraModule { module: module.into(), message: format!("the SVD of the weight did not converge ({e:?})") })?;
    let s = (0..k).map(|t| s[t]).collect();
    Ok((u, s, v))
}

/// Thin QR A = Q R by Householder reflections (LAPACK's sign convention: R's diagonal has the
/// opposite sign of the pivot), Q [m, k], R [k, n], k = min(m, n).
pub fn thin_qr(a: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>) {
    use faer::linalg::householder::{
        apply_block_householder_sequence_on_the_left_in_place_scratch as apply_scratch,
        apply_block_householder_sequence_on_the_left_in_place_with_conj as apply,
    };
    use faer::linalg::qr::no_pivoting::factor::{qr_in_place, qr_in_place_scratch, recommended_block_size};
    let (m, n) = a.shape();
    let k = m.min(n);
    let mut qr = a.to_owned();
    let bs = recommended_block_size::<f64>(m, n);
    let mut coeff = Mat::<f64>::zeros(bs, k);
    let req = qr_in_place_scratch::<f64>(m, n, bs, Par::Seq, Default::default());
    qr_in_place(qr.as_mut(), coeff.as_mut(), Par::Seq, MemStack::new(&mut MemBuffer::new(req)), Default::default());
    let r = Mat::from_fn(k, n, |row, col| if col >= row { qr[(row, col)] } else { 0.0 });
    // The Householder basis: the unit lower trapezoid [m, k].
    let basis = Mat::from_fn(m, k, |row, col| match row.cmp(&col) {
        std::cmp::Ordering::Greater => qr[(row, col)],
        std::cmp::Ordering::Equal => 1.0,
        std::cmp::Ordering::Less => 0.0,
    });
    let mut q = Mat::<f64>::identity(m, k);
    let req = apply_scratch::<f64>(m, bs, k);
    apply(basis.as_ref(), coeff.as_ref(), faer::Conj::No, q.as_mut(), Par::Seq, MemStack::new(&mut MemBuffer::new(req)));
    (q, r)
}

/// torch.svd_lowrank(A, q, niter) (Halko et al. 2009, Algorithm 5.1 with 4.4), with the
/// Gaussian test matrix drawn from `rng`: the top-q singular triplets, approximately.
pub fn svd_lowrank(a: MatRef<'_, f64>, q: usize, niter: u32, rng: &mut impl Rng, module: &str) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>)> {
    let (m, n) = a.shape();
    // Work on the tall orientation, as torch does.
    let tall = if m < n { a.transpose().to_owned() } else { a.to_owned() };
    let (tm, tn) = tall.shape();
    let omega = Mat::from_fn(tn, q, |_, _| {
        let v: f64 = StandardNormal.sample(rng);
        v
    });
    let mul = |x: MatRef<'_, f64>, y: MatRef<'_, f64>| {
        let mut out = Mat::<f64>::zeros(x.nrows(), y.ncols());
        faer::linalg::matmul::matmul(out.as_mut(), faer::Accum::Replace, x, y, 1.0, Par::Seq);
        out
    };
    let mut basis = thin_qr(mul(tall.as_ref(), omega.as_ref()).as_ref()).0;
    for _ in 0..niter {
        basis = thin_qr(mul(tall.transpose(), basis.as_ref()).as_ref()).0;
        basis = thin_qr(mul(tall.as_ref(), basis.as_ref()).as_ref()).0;
    }
    debug_assert_eq!(basis.nrows(), tm);
    let small = mul(basis.transpose(), tall.as_ref());
    let (u, s, v) = thin_svd(small.as_ref(), module)?;
    let u = mul(basis.as_ref(), u.as_ref());
    Ok(if m < n { (v, s, u) } else { (u, s, v) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::random_vec;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(3)
    }

    /// w_res + scale·(A·B)ᵀ, which every init must leave equal to the original weight.
    fn rebuilt(w: &[f32], s: &Start, o: usize, i: usize, r: usize, scale: f32) -> Vec<f32> {
        let mut out = w.to_vec();
        for j in 0..o {
            for k in 0..i {
                out[j * i + k] += scale * (0..r).map(|t| s.a[k * r + t] * s.b[t * o + j]).sum::<f32>();
            }
        }
        out
    }

    #[test]
    fn residual_inits_keep_the_layer_s_function() {
        let (o, i, r, scale) = (7, 5, 3, 0.5);
        for init in [Init::Pissa, Init::PissaNiter(4), Init::Olora] {
            let w0 = random_vec(o * i, 1);
            let mut w = w0.clone();
            let s = initialise(init, "m", &mut w, o, i, r, scale, &mut rng()).unwrap();
            assert!(s.b.iter().any(|v| *v != 0.0), "{init}: B is not zero");
            let back = rebuilt(&w, &s, o, i, r, scale);
            assert!(crate::ops::testing::max_abs_diff(&back, &w0) < 1e-5, "{init}");
            assert!(crate::ops::testing::max_abs_diff(&w, &w0) > 0.1, "{init}: the base became a residual");
        }
    }

    #[test]
    fn pissa_takes_the_top_singular_triplets_and_olora_the_qr() {
        // W = diag(3, 2, 1) padded: the top-2 PiSSA update is the first two diagonal entries.
        let (o, i, r) = (4, 3, 2);
        let mut w = vec![0.0f32; o * i];
        for (t, v) in [3.0f32, 2.0, 1.0].iter().enumerate() {
            w[t * i + t] = *v;
        }
        let s = initialise(Init::Pissa, "m", &mut w, o, i, r, 1.0, &mut rng()).unwrap();
        let mut want = vec![0.0f32; o * i];
        want[2 * i + 2] = 1.0;
        assert!(crate::ops::testing::max_abs_diff(&w, &want) < 1e-6, "{w:?}");
        // A columns have norm √σ (σ = 3, 2).
        for (t, sigma) in [3.0f32, 2.0].iter().enumerate() {
            let n: f32 = (0..i).map(|k| s.a[k * r + t] * s.a[k * r + t]).sum::<f32>().sqrt();
            assert!((n - sigma.sqrt()).abs() < 1e-5, "{n}");
        }
        // OLoRA: B's columns are orthonormal, and B·A reproduces W's first rows' span.
        let w0 = random_vec(o * i, 8);
        let mut w = w0.clone();
        let s = initialise(Init::Olora, "m", &mut w, o, i, 3, 1.0, &mut rng()).unwrap();
        for t in 0..3 {
            for u in 0..3 {
                let d: f32 = (0..o).map(|j| s.b[t * o + j] * s.b[u * o + j]).sum();
                assert!((d - if t == u { 1.0 } else { 0.0 }).abs() < 1e-5);
            }
        }
        // Rank 3 = min(4, 3): the residual is zero.
        assert!(w.iter().all(|v| v.abs() < 1e-5), "{w:?}");
    }

    #[test]
    fn qr_follows_lapack_s_signs() {
        // torch.linalg.qr(torch.tensor([[1., 2.], [3., 4.], [5., 6.]])) gives R = [[-5.9161, -7.4374], [0, 0.8281]].
        let a = Mat::from_fn(3, 2, |r, c| [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]][r][c]);
        let (q, r) = thin_qr(a.as_ref());
        assert!((r[(0, 0)] + 5.916_08).abs() < 1e-4 && (r[(0, 1)] + 7.437_38).abs() < 1e-4 && (r[(1, 1)] - 0.828_08).abs() < 1e-4);
        assert!((q[(0, 0)] + 0.169_03).abs() < 1e-4);
    }

    #[test]
    fn rank_errors_name_the_module_and_the_fix() {
        let mut w = random_vec(4 * 3, 1);
        let e = initialise(Init::Pissa, "enc.q", &mut w, 4, 3, 4, 1.0, &mut rng()).err().unwrap().to_string();
        assert!(e.contains("enc.q") && e.contains("min(out, in) = 3") && e.contains("--lora-r"), "{e}");
        // A rank-1 weight cannot give 2 PiSSA components.
        let mut w: Vec<f32> = (0..12).map(|k| ((k / 3) as f32 + 1.0) * ((k % 3) as f32 + 1.0)).collect();
        let e = initialise(Init::Pissa, "enc.q", &mut w, 4, 3, 2, 1.0, &mut rng()).err().unwrap().to_string();
        assert!(e.contains("rank is 1"), "{e}");
        let mut w = random_vec(4 * 3, 1);
        assert!(initialise(Init::Olora, "enc.q", &mut w, 4, 3, 5, 1.0, &mut rng()).is_err());
    }

    #[test]
    fn random_inits_have_their_spreads() {
        let (o, i, r) = (2, 4096, 4);
        let std = |s: &Start| (s.a.iter().map(|v| v * v).sum::<f32>() / s.a.len() as f32).sqrt();
        let mut w = vec![0.0; o * i];
        let g = initialise(Init::Gaussian, "m", &mut w, o, i, r, 1.0, &mut rng()).unwrap();
        assert!((std(&g) - 0.25).abs() < 0.01, "gaussian std {}", std(&g));
        let k = initialise(Init::Kaiming, "m", &mut w, o, i, r, 1.0, &mut rng()).unwrap();
        assert!(k.a.iter().all(|v| v.abs() <= 1.0 / 64.0) && k.b.iter().all(|v| *v == 0.0));
        let s = initialise(Init::Raschka, "m", &mut w, o, i, r, 1.0, &mut rng()).unwrap();
        assert!((std(&s) - 0.5).abs() < 0.02);
        assert!(w.iter().all(|v| *v == 0.0), "random inits leave the base alone");
    }
}
