//! Per-module rank and alpha (PEFT's `rank_pattern` / `alpha_pattern`) and which layers get LoRA
//! (`layers_to_transform` / `layers_pattern`), with PEFT's matching rules:
//! - a pattern key matches module `m` when the regex `(.*\.)?(KEY)$` matches `m` from its start;
//!   the first matching key in file order wins;
//! - a module's layer index is the number after the first `.<name>.` segment (`layers_pattern`
//!   names it, e.g. `layer`; without it, the first numbered segment); a module listed by its full
//!   name in `target_modules` is not filtered by layer (PEFT's exact-key rule).
//!
//! Unlike PEFT (which warns), a pattern key or layer index that matches no module is an error.

use super::targets::TargetModules;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Per-module variations of the LoRA settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoraPatterns {
    /// (pattern, rank) in PEFT's order of precedence (first match wins).
    #[serde(default, with = "ordered")]
    pub rank_pattern: Vec<(String, usize)>,
    /// (pattern, alpha) in the same order; alpha in the run's scaling convention.
    #[serde(default, with = "ordered")]
    pub alpha_pattern: Vec<(String, f32)>,
    /// Only the encoder layers with these indices get LoRA.
    #[serde(default)]
    pub layers_to_transform: Option<Vec<usize>>,
    /// The name of the layer list in module paths (`layer`, `layers`, `h`), for the index.
    #[serde(default)]
    pub layers_pattern: Option<Vec<String>>,
}

/// A JSON object whose entry order is kept: serialised from / read into a list of pairs.
pub mod ordered {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde::ser::{Serialize, SerializeMap, Serializer};

    /// Writes the pairs as a JSON object, in order.
    pub fn serialize<S: Serializer, T: Serialize>(pairs: &[(String, T)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }

    /// Reads a JSON object (or null) into pairs, in file order.
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<(String, T)>, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<(String, T)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of pattern: value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(out)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn key_regex(option: &str, key: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!(r"^(?:.*\.)?(?:{key})$")).map_err(|e| Error::InvalidOption(format!("bad {option} key {key:?}: {e}")))
}

/// The value of the first key of `pairs` that matches `module` (PEFT's `get_pattern_key`).
pub fn lookup<'a, T>(option: &str, pairs: &'a [(String, T)], module: &str) -> Result<Option<&'a T>> {
    for (k, v) in pairs {
        if key_regex(option, k)?.is_match(module) {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// A module's layer index by PEFT's rule (None when the path has no numbered layer segment).
pub fn layer_index(module: &str, layers_pattern: Option<&[String]>) -> Option<usize> {
    let patterns: Vec<String> = match layers_pattern {
        Some(p) if !p.is_empty() => p.iter().map(|name| format!(r"^(?:|.*?\.){name}\.(\d+)\.")).collect(),
        _ => vec![r"^.*?\.[^.]*\.(\d+)\.".to_string()],
    };
    patterns.iter().find_map(|p| regex::Regex::new(p).ok()?.captures(module)?.get(1)?.as_str().parse().ok())
}

impl LoraPatterns {
    /// Whether no pattern is set.
    pub fn is_empty(&self) -> bool {
        self == &LoraPatterns::default()
    }

    /// Rejects malformed patterns (before any model is built).
    pub fn validate(&self) -> Result<()> {
        for (k, r) in &self.rank_pattern {
            key_regex("--rank-pattern", k)?;
            if *r == 0 {
                return Err(Error::InvalidOption(format!("--rank-pattern {k:?}: the rank must be at least 1")));
            }
        }
        for (k, a) in &self.alpha_pattern {
            key_regex("--alpha-pattern", k)?;
            if !(a.is_finite() && *a > 0.0) {
                return Err(Error::InvalidOption(format!("--alpha-pattern {k:?}: alpha must be a positive number, got {a}")));
            }
        }
        if self.layers_pattern.is_some() && self.layers_to_transform.is_none() {
            return Err(Error::InvalidOption("--layers-pattern needs --layers-to-transform (PEFT's rule)".into()));
        }
        Ok(())
    }

    /// Keeps, of the `picked` modules, those in `layers_to_transform` (PEFT's rules; see the
    /// module doc). A regex `targets` cannot be combined with it, as in PEFT.
    pub fn filter_layers(&self, targets: &TargetModules, modules: &[String], picked: &mut [bool]) -> Result<()> {
        let Some(layers) = &self.layers_to_transform else { return Ok(()) };
        if matches!(targets, TargetModules::Regex(_)) {
            return Err(Error::InvalidOption(
                "--layers-to-transform cannot be combined with a regex --target-modules (PEFT's rule): list module names instead".into(),
            ));
        }
        let pattern = self.layers_pattern.as_deref();
        let mut seen = vec![false; layers.len()];
        for (m, p) in modules.iter().zip(picked.iter_mut()) {
            let exact = matches!(targets, TargetModules::Names(n) if n.iter().any(|e| e == m));
            if !*p || exact {
                continue;
            }
            *p = match layer_index(m, pattern) {
                Some(idx) => match layers.iter().position(|l| *l == idx) {
                    Some(pos) => {
                        seen[pos] = true;
                        true
                    }
                    None => false,
                },
                None => false,
            };
        }
        let known: std::collections::BTreeSet<usize> = modules.iter().filter_map(|m| layer_index(m, pattern)).collect();
        if let Some((l, _)) = layers.iter().zip(&seen).find(|(l, s)| !**s && !known.contains(l)) {
            return Err(Error::InvalidOption(format!(
                "--layers-to-transform {l} names no layer of this model; its layers are numbered {}",
                known.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }

    /// (r, alpha) of each of `modules` (the LoRA targets), the base values where no key matches.
    /// Every key must match at least one target.
    pub fn resolve(&self, modules: &[String], r: usize, alpha: f32) -> Result<Vec<(usize, f32)>> {
        let mut out = Vec::with_capacity(modules.len());
        for m in modules {
            let rm = lookup("--rank-pattern", &self.rank_pattern, m)?.copied().unwrap_or(r);
            let am = lookup("--alpha-pattern", &self.alpha_pattern, m)?.copied().unwrap_or(alpha);
            out.push((rm, am));
        }
        for (option, keys) in [
            ("--rank-pattern", self.rank_pattern.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()),
            ("--alpha-pattern", self.alpha_pattern.iter().map(|(k, _)| k.as_str()).collect()),
        ] {
            for k in keys {
                let re = key_regex(option, k)?;
                if !modules.iter().any(|m| re.is_match(m)) {
                    return Err(Error::UnknownTargetModule {
                        pattern: format!("{option} {k}"),
                        examples: modules.iter().take(4).cloned().collect::<Vec<_>>().join(", ") + " (the LoRA targets)",
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Parses the command-line form of a pattern: a JSON object, or `KEY=VALUE` pairs separated by
/// commas (keys may not then contain `,` or `=`).
pub fn parse_pairs<T: std::str::FromStr + for<'de> Deserialize<'de>>(option: &str, text: &str) -> Result<Vec<(String, T)>> {
    let bad = |m: String| Error::InvalidOption(format!("--{option} {text:?}: {m}; write KEY=VALUE,KEY=VALUE or a JSON object"));
    if text.trim_start().starts_with('{') {
        return ordered::deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(|e| bad(e.to_string()));
    }
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.rsplit_once('=').ok_or_else(|| bad(format!("{p:?} has no '='")))?;
            let v = v.trim().parse::<T>().map_err(|_| bad(format!("{v:?} is not a valid value")))?;
            Ok((k.trim().to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules() -> Vec<String> {
        let mut v = Vec::new();
        for l in 0..3 {
            for m in ["attention.q_lin", "attention.v_lin", "ffn.lin1"] {
                v.push(format!("distilbert.transformer.layer.{l}.{m}"));
            }
        }
        v
    }

    #[test]
    fn first_matching_key_wins_as_in_peft() {
        let p = LoraPatterns {
            rank_pattern: vec![(r"layer\.0\.attention\.q_lin".into(), 2), ("q_lin".into(), 16)],
            alpha_pattern: vec![("lin1".into(), 3.0)],
            ..Default::default()
        };
        let got = p.resolve(&modules(), 8, 1.0).unwrap();
        assert_eq!(got[0], (2, 1.0));
        assert_eq!(got[3], (16, 1.0));
        assert_eq!(got[2], (8, 3.0));
        // "_lin" alone matches nothing: the key must match a whole dotted suffix.
        let e = LoraPatterns { rank_pattern: vec![("_lin".into(), 4)], ..Default::default() }.resolve(&modules(), 8, 1.0).unwrap_err();
        assert!(e.to_string().contains("--rank-pattern _lin") && e.to_string().contains("q_lin"), "{e}");
    }

    #[test]
    fn layer_indices_follow_peft_s_regexes() {
        assert_eq!(layer_index("distilbert.transformer.layer.2.attention.q_lin", None), Some(2));
        assert_eq!(layer_index("bert.encoder.layer.11.output.dense", Some(&["layer".into()])), Some(11));
        assert_eq!(layer_index("model.layers.3.mlp.experts.0.up", None), Some(3));
        assert_eq!(layer_index("pre_classifier", None), None);
        assert_eq!(layer_index("bert.encoder.layer.1.output.dense", Some(&["h".into()])), None);
    }

    #[test]
    fn layers_to_transform_filters_and_checks() {
        let m = modules();
        let p = LoraPatterns { layers_to_transform: Some(vec![0, 2]), ..Default::default() };
        let mut picked = vec![true; m.len()];
        p.filter_layers(&TargetModules::Names(vec!["q_lin".into(), "v_lin".into(), "lin1".into()]), &m, &mut picked).unwrap();
        assert_eq!(picked.iter().filter(|p| **p).count(), 6);
        assert!(!picked[3]);
        // An exactly listed module is kept whatever its layer (PEFT's exact-key rule).
        let mut picked = vec![true; m.len()];
        p.filter_layers(&TargetModules::Names(vec![m[3].clone()]), &m, &mut picked).unwrap();
        assert!(picked[3]);
        let e = LoraPatterns { layers_to_transform: Some(vec![7]), ..Default::default() }
            .filter_layers(&TargetModules::AllLinear, &m, &mut vec![true; m.len()])
            .unwrap_err();
        assert!(e.to_string().contains("numbered 0, 1, 2"), "{e}");
        assert!(p.filter_layers(&TargetModules::Regex(".*".into()), &m, &mut vec![true; m.len()]).is_err());
        assert!(LoraPatterns { layers_pattern: Some(vec!["layer".into()]), ..Default::default() }.validate().is_err());
    }

    #[test]
    fn patterns_parse_and_keep_their_order() {
        let v: Vec<(String, usize)> = parse_pairs("rank-pattern", "q_lin=16, layer\\.0\\..*=4").unwrap();
        assert_eq!(v, vec![("q_lin".into(), 16), ("layer\\.0\\..*".into(), 4)]);
        let v: Vec<(String, usize)> = parse_pairs("rank-pattern", r#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(v, vec![("z".into(), 1), ("a".into(), 2)]);
        assert!(parse_pairs::<usize>("rank-pattern", "q_lin").is_err());
        let p = LoraPatterns { rank_pattern: vec![("z".into(), 1), ("a".into(), 2)], ..Default::default() };
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.find("\"z\"").unwrap() < text.find("\"a\"").unwrap(), "{text}");
        assert_eq!(serde_json::from_str::<LoraPatterns>(&text).unwrap(), p);
        assert_eq!(serde_json::from_str::<LoraPatterns>("{}").unwrap(), LoraPatterns::default());
    }
}
