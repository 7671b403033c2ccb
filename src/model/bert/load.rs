//! Building a BERT-family encoder from a Hugging Face model folder: config.json +
//! model.safetensors, with or without the `distilbert.` / `bert.` prefix, a head loaded when
//! present and initialised otherwise, and BERT → DistilBERT conversion for the DistilBERT head.

use super::config::{Arch, EncoderConfig};
use super::{Encoder, HeadKind};
use crate::error::{Error, Result};
use crate::model::load::{LoadOptions, LoadReport};
use crate::param::Param;
use crate::tensorfile::TensorFile;
use std::collections::BTreeSet;
use std::path::Path;

/// Tensors of pre-training heads and buffers that a classification model does not use.
fn ignorable(name: &str, head: HeadKind) -> bool {
    name.ends_with("position_ids")
        || ["cls.", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "lm_head.", "qa_outputs."]
            .iter()
            .any(|p| name.starts_with(p))
        || (head != HeadKind::Bert && name.contains("pooler."))
}

impl Encoder {
    /// Loads a model folder whose config.json is `config` (or, for a bare config.json, a zero
    /// model that can only be counted).
    pub fn from_pretrained(path: &Path, config: EncoderConfig, opts: &LoadOptions) -> Result<(Encoder, LoadReport)> {
        let head = opts.head.unwrap_or(match config.arch {
            Arch::DistilBert => HeadKind::DistilBert,
            Arch::Bert => HeadKind::Bert,
        });
        if !matches!(head, HeadKind::DistilBert | HeadKind::Bert) {
            return Err(Error::InvalidOption(format!(
                "--head {} is a decoder's head; an encoder ({}) takes --head distilbert or bert",
                head.name(),
                config.arch.model_type()
            )));
        }
        let num_labels = opts.num_labels.or(config.id2label.as_ref().map(|m| m.len())).unwrap_or(2);
        if num_labels < 2 {
            return Err(Error::InvalidOption(format!("a classifier needs at least 2 classes, got {num_labels}")));
        }
        let convert = config.arch == Arch::Bert && head == HeadKind::DistilBert;
        let (mut model, mut report) = if convert {
            (Encoder::new(&config, HeadKind::Bert, num_labels), LoadReport::default())
        } else {
            (Encoder::new(&config, head, num_labels), LoadReport::default())
        };
        if path.is_dir() {
            let weights = path.join("model.safetensors");
            if !weights.exists() {
                return Err(Error::MissingModelFile { dir: path.to_path_buf(), file: "model.safetensors" });
            }
            let file = TensorFile::read(&weights)?;
            report = model.load_weights(&file, opts.seed)?;
        }
        if convert {
            model = model.into_distilbert(num_labels);
            model.init_head(opts.seed, initializer_range(&config));
            report.converted_to_distilbert = true;
            report.initialised =
                ["pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"].map(String::from).to_vec();
        }
        model.initialised = report.initialised.clone();
        Ok((model, report))
    }

    /// Copies every tensor of `file` into the model: encoder tensors must all be present with
    /// the right shapes; head tensors absent from the file are initialised from `seed`.
    pub fn load_weights(&mut self, file: &TensorFile, seed: u64) -> Result<LoadReport> {
        let arch = self.config.arch;
        let prefix = format!("{}.", arch.prefix());
        let head_kind = self.head.kind;
        let std = initializer_range(&self.config);
        let mut used = BTreeSet::new();
        let mut report = LoadReport::default();
        let head_names: Vec<String> =
            [&self.head.hidden, &self.head.classifier].iter().flat_map(|l| l.base_params().map(|p| p.name.clone())).collect();
        let mut missing_head = false;
        for p in self.base_params_mut() {
            let mut candidates = vec![p.name.clone()];
            if let Some(bare) = p.name.strip_prefix(&prefix) {
                candidates.push(bare.to_string());
            }
            for c in candidates.clone() {
                if let Some(stem) = c.strip_suffix(".LayerNorm.weight") {
                    candidates.push(format!("{stem}.LayerNorm.gamma"));
                } else if let Some(stem) = c.strip_suffix(".LayerNorm.bias") {
                    candidates.push(format!("{stem}.LayerNorm.beta"));
                }
            }
            match candidates.iter().find(|c| file.tensors.contains_key(*c)) {
                Some(key) => {
                    copy_into(p, key, file)?;
                    used.insert(key.clone());
                }
                None if head_names.contains(&p.name) => {
                    missing_head = true;
                    report.initialised.push(p.name.clone());
                }
                None => {
                    return Err(Error::MissingTensor {
                        name: p.name.clone(),
                        file: file.path.clone(),
                        arch: arch.model_type(),
                        prefix: arch.prefix(),
                    })
                }
            }
        }
        for name in file.tensors.keys().filter(|k| !used.contains(*k)) {
            if ignorable(name, head_kind) {
                report.ignored.push(name.clone());
            } else {
                return Err(Error::UnexpectedTensor { name: name.clone(), file: file.path.clone(), arch: arch.model_type() });
            }
        }
        if missing_head {
            // Initialise only the head linears that were absent, each from its own stream.
            let mut fresh = self.clone();
            fresh.init_head(seed, std);
            for (lin, new) in [(&mut self.head.hidden, &fresh.head.hidden), (&mut self.head.classifier, &fresh.head.classifier)] {
                if report.initialised.contains(&lin.weight.name) {
                    lin.weight.data.clone_from(&new.weight.data);
                    if let (Some(b), Some(nb)) = (&mut lin.bias, &new.bias) {
                        b.data.clone_from(&nb.data);
                    }
                }
            }
        }
        Ok(report)
    }

    /// The same network in DistilBERT form: token type 0 folded into the position table, the
    /// pooler and BERT's post-attention dropout dropped, DistilBERT names and head (of zeros).
    pub fn into_distilbert(self, num_labels: usize) -> Encoder {
        let cfg = self.config.as_distilbert();
        let mut out = Encoder::new(&cfg, HeadKind::DistilBert, num_labels);
        out.embeddings.word.data = self.embeddings.word.data;
        out.embeddings.position.data = self.embeddings.position.data;
        if let Some(tt) = &self.embeddings.token_type {
            let c = cfg.dim;
            for row in out.embeddings.position.data.chunks_exact_mut(c) {
                row.iter_mut().zip(&tt.data[..c]).for_each(|(p, t)| *p += t);
            }
        }
        out.embeddings.ln.weight.data = self.embeddings.ln.weight.data;
        out.embeddings.ln.bias.data = self.embeddings.ln.bias.data;
        for (dst, src) in out.layers.iter_mut().zip(self.layers) {
            for (d, s) in dst.linears.iter_mut().zip(src.linears) {
                d.weight.data = s.weight.data;
                if let (Some(db), Some(sb)) = (&mut d.bias, s.bias) {
                    db.data = sb.data;
                }
            }
            dst.ln1.weight.data = src.ln1.weight.data;
            dst.ln1.bias.data = src.ln1.bias.data;
            dst.ln2.weight.data = src.ln2.weight.data;
            dst.ln2.bias.data = src.ln2.bias.data;
        }
        out
    }
}

fn initializer_range(config: &EncoderConfig) -> f32 {
    config.raw.get("initializer_range").and_then(serde_json::Value::as_f64).map_or(0.02, |v| v as f32)
}

fn copy_into(p: &mut Param, key: &str, file: &TensorFile) -> Result<()> {
    let data = file.f32(key, &p.shape).map_err(|e| match e {
        Error::ShapeMismatch { expected, got, .. } => Error::ShapeMismatch { name: key.to_string(), expected, got },
        other => other,
    })?;
    p.data.copy_from_slice(data);
    Ok(())
}
