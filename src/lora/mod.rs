//! LoRA, in three pieces as in PEFT: the configuration ([`config`]), the layer math
//! ([`layer`]: a low-rank update added to a frozen linear), and where it goes ([`targets`]).

pub mod config;
pub mod layer;
pub mod targets;

pub use config::{LoraConfig, Scaling};
pub use layer::LoraLayer;
pub use targets::{Role, SeedFlags, TargetModules};
