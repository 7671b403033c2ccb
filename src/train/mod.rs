//! Training: the run's configuration, data, batching, optimizer, loop, evaluation, checkpoints
//! and plots.

pub mod batches;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod optim;
pub mod plot;
pub mod run;
pub mod state;
pub mod trained;

pub use config::{DataSource, TrainConfig};
pub use run::{train, Outcome, Summary};
