//! Markdown tables of the measurements: one table per workload, one row per case, one column
//! per system, then the ratios that matter.

use crate::data::{Measurement, Throughput};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Systems shown first, in this order; others follow alphabetically.
const SYSTEM_ORDER: &[&str] = &[
    "eager",
    "graph",
    "tandem",
    "tensor",
    "candle",
    "gemm_direct",
    "std",
];

/// Ratios shown when both systems are present: (numerator, denominator).
const RATIOS: &[(&str, &str)] = &[
    ("graph", "eager"),
    ("eager", "candle"),
    ("graph", "candle"),
    ("tandem", "candle"),
    ("tandem", "gemm_direct"),
    ("tensor", "candle"),
    ("tensor", "gemm_direct"),
];

/// A duration in nanoseconds, with a unit that keeps 3 significant digits.
pub fn fmt_time(ns: f64) -> String {
    let (v, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "us")
    } else {
        (ns, "ns")
    };
    format!("{} {unit}", sig3(v))
}

fn sig3(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The rate of one iteration's work at the median: GB/s for bytes, GFLOP/s for elements.
pub fn fmt_rate(t: Throughput, ns: f64) -> String {
    match t {
        Throughput::Bytes(b) => format!("{} GB/s", sig3(b as f64 / ns)),
        Throughput::Elements(e) => format!("{} GFLOP/s", sig3(e as f64 / ns)),
    }
}

fn system_rank(s: &str) -> (usize, String) {
    let i = SYSTEM_ORDER
        .iter()
        .position(|&x| x == s)
        .unwrap_or(SYSTEM_ORDER.len());
    (i, s.to_string())
}

/// Measurements grouped by workload, in name order.
pub fn by_group(ms: &[Measurement]) -> BTreeMap<String, Vec<&Measurement>> {
    let mut groups: BTreeMap<String, Vec<&Measurement>> = BTreeMap::new();
    for m in ms {
        groups.entry(m.group.clone()).or_default().push(m);
    }
    groups
}

/// The cases of a group in first-seen order, and its systems in display order.
pub fn cases_and_systems(ms: &[&Measurement]) -> (Vec<String>, Vec<String>) {
    let mut cases: Vec<String> = Vec::new();
    let mut systems: Vec<String> = Vec::new();
    for m in ms {
        if !cases.contains(&m.case) {
            cases.push(m.case.clone());
        }
        if !systems.contains(&m.system) {
            systems.push(m.system.clone());
        }
    }
    // Cases that are a number after a common prefix (`512`, `b64`) sort numerically.
    let number = |c: &str| -> Option<(String, u64)> {
        let split = c.find(|ch: char| ch.is_ascii_digit())?;
        let n = c.get(split..)?.parse::<u64>().ok()?;
        Some((c.get(..split)?.to_string(), n))
    };
    if cases.iter().all(|c| number(c).is_some()) {
        cases.sort_by_key(|c| number(c));
    }
    systems.sort_by_key(|s| system_rank(s));
    (cases, systems)
}

fn find<'a>(ms: &[&'a Measurement], case: &str, system: &str) -> Option<&'a Measurement> {
    ms.iter()
        .copied()
        .find(|m| m.case == case && m.system == system)
}

/// Operations in one iteration of a chain workload (W4: 1,000 adds), shown per op.
fn ops_per_iteration(group: &str) -> Option<f64> {
    group.starts_with("W4_").then_some(1000.0)
}

fn cell(m: &Measurement) -> String {
    let mut s = fmt_time(m.median);
    if let (Some(lo), Some(hi)) = (m.min, m.max) {
        let _ = write!(s, " ({}–{})", fmt_time(lo), fmt_time(hi));
    }
    if let Some(ops) = ops_per_iteration(&m.group) {
        let _ = write!(s, "<br>{}/op", fmt_time(m.median / ops));
    }
    if let Some(t) = m.throughput {
        let _ = write!(s, "<br>{}", fmt_rate(t, m.median));
    }
    if let Some(a) = m.accuracy {
        let _ = write!(s, "<br>accuracy {:.2}%", 100.0 * a);
    }
    s
}

/// The markdown table of one workload. Cells: median (min–max) and the rate at the median
/// when the benchmark declares its work. Ratio columns are medians divided (below 1: the
/// numerator is faster). A group with a `copy` case also gets each row's bandwidth and time
/// relative to the copy's.
pub fn group_table(group: &str, ms: &[&Measurement]) -> String {
    let (cases, systems) = cases_and_systems(ms);
    let ratios: Vec<(&str, &str)> = RATIOS
        .iter()
        .copied()
        .filter(|(a, b)| systems.iter().any(|s| s == a) && systems.iter().any(|s| s == b))
        .collect();
    let copy = ms.iter().copied().find(|m| m.case == "copy");
    let mut out = format!("### {group}\n\n| case |");
    for s in &systems {
        let _ = write!(out, " {s} |");
    }
    for (a, b) in &ratios {
        let _ = write!(out, " {a}/{b} |");
    }
    if copy.is_some() {
        out.push_str(" bandwidth vs copy | time vs copy |");
    }
    out.push_str("\n|---|");
    for _ in 0..systems.len() + ratios.len() + if copy.is_some() { 2 } else { 0 } {
        out.push_str("---|");
    }
    out.push('\n');
    for case in &cases {
        let label = if case.is_empty() { "-" } else { case.as_str() };
        let _ = write!(out, "| {label} |");
        for s in &systems {
            match find(ms, case, s) {
                Some(m) => {
                    let _ = write!(out, " {} |", cell(m));
                }
                None => out.push_str(" |"),
            }
        }
        for (a, b) in &ratios {
            match (find(ms, case, a), find(ms, case, b)) {
                (Some(x), Some(y)) if y.median > 0.0 => {
                    let _ = write!(out, " {:.2} |", x.median / y.median);
                }
                _ => out.push_str(" |"),
            }
        }
        if let Some(c) = copy {
            // One row per case: the first system measured for it.
            let row = systems.iter().find_map(|s| find(ms, case, s));
            match (row, c.throughput) {
                (Some(m), Some(Throughput::Bytes(cb))) => {
                    let bw = match m.throughput {
                        Some(Throughput::Bytes(b)) => {
                            format!(
                                "{:.0}%",
                                100.0 * (b as f64 / m.median) / (cb as f64 / c.median)
                            )
                        }
                        _ => String::new(),
                    };
                    let _ = write!(out, " {bw} | {:.2}x |", m.median / c.median);
                }
                _ => out.push_str(" | |"),
            }
        }
        out.push('\n');
    }
    out
}

/// All workload tables, in group-name order.
pub fn tables(ms: &[Measurement]) -> String {
    let mut out = String::new();
    for (group, v) in by_group(ms) {
        out.push_str(&group_table(&group, &v));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(group: &str, case: &str, system: &str, median: f64, t: Option<Throughput>) -> Measurement {
        Measurement {
            group: group.into(),
            case: case.into(),
            system: system.into(),
            median,
            median_lo: median,
            median_hi: median,
            min: Some(median * 0.9),
            max: Some(median * 1.2),
            throughput: t,
            accuracy: None,
        }
    }

    #[test]
    fn formats_times_and_rates() {
        assert_eq!(fmt_time(512.0), "512 ns");
        assert_eq!(fmt_time(1_234.0), "1.23 us");
        assert_eq!(fmt_time(45_600_000.0), "45.6 ms");
        assert_eq!(fmt_time(2.5e9), "2.50 s");
        assert_eq!(
            fmt_rate(Throughput::Elements(2_000_000_000), 1e7),
            "200 GFLOP/s"
        );
        assert_eq!(fmt_rate(Throughput::Bytes(32_000_000), 2e6), "16.0 GB/s");
    }

    #[test]
    fn table_has_systems_in_order_and_ratios() {
        let ms = vec![
            m("W1_mlp_step", "b64", "candle", 2.9e6, None),
            m("W1_mlp_step", "b64", "graph", 0.3e6, None),
            m("W1_mlp_step", "b64", "eager", 0.5e6, None),
            m("W1_mlp_step", "b1024", "candle", 9.9e6, None),
        ];
        let groups = by_group(&ms);
        let t = group_table("W1_mlp_step", &groups["W1_mlp_step"]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "### W1_mlp_step");
        assert_eq!(
            lines[2],
            "| case | eager | graph | candle | graph/eager | eager/candle | graph/candle |"
        );
        assert_eq!(lines[3], "|---|---|---|---|---|---|---|");
        assert!(lines[4].starts_with("| b64 | 500 us (450 us–600 us) | 300 us"));
        assert!(lines[4].ends_with("| 0.60 | 0.17 | 0.10 |"), "{}", lines[4]);
        // A case without eager/graph leaves those cells and the ratios empty.
        assert!(
            lines[5].starts_with("| b1024 | | | 9.90 ms"),
            "{}",
            lines[5]
        );
        assert!(lines[5].ends_with("| | | |"), "{}", lines[5]);
    }

    #[test]
    fn copy_group_gets_bandwidth_columns() {
        let mb = 1 << 20;
        let ms = vec![
            m(
                "memory",
                "copy",
                "std",
                2e6,
                Some(Throughput::Bytes(32 * mb)),
            ),
            m(
                "memory",
                "add",
                "tandem",
                4e6,
                Some(Throughput::Bytes(48 * mb)),
            ),
        ];
        let t = tables(&ms);
        assert!(t.contains("| bandwidth vs copy | time vs copy |"));
        let add = t.lines().find(|l| l.starts_with("| add |")).unwrap();
        assert!(add.ends_with("| 75% | 2.00x |"), "{add}");
        let copy = t.lines().find(|l| l.starts_with("| copy |")).unwrap();
        assert!(copy.ends_with("| 100% | 1.00x |"), "{copy}");
    }

    #[test]
    fn chains_show_time_per_op_and_epochs_their_accuracy() {
        let chain = m("W4_add_chain", "n16", "eager", 250_000.0, None);
        let mut epoch = m("W2_mnist_epoch", "b64", "graph", 0.5e9, None);
        epoch.accuracy = Some(0.9712);
        let t = tables(&[chain, epoch]);
        assert!(t.contains("<br>250 ns/op"), "{t}");
        assert!(
            t.contains("500 ms (450 ms–600 ms)<br>accuracy 97.12%"),
            "{t}"
        );
    }

    #[test]
    fn numeric_cases_sort_numerically() {
        let ms = vec![
            m("matmul_f32", "2048", "tandem", 3.0, None),
            m("matmul_f32", "512", "tandem", 1.0, None),
            m("matmul_f32", "1024", "gemm_direct", 2.0, None),
        ];
        let groups = by_group(&ms);
        let (cases, systems) = cases_and_systems(&groups["matmul_f32"]);
        assert_eq!(cases, vec!["512", "1024", "2048"]);
        assert_eq!(systems, vec!["tandem", "gemm_direct"]);
        let ms = vec![
            m("W1_mlp_step", "b1024", "eager", 3.0, None),
            m("W1_mlp_step", "b64", "eager", 1.0, None),
        ];
        let groups = by_group(&ms);
        let (cases, _) = cases_and_systems(&groups["W1_mlp_step"]);
        assert_eq!(cases, vec!["b64", "b1024"]);
    }
}
