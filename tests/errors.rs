//! The most common user mistakes, in both modes and in file loading: each must be an error
//! (never a panic) whose message names the op, node, layer or parameter involved and the
//! shapes or dtypes that were wrong.

use std::path::PathBuf;
use tandem::eager::nn::functional as F;
use tandem::eager::nn::{Linear, Module};
use tandem::eager::{BackwardOptions, Tensor};
use tandem::graph::{saver::Saver, Graph, Session};
use tandem::ir::{Emit, Op};
use tandem::tensor::{io, DType, Device, Tensor as Value};

/// The error's message, failing the test (with the value) when the call succeeded.
fn message<T: std::fmt::Debug>(r: tandem::tensor::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `msg` contains every one of `parts`.
fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(
            msg.contains(p),
            "error message {msg:?} does not mention {p:?}"
        );
    }
}

/// A path in the temporary folder, unique to this test process and `name`.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tandem-errors-{}-{name}", std::process::id()))
}

fn ones(shape: &[usize]) -> Tensor {
    Tensor::ones(shape, DType::F32)
}

/// The seed's two-layer MLP with named layers.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(hidden: usize) -> Mlp {
        Mlp {
            fc1: Linear::new(4, hidden, true).unwrap().with_name("fc1"),
            fc2: Linear::new(hidden, 2, true).unwrap().with_name("fc2"),
        }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> tandem::eager::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

// ---------------------------------------------------------------- eager mode

#[test]
fn eager_matmul_shape_mismatch() {
    let msg = message(ones(&[2, 3]).matmul(&ones(&[4, 5])));
    assert_names(&msg, &["matmul", "[2, 3]", "[4, 5]"]);
}

#[test]
fn eager_linear_input_mismatch_names_the_layer() {
    let net = Mlp::new(8);
    let msg = message(net.forward(&ones(&[32, 5])));
    assert_names(&msg, &["fc1", "linear", "[32, 5]", "4"]);
}

#[test]
fn eager_broadcast_failure() {
    let msg = message(&ones(&[2, 3]) + &ones(&[4]));
    assert_names(&msg, &["add", "[2, 3]", "[4]"]);
}

#[test]
fn eager_cross_entropy_float_labels() {
    let logits = ones(&[4, 10]);
    let labels = Tensor::zeros(&[4], DType::F32);
    let msg = message(F::cross_entropy(&logits, &labels));
    assert_names(&msg, &["cross_entropy", "float32"]);
}

#[test]
fn eager_cross_entropy_batch_mismatch() {
    let logits = ones(&[4, 10]);
    let labels = Tensor::zeros(&[3], DType::I64);
    let msg = message(F::cross_entropy(&logits, &labels));
    assert_names(&msg, &["cross_entropy", "[4, 10]", "[3]"]);
}

#[test]
fn eager_backward_twice_without_retain_graph() {
    let x = ones(&[3]).requires_grad_(true);
    let y = (&x * &x).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let msg = message(y.backward());
    assert_names(&msg, &["second time", "retain_graph"]);
    // With retain_graph the second pass works.
    let z = (&x * &x).unwrap().sum_all().unwrap();
    let keep = BackwardOptions {
        retain_graph: true,
        ..Default::default()
    };
    z.backward_opts(None, keep).unwrap();
    z.backward().unwrap();
}

#[test]
fn eager_backward_on_non_scalar() {
    let x = ones(&[2, 3]).requires_grad_(true);
    let y = (&x * 2.0).unwrap();
    let msg = message(y.backward());
    assert_names(&msg, &["[2, 3]"]);
}

#[test]
fn eager_load_state_dict_missing_key() {
    let net = Mlp::new(8);
    let mut sd = net.state_dict();
    sd.retain(|(n, _)| n != "fc2.bias");
    let msg = message(net.load_state_dict(&sd, true));
    assert_names(&msg, &["load_state_dict", "missing", "fc2.bias"]);
}

#[test]
fn eager_load_state_dict_wrong_shape() {
    let net = Mlp::new(8);
    let other = Mlp::new(16);
    let msg = message(net.load_state_dict(&other.state_dict(), true));
    assert_names(
        &msg,
        &["load_state_dict", "fc1.weight", "[16, 4]", "[8, 4]"],
    );
}

#[test]
fn eager_load_state_dict_unexpected_key_when_strict() {
    let net = Mlp::new(8);
    let mut sd = net.state_dict();
    sd.push(("fc3.weight".into(), Value::zeros(&[2, 2], DType::F32)));
    let msg = message(net.load_state_dict(&sd, true));
    assert_names(&msg, &["unexpected", "fc3.weight"]);
    // Not strict: the extra key is ignored.
    net.load_state_dict(&sd, false).unwrap();
}

#[test]
fn eager_load_safetensors_wrong_dtype_names_file_and_parameter() {
    let net = Mlp::new(8);
    let sd: Vec<(String, Value)> = net
        .state_dict()
        .into_iter()
        .map(|(n, v)| (n, v.cast(DType::F64).unwrap()))
        .collect();
    let refs: Vec<(&str, &Value)> = sd.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let path = temp_path("f64.safetensors");
    io::safetensors::save(&path, &refs, None).unwrap();
    let msg = message(net.load_safetensors(&path));
    let _ = std::fs::remove_file(&path);
    assert_names(
        &msg,
        &["f64.safetensors", "fc1.weight", "float32", "float64"],
    );
}

#[test]
fn eager_cuda_without_the_feature() {
    let msg = message(ones(&[2]).to_device(Device::Cuda(0)));
    assert_names(&msg, &["cuda:0"]);
    assert!(
        msg.contains("feature") || msg.contains("not available"),
        "{msg}"
    );
}

#[test]
fn eager_bad_axis() {
    let msg = message(ones(&[2, 3]).softmax(5));
    assert_names(&msg, &["softmax", "axis 5", "rank 2"]);
}

#[test]
fn eager_index_out_of_range() {
    let idx = Tensor::from_vec(vec![0i64, 10], &[2]).unwrap();
    let msg = message(ones(&[3, 2]).index_select(0, &idx));
    assert_names(&msg, &["index_select", "10", "3"]);
}

#[test]
fn eager_reshape_wrong_element_count() {
    let msg = message(ones(&[2, 3]).reshape(&[4, 2]));
    assert_names(&msg, &["reshape", "[2, 3]", "[4, 2]"]);
}

#[test]
fn eager_cat_shape_mismatch() {
    let (a, b) = (ones(&[2, 3]), ones(&[2, 4]));
    let msg = message(Tensor::cat(&[&a, &b], 0));
    assert_names(&msg, &["cat", "[2, 3]", "[2, 4]"]);
}

// ---------------------------------------------------------------- graph mode

fn graph_mlp() -> (Graph, tandem::graph::Output, tandem::graph::Output) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(4)]).unwrap();
    let w = g.variable("w", Value::zeros(&[4, 3], DType::F32)).unwrap();
    let y = g.emit(Op::MatMul, &[&x, &w]).unwrap();
    (g, x, y)
}

#[test]
fn graph_matmul_shape_mismatch_names_the_node() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, &[Some(2), Some(3)]).unwrap();
    let b = g.placeholder("b", DType::F32, &[Some(4), Some(5)]).unwrap();
    let msg = message(g.emit(Op::MatMul, &[&a, &b]));
    assert_names(&msg, &["MatMul", "matmul", "[2, 3]", "[4, 5]"]);
}

#[test]
fn graph_unfed_placeholder() {
    let (g, _x, y) = graph_mlp();
    let s = Session::new(&g).unwrap();
    let msg = message(s.run(&[&y], &[]));
    assert_names(&msg, &["placeholder `x`", "float32", "must be fed"]);
}

#[test]
fn graph_feed_wrong_shape() {
    let (g, x, y) = graph_mlp();
    let s = Session::new(&g).unwrap();
    let bad = Value::zeros(&[2, 5], DType::F32);
    let msg = message(s.run(&[&y], &[(&x, &bad)]));
    assert_names(&msg, &["x", "[2, 5]", "4"]);
}

#[test]
fn graph_feed_wrong_dtype() {
    let (g, x, y) = graph_mlp();
    let s = Session::new(&g).unwrap();
    let bad = Value::zeros(&[2, 4], DType::F64);
    let msg = message(s.run(&[&y], &[(&x, &bad)]));
    assert_names(&msg, &["x", "float64", "float32"]);
}

#[test]
fn graph_saver_restore_shape_mismatch() {
    let (g, _, _) = graph_mlp();
    let s = Session::new(&g).unwrap();
    let path = temp_path("restore-shape.safetensors");
    let wrong = Value::zeros(&[3, 4], DType::F32);
    io::safetensors::save(&path, &[("w", &wrong)], None).unwrap();
    let msg = message(Saver::new(&s).unwrap().restore(&s, &path));
    let _ = std::fs::remove_file(&path);
    assert_names(
        &msg,
        &["restore-shape.safetensors", "`w`", "[3, 4]", "[4, 3]"],
    );
}

#[test]
fn graph_saver_restore_missing_variable() {
    let (g, _, _) = graph_mlp();
    let s = Session::new(&g).unwrap();
    let path = temp_path("restore-missing.safetensors");
    let other = Value::zeros(&[4, 3], DType::F32);
    io::safetensors::save(&path, &[("v", &other)], None).unwrap();
    let msg = message(Saver::new(&s).unwrap().restore(&s, &path));
    let _ = std::fs::remove_file(&path);
    assert_names(&msg, &["restore-missing.safetensors", "no tensor `w`"]);
}

// ---------------------------------------------------------------- files

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name);
    std::fs::read(path).unwrap()
}

#[test]
fn onnx_unsupported_op_names_the_node_and_op() {
    let mut bytes = fixture("mlp_opset13.onnx");
    // The op_type field (tag 0x22, length 4) of the Relu node, renamed to an op nobody has.
    let pat = b"\x22\x04Relu";
    let at = bytes
        .windows(pat.len())
        .position(|w| w == pat)
        .expect("the fixture has a Relu node");
    bytes[at + 2..at + 6].copy_from_slice(b"Frob");
    let msg = message(tandem::onnx::OnnxModel::from_bytes(&bytes));
    assert_names(&msg, &["onnx", "unsupported", "/Relu", "Frob"]);
}

#[test]
fn onnx_truncated_file() {
    let bytes = fixture("mlp_opset13.onnx");
    let msg = message(tandem::onnx::OnnxModel::from_bytes(
        &bytes[..bytes.len() / 2],
    ));
    assert_names(&msg, &["onnx", "truncated"]);
}

#[test]
fn corrupt_npy() {
    let t = Value::zeros(&[4, 4], DType::F32);
    let bytes = io::npy::to_bytes(&t).unwrap();
    let msg = message(io::npy::from_bytes(&bytes[..bytes.len() - 8]));
    assert_names(&msg, &["npy"]);
    let msg = message(io::npy::from_bytes(b"not a numpy file at all"));
    assert_names(&msg, &["npy"]);
}

#[test]
fn corrupt_safetensors_with_path() {
    let t = Value::zeros(&[4, 4], DType::F32);
    let bytes = io::safetensors::to_bytes(&[("t", &t)], None).unwrap();
    let path = temp_path("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
    let msg = message(io::safetensors::load(&path));
    let _ = std::fs::remove_file(&path);
    assert_names(&msg, &["safetensors", "truncated.safetensors"]);
}

#[test]
fn corrupt_graph_file() {
    let (g, _, _) = graph_mlp();
    let bytes = g.to_bytes().unwrap();
    let msg = message(Graph::from_bytes(&bytes[..bytes.len() / 2]));
    assert_names(&msg, &["graph"]);
    let msg = message(Graph::from_bytes(b"PK\x03\x04 a zip, not a graph"));
    assert_names(&msg, &["graph", "magic"]);
}

#[test]
fn missing_file_names_the_path() {
    let path = temp_path("does-not-exist.onnx");
    let msg = message(tandem::onnx::OnnxModel::load(&path));
    assert_names(&msg, &["does-not-exist.onnx"]);
}
