//! Charts as PNG and SVG (plotters, with an embedded DejaVu Sans so PNG text renders anywhere):
//! line charts (training curves), grouped bars (comparisons), heatmaps and scatter plots (sweeps).

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../resources/DejaVuSans.ttf");
        // Registration fails only on a malformed font, which the bundled one is not.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// A palette of distinguishable colours.
pub fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    P[i % P.len()]
}

type DrawResult = std::result::Result<(), String>;

/// Renders the drawing expression into `<stem>.png` and `<stem>.svg` (each written under a
/// temporary name, then renamed). `$area` names the drawing area inside `$draw`.
macro_rules! render {
    ($stem:expr, $size:expr, |$area:ident| $draw:expr) => {{
        register_font();
        let stem: &Path = $stem;
        let png = stem.with_extension("png");
        let svg = stem.with_extension("svg");
        let (fpng, fsvg) = (crate::fsutil::AtomicFile::new(&png)?, crate::fsutil::AtomicFile::new(&svg)?);
        {
            let $area = BitMapBackend::new(fpng.tmp(), $size).into_drawing_area();
            $area.fill(&WHITE).map_err(|e| fail(&png, e.to_string()))?;
            $draw.map_err(|e| fail(&png, e))?;
            $area.present().map_err(|e| fail(&png, e.to_string()))?;
        }
        {
            let $area = SVGBackend::new(fsvg.tmp(), $size).into_drawing_area();
            $area.fill(&WHITE).map_err(|e| fail(&svg, e.to_string()))?;
            $draw.map_err(|e| fail(&svg, e))?;
            $area.present().map_err(|e| fail(&svg, e.to_string()))?;
        }
        fpng.commit()?;
        fsvg.commit()?;
        Ok(vec![png, svg])
    }};
}

fn fail(p: &Path, e: String) -> Error {
    Error::Plot { path: p.to_path_buf(), message: e }
}

/// Viridis-like colour for t in [0, 1] (linear interpolation between a few anchors).
fn viridis(t: f64) -> RGBColor {
    const A: [(f64, f64, f64); 5] =
        [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let (a, b) = (A[i], A[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// One named series of (x, y) points.
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

fn bounds(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    ((x0, x1.max(x0 + 1e-9)), (y0 - pad, y1 + pad))
}

/// Draws a line chart into an area.
pub fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> DrawResult {
    let ((x0, x1), (y0, y1)) = bounds(series);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 14)).draw().map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let style = ShapeStyle { color: c.to_rgba(), filled: true, stroke_width: 2 };
        if s.points.len() <= 12 {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, style))).map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(LineSeries::new(s.points.clone(), style))
            .map_err(|e| e.to_string())?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A line chart as PNG + SVG.
pub fn line_chart(stem: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<Vec<PathBuf>> {
    render!(stem, (900, 540), |a| draw_lines(&a, title, x_label, y_label, series))
}

/// Grouped vertical bars: for each category, one bar per series (values in `series[s].1[c]`;
/// a non-finite value draws no bar).
pub fn grouped_bars(
    stem: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    y_range: (f64, f64),
) -> Result<Vec<PathBuf>> {
    fn draw<DB: DrawingBackend>(
        area: &DrawingArea<DB, Shift>,
        title: &str,
        y_label: &str,
        categories: &[String],
        series: &[(String, Vec<f64>)],
        y_range: (f64, f64),
    ) -> DrawResult {
        let n = categories.len() as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, y_range.0..y_range.1)
            .map_err(|e| e.to_string())?;
        let cats = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(categories.len() * 2 + 1)
            .x_label_formatter(&move |x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.26 && i < cats.len() {
                    cats[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        let k = series.len().max(1) as f64;
        let width = 0.8 / k;
        for (s, (name, values)) in series.iter().enumerate() {
            let c = color(s);
            chart
                .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| {
                    let x0 = i as f64 + 0.1 + s as f64 * width;
                    Rectangle::new([(x0, y_range.0), (x0 + width * 0.95, *v)], c.filled())
                }))
                .map_err(|e| e.to_string())?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
            chart
                .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| {
                    let x0 = i as f64 + 0.1 + s as f64 * width;
                    Text::new(format!("{v:.1}"), (x0, *v + (y_range.1 - y_range.0) * 0.01), ("sans-serif", 11))
                }))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    render!(stem, (1000, 560), |a| draw(&a, title, y_label, categories, series, y_range))
}

/// A heatmap of `values[row][col]` (None = no data) with row and column labels.
pub fn heatmap(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    cols: &[String],
    rows: &[String],
    values: &[Vec<Option<f64>>],
) -> Result<Vec<PathBuf>> {
    fn draw<DB: DrawingBackend>(
        area: &DrawingArea<DB, Shift>,
        title: &str,
        x_label: &str,
        y_label: &str,
        cols: &[String],
        rows: &[String],
        values: &[Vec<Option<f64>>],
    ) -> DrawResult {
        let all: Vec<f64> = values.iter().flatten().flatten().copied().collect();
        let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        let span = (hi - lo).max(1e-9);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..cols.len() as f64, 0.0..rows.len() as f64)
            .map_err(|e| e.to_string())?;
        let (cl, rl) = (cols.to_vec(), rows.to_vec());
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(cols.len() * 2 + 1)
            .y_labels(rows.len() * 2 + 1)
            .x_label_formatter(&move |x| label_at(&cl, *x))
            .y_label_formatter(&move |y| label_at(&rl, *y))
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (r, row) in values.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let Some(v) = v else { continue };
                let t = (v - lo) / span;
                let fill = viridis(t);
                chart
                    .draw_series(std::iter::once(Rectangle::new([(c as f64, r as f64), (c as f64 + 1.0, r as f64 + 1.0)], fill.filled())))
                    .map_err(|e| e.to_string())?;
                let text_color = if t > 0.6 { BLACK } else { WHITE };
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{v:.1}"),
                        (c as f64 + 0.3, r as f64 + 0.6),
                        ("sans-serif", 14).into_font().color(&text_color),
                    )))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
    render!(stem, (900, 640), |a| draw(&a, title, x_label, y_label, cols, rows, values))
}

fn label_at(labels: &[String], x: f64) -> String {
    let i = x.floor() as usize;
    if (x - i as f64 - 0.5).abs() < 0.26 && i < labels.len() {
        labels[i].clone()
    } else {
        String::new()
    }
}

/// A scatter plot with a logarithmic x axis.
pub fn scatter_logx(stem: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<Vec<PathBuf>> {
    fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> DrawResult {
        let ((x0, x1), (y0, y1)) = bounds(series);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x0.max(1.0) * 0.8..x1.max(2.0) * 1.25).log_scale(), y0..y1)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 14)).draw().map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.mix(0.7).filled())))
                .map_err(|e| e.to_string())?
                .label(s.name.clone())
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    render!(stem, (900, 560), |a| draw(&a, title, x_label, y_label, series))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (width, height) from a PNG's IHDR, after checking that the file is whole (ends with IEND).
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR", "not a PNG");
        assert!(bytes.ends_with(&[0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]), "the PNG is cut short");
        let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        (be(16), be(20))
    }

    /// The value of `attr` in an SVG element's text.
    fn attr<'a>(el: &'a str, attr: &str) -> Option<&'a str> {
        let at = el.find(&format!(" {attr}=\""))? + attr.len() + 3;
        el[at..].split('"').next()
    }

    /// Whether the SVG draws `text` as one text element.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    /// The SVG elements named `tag` whose colour is series 0's.
    fn elements<'a>(svg: &'a str, tag: &str) -> Vec<&'a str> {
        let c = color(0);
        let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        svg.split(&format!("<{tag} "))
            .skip(1)
            .map(|e| e.split('>').next().unwrap_or(""))
            .filter(|e| e.to_uppercase().contains(&hex))
            .collect()
    }

    #[test]
    fn line_chart_draws_the_points_in_order_with_its_texts() {
        let dir = tempfile::tempdir().unwrap();
        let s = vec![Series { name: "train loss".into(), points: vec![(1.0, 0.7), (2.0, 0.5), (3.0, 0.45)] }];
        let files = line_chart(&dir.path().join("curve"), "Training loss", "step", "cross-entropy", &s).unwrap();
        let png = std::fs::read(&files[0]).unwrap();
        assert_eq!(png_size(&png), (900, 540));
        assert!(png.len() > 8_000, "a chart, not a blank page ({} bytes)", png.len());
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        for text in ["Training loss", "step", "cross-entropy", "train loss"] {
            assert!(has_text(&svg, text), "{text} is missing from the SVG");
        }
        // The series' line: three points, x increasing, and (falling loss) screen y increasing.
        let line = elements(&svg, "polyline")
            .into_iter()
            .map(|e| attr(e, "points").unwrap())
            .find(|p| p.split_whitespace().count() == 3)
            .expect("the series' line");
        let pts: Vec<(f64, f64)> = line
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert!(pts[0].0 < pts[1].0 && pts[1].0 < pts[2].0, "{pts:?}");
        assert!(pts[0].1 < pts[1].1 && pts[1].1 < pts[2].1, "{pts:?}");
        // The drop from 0.7 to 0.5 is four times the drop from 0.5 to 0.45.
        let ratio = (pts[1].1 - pts[0].1) / (pts[2].1 - pts[1].1);
        assert!((ratio - 4.0).abs() < 0.2, "{ratio}");
    }

    #[test]
    fn bars_and_heatmaps_draw_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let bars = grouped_bars(
            &dir.path().join("bars"),
            "t",
            "acc",
            &["a".into(), "b".into()],
            &[("test".into(), vec![70.0, 80.0])],
            (50.0, 100.0),
        )
        .unwrap();
        assert_eq!(png_size(&std::fs::read(&bars[0]).unwrap()), (1000, 560));
        let svg = std::fs::read_to_string(&bars[1]).unwrap();
        assert!(has_text(&svg, "70.0") && has_text(&svg, "80.0"));
        let heights: Vec<f64> =
            elements(&svg, "rect").iter().filter_map(|e| attr(e, "height")?.parse().ok()).filter(|h| *h > 20.0).collect();
        assert_eq!(heights.len(), 2, "{heights:?}");
        // Bars start at 50: 80 is 1.5 times as tall as 70.
        assert!((heights[1] / heights[0] - 1.5).abs() < 0.05, "{heights:?}");
        let h =
            heatmap(&dir.path().join("h"), "t", "alpha", "r", &["1".into(), "8".into()], &["1".into()], &[vec![Some(80.0), None]]).unwrap();
        let svg = std::fs::read_to_string(&h[1]).unwrap();
        assert_eq!(svg.matches(">\n80.0\n</text>").count(), 1, "one cell with a value");
        assert!(!svg.contains("NaN") && !svg.contains("None"), "the empty cell draws nothing");
        assert_eq!(png_size(&std::fs::read(&h[0]).unwrap()), (900, 640));
    }
}
