//! lowrank: LoRA fine-tuning on the CPU, written from scratch.
//!
//! The pipeline, one module per step, each floor using only the floors below it:
//!
//! 1. [`tokenize`] text → token ids; [`data`] labelled files → splits → [`data::batch`] packed batches;
//! 2. [`model`] forward and hand-written backward (built from the kernels in [`ops`], [`lora`]
//!    layers, [`param`] tensors), loaded with [`tensorfile`] / [`hub`];
//! 3. [`plan`] what trains; [`optim`] the optimizer;
//! 4. [`run`] a run folder's configuration and checkpoints; [`adapter`] PEFT adapter files;
//! 5. [`infer`] evaluation and prediction; [`train`] the training step and loop;
//! 6. [`compare`] the seed's comparison, [`bench`] benchmarks, [`sweep`] hyperparameter sweeps;
//! 7. [`cli`] the command line ([`options`] is the one catalogue of training options that the
//!    command line, sweep spaces and adapters all use).
//!
//! [`error`], [`fsutil`] (atomic writes), [`plot`] and [`ci`] serve every floor; [`fuzzing`] is
//! the fuzzers' way into every reader of user files.

pub mod adapter;
pub mod bench;
pub mod ci;
pub mod cli;
pub mod compare;
pub mod data;
pub mod error;
pub mod fsutil;
pub mod fuzzing;
pub mod gguf;
pub mod guard;
pub mod hub;
pub mod infer;
pub mod lora;
pub mod model;
pub mod ops;
pub mod optim;
pub mod options;
pub mod param;
pub mod plan;
pub mod plot;
pub mod run;
pub mod sweep;
pub mod tensorfile;
pub mod tokenize;
pub mod train;
