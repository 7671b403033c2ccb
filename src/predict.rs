//! Prediction: labels, probabilities and logits for raw texts, batched and multi-threaded, and
//! reading unlabelled texts from .txt / .csv / .tsv / .jsonl files.

use crate::error::{Error, Result};
use crate::model::{Activations, Model};
use crate::ops::loss::softmax_rows;
use crate::tokenize::Tokenizer;
use crate::train::evaluate::{argmax, predict_logits};
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
    let mut acts = Activations::default();
    let k = model.num_labels();
    let logits = predict_logits(model, &mut acts, &ids, batch_size, tokenizer.pad_id, on_batch);
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

/// Reads texts to classify: one per line (.txt), a `text_column` (.csv / .tsv), or a `text`
/// field per line (.jsonl).
pub fn read_texts(path: &Path, text_column: &str) -> Result<Vec<String>> {
    let raw = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let text = String::from_utf8(raw).map_err(|e| {
        Error::Other(format!("{} is not UTF-8 (byte {}); convert it to UTF-8", path.display(), e.utf8_error().valid_up_to()))
    })?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let texts: Vec<String> = match ext.as_str() {
        "csv" | "tsv" => {
            let mut r = csv::ReaderBuilder::new().delimiter(if ext == "tsv" { b'\t' } else { b',' }).from_reader(text.as_bytes());
            let headers = r.headers().map_err(|e| Error::Other(format!("{}: {e}", path.display())))?.clone();
            let col = headers.iter().position(|h| h == text_column).ok_or_else(|| {
                Error::Other(format!(
                    "{} has no column {text_column:?} (columns: {}); pass --text-column",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let mut out = Vec::new();
            for rec in r.records() {
                let rec = rec.map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
                out.push(rec.get(col).unwrap_or("").to_string());
            }
            out
        }
        "jsonl" => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| Error::Other(format!("{} line {}: {e}", path.display(), i + 1)))?;
                let t = v
                    .get(text_column)
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| Error::Other(format!("{} line {}: no string field {text_column:?}", path.display(), i + 1)))?;
                out.push(t.to_string());
            }
            out
        }
        _ => text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect(),
    };
    if texts.is_empty() {
        return Err(Error::Other(format!("{} holds no texts", path.display())));
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
        let p = d.path().join("a.jsonl");
        std::fs::write(&p, "{\"text\": \"x\"}\n").unwrap();
        assert_eq!(read_texts(&p, "text").unwrap(), vec!["x"]);
        let p = d.path().join("empty.txt");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_texts(&p, "text").is_err());
    }
}
