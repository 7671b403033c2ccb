//! The adapters a generation session may answer with, by name, over one base model in memory
//! ([`AdapterSwitch`]: the chosen adapter is loaded and merged, the previous one removed), with
//! errors that say which names exist and when an adapter does not fit the base.

use crate::adapter::read_adapter;
use crate::error::{Error, Result};
use crate::infer::AdapterSwitch;
use crate::model::Model;
use std::path::PathBuf;

/// The name that selects the base model without any adapter.
pub const BASE: &str = "base";

/// Named adapters over one base model.
pub struct AdapterSet {
    switch: AdapterSwitch,
    adapters: Vec<(String, PathBuf)>,
    current: Option<String>,
}

/// Parses `[NAME=]DIR` (without a name, the folder's last component names it).
pub fn parse_adapter_arg(arg: &str) -> (String, PathBuf) {
    match arg.split_once('=') {
        Some((n, d)) if !n.is_empty() && !n.contains('/') => (n.to_string(), PathBuf::from(d)),
        _ => {
            let dir = PathBuf::from(arg);
            let name = dir.file_name().map_or_else(|| arg.to_string(), |n| n.to_string_lossy().into_owned());
            (name, dir)
        }
    }
}

impl AdapterSet {
    /// The base `model` with `adapters` (name, folder) available; names must be distinct and not
    /// [`BASE`].
    pub fn new(model: Model, adapters: Vec<(String, PathBuf)>) -> Result<AdapterSet> {
        for (i, (n, _)) in adapters.iter().enumerate() {
            if n == BASE {
                return Err(Error::InvalidOption(format!("the adapter name {BASE:?} is reserved for the base model; use NAME=DIR")));
            }
            if adapters[..i].iter().any(|(m, _)| m == n) {
                return Err(Error::InvalidOption(format!("two adapters are named {n:?}; name them apart with NAME=DIR")));
            }
        }
        Ok(AdapterSet { switch: AdapterSwitch::new(model), adapters, current: None })
    }

    /// The model with the current adapter applied.
    pub fn model(&self) -> &Model {
        &self.switch.model
    }

    /// The names of the adapters.
    pub fn names(&self) -> Vec<&str> {
        self.adapters.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The adapter in use (None: the base model).
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// What `name` selects: an adapter, [`BASE`], or (None) the only adapter there is.
    fn resolve(&self, name: Option<&str>) -> Result<Option<usize>> {
        let list = || {
            let mut v: Vec<&str> = self.names();
            v.push(BASE);
            v.join(", ")
        };
        match name {
            Some(BASE) => Ok(None),
            Some(n) => self.adapters.iter().position(|(m, _)| m == n).map(Some).ok_or_else(|| {
                Error::InvalidOption(format!("unknown adapter name {n:?}; the names are: {} (give adapters as --adapter NAME=DIR)", list()))
            }),
            None => match self.adapters.len() {
                0 => Ok(None),
                1 => Ok(Some(0)),
                _ => Err(Error::InvalidOption(format!(
                    "{} adapters are loaded; choose one with --adapter-name NAME or an \"adapter\" field per request (names: {})",
                    self.adapters.len(),
                    list()
                ))),
            },
        }
    }

    /// Switches to the adapter `name` selects; returns whether the model changed. An adapter that
    /// does not fit the base is an error naming both.
    pub fn select(&mut self, name: Option<&str>) -> Result<bool> {
        let want = self.resolve(name)?;
        let want_name = want.map(|i| self.adapters[i].0.clone());
        if want_name == self.current {
            return Ok(false);
        }
        match want {
            None => self.switch.reset(),
            Some(i) => {
                let (n, dir) = self.adapters[i].clone();
                if let Err(e) = self.switch.apply(&dir) {
                    self.switch.reset();
                    self.current = None;
                    let base = read_adapter(&dir).ok().and_then(|f| f.config.base_model_name_or_path);
                    let trained = base.map(|b| format!(" (its adapter_config.json names the base {b:?})")).unwrap_or_default();
                    return Err(Error::Adapter {
                        dir,
                        message: format!(
                            "adapter {n:?} does not fit this {} base model{trained}: {e}; use it with the base it was trained on",
                            self.switch.model.model_type()
                        ),
                    });
                }
            }
        }
        self.current = want_name;
        Ok(true)
    }
}
