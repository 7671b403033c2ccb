//! Inference: evaluating a model on labelled examples ([`evaluate`]: logits, accuracy, confusion,
//! per-class metrics) and classifying texts with a base model and adapters ([`predict`]).

pub mod evaluate;
pub mod predict;

pub use evaluate::{evaluate, metrics, predict_logits, Metrics};
pub use predict::{classify, read_texts, AdapterSwitch, Prediction};
