//! Writes the benchmark report: reads criterion's results (`target/criterion/**/new/`), W2's
//! epoch results (`target/bench_epoch/*.json`, written by `examples/bench_epoch.rs`) and the
//! Python scripts' JSON (`benches/python/results/*.json`, when present), and rewrites the part
//! of `docs/benchmarks.md` between `<!-- report:start -->` and `<!-- report:end -->` (the
//! hand-written text around it is kept; the markers are appended when missing), plus the chart
//! `docs/benchmarks.svg`.
//!
//! The whole comparison is one command, which first runs every workload and then writes the
//! page:
//!
//! ```text
//! MNIST_DIR=path/to/mnist cargo run --release --example bench_report -- --run
//! ```
//!
//! `--run` runs `cargo bench --bench modes` (W1, W3-W6: eager, graph, candle), then
//! `cargo run --release --example bench_epoch` (W2; skipped with a warning when it fails, e.g.
//! without MNIST), then, with `--python PY`, the optional peers `benches/python/bench_torch.py`
//! and `bench_tf.py` under that interpreter (each skipped with a warning when it fails), all
//! with `RAYON_NUM_THREADS=2` / `OMP_NUM_THREADS=2` unless already set. Without `--run` it
//! only rewrites the page from the results already on disk, so the steps can also be run by
//! hand:
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench --bench modes
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_epoch
//! cargo run --release --example bench_report
//! ```
//!
//! Options: `--criterion DIR` (default `$CARGO_TARGET_DIR/criterion` or `target/criterion`),
//! `--epoch DIR` (default `target/bench_epoch`), `--python-results DIR` (default
//! `benches/python/results`), `--out FILE`, `--svg FILE`.

mod data;
mod svg;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Marks the start of the generated part of the page.
pub const START: &str = "<!-- report:start -->";
/// Marks its end.
pub const END: &str = "<!-- report:end -->";

/// `page` with the text between the markers replaced by `generated` (markers appended at the
/// end when absent or out of order).
pub fn splice(page: &str, generated: &str) -> String {
    let block = format!("{START}\n{generated}\n{END}");
    match (page.find(START), page.find(END)) {
        (Some(s), Some(e)) if s < e => {
            format!("{}{block}{}", &page[..s], &page[e + END.len()..])
        }
        _ => {
            let mut out = page.trim_end().to_string();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&block);
            out.push('\n');
            out
        }
    }
}

/// The CPU model named in a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The civil date (UTC) of a number of days since 1970-01-01.
pub fn civil_date(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_date(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The machine line; `ran` says whether this process ran the measurements (`--run`), which
/// fixes the thread count of the steps at 2 when the caller did not set it.
fn machine_line(ran: bool) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| cpu_model(&t))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = match std::env::var("RAYON_NUM_THREADS") {
        Ok(v) => format!("RAYON_NUM_THREADS={v}"),
        Err(_) if ran => "RAYON_NUM_THREADS=2 and OMP_NUM_THREADS=2, set by `--run`".into(),
        Err(_) => "RAYON_NUM_THREADS unset when generating".into(),
    };
    format!("Generated {} on {cpu}, {cores} cores ({threads}).", today())
}

/// The generated markdown: machine line, chart, tables.
pub fn render(ms: &[data::Measurement], machine: &str, svg_name: &str) -> String {
    let mut out = format!("{machine}\n\n");
    if ms.is_empty() {
        out.push_str("No measurements found: run `cargo bench` first.\n");
        return out;
    }
    out.push_str(&format!("![benchmark chart]({svg_name})\n\n"));
    out.push_str(
        "Cells: median (fastest–slowest sample) per iteration; ratios divide medians \
         (below 1: the first system is faster).\n\n",
    );
    out.push_str(&table::tables(ms));
    out
}

struct Args {
    run: bool,
    python_interpreter: Option<String>,
    criterion: PathBuf,
    epoch: PathBuf,
    python: PathBuf,
    out: PathBuf,
    svg: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut a = Args {
        run: false,
        python_interpreter: None,
        criterion: target.join("criterion"),
        epoch: target.join("bench_epoch"),
        python: root.join("benches/python/results"),
        out: root.join("docs/benchmarks.md"),
        svg: root.join("docs/benchmarks.svg"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--run" {
            a.run = true;
            continue;
        }
        const WITH_VALUE: [&str; 6] = [
            "--python",
            "--criterion",
            "--epoch",
            "--python-results",
            "--out",
            "--svg",
        ];
        if !WITH_VALUE.contains(&flag.as_str()) {
            return Err(format!("unknown option {flag}"));
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--python" {
            a.python_interpreter = Some(value);
            continue;
        }
        let slot = match flag.as_str() {
            "--criterion" => &mut a.criterion,
            "--epoch" => &mut a.epoch,
            "--python-results" => &mut a.python,
            "--out" => &mut a.out,
            "--svg" => &mut a.svg,
            _ => return Err(format!("unknown option {flag}")),
        };
        *slot = PathBuf::from(value);
    }
    Ok(a)
}

/// Runs one measuring step with the thread counts fixed (unless the caller set them). A
/// failure is an error when `required`, a warning otherwise.
fn step(program: &str, args: &[&str], required: bool) -> Result<(), String> {
    let line = format!("{program} {}", args.join(" "));
    println!("bench_report: running `{line}`");
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for var in ["RAYON_NUM_THREADS", "OMP_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            cmd.env(var, "2");
        }
    }
    let failure = match cmd.status() {
        Ok(status) if status.success() => return Ok(()),
        Ok(status) => format!("`{line}` failed ({status})"),
        Err(e) => format!("`{line}` could not start: {e}"),
    };
    if required {
        Err(failure)
    } else {
        eprintln!("bench_report: warning: {failure}; its results are left out");
        Ok(())
    }
}

/// The measuring half of `--run`: every workload, then the optional Python peers.
fn measure(python: Option<&str>) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step(&cargo, &["bench", "--bench", "modes"], true)?;
    step(
        &cargo,
        &["run", "--release", "--example", "bench_epoch"],
        false,
    )?;
    if let Some(py) = python {
        for script in [
            "benches/python/bench_torch.py",
            "benches/python/bench_tf.py",
        ] {
            step(py, &[script], false)?;
        }
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if args.run {
        measure(args.python_interpreter.as_deref())?;
    } else if args.python_interpreter.is_some() {
        return Err("--python PY only applies with --run".into());
    }
    let mut ms = data::read_criterion_dir(&args.criterion);
    ms.extend(data::read_python_dir(&args.epoch));
    ms.extend(data::read_python_dir(&args.python));
    let svg_name = args
        .svg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "benchmarks.svg".into());
    let page = std::fs::read_to_string(&args.out).unwrap_or_else(|_| "# Benchmarks\n".into());
    let page = splice(&page, &render(&ms, &machine_line(args.run), &svg_name));
    let write = |p: &Path, text: &str| {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    write(&args.svg, &svg::chart(&ms))?;
    write(&args.out, &page)?;
    println!(
        "{} measurements -> {} and {}",
        ms.len(),
        args.out.display(),
        args.svg.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_report: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_keeps_the_text_around_the_markers() {
        let page = format!("# B\nintro\n{START}\nold\n{END}\noutro\n");
        let out = splice(&page, "new");
        assert_eq!(out, format!("# B\nintro\n{START}\nnew\n{END}\noutro\n"));
        // Idempotent.
        assert_eq!(splice(&out, "new"), out);
    }

    #[test]
    fn splice_appends_markers_when_missing() {
        assert_eq!(
            splice("# B\n\n", "x"),
            format!("# B\n\n{START}\nx\n{END}\n")
        );
        let reversed = format!("{END}\n{START}\n");
        assert!(splice(&reversed, "x").ends_with(&format!("{START}\nx\n{END}\n")));
    }

    #[test]
    fn reads_the_cpu_model_and_dates() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t: avx\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 9R14"));
        assert_eq!(cpu_model("nothing"), None);
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
    }

    #[test]
    fn render_embeds_chart_and_tables() {
        let est = r#"{"median":{"point_estimate":2.0e6,"confidence_interval":{"lower_bound":1.9e6,"upper_bound":2.1e6}}}"#;
        let bench = r#"{"full_id":"W6_mlp_infer/b1/candle"}"#;
        let m = data::parse_criterion(bench, est, None).unwrap();
        let md = render(&[m], "Generated on X.", "benchmarks.svg");
        assert!(md.starts_with("Generated on X.\n\n![benchmark chart](benchmarks.svg)"));
        assert!(md.contains("### W6_mlp_infer"));
        assert!(md.contains("| b1 | 2.00 ms |"));
        assert!(render(&[], "M", "c.svg").contains("No measurements found"));
    }
}
