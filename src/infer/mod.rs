//! Inference: evaluating a model on labelled examples ([`evaluate`]: logits, accuracy, confusion,
//! per-class metrics), a causal language model on its examples ([`lm_eval`]: loss, perplexity),
//! classifying texts with a base model and adapters ([`predict`]), and generating text with a
//! decoder ([`generate`]; chat prompts rendered by [`crate::data::lm::ChatTemplate`], as training renders them).

pub mod answers;
pub mod evaluate;
pub mod generate;
pub mod lm_eval;
pub mod predict;

pub use evaluate::{evaluate, metrics, predict_logits, Metrics};
pub use lm_eval::evaluate_lm;
pub use predict::{classify, read_texts, AdapterSwitch, Prediction};
