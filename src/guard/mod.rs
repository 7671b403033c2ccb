//! Checks made before work starts, for any [`Model`]: what a job will need in memory
//! ([`memory`]), whether an adapter belongs to the base it is applied to ([`fit`]), and the limits
//! of the model itself — the position table (`--max-length`), the vocabulary (token ids from the
//! tokenizer), the layer sizes (LoRA's rank), and finite weights and outputs. Each check turns
//! what would be a panic, an out-of-memory kill or a silently wrong answer into an error (or a
//! warning, where the user may mean it) that names the problem and the fix.

pub mod fit;
pub mod memory;

use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};
use crate::plan::{TrainMode, TrainPlan};

/// The longest sequence the model takes: `requested`, or the model's position table when that is
/// shorter (with a note saying so, naming `flag`).
pub fn clamp_max_length(requested: usize, config: &ModelConfig, flag: &str) -> (usize, Option<String>) {
    let limit = config.max_positions();
    if limit > 0 && requested > limit {
        let note = format!(
            "note: {flag} {requested} is more than this model's max_position_embeddings ({limit}); texts are truncated to {limit} tokens"
        );
        (limit, Some(note))
    } else {
        (requested, None)
    }
}

/// Refuses token ids the model has no embedding for (a tokenizer larger than the model's
/// vocabulary), naming the first one, its example and the fix. `source` names the tokenizer.
pub fn check_token_ids(ids: &[Vec<u32>], config: &ModelConfig, source: &str) -> Result<()> {
    let vocab = config.vocab_size();
    for (i, seq) in ids.iter().enumerate() {
        if let Some(&id) = seq.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::InvalidOption(format!(
                "example {} has token id {id}, beyond this model's vocabulary of {vocab} embeddings: the tokenizer ({source}) does not belong to this model; use the model's own tokenizer files (tokenizer.json / vocab.txt of its folder)",
                i + 1
            )));
        }
    }
    Ok(())
}

/// Checks LoRA's rank against the layers it goes on (in `lora` mode): a rank above both sides of a
/// layer can never be used and is refused; one above the smaller side only (e.g. a 2-class
/// classifier) adds nothing over training the layer itself, and gets a warning.
pub fn check_lora_rank(model: &Model, plan: &TrainPlan) -> Result<Option<String>> {
    if plan.mode != TrainMode::Lora {
        return Ok(None);
    }
    let r = plan.lora.r;
    let picked = plan.targets.resolve(&model.linear_modules())?;
    let mut over_min = Vec::new();
    for (lin, pick) in model.linears().iter().zip(picked) {
        if !pick {
            continue;
        }
        let (i, o) = (lin.in_dim(), lin.out_dim());
        if r > i.max(o) {
            return Err(Error::InvalidOption(format!(
                "--lora-r {r} is larger than the layer it goes on ({}: {i} → {o}); LoRA's rank can be at most min(in, out) = {} there to change anything: use a rank such as 4, 8 or 16",
                lin.path,
                i.min(o)
            )));
        }
        if r > i.min(o) {
            over_min.push(format!("{} ({i} → {o})", lin.path));
        }
    }
    Ok((!over_min.is_empty()).then(|| {
        format!(
            "warning: --lora-r {r} is above the rank of {}: there LoRA has more parameters than the layer itself and can do no more than training it (--modules-to-save)",
            over_min.join(", ")
        )
    }))
}

/// Parameters holding NaN or infinity: (name, count), in parameter order.
pub fn non_finite_params(model: &Model) -> Vec<(String, usize)> {
    model
        .params()
        .iter()
        .filter_map(|p| {
            let n = p.data.iter().filter(|v| !v.is_finite()).count();
            (n > 0).then(|| (p.name.clone(), n))
        })
        .collect()
}

/// Refuses a model whose weights hold NaN or infinity (`what` names them, e.g. "the base model
/// assets/x"): everything computed from them would be NaN.
pub fn check_finite(model: &Model, what: &str) -> Result<()> {
    let bad = non_finite_params(model);
    match bad.first() {
        None => Ok(()),
        Some((name, _)) => Err(Error::NonFinite {
            what: format!("{what}'s weights"),
            name: name.clone(),
            count: bad.iter().map(|(_, n)| n).sum(),
            fix: "the file is corrupt or the run diverged: use another copy of the model, or retrain with a lower --lr".into(),
        }),
    }
}

/// Refuses logits [n, k] that are not finite, naming the first example.
pub fn check_logits(logits: &[f32], k: usize, what: &str) -> Result<()> {
    let bad = logits.iter().filter(|v| !v.is_finite()).count();
    if bad == 0 {
        return Ok(());
    }
    let first = logits.iter().position(|v| !v.is_finite()).unwrap_or(0) / k.max(1);
    Err(Error::NonFinite {
        what: format!("the logits of {what}"),
        name: format!("example {}", first + 1),
        count: bad,
        fix: "the weights or the adapter produce NaN or infinity: check them (lowrank refuses non-finite weights it loads, so the overflow happens inside the network: retrain with a lower --lr or --clip-grad-norm)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{LoraConfig, SeedFlags, TargetModules};
    use crate::model::HeadKind;

    fn tiny() -> Model {
        let cfg = ModelConfig::from_json_str(
            r#"{"model_type":"bert","vocab_size":20,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":16}"#,
        )
        .unwrap();
        Model::new(&cfg, HeadKind::Bert, 2)
    }

    #[test]
    fn max_length_is_clamped_to_the_position_table_with_a_note() {
        let m = tiny();
        assert_eq!(clamp_max_length(12, &m.config(), "--max-length"), (12, None));
        let (n, note) = clamp_max_length(512, &m.config(), "--max-length");
        assert_eq!(n, 16);
        assert!(note.unwrap().contains("max_position_embeddings (16)"));
    }

    #[test]
    fn token_ids_beyond_the_vocabulary_are_refused() {
        let m = tiny();
        check_token_ids(&[vec![2, 19, 3]], &m.config(), "t").unwrap();
        let e = check_token_ids(&[vec![2, 3], vec![2, 20, 3]], &m.config(), "big/tokenizer.json").unwrap_err().to_string();
        assert!(
            e.contains("example 2") && e.contains("token id 20") && e.contains("20 embeddings") && e.contains("big/tokenizer.json"),
            "{e}"
        );
    }

    #[test]
    fn rank_is_checked_against_the_layers() {
        let m = tiny();
        let plan = |r, head| TrainPlan {
            lora: LoraConfig { r, ..Default::default() },
            targets: TargetModules::Flags(SeedFlags { query: true, value: true, head, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(check_lora_rank(&m, &plan(4, false)).unwrap(), None);
        let e = check_lora_rank(&m, &plan(100_000_000, false)).unwrap_err().to_string();
        assert!(e.contains("100000000") && e.contains("8 → 8") && e.contains("at most min(in, out) = 8"), "{e}");
        let w = check_lora_rank(&m, &plan(4, true)).unwrap().unwrap();
        assert!(w.contains("classifier (8 → 2)"), "{w}");
        assert_eq!(check_lora_rank(&m, &TrainPlan { mode: TrainMode::Full, ..plan(100_000_000, false) }).unwrap(), None);
    }

    #[test]
    fn non_finite_weights_and_logits_are_refused() {
        let mut m = tiny();
        check_finite(&m, "the base model").unwrap();
        m.base_params_mut()[3].data[1] = f32::NAN;
        m.base_params_mut()[5].data[0] = f32::INFINITY;
        let e = check_finite(&m, "the base model").unwrap_err().to_string();
        assert!(e.contains("2 non-finite") && e.contains("base model's weights"), "{e}");
        check_logits(&[0.1, 0.2], 2, "x").unwrap();
        let e = check_logits(&[0.1, 0.2, f32::NAN, 1.0], 2, "the texts").unwrap_err().to_string();
        assert!(e.contains("example 2") && e.contains("1 non-finite"), "{e}");
    }
}
