//! lowrank: LoRA fine-tuning of transformer encoders on the CPU.
//!
//! The pipeline, one module per step: text → [`tokenize`] → [`data`] batches → [`model`] forward
//! (built from [`ops`] and [`lora`]) → loss → backward → [`train`] optimizer → checkpoint / [`adapter`].

pub mod adapter;
pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod error;
pub mod fsutil;
pub mod gguf;
pub mod hub;
pub mod lora;
pub mod model;
pub mod ops;
pub mod param;
pub mod plan;
pub mod plot;
pub mod predict;
pub mod sweep;
pub mod tokenize;
pub mod train;
