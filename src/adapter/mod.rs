//! Adapters in Hugging Face PEFT's format (adapter_config.json + adapter_model.safetensors):
//! the configuration file ([`config`]), saving what a model trains ([`save`]) and loading
//! adapters that PEFT or lowrank wrote ([`load`]). Writing a run's adapter is the training
//! layer's job ([`crate::train::export`]); merged model folders are [`crate::model::save`]'s.

pub mod config;
pub mod load;
pub mod save;

pub use config::PeftConfig;
pub use load::{load_into, read_adapter, AdapterFiles};
pub use save::{save_adapter, AdapterInfo};
