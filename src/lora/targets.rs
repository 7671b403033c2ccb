//! Where LoRA goes: the seed's flags (query, key, value, projection, mlp, head), PEFT-style
//! `target_modules` (names matched as suffixes, a regex, or `all-linear`), resolved against the
//! model's linear layers.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// What a linear layer does in the network (architecture-neutral).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Attention query projection (q_lin / attention.self.query).
    Query,
    /// Attention key projection.
    Key,
    /// Attention value projection.
    Value,
    /// Fused query/key/value projection (GPT-2's c_attn).
    Qkv,
    /// Attention output projection (out_lin / attention.output.dense / o_proj / attn.c_proj).
    Projection,
    /// Feed-forward input (ffn.lin1 / intermediate.dense).
    FfnIn,
    /// Feed-forward output (ffn.lin2 / output.dense).
    FfnOut,
    /// First head linear: DistilBERT's pre_classifier or BERT's pooler dense.
    HeadHidden,
    /// The classifier.
    Classifier,
}

/// The seed's target flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedFlags {
    /// LoRA on the query projections.
    pub query: bool,
    /// LoRA on the key projections.
    pub key: bool,
    /// LoRA on the value projections.
    pub value: bool,
    /// LoRA on the attention output projections.
    pub projection: bool,
    /// LoRA on both feed-forward linears.
    pub mlp: bool,
    /// LoRA on the two head linears.
    pub head: bool,
}

impl SeedFlags {
    /// The seed's default: query and value.
    pub fn query_value() -> Self {
        SeedFlags { query: true, value: true, ..Default::default() }
    }

    /// Whether the flags select a layer with this role.
    pub fn selects(&self, role: Role) -> bool {
        match role {
            Role::Query => self.query,
            Role::Key => self.key,
            Role::Value => self.value,
            Role::Qkv => self.query || self.key || self.value,
            Role::Projection => self.projection,
            Role::FfnIn | Role::FfnOut => self.mlp,
            Role::HeadHidden | Role::Classifier => self.head,
        }
    }

    /// Whether no flag is set.
    pub fn is_empty(&self) -> bool {
        *self == SeedFlags::default()
    }
}

/// Which linear layers get LoRA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetModules {
    /// The seed's flags.
    Flags(SeedFlags),
    /// PEFT's list semantics: a module matches an entry when its name equals it or ends with "." + entry.
    Names(Vec<String>),
    /// PEFT's string semantics: the regex must match the whole module name.
    Regex(String),
    /// Every linear layer of the encoder (PEFT's "all-linear": the classification head excluded).
    AllLinear,
}

impl std::str::FromStr for TargetModules {
    type Err = Error;
    /// The command-line form: `all-linear`, `re:REGEX`, or comma-separated module names.
    fn from_str(t: &str) -> Result<Self> {
        Ok(match t {
            "all-linear" => TargetModules::AllLinear,
            _ if t.starts_with("re:") => TargetModules::Regex(t[3..].to_string()),
            _ => {
                let names: Vec<String> = t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                if names.is_empty() {
                    return Err(Error::InvalidOption(format!(
                        "--target-modules {t:?} names no module; give names like q_lin,v_lin, re:REGEX or all-linear"
                    )));
                }
                TargetModules::Names(names)
            }
        })
    }
}

/// PEFT's rule for a list entry: exact name or a dotted suffix.
pub fn name_matches(module: &str, entry: &str) -> bool {
    module == entry || module.ends_with(&format!(".{entry}"))
}

fn examples(modules: &[(String, Role)]) -> String {
    let mut seen = Vec::new();
    for (name, _) in modules {
        let short = name.rsplit_once(".layer.").map(|(_, rest)| rest.split_once('.').map(|(_, s)| s).unwrap_or(rest)).unwrap_or(name);
        if !seen.iter().any(|s: &String| s == short) {
            seen.push(short.to_string());
        }
    }
    seen.join(", ")
}

impl TargetModules {
    /// Marks which of `modules` (name, role) are selected. Every list entry must match at least
    /// one module; a regex or flag set that selects nothing is an error too.
    pub fn resolve(&self, modules: &[(String, Role)]) -> Result<Vec<bool>> {
        let picked: Vec<bool> = match self {
            TargetModules::Flags(f) => modules.iter().map(|(_, role)| f.selects(*role)).collect(),
            TargetModules::Names(names) => {
                for entry in names {
                    if !modules.iter().any(|(m, _)| name_matches(m, entry)) {
                        return Err(Error::UnknownTargetModule { pattern: entry.clone(), examples: examples(modules) });
                    }
                }
                modules.iter().map(|(m, _)| names.iter().any(|e| name_matches(m, e))).collect()
            }
            TargetModules::Regex(pattern) => {
                let re = regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| Error::InvalidOption(format!("bad --target-modules regex {pattern:?}: {e}")))?;
                modules.iter().map(|(m, _)| re.is_match(m)).collect()
            }
            TargetModules::AllLinear => modules.iter().map(|(_, role)| !matches!(role, Role::HeadHidden | Role::Classifier)).collect(),
        };
        if !picked.iter().any(|p| *p) {
            let pattern = match self {
                TargetModules::Flags(_) => "(no --lora-* flag set)".to_string(),
                TargetModules::Regex(p) => p.clone(),
                other => format!("{other:?}"),
            };
            return Err(Error::UnknownTargetModule { pattern, examples: examples(modules) });
        }
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bert_modules() -> Vec<(String, Role)> {
        let mut v = Vec::new();
        for l in 0..2 {
            let p = format!("bert.encoder.layer.{l}");
            v.push((format!("{p}.attention.self.query"), Role::Query));
            v.push((format!("{p}.attention.self.value"), Role::Value));
            v.push((format!("{p}.attention.output.dense"), Role::Projection));
            v.push((format!("{p}.intermediate.dense"), Role::FfnIn));
            v.push((format!("{p}.output.dense"), Role::FfnOut));
        }
        v.push(("bert.pooler.dense".into(), Role::HeadHidden));
        v.push(("classifier".into(), Role::Classifier));
        v
    }

    #[test]
    fn suffix_matching_is_peft_s() {
        let m = bert_modules();
        let t = TargetModules::Names(vec!["output.dense".into()]);
        let got: Vec<&str> = m.iter().zip(t.resolve(&m).unwrap()).filter(|(_, p)| *p).map(|(m, _)| m.0.as_str()).collect();
        assert_eq!(
            got,
            [
                "bert.encoder.layer.0.attention.output.dense",
                "bert.encoder.layer.0.output.dense",
                "bert.encoder.layer.1.attention.output.dense",
                "bert.encoder.layer.1.output.dense"
            ]
        );
        assert!(!name_matches("bert.encoder.layer.0.attention.self.query", "uery"));
    }

    #[test]
    fn unknown_target_is_an_error_naming_it_and_the_real_names() {
        let m = bert_modules();
        let e = TargetModules::Names(vec!["q_lin".into()]).resolve(&m).unwrap_err().to_string();
        assert!(e.contains("q_lin") && e.contains("attention.self.query"), "{e}");
        assert!(TargetModules::Flags(SeedFlags::default()).resolve(&m).is_err());
    }

    #[test]
    fn parses_the_command_line_forms() {
        assert_eq!("all-linear".parse::<TargetModules>().unwrap(), TargetModules::AllLinear);
        assert_eq!("re:.*query".parse::<TargetModules>().unwrap(), TargetModules::Regex(".*query".into()));
        assert_eq!(" q_lin, v_lin ,".parse::<TargetModules>().unwrap(), TargetModules::Names(vec!["q_lin".into(), "v_lin".into()]));
        assert!(",".parse::<TargetModules>().is_err());
    }

    #[test]
    fn regex_and_all_linear() {
        let m = bert_modules();
        let r = TargetModules::Regex(r".*layer\.1\..*(query|value)".into()).resolve(&m).unwrap();
        assert_eq!(r.iter().filter(|p| **p).count(), 2);
        let a = TargetModules::AllLinear.resolve(&m).unwrap();
        assert_eq!(a.iter().filter(|p| **p).count(), 10);
        let f = TargetModules::Flags(SeedFlags { mlp: true, head: true, ..Default::default() }).resolve(&m).unwrap();
        assert_eq!(f.iter().filter(|p| **p).count(), 6);
    }
}
