//! Minimal SVG line charts for benchmark reports: no plotting dependency, files any browser opens.
//!
//! A [`Chart`] has named series of (x, y) points drawn as polylines on linear axes with five
//! ticks each; [`svg`] stacks several charts into one document.

use std::fmt::Write as _;

/// Width of one chart, in SVG user units.
const WIDTH: f64 = 900.0;
/// Height of one chart.
const HEIGHT: f64 = 360.0;
/// Room around the plotting area for ticks, labels and the legend.
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 170.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// Series colours, in order.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One named series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The series.
    pub series: Vec<Series>,
}

fn bounds(chart: &Chart) -> (f64, f64, f64) {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    if !x_min.is_finite() || x_max <= x_min {
        return (0.0, 1.0, y_max.max(1.0));
    }
    (x_min, x_max, if y_max > 0.0 { y_max * 1.05 } else { 1.0 })
}

fn label(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{:.1}M", value / 1e6),
        v if v >= 1e4 => format!("{:.0}k", value / 1e3),
        v if v >= 100.0 => format!("{value:.0}"),
        _ => format!("{value:.1}"),
    }
}

/// The plotting area of the chart whose top edge is at `top`.
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn at(top: f64) -> Self {
        Self {
            left: MARGIN_LEFT,
            right: WIDTH - MARGIN_RIGHT,
            top: top + MARGIN_TOP,
            bottom: top + HEIGHT - MARGIN_BOTTOM,
        }
    }

    /// The point of data coordinates (`x`, `y`) within `bounds`.
    fn point(&self, (x_min, x_max, y_max): (f64, f64, f64), x: f64, y: f64) -> (f64, f64) {
        let px = self.left + (x - x_min) / (x_max - x_min) * (self.right - self.left);
        let py = self.bottom - y / y_max * (self.bottom - self.top);
        (px, py)
    }
}

fn text(out: &mut String, (x, y): (f64, f64), size: u32, anchor: &str, content: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.0}" y="{y:.0}" font-size="{size}" text-anchor="{anchor}">{}</text>"#,
        escape(content)
    );
}

fn axes(out: &mut String, chart: &Chart, bounds: (f64, f64, f64), top: f64) {
    let f = Frame::at(top);
    let middle = (f.left + f.right) / 2.0;
    text(out, (middle, top + 24.0), 16, "middle", &chart.title);
    let (l, t, b, r) = (f.left, f.top, f.bottom, f.right);
    let _ = writeln!(
        out,
        r##"<path d="M{l} {t} V{b} H{r}" stroke="#333" fill="none"/>"##
    );
    for i in 0..=4 {
        let share = f64::from(i) / 4.0;
        let (x_value, y_value) = (bounds.0 + share * (bounds.1 - bounds.0), share * bounds.2);
        let (x, y) = f.point(bounds, x_value, y_value);
        text(out, (x, f.bottom + 16.0), 11, "middle", &label(x_value));
        text(out, (f.left - 6.0, y + 4.0), 11, "end", &label(y_value));
        let _ = writeln!(out, r##"<path d="M{l} {y:.1} H{r}" stroke="#eee"/>"##);
    }
    text(out, (middle, f.bottom + 36.0), 12, "middle", &chart.x_label);
    let y = (f.bottom + f.top) / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="18" y="{y:.0}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {y:.0})">{}</text>"#,
        escape(&chart.y_label)
    );
}

fn lines(out: &mut String, chart: &Chart, bounds: (f64, f64, f64), top: f64) {
    let f = Frame::at(top);
    for (i, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut path = String::new();
        for &(x, y) in series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
        {
            let (px, py) = f.point(bounds, x, y);
            let _ = write!(path, "{px:.1},{py:.1} ");
        }
        let _ = writeln!(
            out,
            r#"<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#
        );
        let legend_y = f.top + 10.0 + 18.0 * i as f64;
        let legend_x = f.right + 12.0;
        let _ = writeln!(
            out,
            r#"<path d="M{legend_x:.0} {legend_y:.0} h20" stroke="{colour}" stroke-width="3"/>"#
        );
        text(
            out,
            (legend_x + 26.0, legend_y + 4.0),
            12,
            "start",
            &series.name,
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG document with `charts` stacked top to bottom.
pub fn svg(charts: &[Chart]) -> String {
    let height = HEIGHT * charts.len().max(1) as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    out.push('\n');
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    for (i, chart) in charts.iter().enumerate() {
        let top = HEIGHT * i as f64;
        let b = bounds(chart);
        axes(&mut out, chart, b, top);
        lines(&mut out, chart, b, top);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_and_escapes_labels() {
        let chart = Chart {
            title: "a < b".into(),
            x_label: "s".into(),
            y_label: "tx/s".into(),
            series: vec![
                Series {
                    name: "offered".into(),
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                },
                Series {
                    name: "empty".into(),
                    points: vec![(f64::NAN, 1.0)],
                },
            ],
        };
        let doc = svg(&[chart.clone(), chart]);
        assert_eq!(doc.matches("<polyline").count(), 4);
        assert!(doc.contains("a &lt; b") && !doc.contains("a < b"));
        assert!(doc.starts_with("<svg") && doc.ends_with("</svg>\n"));
    }
}
