//! A horizontal bar chart of the measurements, written as plain SVG: one block per workload
//! case, one bar per system, bar length relative to the slowest system of that case (so very
//! different workloads share one chart), labelled with the median time.

use crate::data::Measurement;
use crate::table::{by_group, cases_and_systems, fmt_time};
use std::fmt::Write;

const WIDTH: f64 = 760.0;
const LABEL_W: f64 = 230.0;
const BAR_MAX: f64 = 400.0;
const BAR_H: f64 = 14.0;
const GAP: f64 = 10.0;

/// A fixed colour per well-known system, a rotating palette for the rest.
fn color(system: &str, i: usize) -> &'static str {
    match system {
        "eager" => "#1f77b4",
        "graph" => "#2ca02c",
        "tandem" | "tensor" => "#17becf",
        "candle" => "#ff7f0e",
        "gemm_direct" => "#7f7f7f",
        "std" => "#7f7f7f",
        _ => ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22"][i % 5],
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document for `ms` (an empty chart with a note when there is nothing to show).
pub fn chart(ms: &[Measurement]) -> String {
    let mut body = String::new();
    let mut y = 30.0;
    let mut other = 0;
    for (group, v) in by_group(ms) {
        let (cases, systems) = cases_and_systems(&v);
        for case in &cases {
            let rows: Vec<&Measurement> = systems
                .iter()
                .filter_map(|s| {
                    v.iter()
                        .copied()
                        .find(|m| &m.case == case && &m.system == s)
                })
                .collect();
            let slowest = rows.iter().map(|m| m.median).fold(0.0, f64::max);
            if rows.is_empty() || slowest <= 0.0 {
                continue;
            }
            let title = if case.is_empty() {
                group.clone()
            } else {
                format!("{group} / {case}")
            };
            let _ = writeln!(
                body,
                r#"<text x="8" y="{:.1}" font-weight="bold">{}</text>"#,
                y + 11.0,
                escape(&title)
            );
            y += 18.0;
            for m in rows {
                let c = color(&m.system, other);
                if !matches!(
                    m.system.as_str(),
                    "eager" | "graph" | "tandem" | "tensor" | "candle" | "gemm_direct" | "std"
                ) {
                    other += 1;
                }
                let w = (m.median / slowest * BAR_MAX).max(1.0);
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{LABEL_W}" y="{:.1}" width="{w:.1}" height="{BAR_H}" fill="{c}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                    LABEL_W - 6.0,
                    y + 11.0,
                    escape(&m.system),
                    y,
                    LABEL_W + w + 6.0,
                    y + 11.0,
                    escape(&fmt_time(m.median)),
                );
                y += BAR_H + 4.0;
            }
            y += GAP;
        }
    }
    if body.is_empty() {
        body.push_str(r#"<text x="8" y="40">no measurements found</text>"#);
        y = 60.0;
    }
    format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h:.0}" viewBox="0 0 {w} {h:.0}" font-family="sans-serif" font-size="12">"#,
            "\n",
            r##"<rect width="100%" height="100%" fill="#ffffff"/>"##,
            "\n",
            r#"<text x="8" y="18" font-size="14">Median time per iteration (bars relative to the slowest system of each case; shorter is faster)</text>"#,
            "\n{body}</svg>\n"
        ),
        w = WIDTH,
        h = y + 10.0,
        body = body
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(case: &str, system: &str, median: f64) -> Measurement {
        Measurement {
            group: "W1_mlp_step".into(),
            case: case.into(),
            system: system.into(),
            median,
            median_lo: median,
            median_hi: median,
            min: None,
            max: None,
            throughput: None,
            accuracy: None,
        }
    }

    #[test]
    fn bars_are_relative_to_the_slowest() {
        let svg = chart(&[m("b64", "candle", 2e6), m("b64", "eager", 5e5)]);
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("W1_mlp_step / b64"));
        assert!(svg.contains(r##"width="400.0" height="14" fill="#ff7f0e""##));
        assert!(svg.contains(r##"width="100.0" height="14" fill="#1f77b4""##));
        assert!(svg.contains(">2.00 ms<"));
        assert!(svg.contains(">500 us<"));
        // eager is listed before candle.
        assert!(svg.find(">eager<").unwrap() < svg.find(">candle<").unwrap());
    }

    #[test]
    fn escapes_names_and_handles_nothing() {
        let svg = chart(&[m("a<b", "x&y", 1.0)]);
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains("x&amp;y"));
        assert!(chart(&[]).contains("no measurements found"));
    }
}
