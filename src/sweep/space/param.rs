//! A search space's parameters: how a parameter's values are written ([`ParamSpec`]: a value, a
//! list or a range) and the validation that turns a space file's entry into one against the train
//! option it names (from the one catalogue, [`crate::options`]), with messages that name the
//! parameter and the fix.

use crate::options::{self, check_value, describe, Kind};
use crate::sweep::{Result, SweepError};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;

/// The train option names a search space may use, in a stable order.
pub fn known_params() -> impl Iterator<Item = &'static str> {
    options::sweep_names()
}

fn kind_of(name: &str) -> Option<Kind> {
    options::find(name).filter(|o| o.sweep).map(|o| o.kind)
}

/// The values one parameter takes.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamSpec {
    /// Always this value.
    Fixed(Value),
    /// One of these values (every one in a grid, uniformly drawn in a random search).
    Choice(Vec<Value>),
    /// A real number drawn uniformly from `[lo, hi]` (random search only).
    Uniform(f64, f64),
    /// A real number whose logarithm is drawn uniformly from `[ln lo, ln hi]` (random search only).
    LogUniform(f64, f64),
    /// A whole number drawn uniformly from `lo..=hi` (random search only).
    IntRange(i64, i64),
}

impl ParamSpec {
    /// The spec as it is written in a JSON space file.
    pub fn to_json(&self) -> Value {
        match self {
            ParamSpec::Fixed(v) => v.clone(),
            ParamSpec::Choice(vs) => Value::Array(vs.clone()),
            ParamSpec::Uniform(lo, hi) => serde_json::json!({ "uniform": [lo, hi] }),
            ParamSpec::LogUniform(lo, hi) => serde_json::json!({ "log_uniform": [lo, hi] }),
            ParamSpec::IntRange(lo, hi) => serde_json::json!({ "int_range": [lo, hi] }),
        }
    }

    pub(super) fn is_range(&self) -> bool {
        matches!(self, ParamSpec::Uniform(..) | ParamSpec::LogUniform(..) | ParamSpec::IntRange(..))
    }

    /// How many distinct values this spec can produce, if finite.
    pub(super) fn cardinality(&self) -> Option<u128> {
        match self {
            ParamSpec::Fixed(_) => Some(1),
            ParamSpec::Choice(vs) => Some(vs.len() as u128),
            ParamSpec::IntRange(lo, hi) => Some((i128::from(*hi) - i128::from(*lo) + 1).max(0) as u128),
            ParamSpec::Uniform(lo, hi) | ParamSpec::LogUniform(lo, hi) => (lo == hi).then_some(1),
        }
    }

    pub(super) fn sample(&self, rng: &mut StdRng) -> Value {
        match self {
            ParamSpec::Fixed(v) => v.clone(),
            ParamSpec::Choice(vs) => vs.get(rng.random_range(0..vs.len().max(1))).cloned().unwrap_or(Value::Null),
            ParamSpec::Uniform(lo, hi) => Value::from(rng.random_range(*lo..=*hi)),
            ParamSpec::LogUniform(lo, hi) => Value::from(rng.random_range(lo.ln()..=hi.ln()).exp().clamp(*lo, *hi)),
            ParamSpec::IntRange(lo, hi) => Value::from(rng.random_range(*lo..=*hi)),
        }
    }
}

/// Validates and normalises one parameter's spec against the train option it names.
pub(super) fn parse_param(origin: &str, name: &str, value: Value) -> Result<ParamSpec> {
    let Some(kind) = kind_of(name) else {
        return Err(SweepError::UnknownParam {
            origin: origin.to_string(),
            name: name.to_string(),
            known: known_params().collect::<Vec<_>>().join(", "),
        });
    };
    let bad = |message: String| SweepError::InvalidParam { origin: origin.to_string(), name: name.to_string(), message };
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(SweepError::EmptyList { origin: origin.to_string(), name: name.to_string() });
            }
            let mut values: Vec<Value> = Vec::with_capacity(items.len());
            for item in items {
                let v = check_value(kind, &item).map_err(&bad)?;
                if values.contains(&v) {
                    return Err(bad(format!("the list has {v} twice; list each value once")));
                }
                values.push(v);
            }
            Ok(ParamSpec::Choice(values))
        }
        Value::Object(map) => {
            let shape = "a range is written {\"uniform\": [LO, HI]}, {\"log_uniform\": [LO, HI]} or {\"int_range\": [LO, HI]} (in TOML: { uniform = [LO, HI] })";
            let mut entries = map.into_iter();
            let (Some((form, bounds)), None) = (entries.next(), entries.next()) else {
                return Err(bad(format!("a table must hold exactly one range; {shape}")));
            };
            let pair = match bounds.as_array().map(Vec::as_slice) {
                Some([lo, hi]) => (lo.clone(), hi.clone()),
                _ => return Err(bad(format!("{form} needs two bounds [LO, HI]; {shape}"))),
            };
            match (form.as_str(), kind) {
                ("uniform" | "log_uniform", Kind::Float { .. }) => {
                    let lo = check_value(kind, &pair.0).map_err(&bad)?.as_f64().unwrap_or(f64::NAN);
                    let hi = check_value(kind, &pair.1).map_err(&bad)?.as_f64().unwrap_or(f64::NAN);
                    if lo.is_nan() || hi.is_nan() || lo > hi {
                        return Err(bad(format!("{form} bounds [{lo}, {hi}] are reversed; write [LO, HI] with LO <= HI")));
                    }
                    if form == "log_uniform" {
                        if lo <= 0.0 {
                            return Err(bad(format!("log_uniform needs LO > 0 (got {lo}); use uniform for ranges that include 0")));
                        }
                        Ok(ParamSpec::LogUniform(lo, hi))
                    } else {
                        Ok(ParamSpec::Uniform(lo, hi))
                    }
                }
                ("int_range", Kind::Int { .. }) => {
                    let lo = check_value(kind, &pair.0).map_err(&bad)?.as_i64().unwrap_or(i64::MAX);
                    let hi = check_value(kind, &pair.1).map_err(&bad)?.as_i64().unwrap_or(i64::MIN);
                    if lo > hi {
                        return Err(bad(format!("int_range bounds [{lo}, {hi}] are reversed; write [LO, HI] with LO <= HI")));
                    }
                    Ok(ParamSpec::IntRange(lo, hi))
                }
                ("uniform" | "log_uniform", Kind::Int { .. }) => {
                    Err(bad(format!("{name} takes whole numbers; use {{\"int_range\": [LO, HI]}} or a list instead of {form}")))
                }
                ("int_range", Kind::Float { .. }) => Err(bad(format!(
                    "{name} takes real numbers; use {{\"uniform\": [LO, HI]}} or {{\"log_uniform\": [LO, HI]}} instead of int_range"
                ))),
                ("uniform" | "log_uniform" | "int_range", _) => {
                    Err(bad(format!("{name} takes {}; list its values instead of a range", describe(kind))))
                }
                (other, _) => Err(bad(format!("unknown range {other:?}; {shape}"))),
            }
        }
        scalar => Ok(ParamSpec::Fixed(check_value(kind, &scalar).map_err(bad)?)),
    }
}

#[cfg(test)]
mod tests {
    use crate::sweep::space::Space;
    use crate::sweep::{Result, SweepError};

    fn json(text: &str) -> Result<Space> {
        Space::from_json_str(text, "test.json")
    }

    #[test]
    fn unknown_key_lists_the_known_ones() {
        let err = json(r#"{"params": {"lora_rank": [1, 2]}}"#).unwrap_err().to_string();
        assert!(err.contains("unknown parameter \"lora_rank\""), "{err}");
        assert!(err.contains("lora_r, lora_alpha") && err.contains("max_length"), "{err}");
        assert!(err.contains("test.json"), "{err}");
    }

    #[test]
    fn empty_list_is_an_error() {
        let err = json(r#"{"params": {"lora_r": []}}"#).unwrap_err();
        assert!(matches!(err, SweepError::EmptyList { .. }), "{err}");
        assert!(err.to_string().contains("lora_r"));
    }
}
