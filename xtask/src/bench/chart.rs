//! Self-contained SVG charts for docs/PERFORMANCE.md: how a cost grows with its work, on
//! log-log axes (one decade is one step on both axes, so a straight line of slope 1 is linear
//! growth and a flat line is a constant cost).

use std::fmt::Write as _;

/// Chart size and margins, in SVG user units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// Line colours, one per series in order (repeated beyond eight series).
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A log-log line chart as a self-contained SVG document: labelled ticks at every power of ten
/// the data spans (axes widened to whole decades), one polyline (with a dot per point) per
/// series and a legend naming each. Points whose `x` or `y` is not a positive finite number
/// cannot be placed on a log axis and are left out; a series left with no point is still named
/// in the legend. With no plottable point at all the axes span one decade.
pub(crate) fn log_log_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let plottable = |(x, y): &(f64, f64)| x.is_finite() && *x > 0.0 && y.is_finite() && *y > 0.0;
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, pts)| pts.iter().copied().filter(plottable).collect())
        .collect();
    let all = || points.iter().flatten();
    let decades = |values: Vec<f64>| -> (i32, i32) {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() || !hi.is_finite() {
            return (0, 1);
        }
        let lo = lo.log10().floor() as i32;
        let hi = (hi.log10().ceil() as i32).max(lo + 1);
        (lo, hi)
    };
    let (x0, x1) = decades(all().map(|p| p.0).collect());
    let (y0, y1) = decades(all().map(|p| p.1).collect());
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x.log10() - f64::from(x0)) / f64::from(x1 - x0) * plot_w;
    let sy = |y: f64| TOP + plot_h - (y.log10() - f64::from(y0)) / f64::from(y1 - y0) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Grid and ticks: one per decade on each axis.
    for d in x0..=x1 {
        let x = sx(10f64.powi(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            tick_label(d)
        );
    }
    for d in y0..=y1 {
        let y = sy(10f64.powi(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            tick_label(d)
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    for (i, ((name, _), pts)) in series.iter().zip(&points).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut sorted = pts.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        if sorted.len() > 1 {
            let coords: Vec<String> = sorted
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                coords.join(" ")
            );
        }
        for &(x, y) in &sorted {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                sx(x),
                sy(y)
            );
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A power of ten as a tick label: plain digits from 0.001 to 1,000,000 (`1k`, `1M` style
/// above a thousand), `1e-6` style beyond.
fn tick_label(decade: i32) -> String {
    match decade {
        -3..=-1 => format!("{}", 10f64.powi(decade)),
        0..=2 => format!("{}", 10i64.pow(decade as u32)),
        3..=5 => format!("{}k", 10i64.pow(decade as u32 - 3)),
        6..=8 => format!("{}M", 10i64.pow(decade as u32 - 6)),
        9..=11 => format!("{}G", 10i64.pow(decade as u32 - 9)),
        _ => format!("1e{decade}"),
    }
}

/// Text as SVG character data.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_polyline_per_series_ticks_and_a_legend() {
        let svg = log_log_chart(
            "query time <vs> records",
            "records",
            "ms",
            &[
                ("scan", vec![(1e4, 1.0), (1e5, 10.0), (1e6, 100.0)]),
                ("rollups & today", vec![(1e4, 0.5), (1e6, 2.0)]),
                ("nothing to plot", vec![(0.0, 1.0), (1e3, f64::NAN)]),
            ],
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        // Ticks at every decade spanned: x 10k..1M, y 0.1..100.
        for label in [">10k<", ">100k<", ">1M<", ">0.1<", ">1<", ">10<", ">100<"] {
            assert!(svg.contains(label), "{label} missing");
        }
        // Titles and legend names are escaped.
        assert!(svg.contains("query time &lt;vs&gt; records"));
        assert!(svg.contains(">rollups &amp; today<"));
        assert!(svg.contains(">nothing to plot<"));
        // Linear growth is a straight line on log-log axes: the scan's three points are
        // evenly spaced in both directions.
        let line = svg
            .lines()
            .find(|l| l.starts_with("<polyline"))
            .expect("a polyline");
        let pts: Vec<(f64, f64)> = line
            .split("points=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("points")
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect();
        assert_eq!(pts.len(), 3);
        assert!(((pts[1].0 - pts[0].0) - (pts[2].0 - pts[1].0)).abs() < 0.2);
        assert!(((pts[1].1 - pts[0].1) - (pts[2].1 - pts[1].1)).abs() < 0.2);
        assert!(pts[2].1 < pts[0].1, "larger values are drawn higher");
    }

    #[test]
    fn empty_chart_is_still_a_document() {
        let svg = log_log_chart("t", "x", "y", &[]);
        assert!(svg.contains("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 0);
    }
}
