//! Training: one step ([`step`]: forward, loss, backward, optimizer — shared with the benchmark),
//! the loop around it ([`run`]: epochs, validation, best and resumable checkpoints, progress) and
//! the examples it takes for either task ([`data`]), the
//! learning curves ([`plot`]) and the export of a finished run ([`export`]).

pub mod data;
pub mod export;
pub mod plot;
pub mod run;
mod start;
pub mod step;

pub use run::{train, Outcome, Summary};
pub use step::{StepReport, Stepper};
