//! Command-line options shared by several commands: the model, the data, and the training
//! options, whose flags are built from the one catalogue in [`crate::options`].

use crate::data::DataSource;
use crate::error::{Error, Result};
use crate::lora::{SeedFlags, TargetModules};
use crate::model::HeadKind;
use crate::options::{self, Group, Kind, OPTIONS};
use crate::run::TrainConfig;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use serde_json::Value;
use std::path::PathBuf;

/// Which model and head.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Base model: a Hugging Face model folder (config.json + model.safetensors), a bare
    /// config.json (counting only), or a hub id such as distilbert-base-uncased (downloaded into
    /// the Hugging Face cache).
    #[arg(long, value_name = "DIR|ID")]
    pub model: Option<String>,
    /// Classification head: distilbert (pre_classifier → ReLU → classifier; a BERT checkpoint is
    /// then converted to DistilBERT form) or bert (pooler → tanh → classifier). Default: the
    /// checkpoint's own.
    #[arg(long, value_name = "KIND")]
    pub head: Option<HeadKind>,
}

impl ModelArgs {
    /// The resolved local model path (downloading a hub id).
    pub fn resolve(&self) -> Result<PathBuf> {
        let m = self.model.as_deref().ok_or_else(|| Error::InvalidOption("--model DIR is required".into()))?;
        crate::hub::resolve_model(m)
    }
}

/// The training options of one catalogue group that were given on the command line, as
/// (option name, value), in catalogue order.
#[derive(Debug, Clone, Default)]
pub struct GivenOptions(pub Vec<(&'static str, Value)>);

fn parse_float(s: &str) -> std::result::Result<f64, String> {
    // Parsed as f32 (the engine's type), so a value given here equals one written in code; carried
    // as the f64 of its shortest decimal form, so messages show "-0.001", not -0.0010000000474974513.
    let v = s.trim().parse::<f32>().map_err(|_| format!("{s:?} is not a number"))?;
    Ok(v.to_string().parse::<f64>().unwrap_or(f64::from(v)))
}

fn parse_int(s: &str) -> std::result::Result<i64, String> {
    s.trim().parse::<i64>().map_err(|_| format!("{s:?} is not a whole number"))
}

fn augment(mut cmd: Command, group: Group) -> Command {
    let defaults = TrainConfig::default();
    for o in OPTIONS.iter().filter(|o| o.group == group) {
        let help = match (o.show)(&defaults) {
            Some(d) => format!("{} [default: {d}]", capitalise(o.help)),
            None => capitalise(o.help),
        };
        let arg = Arg::new(o.name).long(o.flag()).help(help);
        let arg = match o.kind {
            Kind::Bool => arg.action(ArgAction::SetTrue),
            Kind::Int { .. } => arg.value_name("N").value_parser(parse_int).allow_negative_numbers(true),
            Kind::Float { .. } => arg.value_name("X").value_parser(parse_float).allow_negative_numbers(true),
            Kind::Str(values) => arg.value_name("NAME").value_parser(clap::builder::PossibleValuesParser::new(values.iter().copied())),
            Kind::Text => arg.value_name("LIST"),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

fn collect(m: &ArgMatches, group: Group) -> GivenOptions {
    let mut given = Vec::new();
    for o in OPTIONS.iter().filter(|o| o.group == group) {
        let v = match o.kind {
            Kind::Bool => m.get_flag(o.name).then_some(Value::Bool(true)),
            Kind::Int { .. } => m.get_one::<i64>(o.name).map(|v| Value::from(*v)),
            Kind::Float { .. } => m.get_one::<f64>(o.name).map(|v| Value::from(*v)),
            Kind::Str(_) | Kind::Text => m.get_one::<String>(o.name).map(|v| Value::from(v.clone())),
        };
        if let Some(v) = v {
            given.push((o.name, v));
        }
    }
    GivenOptions(given)
}

macro_rules! option_group {
    ($name:ident, $group:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Default)]
        pub struct $name(pub GivenOptions);

        impl FromArgMatches for $name {
            fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
                Ok($name(collect(m, $group)))
            }
            fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
                *self = $name(collect(m, $group));
                Ok(())
            }
        }

        impl Args for $name {
            fn augment_args(cmd: Command) -> Command {
                augment(cmd, $group)
            }
            fn augment_args_for_update(cmd: Command) -> Command {
                augment(cmd, $group)
            }
        }
    };
}

option_group!(PlanArgs, Group::Plan, "What trains: the mode, LoRA's hyperparameters and targets (options of the catalogue's plan group).");
option_group!(LoopArgs, Group::Loop, "Optimisation and loop options (the catalogue's loop group).");

impl PlanArgs {
    /// The given options plus `extra` ones applied after them (e.g. a seed run's settings).
    pub fn with(&self, extra: &[(&'static str, Value)]) -> PlanArgs {
        let mut given = self.0 .0.clone();
        given.extend(extra.iter().cloned());
        PlanArgs(GivenOptions(given))
    }
}

/// Where the labelled data comes from.
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Labelled data to split: .csv/.tsv (text,label columns), .jsonl/.json, or an aclImdb folder.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Your own training file (with --val, and optionally --test) instead of --data.
    #[arg(long, value_name = "PATH", requires = "val", conflicts_with = "data")]
    pub train: Option<PathBuf>,
    /// Your own validation file.
    #[arg(long, value_name = "PATH")]
    pub val: Option<PathBuf>,
    /// Your own test file.
    #[arg(long, value_name = "PATH")]
    pub test: Option<PathBuf>,
    /// Train/validation/test fractions for --data.
    #[arg(long, value_name = "T,V,T", default_value = "0.7,0.1,0.2")]
    pub split: String,
    /// Text column of CSV/JSON data.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Label column of CSV/JSON data (integers or strings).
    #[arg(long, default_value = "label")]
    pub label_column: String,
}

impl DataArgs {
    /// The resolved data source.
    pub fn source(&self) -> Result<DataSource> {
        if let (Some(train), Some(val)) = (&self.train, &self.val) {
            return Ok(DataSource::Files { train: train.clone(), val: val.clone(), test: self.test.clone() });
        }
        let path = self.data.clone().ok_or_else(|| Error::InvalidOption("give --data PATH, or --train and --val".into()))?;
        let parts: Vec<f64> = self
            .split
            .split(',')
            .map(|s| s.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::InvalidOption(format!("--split must be three numbers like 0.7,0.1,0.2, got {:?}", self.split)))?;
        let fractions = match parts.as_slice() {
            [a, b, c] => (*a, *b, *c),
            _ => return Err(Error::InvalidOption(format!("--split needs three fractions, got {:?}", self.split))),
        };
        Ok(DataSource::Split { path, fractions })
    }
}

const FLAG_NAMES: [&str; 6] = ["lora_query", "lora_key", "lora_value", "lora_projection", "lora_mlp", "lora_head"];

/// Options that only matter in `--mode lora`.
const LORA_ONLY: [&str; 18] = [
    "lora_r",
    "lora_alpha",
    "scaling",
    "lora_dropout",
    "target_modules",
    "lora_query",
    "lora_key",
    "lora_value",
    "lora_projection",
    "lora_mlp",
    "init",
    "dora",
    "lora_bias",
    "rank_pattern",
    "alpha_pattern",
    "layers_to_transform",
    "layers_pattern",
    "loraplus_lr_ratio",
];

/// Applies given training options to `cfg` through the catalogue. The seed's target flags and
/// `--target-modules` exclude each other; with neither, LoRA goes on query and value.
pub fn apply_options(cfg: &mut TrainConfig, given: &[(&'static str, Value)]) -> Result<()> {
    let flags = given.iter().any(|(n, _)| FLAG_NAMES.contains(n));
    if flags && given.iter().any(|(n, _)| *n == "target_modules") {
        return Err(Error::InvalidOption("use either the --lora-* flags or --target-modules, not both".into()));
    }
    if flags {
        cfg.plan.targets = TargetModules::Flags(SeedFlags::default());
    }
    for (name, value) in given {
        options::apply(cfg, name, value)?;
    }
    let lora_given: Vec<String> = given
        .iter()
        .filter(|(n, _)| LORA_ONLY.contains(n) || *n == "lora_head")
        .map(|(n, _)| format!("--{}", n.replace('_', "-")))
        .collect();
    if cfg.plan.mode != crate::plan::TrainMode::Lora && !lora_given.is_empty() {
        let mode = serde_json::to_value(cfg.plan.mode).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        return Err(Error::InvalidOption(format!(
            "{} {} only to --mode lora, but the mode is {mode}, where no LoRA is trained: drop {}, or use --mode lora",
            lora_given.join(", "),
            if lora_given.len() == 1 { "applies" } else { "apply" },
            if lora_given.len() == 1 { "it" } else { "them" }
        )));
    }
    Ok(())
}

/// Builds a run configuration from the option groups.
pub fn train_config(model: PathBuf, head: Option<HeadKind>, data: &DataArgs, plan: &PlanArgs, lp: &LoopArgs) -> Result<TrainConfig> {
    let mut cfg = TrainConfig { model, head, data: data.source()?, ..TrainConfig::default() };
    cfg.text_column = data.text_column.clone();
    cfg.label_column = data.label_column.clone();
    apply_options(&mut cfg, &lp.0 .0)?;
    apply_options(&mut cfg, &plan.0 .0)?;
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        lp: LoopArgs,
    }

    fn cfg(args: &[&str]) -> Result<TrainConfig> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map_err(|e| Error::InvalidOption(e.to_string()))?;
        let data = DataArgs {
            data: Some("x.csv".into()),
            split: "0.7,0.1,0.2".into(),
            text_column: "text".into(),
            label_column: "label".into(),
            ..Default::default()
        };
        train_config("m".into(), None, &data, &t.plan, &t.lp)
    }

    #[test]
    fn flags_come_from_the_catalogue_with_the_seed_s_defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c, TrainConfig { model: "m".into(), data: c.data.clone(), ..TrainConfig::default() });
        let c = cfg(&["--lora-mlp", "--lora-r", "16", "--lr", "4e-4", "--keep-last"]).unwrap();
        assert_eq!(c.plan.targets, TargetModules::Flags(SeedFlags { mlp: true, ..Default::default() }));
        assert_eq!((c.plan.lora.r, c.optimizer.lr, c.drop_last), (16, 4e-4, false));
        let c = cfg(&["--target-modules", "q_lin,v_lin", "--seed", "7"]).unwrap();
        assert_eq!(c.plan.targets, TargetModules::Names(vec!["q_lin".into(), "v_lin".into()]));
        assert_eq!((c.seed, c.plan.seed), (7, 7));
    }

    #[test]
    fn conflicts_and_bad_values_are_clear_errors() {
        let e = cfg(&["--lora-mlp", "--target-modules", "q_lin"]).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
        let e = cfg(&["--lr", "-0.001"]).unwrap_err().to_string();
        assert!(e.contains("--lr") && e.contains("> 0"), "{e}");
        let e = cfg(&["--scaling", "dora"]).unwrap_err().to_string();
        assert!(e.contains("dora") && e.contains("peft"), "{e}");
        // A negative value with a space is parsed (and refused for what it is), shown as written.
        let e = cfg(&["--lr", "-0.001"]).unwrap_err().to_string();
        assert!(e.contains("-0.001 ") || e.ends_with("-0.001") || e.contains("-0.001:"), "{e}");
        assert!(!e.contains("0.0010000000"), "{e}");
    }

    #[test]
    fn lora_options_in_another_mode_are_an_error() {
        for args in
            [&["--mode", "full", "--lora-r", "16"][..], &["--mode", "last-layers", "--lora-mlp"], &["--lora-alpha", "4", "--mode", "full"]]
        {
            let e = cfg(args).unwrap_err().to_string();
            assert!(e.contains("only to --mode lora") && e.contains("--lora-"), "{args:?}: {e}");
        }
        // The LoRA family's options too (they were ignored silently in full fine-tuning).
        for (flag, value) in [("--dora", None), ("--lora-bias", None), ("--init", Some("pissa")), ("--layers-to-transform", Some("0"))] {
            let mut args = vec!["--mode", "full", flag];
            args.extend(value);
            let e = cfg(&args).unwrap_err().to_string();
            assert!(e.contains("only to --mode lora") && e.contains(flag), "{args:?}: {e}");
        }
        let c = cfg(&["--mode", "full", "--lr", "1e-5"]).unwrap();
        assert_eq!(c.plan.mode, crate::plan::TrainMode::Full);
    }
}
