//! The one catalogue of training options: each option's name, help, accepted values and how it
//! sets a [`TrainConfig`] are written once, here. The command line builds its flags from it
//! (`--lora-r` is option `lora_r`), sweep spaces validate and apply their parameters with it, and
//! an adapter's settings are applied through it when training continues from the adapter.

use crate::error::{Error, Result};
use crate::lora::{Scaling, SeedFlags, TargetModules};
use crate::optim::OptimizerKind;
use crate::plan::TrainMode;
use crate::run::TrainConfig;
use serde_json::Value;
use std::sync::LazyLock;

/// What values an option accepts.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A switch: on the command line a flag without value, elsewhere `true` or `false`.
    Bool,
    /// A whole number at least `min`.
    Int {
        /// Smallest accepted value.
        min: i64,
    },
    /// A number within bounds; `lo_open` / `hi_open` exclude the bound itself.
    Float {
        /// Lower bound.
        lo: f64,
        /// Whether the lower bound is excluded.
        lo_open: bool,
        /// Upper bound.
        hi: f64,
        /// Whether the upper bound is excluded.
        hi_open: bool,
    },
    /// One of a fixed set of strings.
    Str(&'static [&'static str]),
    /// Free text that the option parses itself (e.g. a module list).
    Text,
}

const POSITIVE: Kind = Kind::Float { lo: 0.0, lo_open: true, hi: f64::INFINITY, hi_open: true };
const NON_NEGATIVE: Kind = Kind::Float { lo: 0.0, lo_open: false, hi: f64::INFINITY, hi_open: true };
const FRACTION: Kind = Kind::Float { lo: 0.0, lo_open: false, hi: 1.0, hi_open: true };

/// Which command-line group an option belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// What trains: the mode, LoRA's hyperparameters and targets.
    Plan,
    /// The optimisation and the loop: learning rate, epochs, batches, checkpoints, seed.
    Loop,
}

/// One training option.
#[derive(Clone)]
pub struct TrainOption {
    /// The name in sweep spaces and in code (snake_case); the flag is `--` + kebab-case.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// The values it accepts.
    pub kind: Kind,
    /// Its command-line group.
    pub group: Group,
    /// Whether a sweep may vary it.
    pub sweep: bool,
    /// The value in a configuration, for help texts (None when it has no value by default).
    pub show: fn(&TrainConfig) -> Option<String>,
    /// Sets it in a configuration from a value already checked against `kind`.
    pub set: fn(&mut TrainConfig, &Value) -> Result<()>,
}

impl TrainOption {
    /// The command-line flag, e.g. `lora-r`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }
}

fn f(v: &Value) -> f32 {
    v.as_f64().unwrap_or(f64::NAN) as f32
}
fn u(v: &Value) -> u64 {
    v.as_i64().unwrap_or(0).max(0) as u64
}
fn b(v: &Value) -> bool {
    v.as_bool().unwrap_or(false)
}
fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Sets one of the seed's target flags, starting from no flag when the targets were not flags.
fn set_flag(c: &mut TrainConfig, v: &Value, pick: fn(&mut SeedFlags) -> &mut bool) -> Result<()> {
    let mut flags = match &c.plan.targets {
        TargetModules::Flags(f) => *f,
        _ => SeedFlags::default(),
    };
    *pick(&mut flags) = b(v);
    c.plan.targets = TargetModules::Flags(flags);
    Ok(())
}

fn shown<T: ToString>(v: T) -> Option<String> {
    Some(v.to_string())
}

mod family;

/// Every training option, in help order: the core ones, then LoRA's family ([`family`]).
pub static OPTIONS: LazyLock<Vec<TrainOption>> = LazyLock::new(|| CORE.iter().chain(family::FAMILY).cloned().collect());

/// The options of plain LoRA, the modes and the loop.
static CORE: &[TrainOption] = &[
    TrainOption {
        name: "lora_r",
        help: "LoRA rank r",
        kind: Kind::Int { min: 1 },
        group: Group::Plan,
        sweep: true,
        show: |c| shown(c.plan.lora.r),
        set: |c, v| {
            c.plan.lora.r = u(v) as usize;
            Ok(())
        },
    },
    TrainOption {
        name: "lora_alpha",
        help: "LoRA alpha (see --scaling)",
        kind: POSITIVE,
        group: Group::Plan,
        sweep: true,
        show: |c| shown(c.plan.lora.alpha),
        set: |c, v| {
            c.plan.lora.alpha = f(v);
            Ok(())
        },
    },
    TrainOption {
        name: "lora_query",
        help: "LoRA on the attention query projections (the default targets are query + value)",
        kind: Kind::Bool,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| set_flag(c, v, |f| &mut f.query),
    },
    TrainOption {
        name: "lora_key",
        help: "LoRA on the attention key projections",
        kind: Kind::Bool,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| set_flag(c, v, |f| &mut f.key),
    },
    TrainOption {
        name: "lora_value",
        help: "LoRA on the attention value projections",
        kind: Kind::Bool,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| set_flag(c, v, |f| &mut f.value),
    },
    TrainOption {
        name: "lora_projection",
        help: "LoRA on the attention output projections",
        kind: Kind::Bool,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| set_flag(c, v, |f| &mut f.projection),
    },
    TrainOption {
        name: "lora_mlp",
        help: "LoRA on both feed-forward linears",
        kind: Kind::Bool,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| set_flag(c, v, |f| &mut f.mlp),
    },
    TrainOption {
        name: "lora_head",
        help: "LoRA on the head's two linears",
        kind: Kind::Bool,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| set_flag(c, v, |f| &mut f.head),
    },
    TrainOption {
        name: "target_modules",
        help: "PEFT-style targets instead of the --lora-* flags: comma-separated module names (matched as dotted suffixes), re:REGEX (full match), or all-linear",
        kind: Kind::Text,
        group: Group::Plan,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.plan.targets = match v {
                Value::Array(items) => TargetModules::Names(items.iter().filter_map(Value::as_str).map(str::to_string).collect()),
                other => s(other).parse()?,
            };
            Ok(())
        },
    },
    TrainOption {
        name: "modules_to_save",
        help: "modules trained in full beside LoRA (comma-separated names, PEFT's modules_to_save)",
        kind: Kind::Text,
        group: Group::Plan,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.plan.modules_to_save = s(v).split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect();
            Ok(())
        },
    },
    TrainOption {
        name: "lr",
        help: "peak learning rate",
        kind: POSITIVE,
        group: Group::Loop,
        sweep: true,
        show: |c| shown(c.optimizer.lr),
        set: |c, v| {
            c.optimizer.lr = f(v);
            Ok(())
        },
    },
    TrainOption {
        name: "epochs",
        help: "epochs",
        kind: Kind::Int { min: 1 },
        group: Group::Loop,
        sweep: true,
        show: |c| shown(c.epochs),
        set: |c, v| {
            c.epochs = u32::try_from(u(v)).map_err(|_| Error::InvalidOption(format!("--epochs {v} is too large")))?;
            Ok(())
        },
    },
    TrainOption {
        name: "batch_size",
        help: "examples per optimizer step",
        kind: Kind::Int { min: 1 },
        group: Group::Loop,
        sweep: true,
        show: |c| shown(c.batch_size),
        set: |c, v| {
            c.batch_size = u(v) as usize;
            Ok(())
        },
    },
    TrainOption {
        name: "scaling",
        help: "raschka (the seed's: scale = alpha, A ~ N(0, 1/r)), peft (scale = alpha/r, kaiming A) or rslora (alpha/sqrt(r))",
        kind: Kind::Str(&["raschka", "peft", "rslora"]),
        group: Group::Plan,
        sweep: true,
        show: |c| shown(format!("{:?}", c.plan.lora.scaling).to_lowercase()),
        set: |c, v| {
            c.plan.lora.scaling = s(v).parse::<Scaling>()?;
            Ok(())
        },
    },
    TrainOption {
        name: "mode",
        help: "lora (frozen base + LoRA), last-layers (only the head's linears), or full",
        kind: Kind::Str(&["lora", "last-layers", "full"]),
        group: Group::Plan,
        sweep: true,
        show: |_| shown("lora"),
        set: |c, v| {
            c.plan.mode = s(v).parse::<TrainMode>()?;
            Ok(())
        },
    },
    TrainOption {
        name: "weight_decay",
        help: "weight decay (coupled for adam, decoupled for adamw)",
        kind: NON_NEGATIVE,
        group: Group::Loop,
        sweep: true,
        show: |c| shown(c.optimizer.weight_decay),
        set: |c, v| {
            c.optimizer.weight_decay = f(v);
            Ok(())
        },
    },
    TrainOption {
        name: "lora_dropout",
        help: "dropout on the LoRA branch input (PEFT's lora_dropout)",
        kind: FRACTION,
        group: Group::Plan,
        sweep: true,
        show: |c| shown(c.plan.lora.dropout),
        set: |c, v| {
            c.plan.lora.dropout = f(v);
            Ok(())
        },
    },
    TrainOption {
        name: "warmup_ratio",
        help: "fraction of steps of linear warmup",
        kind: FRACTION,
        group: Group::Loop,
        sweep: true,
        show: |c| shown(c.schedule.warmup_ratio),
        set: |c, v| {
            c.schedule.warmup_ratio = f(v);
            Ok(())
        },
    },
    TrainOption {
        name: "seed",
        help: "seed of everything random (split, initialisation, shuffling, dropout)",
        kind: Kind::Int { min: 0 },
        group: Group::Loop,
        sweep: true,
        show: |c| shown(c.seed),
        set: |c, v| {
            c.seed = u(v);
            c.plan.seed = u(v);
            Ok(())
        },
    },
    TrainOption {
        name: "max_length",
        help: "truncate texts to this many tokens (special tokens included)",
        kind: Kind::Int { min: 1 },
        group: Group::Loop,
        sweep: true,
        show: |c| shown(c.max_length),
        set: |c, v| {
            c.max_length = u(v) as usize;
            Ok(())
        },
    },
    TrainOption {
        name: "precision",
        help: "arithmetic of the base weights' products: fp32, bf16 (bf16 operands, f32 sums; needs a CPU with AVX512_BF16) or auto (bf16 where the CPU has it)",
        kind: Kind::Str(&["fp32", "bf16", "auto"]),
        group: Group::Loop,
        sweep: true,
        show: |c| shown(format!("{:?}", c.precision).to_lowercase()),
        set: |c, v| {
            c.precision = s(v).parse()?;
            Ok(())
        },
    },
    TrainOption {
        name: "optimizer",
        help: "adam (the seed's) or adamw",
        kind: Kind::Str(&["adam", "adamw"]),
        group: Group::Loop,
        sweep: false,
        show: |_| shown("adam"),
        set: |c, v| {
            c.optimizer.kind = if s(v) == "adamw" { OptimizerKind::AdamW } else { OptimizerKind::Adam };
            Ok(())
        },
    },
    TrainOption {
        name: "linear_decay",
        help: "decay the learning rate linearly to 0 after warmup",
        kind: Kind::Bool,
        group: Group::Loop,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.schedule.linear_decay = b(v);
            Ok(())
        },
    },
    TrainOption {
        name: "clip_grad_norm",
        help: "clip the global gradient norm to this value",
        kind: POSITIVE,
        group: Group::Loop,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.clip_grad_norm = Some(f(v));
            Ok(())
        },
    },
    TrainOption {
        name: "pad_to_max_length",
        help: "pad every sequence to --max-length, as the seed does (slower; same results)",
        kind: Kind::Bool,
        group: Group::Loop,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.pad_to_max_length = b(v);
            Ok(())
        },
    },
    TrainOption {
        name: "bucket",
        help: "length-bucketed batches (sorted within shuffled chunks)",
        kind: Kind::Bool,
        group: Group::Loop,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.bucket = b(v);
            Ok(())
        },
    },
    TrainOption {
        name: "keep_last",
        help: "keep each epoch's last incomplete batch",
        kind: Kind::Bool,
        group: Group::Loop,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.drop_last = !b(v);
            Ok(())
        },
    },
    TrainOption {
        name: "eval_every",
        help: "also evaluate on validation every N steps (besides each epoch's end)",
        kind: Kind::Int { min: 1 },
        group: Group::Loop,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.eval_every = Some(u(v));
            Ok(())
        },
    },
    TrainOption {
        name: "checkpoint_every",
        help: "write a resumable checkpoint every N steps",
        kind: Kind::Int { min: 1 },
        group: Group::Loop,
        sweep: false,
        show: |c| shown(c.checkpoint_every),
        set: |c, v| {
            c.checkpoint_every = u(v);
            Ok(())
        },
    },
    TrainOption {
        name: "limit_train",
        help: "train on only the first N training examples",
        kind: Kind::Int { min: 1 },
        group: Group::Loop,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.limit_train = Some(u(v) as usize);
            Ok(())
        },
    },
];

/// The option called `name`.
pub fn find(name: &str) -> Option<&'static TrainOption> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The names a sweep space may vary, in catalogue order.
pub fn sweep_names() -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().filter(|o| o.sweep).map(|o| o.name)
}

/// What `kind` accepts, in words.
pub fn describe(kind: Kind) -> String {
    match kind {
        Kind::Bool => "true or false".into(),
        Kind::Int { min } => format!("a whole number >= {min}"),
        Kind::Float { lo, lo_open, hi, hi_open } => {
            let mut s = format!("a number {} {lo}", if lo_open { ">" } else { ">=" });
            if hi.is_finite() {
                s.push_str(&format!(" and {} {hi}", if hi_open { "<" } else { "<=" }));
            }
            s
        }
        Kind::Str(options) => format!("one of {}", options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", ")),
        Kind::Text => "text".into(),
    }
}

/// Checks one value against its kind and returns it normalised (real numbers as floats).
pub fn check_value(kind: Kind, v: &Value) -> std::result::Result<Value, String> {
    // serde_json has no NaN or infinity: a command line's `nan` / `inf` arrives as null.
    let shown = if v.is_null() { "NaN, an infinity or null".to_string() } else { v.to_string() };
    let wrong = || format!("{shown} is not valid: it must be {}", describe(kind));
    match kind {
        Kind::Bool => v.as_bool().map(Value::Bool).ok_or_else(wrong),
        Kind::Int { min } => match v.as_i64() {
            Some(i) if i >= min => Ok(Value::from(i)),
            _ => Err(wrong()),
        },
        Kind::Float { lo, lo_open, hi, hi_open } => {
            let x = v.as_f64().ok_or_else(wrong)?;
            let above = if lo_open { x > lo } else { x >= lo };
            let below = if hi_open { x < hi } else { x <= hi };
            if x.is_finite() && above && below {
                Ok(Value::from(x))
            } else {
                Err(wrong())
            }
        }
        Kind::Str(options) => match v.as_str() {
            Some(s) if options.contains(&s) => Ok(Value::from(s)),
            _ => Err(wrong()),
        },
        Kind::Text => match v {
            Value::String(_) | Value::Array(_) => Ok(v.clone()),
            _ => Err(wrong()),
        },
    }
}

/// Sets option `name` to `value` in `cfg`, checking the value first; errors name the option.
pub fn apply(cfg: &mut TrainConfig, name: &str, value: &Value) -> Result<()> {
    let opt = find(name).ok_or_else(|| Error::InvalidOption(format!("unknown training option {name:?}")))?;
    let v = check_value(opt.kind, value).map_err(|m| Error::InvalidOption(format!("--{}: {m}", opt.flag())))?;
    (opt.set)(cfg, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_sets_what_it_names() {
        let base = TrainConfig::default();
        let mut c = base.clone();
        apply(&mut c, "lora_r", &Value::from(16)).unwrap();
        apply(&mut c, "lr", &Value::from(4e-4f32 as f64)).unwrap();
        apply(&mut c, "seed", &Value::from(7)).unwrap();
        apply(&mut c, "keep_last", &Value::from(true)).unwrap();
        apply(&mut c, "scaling", &Value::from("peft")).unwrap();
        assert_eq!((c.plan.lora.r, c.optimizer.lr, c.seed, c.plan.seed, c.drop_last), (16, 4e-4, 7, 7, false));
        assert_eq!(c.plan.lora.scaling, Scaling::Peft);
        apply(&mut c, "target_modules", &Value::from("q_lin,v_lin")).unwrap();
        assert_eq!(c.plan.targets, TargetModules::Names(vec!["q_lin".into(), "v_lin".into()]));
        apply(&mut c, "lora_mlp", &Value::from(true)).unwrap();
        assert_eq!(c.plan.targets, TargetModules::Flags(SeedFlags { mlp: true, ..Default::default() }));
    }

    #[test]
    fn bad_values_name_the_flag_and_what_it_takes() {
        let mut c = TrainConfig::default();
        let e = apply(&mut c, "lora_r", &Value::from(0)).unwrap_err().to_string();
        assert!(e.contains("--lora-r") && e.contains(">= 1"), "{e}");
        let e = apply(&mut c, "lr", &Value::from(-1.0)).unwrap_err().to_string();
        assert!(e.contains("--lr") && e.contains("> 0"), "{e}");
        assert!(apply(&mut c, "no_such", &Value::from(1)).is_err());
        let names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "option names must be unique");
    }
}
