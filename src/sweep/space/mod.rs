//! Search spaces: reading a space file (TOML or JSON) or a preset, and expanding it into the list of trials.
//!
//! A space file looks like this (JSON; the TOML form has the same keys, with `params` as a table):
//!
//! ```json
//! {"method": "random", "seed": 0, "trials": 24,
//!  "params": {"lora_r": [1, 4, 16], "lora_alpha": [1, 8], "lora_mlp": [true, false],
//!             "lr": {"log_uniform": [1e-5, 1e-3]}, "epochs": {"int_range": [1, 3]},
//!             "lora_dropout": {"uniform": [0.0, 0.1]}, "scaling": "peft"}}
//! ```
//!
//! A scalar is a fixed value, a list is a set of choices, and `uniform`, `log_uniform` and `int_range`
//! are inclusive ranges (random search only). A grid is the cartesian product of the lists, in the order
//! the parameters appear in the file, the first one varying slowest. A random search draws every
//! parameter independently from a generator seeded with `seed`, and never repeats a trial.

mod param;

pub use param::{known_params, ParamSpec};

use super::{Result, SweepError};
use param::parse_param;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

/// One trial's parameters: train option names (snake_case) to values.
pub type TrialParams = BTreeMap<String, Value>;

/// The names of the preset spaces, for `--space NAME`.
pub const PRESETS: &[&str] = &["raschka-grid"];

/// The most points a grid may have (and the most trials a random search may ask for).
pub const MAX_TRIALS: usize = 1_000_000;

/// How the trials are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Every combination of the listed values.
    Grid,
    /// A budget of independently drawn combinations.
    Random,
}

impl Method {
    /// The name used in space files.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Grid => "grid",
            Method::Random => "random",
        }
    }
}

/// A search space: how to choose trials, and the values each varied train option takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    /// Where the space came from (a file path or `preset NAME`), for messages.
    pub origin: String,
    /// Grid or random search.
    pub method: Method,
    /// The random generator's seed (random search only; kept for the record in a grid).
    pub seed: u64,
    /// The number of trials of a random search; `None` for a grid.
    pub trials: Option<usize>,
    /// The parameters, in the order they appear in the file.
    pub params: Vec<(String, ParamSpec)>,
}

/// The raw file layout, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpace {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    trials: Option<usize>,
    params: OrderedParams,
}

/// A map that keeps its keys in file order (serde_json's and toml's maps may sort them).
struct OrderedParams(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedParams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of train option names to values, lists or ranges")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<OrderedParams, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.iter().any(|(n, _)| *n == k) {
                        return Err(serde::de::Error::custom(format!("parameter {k} appears twice")));
                    }
                    out.push((k, v));
                }
                Ok(OrderedParams(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl Space {
    /// Reads a space file; the format follows the extension (`.toml` or `.json`).
    pub fn load(path: &Path) -> Result<Space> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let is_toml = match ext.as_deref() {
            Some("toml") => true,
            Some("json") => false,
            _ => return Err(SweepError::SpaceExtension { path: path.to_path_buf(), presets: PRESETS.join(", ") }),
        };
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Io { action: "read", path: path.to_path_buf(), source })?;
        let origin = path.display().to_string();
        if is_toml {
            Space::from_toml_str(&text, &origin)
        } else {
            Space::from_json_str(&text, &origin)
        }
    }

    /// Resolves a `--space` argument: an existing file, else a preset name.
    pub fn from_arg(arg: &str) -> Result<Space> {
        let path = Path::new(arg);
        if path.exists() {
            return Space::load(path);
        }
        if let Some(space) = preset(arg) {
            return Ok(space);
        }
        if path.extension().is_some() {
            // Looks like a file name: report the missing file rather than an unknown preset.
            return Space::load(path);
        }
        Err(SweepError::UnknownSpace { arg: arg.to_string(), presets: PRESETS.join(", ") })
    }

    /// Parses a space written as JSON; `origin` names its source in messages.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Space> {
        let raw: RawSpace = serde_json::from_str(text)
            .map_err(|e| SweepError::MalformedSpace { origin: origin.to_string(), message: format!("invalid JSON: {e}") })?;
        Space::from_raw(raw, origin)
    }

    /// Parses a space written as TOML; `origin` names its source in messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Space> {
        let raw: RawSpace = toml::from_str(text).map_err(|e| SweepError::MalformedSpace {
            origin: origin.to_string(),
            message: format!("invalid TOML: {}", e.to_string().trim_end()),
        })?;
        Space::from_raw(raw, origin)
    }

    fn from_raw(raw: RawSpace, origin: &str) -> Result<Space> {
        let invalid = |message: String| SweepError::InvalidSpace { origin: origin.to_string(), message };
        let method = match raw.method.as_deref() {
            None | Some("grid") => Method::Grid,
            Some("random") => Method::Random,
            Some(other) => return Err(invalid(format!("method {other:?} is unknown; use \"grid\" or \"random\""))),
        };
        let trials = match (method, raw.trials) {
            (Method::Grid, Some(_)) => {
                return Err(invalid(
                    "trials is the budget of a random search, but a grid runs every point; remove trials or set method = \"random\"".into(),
                ))
            }
            (Method::Grid, None) => None,
            (Method::Random, None) => {
                return Err(invalid("a random search needs a budget; add trials = N (the number of trials to draw)".into()))
            }
            (Method::Random, Some(0)) => return Err(invalid("trials = 0 would run nothing; set trials to 1 or more".into())),
            (Method::Random, Some(n)) if n > MAX_TRIALS => {
                return Err(invalid(format!("trials = {n} is more than the limit of {MAX_TRIALS}; ask for fewer trials")))
            }
            (Method::Random, Some(n)) => Some(n),
        };
        let mut params = Vec::with_capacity(raw.params.0.len());
        for (name, value) in raw.params.0 {
            let spec = parse_param(origin, &name, value)?;
            if method == Method::Grid && spec.is_range() {
                return Err(SweepError::RangeInGrid { origin: origin.to_string(), name });
            }
            params.push((name, spec));
        }
        Ok(Space { origin: origin.to_string(), method, seed: raw.seed.unwrap_or(0), trials, params })
    }

    /// The space as a JSON space file (parameters in their original order); [`Space::from_json_str`] reads it back.
    pub fn to_json_string(&self) -> String {
        let mut out = format!("{{\"method\":\"{}\",\"seed\":{}", self.method.as_str(), self.seed);
        if let Some(n) = self.trials {
            out.push_str(&format!(",\"trials\":{n}"));
        }
        out.push_str(",\"params\":{");
        for (i, (name, spec)) in self.params.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(name.clone()).to_string());
            out.push(':');
            out.push_str(&spec.to_json().to_string());
        }
        out.push_str("}}");
        out
    }

    /// Expands the space into its trials: every grid point in cartesian order, or the random budget
    /// (distinct trials, reproducible from the seed).
    pub fn trials(&self) -> Result<Vec<TrialParams>> {
        match self.method {
            Method::Grid => self.grid(),
            Method::Random => self.random(),
        }
    }

    fn grid(&self) -> Result<Vec<TrialParams>> {
        let mut axes: Vec<(&str, Vec<&Value>)> = Vec::with_capacity(self.params.len());
        let mut total: usize = 1;
        for (name, spec) in &self.params {
            let values: Vec<&Value> = match spec {
                ParamSpec::Fixed(v) => vec![v],
                ParamSpec::Choice(vs) => vs.iter().collect(),
                _ => return Err(SweepError::RangeInGrid { origin: self.origin.clone(), name: name.clone() }),
            };
            total = total.checked_mul(values.len()).filter(|t| *t <= MAX_TRIALS).ok_or_else(|| SweepError::InvalidSpace {
                origin: self.origin.clone(),
                message: format!(
                    "the grid has more than {MAX_TRIALS} points; list fewer values, or set method = \"random\" with a trials budget"
                ),
            })?;
            axes.push((name, values));
        }
        // Odometer over the axes: the last axis varies fastest.
        let mut out = Vec::with_capacity(total);
        let mut idx = vec![0usize; axes.len()];
        for _ in 0..total {
            out.push(axes.iter().zip(&idx).map(|((name, values), &i)| (name.to_string(), values[i].clone())).collect());
            for a in (0..axes.len()).rev() {
                idx[a] += 1;
                if idx[a] < axes[a].1.len() {
                    break;
                }
                idx[a] = 0;
            }
        }
        Ok(out)
    }

    fn random(&self) -> Result<Vec<TrialParams>> {
        let budget = self.trials.unwrap_or(0);
        let invalid = |message: String| SweepError::InvalidSpace { origin: self.origin.clone(), message };
        let distinct = self.params.iter().try_fold(1u128, |acc, (_, spec)| spec.cardinality().map(|c| acc.saturating_mul(c)));
        if let Some(d) = distinct {
            if d < budget as u128 {
                return Err(invalid(format!(
                    "trials = {budget} but the space has only {d} distinct points; lower trials to {d} or fewer, or set method = \"grid\" to run them all"
                )));
            }
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut seen = HashSet::with_capacity(budget);
        let mut out = Vec::with_capacity(budget);
        let max_draws = budget.saturating_mul(100).max(10_000);
        for _ in 0..max_draws {
            if out.len() == budget {
                break;
            }
            let trial: TrialParams = self.params.iter().map(|(name, spec)| (name.clone(), spec.sample(&mut rng))).collect();
            if seen.insert(trial_key(&trial)) {
                out.push(trial);
            }
        }
        if out.len() < budget {
            return Err(invalid(format!(
                "drew only {} distinct trials of the {budget} asked for; the space has too few points: lower trials or widen the ranges",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// A stable identity for a trial: its parameters as compact JSON with sorted keys. Used to dedupe
/// trials and to recognise them across restarts.
pub fn trial_key(params: &TrialParams) -> String {
    // BTreeMap iterates in key order, and every value is a scalar, so this is canonical.
    let mut out = String::from("{");
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

/// A preset space by name (see [`PRESETS`]).
///
/// `raschka-grid` is the seed project's sweep: alpha {1,4,8,16,32,64} × rank {1,2,4,8,16,32} × LoRA on
/// key, projection, mlp and head each on or off, with query and value always on and Raschka's scaling
/// (576 trials).
pub fn preset(name: &str) -> Option<Space> {
    match name {
        "raschka-grid" => {
            let nums = |xs: &[i64]| ParamSpec::Choice(xs.iter().map(|&x| Value::from(x)).collect());
            let floats = |xs: &[f64]| ParamSpec::Choice(xs.iter().map(|&x| Value::from(x)).collect());
            let on_off = || ParamSpec::Choice(vec![Value::Bool(true), Value::Bool(false)]);
            let on = || ParamSpec::Fixed(Value::Bool(true));
            let params = vec![
                ("lora_alpha".to_string(), floats(&[1.0, 4.0, 8.0, 16.0, 32.0, 64.0])),
                ("lora_r".to_string(), nums(&[1, 2, 4, 8, 16, 32])),
                ("lora_query".to_string(), on()),
                ("lora_key".to_string(), on_off()),
                ("lora_value".to_string(), on()),
                ("lora_projection".to_string(), on_off()),
                ("lora_mlp".to_string(), on_off()),
                ("lora_head".to_string(), on_off()),
                ("scaling".to_string(), ParamSpec::Fixed(Value::from("raschka"))),
            ];
            Some(Space { origin: format!("preset {name}"), method: Method::Grid, seed: 0, trials: None, params })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn json(text: &str) -> Result<Space> {
        Space::from_json_str(text, "test.json")
    }

    #[test]
    fn raschka_preset_has_576_unique_trials_with_36_rank_alpha_pairs() {
        let space = preset("raschka-grid").expect("preset exists");
        let trials = space.trials().expect("grid expands");
        assert_eq!(trials.len(), 576);
        let keys: BTreeSet<String> = trials.iter().map(trial_key).collect();
        assert_eq!(keys.len(), 576);
        let pairs: BTreeSet<String> = trials.iter().map(|t| format!("{}/{}", t["lora_r"], t["lora_alpha"])).collect();
        assert_eq!(pairs.len(), 36);
        for t in &trials {
            assert_eq!(t["lora_query"], Value::Bool(true));
            assert_eq!(t["lora_value"], Value::Bool(true));
            assert_eq!(t["scaling"], Value::from("raschka"));
        }
        let on = |key: &str| trials.iter().filter(|t| t[key] == Value::Bool(true)).count();
        for key in ["lora_key", "lora_projection", "lora_mlp", "lora_head"] {
            assert_eq!(on(key), 288, "{key}");
        }
        assert!(preset("no-such-preset").is_none());
        for name in PRESETS {
            assert!(preset(name).is_some(), "{name}");
        }
    }

    #[test]
    fn grid_is_the_cartesian_product_in_file_order() {
        // File order (lora_r before lora_alpha) is not alphabetical: the first key must vary slowest.
        let space =
            json(r#"{"method": "grid", "params": {"lora_r": [4, 1], "scaling": "peft", "lora_alpha": [8, 2], "lora_mlp": [true, false]}}"#)
                .expect("parses");
        assert_eq!(space.params.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["lora_r", "scaling", "lora_alpha", "lora_mlp"]);
        let got: Vec<(i64, f64, bool)> = space
            .trials()
            .expect("expands")
            .iter()
            .map(|t| (t["lora_r"].as_i64().unwrap(), t["lora_alpha"].as_f64().unwrap(), t["lora_mlp"].as_bool().unwrap()))
            .collect();
        let want = vec![
            (4, 8.0, true),
            (4, 8.0, false),
            (4, 2.0, true),
            (4, 2.0, false),
            (1, 8.0, true),
            (1, 8.0, false),
            (1, 2.0, true),
            (1, 2.0, false),
        ];
        assert_eq!(got, want);
        // The same space in TOML keeps the same order.
        let toml_space = Space::from_toml_str(
            "method = \"grid\"\n[params]\nlora_r = [4, 1]\nscaling = \"peft\"\nlora_alpha = [8, 2]\nlora_mlp = [true, false]\n",
            "test.toml",
        )
        .expect("parses");
        assert_eq!(toml_space.trials().unwrap(), space.trials().unwrap());
    }

    #[test]
    fn values_are_normalised_so_keys_are_stable() {
        let space = json(r#"{"params": {"lr": 1, "lora_alpha": [2, 4.0], "lora_r": 8}}"#).unwrap();
        let trials = space.trials().unwrap();
        assert_eq!(trial_key(&trials[0]), r#"{"lora_alpha":2.0,"lora_r":8,"lr":1.0}"#);
        assert_eq!(trial_key(&trials[1]), r#"{"lora_alpha":4.0,"lora_r":8,"lr":1.0}"#);
    }

    #[test]
    fn random_is_reproducible_within_bounds_and_distinct() {
        let text = r#"{"method": "random", "seed": 7, "trials": 40, "params": {
            "lora_r": [1, 4, 16], "lora_alpha": [1, 8], "lora_mlp": [true, false],
            "lr": {"log_uniform": [1e-5, 1e-3]}, "epochs": {"int_range": [1, 3]},
            "lora_dropout": {"uniform": [0.0, 0.1]}, "scaling": "peft"}}"#;
        let a = json(text).unwrap().trials().unwrap();
        let b = json(text).unwrap().trials().unwrap();
        assert_eq!(a.len(), 40);
        assert_eq!(a, b);
        let other_seed = json(&text.replace("\"seed\": 7", "\"seed\": 8")).unwrap().trials().unwrap();
        assert_ne!(a, other_seed);
        assert_eq!(a.iter().map(trial_key).collect::<BTreeSet<_>>().len(), 40);
        let mut epochs_seen = BTreeSet::new();
        for t in &a {
            assert!([1, 4, 16].contains(&t["lora_r"].as_i64().unwrap()));
            assert!([1.0, 8.0].contains(&t["lora_alpha"].as_f64().unwrap()));
            let lr = t["lr"].as_f64().unwrap();
            assert!((1e-5..=1e-3).contains(&lr), "{lr}");
            let e = t["epochs"].as_i64().unwrap();
            assert!((1..=3).contains(&e));
            epochs_seen.insert(e);
            assert!((0.0..=0.1).contains(&t["lora_dropout"].as_f64().unwrap()));
            assert_eq!(t["scaling"], Value::from("peft"));
        }
        assert_eq!(epochs_seen.len(), 3, "40 draws should hit every epoch count");
    }

    #[test]
    fn random_refuses_a_budget_larger_than_the_space() {
        let err = json(r#"{"method": "random", "trials": 5, "params": {"lora_r": [1, 2], "lora_mlp": [true, false]}}"#)
            .unwrap()
            .trials()
            .unwrap_err();
        assert!(err.to_string().contains("only 4 distinct points"), "{err}");
        let all = json(r#"{"method": "random", "trials": 4, "params": {"lora_r": [1, 2], "lora_mlp": [true, false]}}"#)
            .unwrap()
            .trials()
            .unwrap();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn range_in_grid_says_to_use_random_or_a_list() {
        let err = json(r#"{"method": "grid", "params": {"lr": {"log_uniform": [1e-5, 1e-3]}}}"#).unwrap_err();
        assert!(matches!(err, SweepError::RangeInGrid { .. }));
        let msg = err.to_string();
        assert!(msg.contains("lr") && msg.contains("random") && msg.contains("list"), "{msg}");
    }

    #[test]
    fn malformed_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad_json = dir.path().join("space.json");
        std::fs::write(&bad_json, "{\"params\": {\"lora_r\": [1, 2}").unwrap();
        let err = Space::load(&bad_json).unwrap_err().to_string();
        assert!(err.contains("space.json") && err.contains("invalid JSON"), "{err}");

        let bad_toml = dir.path().join("space.toml");
        std::fs::write(&bad_toml, "method = grid\n[params]\n").unwrap();
        let err = Space::load(&bad_toml).unwrap_err().to_string();
        assert!(err.contains("space.toml") && err.contains("invalid TOML"), "{err}");

        let unknown_field = dir.path().join("typo.toml");
        std::fs::write(&unknown_field, "methd = \"grid\"\n[params]\nlora_r = 1\n").unwrap();
        let err = Space::load(&unknown_field).unwrap_err().to_string();
        assert!(err.contains("typo.toml") && err.contains("methd"), "{err}");

        let yaml = dir.path().join("space.yaml");
        std::fs::write(&yaml, "").unwrap();
        assert!(matches!(Space::load(&yaml), Err(SweepError::SpaceExtension { .. })));

        let missing = dir.path().join("missing.toml");
        assert!(matches!(Space::from_arg(missing.to_str().unwrap()), Err(SweepError::Io { .. })));
        assert!(matches!(Space::from_arg("raschka-gird"), Err(SweepError::UnknownSpace { .. })));
        assert_eq!(Space::from_arg("raschka-grid").unwrap(), preset("raschka-grid").unwrap());
    }

    #[test]
    fn invalid_values_and_settings_are_errors() {
        let cases = [
            (r#"{"params": {"lora_r": 0}}"#, "whole number >= 1"),
            (r#"{"params": {"lora_mlp": "yes"}}"#, "true or false"),
            (r#"{"params": {"scaling": "lora"}}"#, "\"raschka\", \"peft\", \"rslora\""),
            (r#"{"params": {"lora_dropout": 1.0}}"#, "< 1"),
            (r#"{"params": {"lora_r": [1, 1]}}"#, "twice"),
            (r#"{"method": "random", "trials": 3, "params": {"lr": {"log_uniform": [0, 1e-3]}}}"#, "> 0"),
            (r#"{"method": "random", "trials": 3, "params": {"lr": {"uniform": [1e-3, 1e-5]}}}"#, "reversed"),
            (r#"{"method": "random", "trials": 3, "params": {"lora_r": {"uniform": [1, 4]}}}"#, "int_range"),
            (r#"{"method": "random", "trials": 3, "params": {"lr": {"normal": [1, 4]}}}"#, "unknown range"),
            (r#"{"method": "random", "params": {"lora_r": [1, 2]}}"#, "add trials"),
            (r#"{"method": "grid", "trials": 3, "params": {"lora_r": [1, 2]}}"#, "remove trials"),
            (r#"{"method": "bayes", "params": {}}"#, "\"grid\" or \"random\""),
        ];
        for (text, needle) in cases {
            let err = json(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn to_json_string_round_trips() {
        for space in [
            preset("raschka-grid").unwrap(),
            json(r#"{"method": "random", "seed": 3, "trials": 5, "params": {"lr": {"log_uniform": [1e-5, 1e-3]}, "epochs": {"int_range": [1, 3]}, "lora_r": [2, 1]}}"#)
                .unwrap(),
        ] {
            let back = Space::from_json_str(&space.to_json_string(), &space.origin).unwrap();
            assert_eq!(back, space);
        }
    }
}
