//! Inference: evaluating a model on labelled examples ([`evaluate`]: logits, accuracy, confusion,
//! per-class metrics), classifying texts with a base model and adapters ([`predict`]), and
//! generating text with a decoder ([`generate`], chat prompts by [`chat`]).

pub mod chat;
pub mod evaluate;
pub mod generate;
pub mod predict;

pub use evaluate::{evaluate, metrics, predict_logits, Metrics};
pub use predict::{classify, read_texts, AdapterSwitch, Prediction};
