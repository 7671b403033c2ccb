//! Choosing the next token from the logits: greedy (arg max, the first of equal maxima, as
//! `torch.argmax`), or sampling from softmax(logits / temperature) restricted to the `top_k`
//! largest logits and then to the smallest set of most likely tokens whose probability reaches
//! `top_p` (transformers' order: temperature, top-k, top-p), from a seeded generator, so that a
//! seed reproduces a generation exactly.
//!
//! Dimensions: V vocabulary.

use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 means greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` largest logits (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens up to cumulative probability `top_p` (1: all).
    pub top_p: f32,
    /// Seed of the sampling generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl SamplerConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the settings, naming the flag to fix.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::InvalidOption(format!("--temperature must be 0 (greedy) or positive, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidOption(format!("--top-p must be in (0, 1], got {}", self.top_p)));
        }
        Ok(())
    }
}

/// A token chooser with its random state.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: StdRng,
    /// Candidates (scaled logit, id), then (probability, id).
    cand: Vec<(f32, u32)>,
}

/// Index of the largest value (the first of equal maxima); NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut max = f32::NEG_INFINITY;
    for (i, &x) in logits.iter().enumerate() {
        if x > max {
            max = x;
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    /// A sampler; an error when the settings are out of range.
    pub fn new(config: SamplerConfig) -> Result<Sampler> {
        config.validate()?;
        Ok(Sampler { config, rng: StdRng::seed_from_u64(config.seed), cand: Vec::new() })
    }

    /// Its settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The next token from `logits` [V].
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let cfg = self.config;
        if cfg.is_greedy() || cfg.top_k == 1 {
            return argmax(logits);
        }
        let inv_t = 1.0 / cfg.temperature;
        self.cand.clear();
        self.cand.extend(logits.iter().enumerate().filter(|(_, x)| !x.is_nan()).map(|(i, &x)| (x * inv_t, i as u32)));
        if self.cand.is_empty() {
            return 0;
        }
        let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if cfg.top_k > 0 && cfg.top_k < self.cand.len() {
            self.cand.select_nth_unstable_by(cfg.top_k - 1, desc);
            self.cand.truncate(cfg.top_k);
        }
        let max = self.cand.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f64;
        for c in &mut self.cand {
            let p = ((c.0 - max) as f64).exp();
            c.0 = p as f32;
            total += p;
        }
        if cfg.top_p < 1.0 {
            // Most likely first; keep tokens while the mass before them is below top_p.
            self.cand.sort_unstable_by(desc);
            let limit = cfg.top_p as f64 * total;
            let mut before = 0.0f64;
            let mut keep = 0;
            for c in &self.cand {
                if keep > 0 && before >= limit {
                    break;
                }
                before += c.0 as f64;
                keep += 1;
            }
            self.cand.truncate(keep);
            total = before;
        }
        let mut u = self.rng.random::<f64>() * total;
        for c in &self.cand {
            u -= c.0 as f64;
            if u < 0.0 {
                return c.1;
            }
        }
        self.cand.last().map_or(0, |c| c.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(cfg: SamplerConfig, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut s = Sampler::new(cfg).unwrap();
        let mut n = vec![0; logits.len()];
        for _ in 0..draws {
            n[s.sample(logits) as usize] += 1;
        }
        n
    }

    fn sampling(temperature: f32, top_k: usize, top_p: f32) -> SamplerConfig {
        SamplerConfig { temperature, top_k, top_p, seed: 7 }
    }

    #[test]
    fn greedy_is_the_first_arg_max() {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -5.0, -6.0]), 1);
        // top-k 1 is greedy at any temperature.
        let mut s = Sampler::new(sampling(5.0, 1, 1.0)).unwrap();
        assert!((0..50).all(|_| s.sample(&[0.0, 0.2, 0.1]) == 1));
    }

    #[test]
    fn temperature_scales_the_softmax() {
        let logits = [0.0f32, 1.0, 2.0];
        let draws = 40_000;
        for t in [0.5f32, 1.0, 2.0] {
            let n = counts(sampling(t, 0, 1.0), &logits, draws);
            let z: f64 = logits.iter().map(|l| (*l as f64 / t as f64).exp()).sum();
            for (i, l) in logits.iter().enumerate() {
                let want = (*l as f64 / t as f64).exp() / z;
                let got = n[i] as f64 / draws as f64;
                assert!((got - want).abs() < 0.01, "t={t} token {i}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn top_k_draws_only_among_the_k_largest() {
        let logits = [1.0f32, 5.0, 2.0, 4.0, 3.0, 0.0];
        let n = counts(sampling(10.0, 3, 1.0), &logits, 20_000);
        assert_eq!((n[0], n[2], n[5]), (0, 0, 0), "{n:?}");
        // At a high temperature the three survivors are nearly uniform.
        for i in [1, 3, 4] {
            assert!(n[i] > 5_500, "{n:?}");
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Probabilities 0.4, 0.35, 0.25 (logits are their logs).
        let logits: Vec<f32> = [0.4f32, 0.35, 0.25].iter().map(|p| p.ln()).collect();
        let draws = 40_000;
        // 0.4 < 0.5, so the second token is needed too; the third is never drawn.
        let n = counts(sampling(1.0, 0, 0.5), &logits, draws);
        assert_eq!(n[2], 0, "{n:?}");
        let share = n[0] as f64 / draws as f64;
        assert!((share - 0.4 / 0.75).abs() < 0.01, "{share}");
        // A tiny top-p keeps only the most likely token; top-p 1 keeps all.
        assert_eq!(counts(sampling(1.0, 0, 0.01), &logits, 500), vec![500, 0, 0]);
        assert!(counts(sampling(1.0, 0, 1.0), &logits, 2_000)[2] > 0);
        // top-k then top-p: top-k 2 leaves 0.4 / 0.75 and 0.35 / 0.75; top-p 0.5 then keeps just the first.
        assert_eq!(counts(sampling(1.0, 2, 0.5), &logits, 500), vec![500, 0, 0]);
    }

    #[test]
    fn a_seed_reproduces_the_draws() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 50, top_p: 0.9, seed }).unwrap();
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let e = Sampler::new(SamplerConfig { temperature: -1.0, ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("--temperature"), "{e}");
        let e = Sampler::new(SamplerConfig { temperature: 1.0, top_p: 0.0, ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("--top-p"), "{e}");
    }
}
