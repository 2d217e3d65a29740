//! Every model of `tests/fixtures/onnx` (PyTorch, Keras via tf2onnx, and a hand-built model
//! exercising many ops) imported into `Eval` reproduces the expected outputs of its manifest.

use std::path::PathBuf;
use tandem_onnx::OnnxModel;
use tandem_tensor::{io::npy, Tensor};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/onnx")
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor, rtol: f64, atol: f64) {
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{name}: dtype");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    let mut worst = 0.0f64;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let err = (a - b).abs();
        worst = worst.max(err);
        assert!(
            err <= atol + rtol * b.abs(),
            "{name}[{i}]: got {a}, expected {b} (|diff| {err})"
        );
    }
    eprintln!("{name}: max |diff| {worst:e}");
}

fn check_model(entry: &serde_json::Value) {
    let name = entry["name"].as_str().unwrap();
    let model = OnnxModel::load(dir().join(entry["file"].as_str().unwrap())).unwrap();
    let tol = &entry["tolerance"];
    let (rtol, atol) = (tol["rtol"].as_f64().unwrap(), tol["atol"].as_f64().unwrap());
    let inputs: Vec<Tensor> = entry["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| npy::read(dir().join(i["file"].as_str().unwrap())).unwrap())
        .collect();
    let names: Vec<&str> = entry["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    let model_names: Vec<&str> = model.inputs().iter().map(|i| i.name.as_str()).collect();
    assert_eq!(model_names, names, "{name}: input names");
    let outs = model.run(&inputs).unwrap();
    let expected = entry["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), expected.len(), "{name}: output count");
    for ((o, e), oname) in outs.iter().zip(expected).zip(model.output_names()) {
        assert_eq!(oname, e["name"].as_str().unwrap());
        let want = npy::read(dir().join(e["file"].as_str().unwrap())).unwrap();
        assert_close(&format!("{name}/{oname}"), o, &want, rtol, atol);
    }
}

fn entry(name: &str) -> serde_json::Value {
    manifest()["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not in the manifest"))
}

#[test]
fn mlp_opset13() {
    check_model(&entry("mlp_opset13"));
}

#[test]
fn mlp_opset17() {
    check_model(&entry("mlp_opset17"));
}

#[test]
fn lenet5() {
    check_model(&entry("lenet5"));
}

#[test]
fn multiop() {
    check_model(&entry("multiop"));
}

#[test]
fn keras_dense() {
    check_model(&entry("keras_dense"));
}

#[test]
fn decoder_upsample() {
    // ConvTranspose (1-D and 2-D, groups, dilation, output_padding) and Resize (nearest,
    // bilinear with half-pixel and align-corners, 1-D linear) as PyTorch exports them.
    check_model(&entry("decoder_upsample"));
}

#[test]
fn misc_ops() {
    // Tile, CumSum, ReduceLogSumExp, ReduceL2, Selu, Celu, Mod, OneHot, DepthToSpace at
    // opset 18 (reduce axes as inputs).
    check_model(&entry("misc_ops"));
}

#[test]
fn resize_convt_modes() {
    // Every Resize coordinate mapping and rounding mode (nearest, linear, cubic), and
    // ConvTranspose padding forms, against ONNX Runtime.
    check_model(&entry("resize_convt_modes"));
}

#[test]
fn rnn_seq() {
    // LSTM and bidirectional GRU (PyTorch's batch_first export), reflect padding.
    check_model(&entry("rnn_seq"));
}

#[test]
fn mha_block() {
    // nn.MultiheadAttention (batch_first) + residual + LayerNorm.
    check_model(&entry("mha_block"));
}

#[test]
fn every_manifest_model_is_covered() {
    let m = manifest();
    let names: Vec<&str> = m["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for n in &names {
        assert!(
            [
                "mlp_opset13",
                "mlp_opset17",
                "lenet5",
                "multiop",
                "keras_dense",
                "decoder_upsample",
                "misc_ops",
                "resize_convt_modes",
                "rnn_seq",
                "mha_block"
            ]
            .contains(n),
            "a new fixture model {n} needs a test"
        );
    }
}

#[test]
fn batch_size_is_dynamic() {
    // The PyTorch exports declare a symbolic batch: other batch sizes run too.
    let model = OnnxModel::load(dir().join("mlp_opset13.onnx")).unwrap();
    assert_eq!(model.inputs()[0].dims, vec![None, Some(784)]);
    let x = npy::read(dir().join("mlp_opset13.input0.npy")).unwrap();
    let one_row = x.narrow(0, 1, 1).unwrap();
    let full = model.run(&[x]).unwrap();
    let single = model.run(&[one_row]).unwrap();
    assert_eq!(single[0].shape(), &[1, 10]);
    let row = full[0].narrow(0, 1, 1).unwrap().to_vec::<f32>().unwrap();
    for (a, b) in single[0].to_vec::<f32>().unwrap().iter().zip(&row) {
        assert!((a - b).abs() < 1e-5);
    }
}
