//! Prediction: labels, probabilities and logits for raw texts, batched and multi-threaded;
//! adapters applied to one base model in turn ([`AdapterSwitch`]); and reading unlabelled texts
//! from .txt / .csv / .tsv / .jsonl files.

use super::evaluate::{argmax, predict_logits};
use crate::adapter::{load_into, read_adapter};
use crate::error::{Error, Result};
use crate::model::{Activations, Linear, Model};
use crate::ops::loss::softmax_rows;
use crate::tensorfile::TensorFile;
use crate::tokenize::Tokenizer;
use serde::Serialize;
use std::path::Path;

/// The prediction for one text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Predicted class name.
    pub label: String,
    /// Predicted class id.
    pub label_id: usize,
    /// Its softmax probability.
    pub probability: f32,
    /// Raw logits.
    pub logits: Vec<f32>,
}

/// Classifies `texts`; `on_batch` receives the number of texts done per batch.
pub fn classify(
    model: &Model,
    tokenizer: &Tokenizer,
    names: &[String],
    texts: &[&str],
    batch_size: usize,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<Prediction>> {
    let ids = tokenizer.encode_batch(texts)?;
    crate::guard::check_token_ids(&ids, &model.config(), &tokenizer.source.display().to_string())?;
    let mut acts = Activations::default();
    let k = model.num_labels();
    let logits = predict_logits(model, &mut acts, &ids, batch_size, tokenizer.pad_id, on_batch);
    crate::guard::check_logits(&logits, k, "the texts")?;
    let mut probs = vec![0.0; logits.len()];
    softmax_rows(&mut probs, &logits, k);
    Ok(logits
        .chunks_exact(k)
        .zip(probs.chunks_exact(k))
        .map(|(l, p)| {
            let id = argmax(l);
            Prediction {
                label: names.get(id).cloned().unwrap_or_else(|| format!("LABEL_{id}")),
                label_id: id,
                probability: p[id],
                logits: l.to_vec(),
            }
        })
        .collect())
}

/// One base model in memory with adapters applied to it one at a time: each is loaded, merged
/// for speed, used, and removed again, leaving the base exactly as it was.
pub struct AdapterSwitch {
    /// The model, with the current adapter (if any) applied.
    pub model: Model,
    base_head: Vec<Linear>,
    replaced: Vec<(String, Vec<f32>)>,
}

impl AdapterSwitch {
    /// Wraps a base model.
    pub fn new(mut model: Model) -> Self {
        let base_head = model.head_linears_mut().into_iter().map(|l| l.clone()).collect();
        AdapterSwitch { model, base_head, replaced: Vec::new() }
    }

    /// The base model's own class names (config.json's id2label), if it has them.
    pub fn base_labels(&self) -> Vec<String> {
        self.model.id2label().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Applies the adapter in `dir` (after removing any previous one); returns its class names
    /// (the base's when the adapter has no labels.json).
    pub fn apply(&mut self, dir: &Path) -> Result<Vec<String>> {
        self.reset();
        let files = read_adapter(dir)?;
        if files.head().is_some_and(|h| h != self.model.head_kind()) {
            return Err(Error::Adapter {
                dir: dir.to_path_buf(),
                message: format!(
                    "trained with the {:?} head but the base is loaded with {:?}; predict with it separately",
                    files.head().expect("checked"),
                    self.model.head_kind()
                ),
            });
        }
        let k = files.labels.as_ref().map_or(self.model.num_labels(), |l| l.len());
        if k != self.model.num_labels() {
            self.model.reset_classifier(k);
        }
        // Keep copies of the base tensors the adapter's modules_to_save will overwrite.
        let file = TensorFile::read(&dir.join("adapter_model.safetensors"))?;
        let names: Vec<&str> =
            file.tensors.keys().filter(|k| !k.contains(".lora_")).filter_map(|k| k.strip_prefix("base_model.model.")).collect();
        self.replaced = self
            .model
            .base_params()
            .into_iter()
            .filter(|p| names.contains(&p.name.as_str()))
            .map(|p| (p.name.clone(), p.data.clone()))
            .collect();
        load_into(dir, &mut self.model)?;
        crate::guard::check_finite(&self.model, &format!("the base model with adapter {}", dir.display()))?;
        self.model.merge_lora()?;
        Ok(files.labels.map_or_else(|| self.base_labels(), |l| l.names().to_vec()))
    }

    /// Removes the current adapter, restoring the base model.
    pub fn reset(&mut self) {
        for l in self.model.linears_mut() {
            l.remove_lora();
        }
        let replaced = std::mem::take(&mut self.replaced);
        for p in self.model.base_params_mut() {
            if let Some((_, data)) = replaced.iter().find(|(n, _)| *n == p.name) {
                if data.len() == p.data.len() {
                    p.data.copy_from_slice(data);
                }
            }
        }
        for (l, base) in self.model.head_linears_mut().into_iter().zip(&self.base_head) {
            *l = base.clone();
        }
    }
}

/// Reads texts to classify: one per line (.txt), a `text_column` (.csv / .tsv), or a `text`
/// field per line (.jsonl).
pub fn read_texts(path: &Path, text_column: &str) -> Result<Vec<String>> {
    let raw = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let text = String::from_utf8(raw).map_err(|e| Error::TextFile {
        path: path.to_path_buf(),
        line: None,
        message: format!("not UTF-8 (byte {}); convert it to UTF-8", e.utf8_error().valid_up_to()),
    })?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let texts: Vec<String> = match ext.as_str() {
        "csv" | "tsv" => {
            let mut r = csv::ReaderBuilder::new().delimiter(if ext == "tsv" { b'\t' } else { b',' }).from_reader(text.as_bytes());
            let headers =
                r.headers().map_err(|e| Error::TextFile { path: path.to_path_buf(), line: Some(1), message: e.to_string() })?.clone();
            if headers.iter().filter(|h| *h == text_column).count() > 1 {
                return Err(Error::TextFile {
                    path: path.to_path_buf(),
                    line: Some(1),
                    message: format!("the header has several columns named {text_column:?}; rename all but the one holding the texts"),
                });
            }
            let col = headers.iter().position(|h| h == text_column).ok_or_else(|| Error::TextFile {
                path: path.to_path_buf(),
                line: Some(1),
                message: format!(
                    "no column {text_column:?} (columns: {}); pass --text-column",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            })?;
            let mut out = Vec::new();
            for rec in r.records() {
                let rec = rec.map_err(|e| Error::TextFile {
                    path: path.to_path_buf(),
                    line: e.position().map(|p| p.line() as usize),
                    message: e.to_string(),
                })?;
                out.push(rec.get(col).unwrap_or("").to_string());
            }
            out
        }
        "jsonl" => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::TextFile {
                    path: path.to_path_buf(),
                    line: Some(i + 1),
                    message: e.to_string(),
                })?;
                let t = v.get(text_column).and_then(|t| t.as_str()).ok_or_else(|| Error::TextFile {
                    path: path.to_path_buf(),
                    line: Some(i + 1),
                    message: format!("no string field {text_column:?}"),
                })?;
                out.push(t.to_string());
            }
            out
        }
        "json" => {
            let fail = |line: Option<usize>, message: String| Error::TextFile { path: path.to_path_buf(), line, message };
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                fail(
                    Some(e.line()),
                    format!("{e} (a .json file of texts is one array of strings or of objects with a {text_column:?} field)"),
                )
            })?;
            let serde_json::Value::Array(items) = v else {
                return Err(fail(None, format!("holds one JSON value that is not an array; give an array of strings or of objects with a {text_column:?} field (or one object a line in a .jsonl file)")));
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str().or_else(|| item.get(text_column).and_then(|t| t.as_str())) {
                    Some(t) => out.push(t.to_string()),
                    None => return Err(fail(None, format!("item {} of the array is neither a string nor an object with a string field {text_column:?}; pass --text-column", i + 1))),
                }
            }
            out
        }
        _ => text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect(),
    };
    if texts.is_empty() {
        return Err(Error::TextFile { path: path.to_path_buf(), line: None, message: "holds no texts".into() });
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_format() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        std::fs::write(&p, "one\n\ntwo\n").unwrap();
        assert_eq!(read_texts(&p, "text").unwrap(), vec!["one", "two"]);
        let p = d.path().join("a.csv");
        std::fs::write(&p, "id,text\n1,\"hi, there\"\n").unwrap();
        assert_eq!(read_texts(&p, "text").unwrap(), vec!["hi, there"]);
        assert!(read_texts(&p, "body").unwrap_err().to_string().contains("--text-column"));
        let p = d.path().join("a.json");
        std::fs::write(&p, "[\n {\"text\": \"good\"},\n {\"text\": \"bad\", \"label\": 0},\n \"plain\"\n]\n").unwrap();
        assert_eq!(read_texts(&p, "text").unwrap(), vec!["good", "bad", "plain"]);
        assert!(read_texts(&p, "body").unwrap_err().to_string().contains("item 1"));
        std::fs::write(&p, "{\"text\": \"one object\"}").unwrap();
        assert!(read_texts(&p, "text").unwrap_err().to_string().contains("not an array"));
        let p = d.path().join("dup.csv");
        std::fs::write(&p, "text,text\na,b\n").unwrap();
        assert!(read_texts(&p, "text").unwrap_err().to_string().contains("several columns named \"text\""));
        let p = d.path().join("a.jsonl");
        std::fs::write(&p, "{\"text\": \"x\"}\n").unwrap();
        assert_eq!(read_texts(&p, "text").unwrap(), vec!["x"]);
        let p = d.path().join("empty.txt");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_texts(&p, "text").is_err());
    }
}
