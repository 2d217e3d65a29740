//! `tandem`: inspect, run, convert and optimize ONNX models and Tandem graph files.
//!
//! ```text
//! tandem info MODEL
//! tandem run MODEL --input NAME=FILE.npy ... --output-dir DIR
//! tandem convert IN OUT [--opset 13|17]
//! tandem optimize MODEL
//! ```
//!
//! A model is an `.onnx` file or a Tandem graph file (detected from the content). Errors are
//! one line on stderr (`error: ...`) and exit status 1 (2 for a misused command line).

mod model;

use model::{parse_onnx, Format, Model};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tandem_graph::{Output, Session};
use tandem_ir::infer::fmt_shape;
use tandem_onnx::graph_bridge::save_onnx;
use tandem_tensor::io::npy;
use tandem_tensor::{Error, Result, Tensor};

const USAGE: &str = "usage:
  tandem info MODEL                       inputs, outputs, op counts, parameter count
  tandem run MODEL --input NAME=FILE.npy ... --output-dir DIR
                                          run the model; writes DIR/<output>.npy per output
  tandem convert IN OUT [--opset 13|17]   ONNX <-> Tandem graph file (by OUT's extension:
                                          .onnx writes ONNX, anything else a graph file)
  tandem optimize MODEL                   print the optimized execution plan
MODEL is an .onnx file or a Tandem graph file.";

/// A failure: a misused command line (exit 2) or a failed command (exit 1).
enum Failure {
    Usage(String),
    Run(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Run(e)
    }
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {} (run `tandem --help` for usage)", one_line(&msg));
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {}", one_line(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

/// Messages may span lines; the command prints one.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn dispatch(args: &[String]) -> std::result::Result<(), Failure> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(usage("no command given"));
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        "-V" | "--version" => {
            println!("tandem {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "info" => Ok(info(&one_path("info", rest)?)?),
        "optimize" => Ok(optimize(&one_path("optimize", rest)?)?),
        "run" => run(rest),
        "convert" => convert(rest),
        other => Err(usage(format!("unknown command `{other}`"))),
    }
}

fn one_path(cmd: &str, rest: &[String]) -> std::result::Result<PathBuf, Failure> {
    match rest {
        [p] if !p.starts_with('-') => Ok(PathBuf::from(p)),
        [] => Err(usage(format!("`{cmd}` needs a MODEL path"))),
        _ => Err(usage(format!("`{cmd}` takes exactly one MODEL path"))),
    }
}

fn fmt_output(o: &Output) -> String {
    format!("{} {}", o.dtype(), fmt_shape(o.shape()))
}

fn print_counts(counts: &[(String, usize)]) {
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    println!("ops: {total}");
    for (op, n) in counts {
        println!("  {op:<24} {n}");
    }
}

fn info(path: &Path) -> Result<()> {
    let model = match Format::detect(path)? {
        Format::Onnx => {
            let parsed = parse_onnx(path)?;
            println!("model: {}", path.display());
            println!(
                "format: ONNX (IR version {}, opset {}, producer {})",
                parsed.ir_version,
                parsed.opset,
                if parsed.producer.is_empty() {
                    "unknown"
                } else {
                    &parsed.producer
                }
            );
            println!("inputs:");
            for i in &parsed.inputs {
                let dims: Vec<String> = i
                    .dims
                    .iter()
                    .zip(&i.dim_names)
                    .map(|(d, n)| match (d, n) {
                        (Some(d), _) => d.to_string(),
                        (None, Some(n)) => n.clone(),
                        (None, None) => "?".to_string(),
                    })
                    .collect();
                println!("  {}: {} [{}]", i.name, i.dtype, dims.join(", "));
            }
            // Output shapes come from importing; a model that does not import still shows
            // what the file says, then fails with the import error.
            let imported = Model::from_onnx(parsed.clone());
            println!("outputs:");
            match &imported {
                Ok(m) => {
                    for (name, o) in &m.outputs {
                        println!("  {name}: {}", fmt_output(o));
                    }
                }
                Err(_) => {
                    for name in &parsed.outputs {
                        println!("  {name}");
                    }
                }
            }
            print_counts(&parsed.op_counts());
            println!("parameters: {}", parsed.parameter_count());
            return imported
                .map(|_| ())
                .map_err(|e| e.context(path.display().to_string()));
        }
        Format::Graph => Model::load(path)?,
    };
    println!("model: {}", path.display());
    println!("format: Tandem graph file ({} nodes)", model.graph.len());
    println!("inputs:");
    for i in &model.inputs {
        println!("  {}: {}", i.name(), fmt_output(i));
    }
    println!("outputs:");
    for (name, o) in &model.outputs {
        println!("  {name}: {}", fmt_output(o));
    }
    print_counts(&model.op_counts()?);
    println!("parameters: {}", model.parameter_count()?);
    Ok(())
}

fn optimize(path: &Path) -> Result<()> {
    let model = Model::load(path)?;
    let s = Session::new(&model.graph)?;
    let fetches: Vec<&Output> = model.outputs.iter().map(|(_, o)| o).collect();
    let feeds: Vec<&Output> = model.inputs.iter().collect();
    let plan = s.explain(&fetches, &feeds)?;
    let steps = plan.lines().filter(|l| !l.trim().is_empty()).count();
    println!(
        "# {}: {} graph nodes, optimized plan of {steps} steps",
        path.display(),
        model.graph.len()
    );
    println!("{}", plan.trim_end());
    Ok(())
}

/// A file name for an output: path separators and odd characters become `_`.
fn file_stem_for(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "output".to_string()
    } else {
        s
    }
}

fn run(rest: &[String]) -> std::result::Result<(), Failure> {
    let mut model_path = None;
    let mut inputs: Vec<(String, PathBuf)> = Vec::new();
    let mut out_dir = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--input" | "-i" => {
                let spec = it
                    .next()
                    .ok_or_else(|| usage("--input needs NAME=FILE.npy"))?;
                let (name, file) = spec
                    .split_once('=')
                    .ok_or_else(|| usage(format!("--input `{spec}` is not NAME=FILE.npy")))?;
                inputs.push((name.to_string(), PathBuf::from(file)));
            }
            "--output-dir" | "-o" => {
                out_dir = Some(PathBuf::from(
                    it.next().ok_or_else(|| usage("--output-dir needs a DIR"))?,
                ));
            }
            s if s.starts_with('-') => return Err(usage(format!("unknown option `{s}`"))),
            s if model_path.is_none() => model_path = Some(PathBuf::from(s)),
            s => return Err(usage(format!("unexpected argument `{s}`"))),
        }
    }
    let model_path = model_path.ok_or_else(|| usage("`run` needs a MODEL path"))?;
    let out_dir = out_dir.ok_or_else(|| usage("`run` needs --output-dir DIR"))?;
    let model = Model::load(&model_path)?;
    let expected: Vec<&str> = model.inputs.iter().map(|i| i.name()).collect();
    let mut tensors: Vec<Option<Tensor>> = vec![None; model.inputs.len()];
    for (name, file) in &inputs {
        let k = expected.iter().position(|e| e == name).ok_or_else(|| {
            Error::invalid(
                "run",
                format!(
                    "the model has no input `{name}` (its inputs: {})",
                    expected.join(", ")
                ),
            )
        })?;
        let t = npy::read(file).map_err(|e| e.context(format!("input `{name}`")))?;
        if let Some(slot) = tensors.get_mut(k) {
            *slot = Some(t);
        }
    }
    let missing: Vec<&str> = expected
        .iter()
        .zip(&tensors)
        .filter(|(_, t)| t.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(usage(format!(
            "missing --input for {}",
            missing
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let s = Session::new(&model.graph)?;
    let feeds: Vec<(&Output, &Tensor)> = model
        .inputs
        .iter()
        .zip(&tensors)
        .filter_map(|(o, t)| t.as_ref().map(|t| (o, t)))
        .collect();
    let fetches: Vec<&Output> = model.outputs.iter().map(|(_, o)| o).collect();
    let results = s.run(&fetches, &feeds)?;
    std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
        path: out_dir.display().to_string(),
        source,
    })?;
    for ((name, _), t) in model.outputs.iter().zip(&results) {
        let file = out_dir.join(format!("{}.npy", file_stem_for(name)));
        npy::write(&file, t)?;
        println!(
            "{name}: {} {:?} -> {}",
            t.dtype(),
            t.shape(),
            file.display()
        );
    }
    Ok(())
}

fn convert(rest: &[String]) -> std::result::Result<(), Failure> {
    let mut paths = Vec::new();
    let mut opset = 17;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--opset" => {
                let v = it.next().ok_or_else(|| usage("--opset needs 13 or 17"))?;
                opset = match v.as_str() {
                    "13" => 13,
                    "17" => 17,
                    _ => return Err(usage(format!("--opset `{v}`: 13 or 17"))),
                };
            }
            s if s.starts_with('-') => return Err(usage(format!("unknown option `{s}`"))),
            s => paths.push(PathBuf::from(s)),
        }
    }
    let [src, dst] = paths.as_slice() else {
        return Err(usage("`convert` needs IN and OUT paths"));
    };
    let model = Model::load(src)?;
    match Format::for_output(dst) {
        Format::Onnx => {
            let s = Session::new(&model.graph)?;
            let ins: Vec<&Output> = model.inputs.iter().collect();
            let outs: Vec<(&str, &Output)> =
                model.outputs.iter().map(|(n, o)| (n.as_str(), o)).collect();
            save_onnx(&s, &ins, &outs, opset, dst)
                .map_err(|e| e.context(src.display().to_string()))?;
            println!("wrote {} (ONNX opset {opset})", dst.display());
        }
        Format::Graph => {
            model.graph.save(dst)?;
            println!("wrote {} (Tandem graph file)", dst.display());
        }
    }
    Ok(())
}
