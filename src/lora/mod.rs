//! LoRA, in pieces as in PEFT: the configuration ([`config`]: r, alpha, scaling, initialisation,
//! DoRA, bias), the layer math ([`layer`]: a low-rank update added to a frozen linear; [`dora`]:
//! its weight-decomposed variant), how A and B start ([`init`]: PEFT's init_lora_weights, PiSSA
//! and OLoRA from the base weight's SVD / QR), where it goes ([`targets`]) and per-module
//! variations ([`pattern`]: rank_pattern, alpha_pattern, layers_to_transform).

pub mod config;
pub mod dora;
pub mod init;
pub mod layer;
pub mod pattern;
pub mod targets;

pub use config::{Init, LoraConfig, Scaling};
pub use dora::Dora;
pub use layer::{LoraLayer, LoraScratch};
pub use pattern::LoraPatterns;
pub use targets::{Role, SeedFlags, TargetModules};
