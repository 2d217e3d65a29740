//! Reading measurements: criterion's output directory and the JSON files the Python scripts
//! write.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// Work done by one iteration, as criterion records it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Throughput {
    /// Bytes moved.
    Bytes(u64),
    /// Elements processed (floating-point operations for the matmul benchmarks).
    Elements(u64),
}

/// One benchmark's result. Times are nanoseconds per iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// The workload (criterion's group), e.g. `W1_mlp_step` or `matmul_f32`.
    pub group: String,
    /// The case inside the workload, e.g. `b64` or `1024` (may be empty).
    pub case: String,
    /// Who ran it: `eager`, `graph`, `candle`, `tandem`, `gemm_direct`, `pytorch`, ...
    pub system: String,
    /// Median time.
    pub median: f64,
    /// Lower bound of the median's confidence interval.
    pub median_lo: f64,
    /// Upper bound of the median's confidence interval.
    pub median_hi: f64,
    /// Fastest sample (per iteration), when known.
    pub min: Option<f64>,
    /// Slowest sample (per iteration), when known.
    pub max: Option<f64>,
    /// Work per iteration, when declared.
    pub throughput: Option<Throughput>,
    /// Test accuracy reached (W2's epoch), when the result has one.
    pub accuracy: Option<f64>,
}

/// Splits a full benchmark id `group/case.../system` into its three parts.
pub fn split_id(id: &str) -> (String, String, String) {
    let parts: Vec<&str> = id.split('/').collect();
    match parts.as_slice() {
        [] => (String::new(), String::new(), String::new()),
        [one] => (one.to_string(), String::new(), one.to_string()),
        [group, system] => (group.to_string(), String::new(), system.to_string()),
        [group, middle @ .., system] => (group.to_string(), middle.join("/"), system.to_string()),
    }
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn parse_throughput(v: Option<&Value>) -> Option<Throughput> {
    let v = v?;
    if let Some(b) = v.get("Bytes").and_then(Value::as_u64) {
        return Some(Throughput::Bytes(b));
    }
    if let Some(b) = v.get("BytesDecimal").and_then(Value::as_u64) {
        return Some(Throughput::Bytes(b));
    }
    v.get("Elements")
        .and_then(Value::as_u64)
        .map(Throughput::Elements)
}

/// Parses one criterion benchmark from the texts of its `new/benchmark.json`,
/// `new/estimates.json` and (optionally) `new/sample.json`.
pub fn parse_criterion(
    benchmark: &str,
    estimates: &str,
    sample: Option<&str>,
) -> Result<Measurement, String> {
    let b: Value = serde_json::from_str(benchmark).map_err(|e| format!("benchmark.json: {e}"))?;
    let e: Value = serde_json::from_str(estimates).map_err(|e| format!("estimates.json: {e}"))?;
    let id = b
        .get("full_id")
        .and_then(Value::as_str)
        .ok_or("benchmark.json has no full_id")?;
    let (group, case, system) = split_id(id);
    let median = num(&e, &["median", "point_estimate"]).ok_or("estimates.json has no median")?;
    let median_lo = num(&e, &["median", "confidence_interval", "lower_bound"]).unwrap_or(median);
    let median_hi = num(&e, &["median", "confidence_interval", "upper_bound"]).unwrap_or(median);
    let (mut min, mut max) = (None, None);
    if let Some(s) = sample {
        let s: Value = serde_json::from_str(s).map_err(|e| format!("sample.json: {e}"))?;
        let iters = s.get("iters").and_then(Value::as_array);
        let times = s.get("times").and_then(Value::as_array);
        if let (Some(iters), Some(times)) = (iters, times) {
            let per: Vec<f64> = iters
                .iter()
                .zip(times)
                .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64().filter(|&i| i > 0.0)?))
                .collect();
            min = per.iter().copied().reduce(f64::min);
            max = per.iter().copied().reduce(f64::max);
        }
    }
    Ok(Measurement {
        group,
        case,
        system,
        median,
        median_lo,
        median_hi,
        min,
        max,
        throughput: parse_throughput(b.get("throughput")),
        accuracy: None,
    })
}

fn find_new_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("estimates.json").is_file() && path.join("benchmark.json").is_file() {
                out.push(path);
            }
        } else if path.file_name().is_none_or(|n| n != "report") {
            find_new_dirs(&path, out);
        }
    }
}

/// Every benchmark under a criterion output directory (`target/criterion`), sorted by id.
/// Unreadable entries are reported on stderr and skipped.
pub fn read_criterion_dir(dir: &Path) -> Vec<Measurement> {
    let mut dirs = Vec::new();
    find_new_dirs(dir, &mut dirs);
    let mut out = Vec::new();
    for d in dirs {
        let read = |name: &str| fs::read_to_string(d.join(name));
        let parsed = match (read("benchmark.json"), read("estimates.json")) {
            (Ok(b), Ok(e)) => parse_criterion(&b, &e, read("sample.json").ok().as_deref()),
            (Err(err), _) | (_, Err(err)) => Err(err.to_string()),
        };
        match parsed {
            Ok(m) => out.push(m),
            Err(err) => eprintln!("skipping {}: {err}", d.display()),
        }
    }
    out.sort_by(|a, b| (&a.group, &a.case, &a.system).cmp(&(&b.group, &b.case, &b.system)));
    out
}

/// Parses one results file of `benches/python` (or of `examples/bench_epoch`): an object with
/// a `results` array whose items have `group`, `case`, `system`, `median_ns` and optionally
/// `min_ns`, `max_ns`, `accuracy`.
pub fn parse_python(text: &str) -> Result<Vec<Measurement>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or("no `results` array")?;
    let field = |r: &Value, k: &str| -> Result<String, String> {
        r.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(format!("a result has no string `{k}`"))
    };
    results
        .iter()
        .map(|r| {
            let median = num(r, &["median_ns"]).ok_or("a result has no `median_ns`")?;
            Ok(Measurement {
                group: field(r, "group")?,
                case: field(r, "case")?,
                system: field(r, "system")?,
                median,
                median_lo: median,
                median_hi: median,
                min: num(r, &["min_ns"]),
                max: num(r, &["max_ns"]),
                throughput: None,
                accuracy: num(r, &["accuracy"]),
            })
        })
        .collect()
}

/// Every `*.json` file of `dir` (absent directory: none), parsed with [`parse_python`].
pub fn read_python_dir(dir: &Path) -> Vec<Measurement> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        match fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_python(&t))
        {
            Ok(mut v) => out.append(&mut v),
            Err(err) => eprintln!("skipping {}: {err}", f.display()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const BENCHMARK: &str = r#"{"group_id":"matmul_f32","function_id":"1024",
        "value_str":"tandem","throughput":{"Elements":2147483648},
        "full_id":"matmul_f32/1024/tandem","directory_name":"matmul_f32/1024/tandem",
        "title":"matmul_f32/1024/tandem"}"#;
    pub(crate) const ESTIMATES: &str = r#"{
        "mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":9.0e6,"upper_bound":1.1e7},"point_estimate":1.0e7,"standard_error":1.0},
        "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":9.5e6,"upper_bound":1.05e7},"point_estimate":1.0e7,"standard_error":1.0},
        "median_abs_dev":null,"slope":null,"std_dev":null}"#;
    pub(crate) const SAMPLE: &str =
        r#"{"sampling_mode":"Flat","iters":[2.0,2.0,4.0],"times":[2.4e7,1.8e7,4.4e7]}"#;

    #[test]
    fn splits_ids() {
        assert_eq!(
            split_id("W1_mlp_step/b64/candle"),
            ("W1_mlp_step".into(), "b64".into(), "candle".into())
        );
        assert_eq!(
            split_id("memory/copy/std"),
            ("memory".into(), "copy".into(), "std".into())
        );
        assert_eq!(split_id("g/s"), ("g".into(), "".into(), "s".into()));
        assert_eq!(split_id("g/a/b/s"), ("g".into(), "a/b".into(), "s".into()));
    }

    #[test]
    fn parses_a_criterion_benchmark() {
        let m = parse_criterion(BENCHMARK, ESTIMATES, Some(SAMPLE)).unwrap();
        assert_eq!(m.group, "matmul_f32");
        assert_eq!(m.case, "1024");
        assert_eq!(m.system, "tandem");
        assert_eq!(m.median, 1.0e7);
        assert_eq!((m.median_lo, m.median_hi), (9.5e6, 1.05e7));
        assert_eq!(m.min, Some(9.0e6));
        assert_eq!(m.max, Some(1.2e7));
        assert_eq!(m.throughput, Some(Throughput::Elements(2147483648)));
    }

    #[test]
    fn rejects_broken_criterion_files() {
        assert!(parse_criterion("{}", ESTIMATES, None).is_err());
        assert!(parse_criterion(BENCHMARK, "{\"mean\":{}}", None).is_err());
        assert!(parse_criterion(BENCHMARK, "not json", None).is_err());
        let m = parse_criterion(BENCHMARK, ESTIMATES, None).unwrap();
        assert_eq!((m.min, m.max), (None, None));
    }

    #[test]
    fn parses_python_results() {
        let text = r#"{"framework":"torch 2.5","results":[
            {"group":"W1_mlp_step","case":"b64","system":"pytorch","median_ns":1.1e6,"min_ns":1.0e6,"max_ns":1.5e6},
            {"group":"W6_mlp_infer","case":"b1","system":"pytorch","median_ns":30000},
            {"group":"W2_mnist_epoch","case":"b64","system":"eager","median_ns":1.5e9,"accuracy":0.97}]}"#;
        let v = parse_python(text).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].accuracy, Some(0.97));
        assert_eq!(v[0].accuracy, None);
        assert_eq!(v[0].system, "pytorch");
        assert_eq!(v[0].min, Some(1.0e6));
        assert_eq!(v[1].median, 30000.0);
        assert_eq!(v[1].max, None);
        assert!(parse_python(r#"{"results":[{"group":"g"}]}"#).is_err());
        assert!(parse_python("[]").is_err());
    }

    #[test]
    fn reads_a_criterion_tree() {
        let root = std::env::temp_dir().join(format!("bench_report_tree_{}", std::process::id()));
        let new = root
            .join("matmul_f32")
            .join("1024")
            .join("tandem")
            .join("new");
        fs::create_dir_all(&new).unwrap();
        fs::create_dir_all(root.join("report")).unwrap();
        fs::write(new.join("benchmark.json"), BENCHMARK).unwrap();
        fs::write(new.join("estimates.json"), ESTIMATES).unwrap();
        fs::write(new.join("sample.json"), SAMPLE).unwrap();
        let v = read_criterion_dir(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].system, "tandem");
        assert_eq!(v[0].max, Some(1.2e7));
    }
}
