//! lowrank: LoRA fine-tuning of transformer encoders on the CPU.
//!
//! The pipeline, one module per step: text → [`tokenize`] → [`data`] batches → [`model`] forward
//! (built from [`ops`] and [`lora`]) → loss → backward → [`train`] optimizer → checkpoint / [`adapter`].

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod fsutil;
pub mod lora;
pub mod model;
pub mod ops;
pub mod param;
pub mod plan;
