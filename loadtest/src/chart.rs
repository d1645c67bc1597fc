//! The run's timeline as an SVG chart: callgate's CPU and the echo round trip against the
//! number of calls up at that moment, so how cost and latency grow with load shows at a
//! glance. Plain SVG written by hand: no font or image library, viewable in any browser.

use std::fmt::Write as _;

use crate::report::TimelinePoint;

const PANEL_W: f64 = 440.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 56.0;
const MARGIN_R: f64 = 16.0;
const MARGIN_T: f64 = 48.0;
const MARGIN_B: f64 = 44.0;
const WIDTH: f64 = 2.0 * (MARGIN_L + PANEL_W + MARGIN_R);
const HEIGHT: f64 = MARGIN_T + PANEL_H + MARGIN_B + 28.0;

/// One series of a panel.
struct Series<'a> {
    label: &'a str,
    colour: &'a str,
    points: Vec<(f64, f64)>,
}

/// The chart of `timeline`, titled `title`. Intervals without a value (no `--gateway-pid`,
/// no echo yet) are left out of that series; an empty timeline gives a chart that says so.
pub fn render_svg(title: &str, timeline: &[TimelinePoint]) -> String {
    let calls = |p: &TimelinePoint| p.active_calls as f64;
    let series = |label, colour, value: fn(&TimelinePoint) -> Option<f64>| Series {
        label,
        colour,
        points: timeline
            .iter()
            .filter_map(|p| Some((calls(p), value(p)?)))
            .collect(),
    };
    let cpu = [
        series("callgate", "#1f77b4", |p| p.gateway_cores),
        series("load generator", "#aaaaaa", |p| p.generator_cores),
    ];
    let rtt = [
        series("p99", "#d62728", |p| p.rtt_p99_ms),
        series("p50", "#2ca02c", |p| p.rtt_p50_ms),
    ];
    let max_calls = timeline.iter().map(calls).fold(0.0, f64::max);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    if timeline.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no samples: the run ended before the first sampling interval</text>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
    } else {
        panel(&mut svg, 0.0, "CPU (cores)", max_calls, &cpu);
        panel(
            &mut svg,
            MARGIN_L + PANEL_W + MARGIN_R,
            "echo round trip (ms)",
            max_calls,
            &rtt,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One panel at horizontal offset `left`: axes, ticks, the series as points joined in time
/// order, and a legend.
fn panel(svg: &mut String, left: f64, y_label: &str, max_x: f64, series: &[Series]) {
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(_, y)| y))
        .fold(0.0, f64::max);
    let (x_top, x_step) = nice_axis(max_x);
    let (y_top, y_step) = nice_axis(max_y);
    let x0 = left + MARGIN_L;
    let y0 = MARGIN_T + PANEL_H;
    let sx = |x: f64| x0 + x / x_top * PANEL_W;
    let sy = |y: f64| y0 - y / y_top * PANEL_H;

    let _ = write!(
        svg,
        r##"<g><rect x="{x0}" y="{MARGIN_T}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    );
    for i in 0..=((x_top / x_step).round() as u32) {
        let x = f64::from(i) * x_step;
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{MARGIN_T}" y2="{y0}" stroke="#eee"/><text x="{0:.1}" y="{1}" text-anchor="middle">{2}</text>"##,
            sx(x),
            y0 + 16.0,
            tick(x)
        );
    }
    for i in 0..=((y_top / y_step).round() as u32) {
        let y = f64::from(i) * y_step;
        let _ = write!(
            svg,
            r##"<line x1="{x0}" x2="{0}" y1="{1:.1}" y2="{1:.1}" stroke="#eee"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            x0 + PANEL_W,
            sy(y),
            x0 - 6.0,
            sy(y) + 4.0,
            tick(y)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">concurrent calls</text><text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
        x0 + PANEL_W / 2.0,
        y0 + 34.0,
        left + 14.0,
        MARGIN_T + PANEL_H / 2.0,
        left + 14.0,
        MARGIN_T + PANEL_H / 2.0,
        escape(y_label)
    );
    for (index, s) in series.iter().enumerate() {
        if s.points.len() > 1 {
            let path: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-opacity="0.35"/>"#,
                path.join(" "),
                s.colour
            );
        }
        for &(x, y) in &s.points {
            let _ = write!(
                svg,
                r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                sx(x),
                sy(y),
                s.colour
            );
        }
        let ly = MARGIN_T + 14.0 + index as f64 * 16.0;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            x0 + 10.0,
            ly - 9.0,
            s.colour,
            x0 + 26.0,
            ly,
            escape(s.label)
        );
    }
    svg.push_str("</g>");
}

/// An axis end at or above `max` and a tick step of 1, 2 or 5 × 10^k, about five ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    if !max.is_finite() || max <= 0.0 {
        return (1.0, 0.2);
    }
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil().max(1.0) * step, step)
}

/// A tick label without float noise.
fn tick(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(active: u64, cpu: Option<f64>, p99: Option<f64>) -> TimelinePoint {
        TimelinePoint {
            t_s: active as f64,
            active_calls: active,
            gateway_cores: cpu,
            generator_cores: Some(0.1),
            gateway_rss_mib: Some(20.0),
            echoes: if p99.is_some() { 50 } else { 0 },
            rtt_p50_ms: p99.map(|v| v / 2.0),
            rtt_p99_ms: p99,
        }
    }

    #[test]
    fn every_value_is_a_point_and_missing_ones_are_left_out() {
        let timeline = [
            point(0, Some(0.01), None),
            point(100, Some(0.25), Some(3.0)),
            point(200, None, Some(9.5)),
        ];
        let svg = render_svg("200 calls <test> & more", &timeline);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        // callgate 2 + generator 3 + p99 2 + p50 2.
        assert_eq!(svg.matches(r#"class="point""#).count(), 9);
        assert!(
            svg.contains("200 calls &lt;test&gt; &amp; more"),
            "escaped title"
        );
        assert!(svg.contains("concurrent calls") && svg.contains("echo round trip (ms)"));
        // The x axis reaches the 200 calls, the round-trip axis the 9.5 ms.
        assert!(svg.contains(">200</text>"), "{svg}");
        assert!(svg.contains(">10</text>"), "{svg}");
    }

    #[test]
    fn an_empty_timeline_says_so() {
        let svg = render_svg("nothing", &[]);
        assert!(svg.contains("no samples"));
        assert_eq!(svg.matches("<circle").count(), 0);
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(200.0), (200.0, 50.0));
        assert_eq!(nice_axis(9.5), (10.0, 2.0));
        let (top, step) = nice_axis(0.53);
        assert!(
            (top - 0.6).abs() < 1e-9 && (step - 0.2).abs() < 1e-9,
            "{top} {step}"
        );
        assert_eq!(tick(0.30000000000000004), "0.3");
    }
}
