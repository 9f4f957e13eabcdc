//! A hand-written SVG line chart: latency percentiles (log scale, ms)
//! against the write rate, one line per percentile and capture mode. Each
//! point is the median over runs; a vertical bar shows the runs' range.

use std::fmt::Write;

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Capture mode (`trigger` is drawn solid, anything else dashed).
    pub capture: String,
    /// Percentile name (`p50`, `p90`, `p99`, `max`); picks the colour.
    pub percentile: String,
    /// `(rate, median ms, min ms, max ms)`, by increasing rate.
    pub points: Vec<(f64, f64, f64, f64)>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn colour(percentile: &str) -> &'static str {
    match percentile {
        "p50" => "#1b9e77",
        "p90" => "#7570b3",
        "p99" => "#d95f02",
        _ => "#666666",
    }
}

/// Renders the chart.
pub fn latency(title: &str, series: &[Series]) -> String {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1, p.2, p.3]))
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi { (0.1, 10.0) } else { (lo, hi) };
    let (exp_lo, exp_hi) = (
        lo.log10().floor() as i32,
        hi.log10().ceil().max(lo.log10().floor() + 1.0) as i32,
    );
    let rates: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let rate_max = rates.iter().copied().fold(0.0, f64::max).max(1.0) * 1.05;

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |rate: f64| LEFT + rate / rate_max * plot_w;
    let y = |ms: f64| {
        let v = ms.max(10f64.powi(exp_lo)).log10();
        TOP + plot_h - (v - exp_lo as f64) / (exp_hi - exp_lo) as f64 * plot_h
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"##,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Axes and grid.
    for e in exp_lo..=exp_hi {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v < 10f64.powi(exp_lo) || v > 10f64.powi(exp_hi) {
                continue;
            }
            let yy = y(v);
            let stroke = if m == 1.0 { "#ccc" } else { "#eee" };
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{stroke}"/>"##,
                LEFT + plot_w
            );
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                yy + 4.0,
                trim(v)
            );
        }
    }
    let mut ticks: Vec<f64> = rates.clone();
    ticks.sort_by(|a, b| a.total_cmp(b));
    ticks.dedup();
    for rate in ticks {
        let xx = x(rate);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            trim(rate)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">writes per second (messages rows; 2 frames each)</text>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        svg,
        r##"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">commit → client frame (ms, log scale)</text>"##,
        TOP + plot_h / 2.0
    );
    // Lines, range bars and the legend.
    for (i, s) in series.iter().enumerate() {
        let colour = colour(&s.percentile);
        let dash = if s.capture == "trigger" {
            ""
        } else {
            r##" stroke-dasharray="6 4""##
        };
        let path: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"##,
            path.join(" ")
        );
        for p in &s.points {
            let _ = writeln!(
                svg,
                r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="{colour}" opacity="0.5"/><circle cx="{xx:.1}" cy="{:.1}" r="3" fill="{colour}"/>"##,
                y(p.2),
                y(p.3),
                y(p.1),
                xx = x(p.0)
            );
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = WIDTH - RIGHT + 15.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{} {}</text>"##,
            lx + 28.0,
            lx + 34.0,
            ly + 4.0,
            escape(&s.capture),
            escape(&s.percentile)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn trim(v: f64) -> String {
    if v >= 1.0 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_chart() {
        let svg = latency(
            "t",
            &[Series {
                capture: "logical".into(),
                percentile: "p99".into(),
                points: vec![(1000.0, 2.0, 1.5, 3.0), (5000.0, 8.0, 6.0, 9.0)],
            }],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("polyline"));
    }
}
