//! A training run's folder: its resolved configuration ([`config`], config.json), its resumable
//! checkpoint and best weights ([`checkpoint`]), and loading a trained run back ([`trained`]).
//! Training ([`crate::train`]) writes run folders; evaluation, prediction and export read them.

pub mod checkpoint;
pub mod config;
pub mod trained;

pub use config::{Task, TrainConfig};
pub use trained::{build_model, load_trained, Trained};

use std::path::PathBuf;

/// The files of a run folder.
pub struct RunDir(pub PathBuf);

impl RunDir {
    /// config.json: the run's [`TrainConfig`].
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    /// The resumable checkpoint (trainable tensors, optimizer state, progress).
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    /// The best-validation trainable weights.
    pub fn best(&self) -> PathBuf {
        self.0.join("best.safetensors")
    }
    /// metrics.jsonl: one record per step and per evaluation.
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    /// summary.json: the finished run's result.
    pub fn summary(&self) -> PathBuf {
        self.0.join("summary.json")
    }
    /// labels.json: the run's classes (classification runs).
    pub fn labels(&self) -> PathBuf {
        self.0.join("labels.json")
    }
}
