//! The `tandem` binary on the ONNX fixtures: info, run, convert (both ways), optimize, and
//! one-line errors with a non-zero status for bad files, unknown ops and misuse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tandem_tensor::{io::npy, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/onnx")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tandem-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = tandem(args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// The command failed with `code` and exactly one `error:` line on stderr.
fn fails(args: &[&str], code: i32) -> String {
    let o = tandem(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    err
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn run_mlp(model: &str, dir: &Path) -> Tensor {
    let input = format!("input={}", fixture("mlp_opset13.input0.npy"));
    let out = ok(&[
        "run",
        model,
        "--input",
        &input,
        "--output-dir",
        &dir.display().to_string(),
    ]);
    assert!(out.contains("logits"), "{out}");
    npy::read(dir.join("logits.npy")).unwrap()
}

#[test]
fn info_onnx() {
    let out = ok(&["info", &fixture("mlp_opset13.onnx")]);
    assert!(out.contains("opset 13"), "{out}");
    assert!(out.contains("input: float32 [batch, 784]"), "{out}");
    assert!(out.contains("logits: float32 [?, 10]"), "{out}");
    assert!(out.contains("Gemm"), "{out}");
    // Linear(784,128) + Linear(128,10)
    assert!(
        out.contains(&format!("parameters: {}", 784 * 128 + 128 + 128 * 10 + 10)),
        "{out}"
    );
    let out = ok(&["info", &fixture("lenet5.onnx")]);
    assert!(out.contains("Conv"), "{out}");
}

#[test]
fn run_writes_one_npy_per_output() {
    let dir = scratch("run");
    let got = run_mlp(&fixture("mlp_opset13.onnx"), &dir);
    let want = npy::read(fixture("mlp_opset13.output0.npy")).unwrap();
    assert!(max_diff(&got, &want) < 1e-4);

    // Two outputs, two files.
    let input = format!("x={}", fixture("multiop.input0.npy"));
    let d = dir.join("multi");
    ok(&[
        "run",
        &fixture("multiop.onnx"),
        "--input",
        &input,
        "--output-dir",
        &d.display().to_string(),
    ]);
    let files = std::fs::read_dir(&d).unwrap().count();
    assert_eq!(files, 2);
}

#[test]
fn convert_both_ways_keeps_outputs() {
    let dir = scratch("convert");
    let want = npy::read(fixture("mlp_opset13.output0.npy")).unwrap();
    let tg = dir.join("mlp.tgraph").display().to_string();
    ok(&["convert", &fixture("mlp_opset13.onnx"), &tg]);
    let info = ok(&["info", &tg]);
    assert!(info.contains("Tandem graph file"), "{info}");
    assert!(info.contains("logits: float32 [?, 10]"), "{info}");
    assert!(info.contains("input: float32 [?, 784]"), "{info}");
    assert!(info.contains("parameters: 101770"), "{info}");
    let got = run_mlp(&tg, &dir.join("from_graph"));
    assert!(max_diff(&got, &want) < 1e-4);

    for opset in ["13", "17"] {
        let onnx = dir.join(format!("back{opset}.onnx")).display().to_string();
        ok(&["convert", &tg, &onnx, "--opset", opset]);
        let info = ok(&["info", &onnx]);
        assert!(info.contains(&format!("opset {opset}")), "{info}");
        assert!(info.contains("input: float32 [N, 784]"), "{info}");
        let got = run_mlp(&onnx, &dir.join(format!("from_onnx{opset}")));
        assert!(max_diff(&got, &want) < 1e-4);
    }
}

#[test]
fn optimize_prints_the_plan() {
    let out = ok(&["optimize", &fixture("lenet5.onnx")]);
    assert!(out.contains("optimized plan of"), "{out}");
    assert!(out.lines().count() > 3, "{out}");
}

#[test]
fn bad_and_truncated_files_are_one_line_errors() {
    let dir = scratch("bad");
    let junk = dir.join("junk.onnx");
    std::fs::write(&junk, b"this is not a model at all").unwrap();
    let junk = junk.display().to_string();
    for cmd in ["info", "optimize"] {
        let e = fails(&[cmd, &junk], 1);
        assert!(e.contains("junk.onnx"), "{e}");
    }
    let bytes = std::fs::read(fixture("lenet5.onnx")).unwrap();
    let cut = dir.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails(&["info", &cut.display().to_string()], 1);
    let graph = dir.join("cut.tgraph");
    std::fs::write(&graph, b"TDMGRAPH\x01\x00\x00\x00\xff\xff").unwrap();
    fails(&["info", &graph.display().to_string()], 1);
    let e = fails(
        &["info", &dir.join("missing.onnx").display().to_string()],
        1,
    );
    assert!(e.contains("missing.onnx"), "{e}");
}

#[test]
fn unknown_op_is_named() {
    let dir = scratch("unknown");
    let bytes = std::fs::read(fixture("mlp_opset13.onnx")).unwrap();
    let mut m = <tandem_onnx::proto::ModelProto as prost::Message>::decode(&bytes[..]).unwrap();
    m.graph.as_mut().unwrap().node[0].op_type = "FancyOp".into();
    let path = dir.join("fancy.onnx");
    std::fs::write(&path, prost::Message::encode_to_vec(&m)).unwrap();
    let path = path.display().to_string();
    // `info` shows what the file says, then fails naming the op.
    let o = tandem(&["info", &path]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("FancyOp"));
    assert!(stderr(&o).contains("FancyOp"), "{}", stderr(&o));
    let input = format!("input={}", fixture("mlp_opset13.input0.npy"));
    let out = dir.join("out").display().to_string();
    let e = fails(&["run", &path, "--input", &input, "--output-dir", &out], 1);
    assert!(e.contains("FancyOp"), "{e}");
    let e = fails(
        &[
            "convert",
            &path,
            &dir.join("x.tgraph").display().to_string(),
        ],
        1,
    );
    assert!(e.contains("FancyOp"), "{e}");
}

#[test]
fn misuse_is_a_usage_error() {
    let model = fixture("mlp_opset13.onnx");
    fails(&[], 2);
    fails(&["frobnicate"], 2);
    fails(&["info"], 2);
    fails(&["convert", &model], 2);
    fails(&["convert", &model, "x.onnx", "--opset", "12"], 2);
    let e = fails(&["run", &model, "--output-dir", "out"], 2);
    assert!(e.contains("`input`"), "{e}");
    let e = fails(
        &["run", &model, "--input", "nope", "--output-dir", "out"],
        2,
    );
    assert!(e.contains("NAME=FILE"), "{e}");
    // An input the model does not have, and a file of the wrong dtype.
    let input = format!("wrong={}", fixture("mlp_opset13.input0.npy"));
    let e = fails(
        &["run", &model, "--input", &input, "--output-dir", "out"],
        1,
    );
    assert!(e.contains("its inputs: input"), "{e}");
    let dir = scratch("misuse");
    let ints = dir.join("ints.npy");
    npy::write(
        &ints,
        &Tensor::from_vec(vec![1i64; 784], &[1, 784]).unwrap(),
    )
    .unwrap();
    let input = format!("input={}", ints.display());
    fails(
        &[
            "run",
            &model,
            "--input",
            &input,
            "--output-dir",
            &dir.display().to_string(),
        ],
        1,
    );
    assert!(ok(&["--help"]).contains("tandem run"));
}
