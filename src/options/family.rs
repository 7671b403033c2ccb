//! The catalogue entries of LoRA's family: the initialisation (PEFT's init_lora_weights), DoRA,
//! lora_bias, per-module ranks and alphas, the layer filter, and LoRA+.

use super::{b, f, s, Group, Kind, TrainOption, POSITIVE};
use crate::error::{Error, Result};
use crate::lora::pattern::parse_pairs;
use crate::lora::Init;
use crate::run::TrainConfig;
use serde_json::Value;

fn layer_list(c: &mut TrainConfig, v: &Value) -> Result<()> {
    let list: std::result::Result<Vec<usize>, _> = s(v).split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::parse).collect();
    c.plan.patterns.layers_to_transform =
        Some(list.map_err(|_| Error::InvalidOption(format!("--layers-to-transform {v}: give layer indices like 4,5")))?);
    Ok(())
}

/// LoRA's family, in help order.
pub(super) static FAMILY: &[TrainOption] = &[
    TrainOption {
        name: "init",
        help: "how A and B start (PEFT's init_lora_weights): true (kaiming A, zero B), gaussian, raschka (the seed's), pissa, pissa_niter_K or olora; default: raschka for --scaling raschka, else true",
        kind: Kind::Text,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| {
            c.plan.lora.init = Some(s(v).parse::<Init>()?);
            Ok(())
        },
    },
    TrainOption {
        name: "dora",
        help: "DoRA (PEFT's use_dora): a trainable magnitude per output row over the LoRA direction",
        kind: Kind::Bool,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| {
            c.plan.lora.dora = b(v);
            Ok(())
        },
    },
    TrainOption {
        name: "lora_bias",
        help: "a trainable bias on every lora_B (PEFT's lora_bias)",
        kind: Kind::Bool,
        group: Group::Plan,
        sweep: true,
        show: |_| None,
        set: |c, v| {
            c.plan.lora.bias = b(v);
            Ok(())
        },
    },
    TrainOption {
        name: "rank_pattern",
        help: "per-module ranks (PEFT's rank_pattern): KEY=R,KEY=R or a JSON object; KEY is a regex matched against the end of module names, the first match wins",
        kind: Kind::Text,
        group: Group::Plan,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.plan.patterns.rank_pattern = parse_pairs("rank-pattern", s(v))?;
            Ok(())
        },
    },
    TrainOption {
        name: "alpha_pattern",
        help: "per-module alphas (PEFT's alpha_pattern), in --scaling's convention: KEY=ALPHA,... or a JSON object",
        kind: Kind::Text,
        group: Group::Plan,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.plan.patterns.alpha_pattern = parse_pairs("alpha-pattern", s(v))?;
            Ok(())
        },
    },
    TrainOption {
        name: "layers_to_transform",
        help: "only these layer indices get LoRA (PEFT's layers_to_transform), e.g. 4,5",
        kind: Kind::Text,
        group: Group::Plan,
        sweep: false,
        show: |_| None,
        set: layer_list,
    },
    TrainOption {
        name: "layers_pattern",
        help: "the name of the layer list in module paths for --layers-to-transform (PEFT's layers_pattern), e.g. layer",
        kind: Kind::Text,
        group: Group::Plan,
        sweep: false,
        show: |_| None,
        set: |c, v| {
            c.plan.patterns.layers_pattern = Some(s(v).split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect());
            Ok(())
        },
    },
    TrainOption {
        name: "loraplus_lr_ratio",
        help: "LoRA+ (PEFT's create_loraplus_optimizer): lora_B and 1-D tensors learn at --lr times this ratio",
        kind: POSITIVE,
        group: Group::Loop,
        sweep: true,
        show: |_| None,
        set: |c, v| {
            c.optimizer.loraplus_lr_ratio = Some(f(v));
            Ok(())
        },
    },
];

#[cfg(test)]
mod tests {
    use crate::options::apply;
    use crate::run::TrainConfig;
    use serde_json::Value;

    #[test]
    fn every_family_option_sets_what_it_names() {
        let mut c = TrainConfig::default();
        apply(&mut c, "init", &Value::from("pissa_niter_4")).unwrap();
        apply(&mut c, "dora", &Value::from(true)).unwrap();
        apply(&mut c, "rank_pattern", &Value::from("q_lin=16,lin1=4")).unwrap();
        apply(&mut c, "layers_to_transform", &Value::from("0,5")).unwrap();
        apply(&mut c, "loraplus_lr_ratio", &Value::from(16.0)).unwrap();
        assert_eq!((c.plan.lora.init, c.plan.lora.dora), (Some(crate::lora::Init::PissaNiter(4)), true));
        assert_eq!(c.plan.patterns.rank_pattern, vec![("q_lin".to_string(), 16), ("lin1".to_string(), 4)]);
        assert_eq!(c.plan.patterns.layers_to_transform, Some(vec![0, 5]));
        assert_eq!(c.optimizer.loraplus_lr_ratio, Some(16.0));
        assert!(apply(&mut c, "init", &Value::from("loftq")).unwrap_err().to_string().contains("pissa_niter_K"));
        assert!(apply(&mut c, "layers_to_transform", &Value::from("x")).is_err());
        apply(&mut c, "lora_bias", &Value::from(true)).unwrap();
        apply(&mut c, "alpha_pattern", &Value::from(r#"{"v_lin": 2.5}"#)).unwrap();
        apply(&mut c, "layers_pattern", &Value::from("layer")).unwrap();
        assert!(c.plan.lora.bias && c.plan.patterns.alpha_pattern == vec![("v_lin".to_string(), 2.5)]);
        assert_eq!(c.plan.patterns.layers_pattern, Some(vec!["layer".to_string()]));
    }
}
