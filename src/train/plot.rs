//! A run's curves: training loss (smoothed) and validation accuracy (validation perplexity for a
//! causal LM), as PNG and SVG.

use crate::error::Result;
use crate::plot::{line_chart, Series};
use crate::run::checkpoint::Record;
use std::path::Path;

/// Writes loss.{png,svg} and accuracy.{png,svg} (perplexity.{png,svg} when the evaluations
/// measured perplexity) into `run_dir`.
pub fn curves(history: &[Record], run_dir: &Path) -> Result<()> {
    let steps: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|r| if let Record::Step { step, loss, .. } = r { Some((*step as f64, *loss as f64)) } else { None })
        .collect();
    let window = (steps.len() / 50).max(1);
    let smoothed: Vec<(f64, f64)> =
        steps.chunks(window).map(|c| (c[c.len() - 1].0, c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64)).collect();
    line_chart(
        &run_dir.join("loss"),
        "Training loss",
        "step",
        "cross-entropy",
        &[Series { name: format!("train loss (mean of {window} steps)"), points: smoothed }],
    )?;
    let perplexity: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|r| if let Record::Eval { step, perplexity: Some(p), .. } = r { Some((*step as f64, *p)) } else { None })
        .collect();
    if !perplexity.is_empty() {
        line_chart(
            &run_dir.join("perplexity"),
            "Validation perplexity",
            "step",
            "perplexity",
            &[Series { name: "validation".into(), points: perplexity }],
        )?;
        return Ok(());
    }
    let val: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|r| if let Record::Eval { step, accuracy, .. } = r { Some((*step as f64, 100.0 * accuracy)) } else { None })
        .collect();
    line_chart(
        &run_dir.join("accuracy"),
        "Validation accuracy",
        "step",
        "accuracy (%)",
        &[Series { name: "validation".into(), points: val }],
    )?;
    Ok(())
}
