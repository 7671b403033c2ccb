//! A sweep's results: the leaderboard by validation accuracy (Markdown and CSV), and pictures —
//! a rank × alpha heatmap of the best validation accuracy, accuracy against trainable parameters
//! (log scale), and the effect of each target flag — optionally beside the seed's own 570 runs.

use super::space::TrialParams;
use super::storage::{TrialRecord, TrialState};
use super::{Result, SweepError};
use crate::plot::{grouped_bars, heatmap, scatter_logx, Series};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One finished trial (or one run of the seed's grid).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Trial id (0 for the seed's runs).
    pub id: i64,
    /// Its parameters.
    pub params: TrialParams,
    /// Training accuracy (0..1).
    pub train_acc: f64,
    /// Validation accuracy (0..1).
    pub val_acc: f64,
    /// Test accuracy (0..1), when known.
    pub test_acc: Option<f64>,
    /// Trainable parameters.
    pub trainable_params: f64,
    /// Training examples per second.
    pub examples_per_s: Option<f64>,
}

impl Row {
    fn get(&self, k: &str) -> Option<&Value> {
        self.params.get(k)
    }
    fn num(&self, k: &str) -> Option<f64> {
        self.get(k).and_then(Value::as_f64)
    }
    fn flag(&self, k: &str) -> Option<bool> {
        self.get(k).and_then(Value::as_bool)
    }
    /// The scaling convention of the trial (raschka when unset, the seed's default).
    pub fn scaling(&self) -> String {
        self.get("scaling").and_then(Value::as_str).unwrap_or("raschka").to_string()
    }
}

/// The finished trials of a study, best validation accuracy first.
pub fn rows_from_trials(trials: &[TrialRecord]) -> Vec<Row> {
    let mut rows: Vec<Row> = trials
        .iter()
        .filter(|t| t.state == TrialState::Done)
        .filter_map(|t| {
            let r = t.result.as_ref()?;
            Some(Row {
                id: t.id,
                params: t.params.clone(),
                train_acc: r["train_acc"].as_f64()?,
                val_acc: r["val_acc"].as_f64()?,
                test_acc: r["test_acc"].as_f64(),
                trainable_params: r["trainable_params"].as_f64()?,
                examples_per_s: r["examples_per_s"].as_f64(),
            })
        })
        .collect();
    rows.sort_by(|a, b| b.val_acc.partial_cmp(&a.val_acc).unwrap_or(std::cmp::Ordering::Equal));
    rows
}

/// The seed author's grid (raschka_grid.csv: lora_r, lora_alpha, six flags, "90.26%"-style
/// accuracies, trainable_params).
pub fn rows_from_seed_grid(path: &Path) -> Result<Vec<Row>> {
    let bad = |message: String| SweepError::SeedGrid { path: path.to_path_buf(), message };
    let mut r = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let headers = r.headers().map_err(|e| bad(e.to_string()))?.clone();
    let col = |n: &str| headers.iter().position(|h| h == n).ok_or_else(|| bad(format!("no column {n}")));
    let pct = |s: &str| s.trim().trim_end_matches('%').parse::<f64>().map(|v| v / 100.0).ok();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let mut params = TrialParams::new();
        params.insert("lora_r".into(), Value::from(rec[col("lora_r")?].parse::<i64>().unwrap_or(0)));
        params.insert("lora_alpha".into(), Value::from(rec[col("lora_alpha")?].parse::<f64>().unwrap_or(0.0)));
        for f in ["lora_query", "lora_key", "lora_value", "lora_projection", "lora_mlp", "lora_head"] {
            params.insert(f.into(), Value::Bool(&rec[col(f)?] == "True"));
        }
        params.insert("scaling".into(), Value::from("raschka"));
        let (Some(train), Some(val)) = (pct(&rec[col("train_acc")?]), pct(&rec[col("val_acc")?])) else { continue };
        rows.push(Row {
            id: 0,
            params,
            train_acc: train,
            val_acc: val,
            test_acc: pct(&rec[col("test_acc")?]),
            trainable_params: rec[col("trainable_params")?].parse().unwrap_or(0.0),
            examples_per_s: None,
        });
    }
    Ok(rows)
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

fn targets(r: &Row) -> String {
    let mut t: Vec<&str> = Vec::new();
    for (k, short) in [
        ("lora_query", "q"),
        ("lora_key", "k"),
        ("lora_value", "v"),
        ("lora_projection", "proj"),
        ("lora_mlp", "mlp"),
        ("lora_head", "head"),
    ] {
        if r.flag(k).unwrap_or(matches!(k, "lora_query" | "lora_value")) {
            t.push(short);
        }
    }
    t.join("+")
}

/// The leaderboard as a Markdown table (top `n`).
pub fn leaderboard(rows: &[Row], n: usize) -> String {
    let mut s = String::from("| rank | trial | scaling | r | alpha | targets | lr | val | test | train | trainable |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, r) in rows.iter().take(n).enumerate() {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            r.id,
            r.scaling(),
            r.num("lora_r").map_or("-".into(), |v| format!("{v}")),
            r.num("lora_alpha").map_or("-".into(), |v| format!("{v}")),
            targets(r),
            r.num("lr").map_or("-".into(), |v| format!("{v:e}")),
            pct(r.val_acc),
            r.test_acc.map_or("-".into(), pct),
            pct(r.train_acc),
            r.trainable_params as u64
        );
    }
    s
}

/// Writes every row as CSV (parameters as columns, then the metrics).
pub fn write_csv(rows: &[Row], path: &Path) -> Result<()> {
    let mut keys: Vec<String> = rows.iter().flat_map(|r| r.params.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["trial".to_string()];
    header.extend(keys.iter().cloned());
    header.extend(["train_acc", "val_acc", "test_acc", "trainable_params", "examples_per_s"].map(String::from));
    let bad = |e: csv::Error| SweepError::Io { action: "write", path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) };
    w.write_record(&header).map_err(bad)?;
    for r in rows {
        let mut rec = vec![r.id.to_string()];
        rec.extend(keys.iter().map(|k| r.params.get(k).map_or(String::new(), |v| v.as_str().map_or(v.to_string(), str::to_string))));
        rec.extend([
            r.train_acc.to_string(),
            r.val_acc.to_string(),
            r.test_acc.map_or(String::new(), |v| v.to_string()),
            r.trainable_params.to_string(),
            r.examples_per_s.map_or(String::new(), |v| format!("{v:.2}")),
        ]);
        w.write_record(&rec).map_err(bad)?;
    }
    let bytes = w.into_inner().map_err(|e| SweepError::Io {
        action: "write",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(crate::fsutil::write_atomic(path, &bytes)?)
}

/// Best validation accuracy (in %) per (r, alpha), as heatmap rows (r) and columns (alpha).
pub fn rank_alpha_grid(rows: &[Row]) -> (Vec<String>, Vec<String>, Vec<Vec<Option<f64>>>) {
    let mut best: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    let key = |v: f64| (v * 1000.0).round() as i64;
    for r in rows {
        let (Some(rank), Some(alpha)) = (r.num("lora_r"), r.num("lora_alpha")) else { continue };
        let e = best.entry((key(rank), key(alpha))).or_insert(f64::NEG_INFINITY);
        *e = e.max(100.0 * r.val_acc);
    }
    let mut ranks: Vec<i64> = best.keys().map(|k| k.0).collect();
    let mut alphas: Vec<i64> = best.keys().map(|k| k.1).collect();
    ranks.sort();
    ranks.dedup();
    alphas.sort();
    alphas.dedup();
    let label = |v: i64| format!("{}", v as f64 / 1000.0);
    let values = ranks.iter().map(|r| alphas.iter().map(|a| best.get(&(*r, *a)).copied()).collect()).collect();
    (alphas.iter().map(|a| label(*a)).collect(), ranks.iter().map(|r| label(*r)).collect(), values)
}

/// Draws the report's pictures into `out`; returns the files written.
pub fn pictures(rows: &[Row], seed: Option<&[Row]>, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let rank_alpha_heatmap = |rows: &[Row], file: &str, title: &str| -> Result<Vec<PathBuf>> {
        let (cols, ranks, values) = rank_alpha_grid(rows);
        if cols.is_empty() {
            return Ok(Vec::new());
        }
        Ok(heatmap(&out.join(file), title, "alpha", "rank r", &cols, &ranks, &values)?)
    };
    let mut scalings: Vec<String> = rows.iter().map(Row::scaling).collect();
    scalings.sort();
    scalings.dedup();
    for s in &scalings {
        let sub: Vec<Row> = rows.iter().filter(|r| &r.scaling() == s).cloned().collect();
        files.extend(rank_alpha_heatmap(&sub, &format!("heatmap-{s}"), &format!("Best validation accuracy (%), {s} scaling"))?);
    }
    if let Some(seed) = seed {
        files.extend(rank_alpha_heatmap(seed, "heatmap-seed-grid", "Seed's grid (DistilBERT, IMDb): best validation accuracy (%)")?);
    }
    let mut series: Vec<Series> = scalings
        .iter()
        .map(|s| Series {
            name: format!("this sweep ({s})"),
            points: rows.iter().filter(|r| &r.scaling() == s).map(|r| (r.trainable_params.max(1.0), 100.0 * r.val_acc)).collect(),
        })
        .collect();
    if let Some(seed) = seed {
        series.push(Series {
            name: "seed's grid (DistilBERT, IMDb)".into(),
            points: seed.iter().map(|r| (r.trainable_params.max(1.0), 100.0 * r.val_acc)).collect(),
        });
    }
    files.extend(scatter_logx(
        &out.join("accuracy-vs-params"),
        "Validation accuracy against trainable parameters",
        "trainable parameters (log scale)",
        "validation accuracy (%)",
        &series,
    )?);
    // Only flags that this sweep (or the seed's grid) varies have an effect to show.
    let varies = |set: &[Row], f: &str| set.iter().any(|r| r.flag(f) == Some(true)) && set.iter().any(|r| r.flag(f) != Some(true));
    let flags: Vec<&str> = ["lora_key", "lora_projection", "lora_mlp", "lora_head"]
        .into_iter()
        .filter(|f| varies(rows, f) || seed.is_some_and(|s| varies(s, f)))
        .collect();
    if flags.is_empty() {
        return Ok(files);
    }
    let mean = |rs: &[&Row]| if rs.is_empty() { 0.0 } else { 100.0 * rs.iter().map(|r| r.val_acc).sum::<f64>() / rs.len() as f64 };
    let cats: Vec<String> = flags.iter().map(|f| f.trim_start_matches("lora_").to_string()).collect();
    let mut bars = Vec::new();
    for (name, set) in std::iter::once(("this sweep", rows)).chain(seed.map(|s| ("seed's grid", s))) {
        // A flag a set does not vary has no effect to show there (NaN: no bar).
        let side = |on: bool| -> Vec<f64> {
            flags
                .iter()
                .map(|f| {
                    if varies(set, f) {
                        mean(&set.iter().filter(|r| (r.flag(f) == Some(true)) == on).collect::<Vec<_>>())
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        };
        let (on, off) = (side(true), side(false));
        bars.push((format!("{name}: on"), on));
        bars.push((format!("{name}: off"), off));
    }
    let lo = bars.iter().flat_map(|b| b.1.iter()).cloned().filter(|v| *v > 0.0).fold(100.0f64, f64::min);
    files.extend(grouped_bars(
        &out.join("flag-effects"),
        "Mean validation accuracy with each LoRA target on / off",
        "mean val accuracy (%)",
        &cats,
        &bars,
        ((lo - 5.0).max(0.0).floor(), 100.0),
    )?);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_grid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/raschka_grid.csv");
        if !p.exists() {
            crate::ci::missing(&p.display().to_string(), "CI checks out ../shared beside the project");
            return;
        }
        let rows = rows_from_seed_grid(&p).unwrap();
        assert_eq!(rows.len(), 570);
        let (cols, ranks, values) = rank_alpha_grid(&rows);
        assert_eq!((cols.len(), ranks.len()), (6, 6));
        assert!(values.iter().flatten().all(Option::is_some));
        let best = rows.iter().map(|r| r.test_acc.unwrap_or(0.0)).fold(0.0, f64::max);
        assert!((best - 0.9275).abs() < 1e-9, "{best}");
    }
}
