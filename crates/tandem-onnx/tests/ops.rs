//! Importer op coverage on small hand-built models, with values computed by hand, including
//! opset-dependent forms and shape subgraphs with a dynamic batch.

mod common;

use common::*;
use tandem_ir::{Emit, EmitExt, Eval};
use tandem_onnx::{export, import, parse, Recorder, RecorderHooks};
use tandem_tensor::{DType, Tensor};

#[test]
fn shape_subgraph_with_dynamic_batch() {
    // x.view(x.size(0), -1) as PyTorch exports it: Shape -> Gather -> Unsqueeze -> Concat ->
    // Reshape, then a MatMul. Imported into a Recorder the batch stays unknown.
    let nodes = vec![
        node("Shape", &["x"], &["s"], vec![]),
        node("Gather", &["s", "zero"], &["n"], vec![ai("axis", 0)]),
        node("Unsqueeze", &["n", "ax0"], &["n1"], vec![]),
        node("Concat", &["n1", "minus1"], &["shape"], vec![ai("axis", 0)]),
        node("Reshape", &["x", "shape"], &["flat"], vec![]),
        node("MatMul", &["flat", "w"], &["y"], vec![]),
    ];
    let inits = [
        ("zero", Tensor::scalar(0i64)),
        ("ax0", i64s(&[0])),
        ("minus1", i64s(&[-1])),
        ("w", Tensor::ones(&[6, 2], DType::F32)),
    ];
    let bytes = model(
        13,
        &[("x", &[None, Some(2), Some(3)])],
        &inits,
        nodes,
        &["y"],
    );
    let x = arange(&[2, 2, 3]);
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    assert_close(y, &[15.0, 15.0, 51.0, 51.0], &[2, 2]);

    let parsed = parse(&bytes).unwrap();
    let rec = Recorder::new();
    let imported = import(&parsed, &rec, &mut RecorderHooks).unwrap();
    let (_, out) = &imported.outputs[0];
    assert_eq!(rec.shape(out), vec![None, Some(2)]);
    rec.output("y", out);
    let again = export(&rec.finish(), 13).unwrap();
    for batch in [1usize, 5] {
        let xb = arange(&[batch, 2, 3]);
        let got = &run(&again, std::slice::from_ref(&xb))[0];
        let want = &run(&bytes, &[xb])[0];
        assert_close(got, &want.to_f64_vec().unwrap(), &[batch, 2]);
    }
}

#[test]
fn softmax_axis_semantics_follow_the_opset() {
    let x = arange(&[2, 2, 2]);
    // Opset 11: axis 1 coerces to [2, 4] and normalizes over 4 values.
    let b11 = model(
        11,
        &[("x", &[Some(2), Some(2), Some(2)])],
        &[],
        vec![node("Softmax", &["x"], &["y"], vec![ai("axis", 1)])],
        &["y"],
    );
    let y = &run(&b11, std::slice::from_ref(&x))[0];
    let e: Vec<f64> = (0..4).map(|i| (i as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    let row: Vec<f64> = e.iter().map(|v| v / s).collect();
    let want: Vec<f64> = row.iter().chain(row.iter()).copied().collect();
    assert_close(y, &want, &[2, 2, 2]);
    // Opset 13: along axis 1 only (pairs 2 apart).
    let b13 = model(
        13,
        &[("x", &[Some(2), Some(2), Some(2)])],
        &[],
        vec![node("LogSoftmax", &["x"], &["y"], vec![ai("axis", 1)])],
        &["y"],
    );
    let y = &run(&b13, &[x])[0];
    let lo = -(1.0 + (2.0f64).exp()).ln();
    let hi = 2.0 + lo;
    assert_close(y, &[lo, lo, hi, hi, lo, lo, hi, hi], &[2, 2, 2]);
}

#[test]
fn squeeze_unsqueeze_axes_by_opset() {
    let x = arange(&[2, 1, 3]);
    let b11 = model(
        11,
        &[("x", &[Some(2), Some(1), Some(3)])],
        &[],
        vec![
            node("Squeeze", &["x"], &["a"], vec![ais("axes", &[1])]),
            node("Unsqueeze", &["a"], &["y"], vec![ais("axes", &[0, -1])]),
        ],
        &["y"],
    );
    assert_eq!(
        run(&b11, std::slice::from_ref(&x))[0].shape(),
        &[1, 2, 3, 1]
    );
    let b13 = model(
        13,
        &[("x", &[Some(2), Some(1), Some(3)])],
        &[("one", i64s(&[1])), ("ax", i64s(&[0, 3]))],
        vec![
            node("Squeeze", &["x", "one"], &["a"], vec![]),
            node("Unsqueeze", &["a", "ax"], &["y"], vec![]),
        ],
        &["y"],
    );
    let y = &run(&b13, &[x])[0];
    assert_eq!(y.shape(), &[1, 2, 3, 1]);
    assert_close(y, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[1, 2, 3, 1]);
}

#[test]
fn conv_same_upper_and_asymmetric_pool_padding() {
    // 1 channel 4x4 input, 2x2 all-ones kernel, stride 1, SAME_UPPER: pad only bottom/right.
    let x = arange(&[1, 1, 4, 4]);
    let w = Tensor::ones(&[1, 1, 2, 2], DType::F32);
    let b = model(
        13,
        &[("x", &[None, Some(1), Some(4), Some(4)])],
        &[("w", w)],
        vec![
            node(
                "Conv",
                &["x", "w"],
                &["c"],
                vec![astr("auto_pad", "SAME_UPPER")],
            ),
            node(
                "MaxPool",
                &["c"],
                &["y"],
                vec![ais("kernel_shape", &[3, 3]), ais("pads", &[0, 0, 1, 1])],
            ),
        ],
        &["y", "c"],
    );
    let out = run(&b, &[x]);
    let c = &out[1];
    assert_eq!(c.shape(), &[1, 1, 4, 4]);
    // Top-left window 0+1+4+5, bottom-right corner only 15.
    let cv = c.to_f64_vec().unwrap();
    assert_eq!(cv[0], 10.0);
    assert_eq!(cv[15], 15.0);
    assert_eq!(cv[3], 3.0 + 7.0);
    // Pooling 3x3 over c padded by one row/column at the end only: 3x3 windows.
    assert_eq!(out[0].shape(), &[1, 1, 3, 3]);
    let p = out[0].to_f64_vec().unwrap();
    assert_eq!(p[0], 50.0); // c[2][2] = 10 + 11 + 14 + 15
    assert_eq!(p[8], 50.0);
}

#[test]
fn gemm_attributes() {
    let a = arange(&[3, 2]); // used transposed: [2, 3]
    let bm = arange(&[3, 2]);
    let c = f32s(&[1.0, 2.0], &[2]);
    let bytes = model(
        13,
        &[("a", &[Some(3), Some(2)])],
        &[("b", bm), ("c", c)],
        vec![node(
            "Gemm",
            &["a", "b", "c"],
            &["y"],
            vec![ai("transA", 1), af("alpha", 2.0), af("beta", 0.5)],
        )],
        &["y"],
    );
    // A^T = [[0,2,4],[1,3,5]], B = [[0,1],[2,3],[4,5]]: A^T B = [[20,26],[26,35]].
    let y = &run(&bytes, &[a])[0];
    assert_close(y, &[40.5, 53.0, 52.5, 71.0], &[2, 2]);
}

#[test]
fn elementwise_reductions_and_indexing() {
    let x = f32s(&[-2.0, -0.5, 0.5, 3.0, 1.0, -1.0], &[2, 3]);
    let nodes = vec![
        node("Clip", &["x", "lo", "hi"], &["clip"], vec![]),
        node(
            "ReduceSum",
            &["clip", "ax1"],
            &["rs"],
            vec![ai("keepdims", 0)],
        ),
        node(
            "ReduceMean",
            &["x"],
            &["rm"],
            vec![ais("axes", &[0]), ai("keepdims", 1)],
        ),
        node(
            "ReduceMax",
            &["x"],
            &["rmax"],
            vec![ais("axes", &[-1]), ai("keepdims", 0)],
        ),
        node(
            "ArgMax",
            &["x"],
            &["am"],
            vec![ai("axis", 1), ai("keepdims", 0)],
        ),
        node("Gather", &["x", "idx"], &["g"], vec![ai("axis", 1)]),
        node("Slice", &["x", "st", "en", "sax"], &["sl"], vec![]),
        node("Greater", &["x", "zero"], &["pos"], vec![]),
        node("Where", &["pos", "x", "zero"], &["relu"], vec![]),
        node("Pow", &["x", "two"], &["sq"], vec![]),
        node("Cast", &["am"], &["amf"], vec![ai("to", 1)]),
        node("Expand", &["lo", "eshape"], &["ex"], vec![]),
        node(
            "ConstantOfShape",
            &["eshape"],
            &["cos"],
            vec![at("value", &Tensor::from_vec(vec![7i64], &[1]).unwrap())],
        ),
        node("Flatten", &["x"], &["fl0"], vec![ai("axis", 0)]),
        node("Transpose", &["x"], &["tr"], vec![]),
        node("Pad", &["x", "pads", "padv"], &["pad"], vec![]),
        node("Div", &["ai", "ai2"], &["idiv"], vec![]),
        node("LeakyRelu", &["x"], &["lr"], vec![af("alpha", 0.1)]),
    ];
    let inits = [
        ("lo", Tensor::scalar(-1.0f32)),
        ("hi", Tensor::scalar(1.0f32)),
        ("ax1", i64s(&[1])),
        ("idx", Tensor::from_vec(vec![-1i64, 0], &[2]).unwrap()),
        ("st", i64s(&[1])),
        ("en", i64s(&[i64::MAX])),
        ("sax", i64s(&[1])),
        ("zero", Tensor::scalar(0.0f32)),
        ("two", Tensor::scalar(2.0f32)),
        ("eshape", i64s(&[2, 2])),
        ("pads", i64s(&[0, 1, 0, 0])),
        ("padv", Tensor::scalar(9.0f32)),
        ("ai", Tensor::from_vec(vec![7i64, -7], &[2]).unwrap()),
        ("ai2", Tensor::from_vec(vec![2i64, 2], &[2]).unwrap()),
    ];
    let outs = [
        "rs", "rm", "rmax", "amf", "g", "sl", "relu", "sq", "ex", "cos", "fl0", "tr", "pad",
        "idiv", "lr",
    ];
    let bytes = model(13, &[("x", &[Some(2), Some(3)])], &inits, nodes, &outs);
    let o = run(&bytes, &[x]);
    assert_close(&o[0], &[-1.0, 1.0], &[2]);
    assert_close(&o[1], &[0.5, 0.25, -0.25], &[1, 3]);
    assert_close(&o[2], &[0.5, 3.0], &[2]);
    assert_close(&o[3], &[2.0, 0.0], &[2]);
    assert_close(&o[4], &[0.5, -2.0, -1.0, 3.0], &[2, 2]);
    assert_close(&o[5], &[-0.5, 0.5, 1.0, -1.0], &[2, 2]);
    assert_close(&o[6], &[0.0, 0.0, 0.5, 3.0, 1.0, 0.0], &[2, 3]);
    assert_close(&o[7], &[4.0, 0.25, 0.25, 9.0, 1.0, 1.0], &[2, 3]);
    assert_close(&o[8], &[-1.0; 4], &[2, 2]);
    assert_eq!(o[9].dtype(), DType::I64);
    assert_close(&o[9], &[7.0; 4], &[2, 2]);
    assert_eq!(o[10].shape(), &[1, 6]);
    assert_close(&o[11], &[-2.0, 3.0, -0.5, 1.0, 0.5, -1.0], &[3, 2]);
    assert_close(
        &o[12],
        &[9.0, -2.0, -0.5, 0.5, 9.0, 3.0, 1.0, -1.0],
        &[2, 4],
    );
    assert_eq!(o[13].dtype(), DType::I64);
    assert_close(&o[13], &[3.0, -3.0], &[2]);
    assert_close(&o[14], &[-0.2, -0.05, 0.5, 3.0, 1.0, -0.1], &[2, 3]);
}

#[test]
fn activations_and_batch_norm() {
    let x = f32s(&[-1.0, 0.0, 2.0], &[1, 3, 1, 1]);
    let gelu = |v: f64| 0.5 * v * (1.0 + erf(v / 2f64.sqrt()));
    let nodes = vec![
        node("Gelu", &["x"], &["ge"], vec![]),
        node("Erf", &["x"], &["er"], vec![]),
        node("HardSigmoid", &["x"], &["hs"], vec![]),
        node("Softplus", &["x"], &["sp"], vec![]),
        node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["bn"],
            vec![af("epsilon", 0.0)],
        ),
        node("GlobalAveragePool", &["x"], &["gap"], vec![]),
        node("Identity", &["x"], &["id"], vec![]),
        node("Dropout", &["x"], &["dr"], vec![]),
        node("Sum", &["x", "x", "x"], &["sum3"], vec![]),
    ];
    let inits = [
        ("s", f32s(&[1.0, 2.0, 3.0], &[3])),
        ("b", f32s(&[0.0, 1.0, 0.0], &[3])),
        ("m", f32s(&[1.0, 0.0, 0.0], &[3])),
        ("v", f32s(&[4.0, 1.0, 4.0], &[3])),
    ];
    let outs = ["ge", "er", "hs", "sp", "bn", "gap", "id", "dr", "sum3"];
    let bytes = model(
        20,
        &[("x", &[Some(1), Some(3), Some(1), Some(1)])],
        &inits,
        nodes,
        &outs,
    );
    let o = run(&bytes, &[x]);
    let s = [1, 3, 1, 1];
    assert_close(&o[0], &[gelu(-1.0), 0.0, gelu(2.0)], &s);
    assert_close(&o[1], &[erf(-1.0), 0.0, erf(2.0)], &s);
    assert_close(&o[2], &[0.3, 0.5, 0.9], &s);
    let sp = |v: f64| (1.0 + v.exp()).ln();
    assert_close(&o[3], &[sp(-1.0), sp(0.0), sp(2.0)], &s);
    assert_close(&o[4], &[-1.0, 1.0, 3.0], &s);
    assert_close(&o[5], &[-1.0, 0.0, 2.0], &s);
    assert_close(&o[8], &[-3.0, 0.0, 6.0], &s);
}

/// erf by its series (enough terms for |x| <= 2).
fn erf(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x;
    for n in 0..60 {
        sum += term / (2 * n + 1) as f64;
        term *= -x * x / (n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn imported_values_match_eval_builders() {
    // The importer's ops are the vocabulary's: the same graph built with EmitExt agrees.
    let x = arange(&[2, 3]);
    let bytes = model(
        13,
        &[("x", &[Some(2), Some(3)])],
        &[],
        vec![node("Softmax", &["x"], &["y"], vec![])],
        &["y"],
    );
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    let want = Eval::default().softmax(&x, -1).unwrap();
    assert_close(y, &want.to_f64_vec().unwrap(), &[2, 3]);
}

#[test]
fn normalizations_split_size_and_more_activations() {
    let x = f32s(&[-3.0, -1.0, 0.0, 1.0, 2.0, 5.0], &[1, 2, 3]);
    let nodes = vec![
        node(
            "LayerNormalization",
            &["x", "g", "b"],
            &["ln"],
            vec![af("epsilon", 1e-5)],
        ),
        node(
            "InstanceNormalization",
            &["x", "s2", "b2"],
            &["inorm"],
            vec![],
        ),
        node("Split", &["x", "sp"], &["p1", "p2"], vec![ai("axis", 2)]),
        node("Size", &["x"], &["n"], vec![]),
        node("PRelu", &["x", "slope"], &["pr"], vec![]),
        node("HardSwish", &["x"], &["hsw"], vec![]),
    ];
    let inits = [
        ("g", f32s(&[1.0, 2.0, 1.0], &[3])),
        ("b", f32s(&[0.0, 0.0, 1.0], &[3])),
        ("s2", f32s(&[1.0, 1.0], &[2])),
        ("b2", f32s(&[0.0, 0.0], &[2])),
        ("sp", i64s(&[1, 2])),
        ("slope", f32s(&[0.5], &[1])),
    ];
    let outs = ["ln", "inorm", "p1", "p2", "n", "pr", "hsw"];
    let bytes = model(
        17,
        &[("x", &[Some(1), Some(2), Some(3)])],
        &inits,
        nodes,
        &outs,
    );
    let o = run(&bytes, std::slice::from_ref(&x));
    let e = Eval::default();
    let g = f32s(&[1.0, 2.0, 1.0], &[3]);
    let b = f32s(&[0.0, 0.0, 1.0], &[3]);
    let want = tandem_ir::Functional::layer_norm(&e, &x, 1, Some(&g), Some(&b), 1e-5).unwrap();
    assert_close(&o[0], &want.to_f64_vec().unwrap(), &[1, 2, 3]);
    // Instance norm over the last axis per (sample, channel) equals layer norm over it.
    let want = tandem_ir::Functional::layer_norm(&e, &x, 1, None, None, 1e-5).unwrap();
    assert_close(&o[1], &want.to_f64_vec().unwrap(), &[1, 2, 3]);
    assert_close(&o[2], &[-3.0, 1.0], &[1, 2, 1]);
    assert_close(&o[3], &[-1.0, 0.0, 2.0, 5.0], &[1, 2, 2]);
    assert_eq!(o[4].to_vec::<i64>().unwrap(), vec![6]);
    assert_close(&o[5], &[-1.5, -0.5, 0.0, 1.0, 2.0, 5.0], &[1, 2, 3]);
    let hs = |v: f64| v * (v / 6.0 + 0.5).clamp(0.0, 1.0);
    let want: Vec<f64> = [-3.0, -1.0, 0.0, 1.0, 2.0, 5.0]
        .iter()
        .map(|&v| hs(v))
        .collect();
    assert_close(&o[6], &want, &[1, 2, 3]);
}

/// Hooks that record which names became placeholders and parameters.
#[derive(Default)]
struct Naming {
    placeholders: Vec<(String, Vec<Option<usize>>)>,
    params: Vec<String>,
}

impl tandem_onnx::ImportHooks<Recorder> for Naming {
    fn placeholder(
        &mut self,
        r: &Recorder,
        name: &str,
        dtype: DType,
        dims: &[Option<usize>],
    ) -> tandem_tensor::Result<tandem_onnx::Recorded> {
        self.placeholders.push((name.to_string(), dims.to_vec()));
        Ok(r.input(name, dtype, dims))
    }
    fn initializer(
        &mut self,
        r: &Recorder,
        name: &str,
        t: &Tensor,
    ) -> tandem_tensor::Result<tandem_onnx::Recorded> {
        self.params.push(name.to_string());
        Ok(r.initializer(name, t.clone()))
    }
}

#[test]
fn only_float_initializers_become_parameters() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/onnx");
    let bytes = std::fs::read(dir.join("multiop.onnx")).unwrap();
    let parsed = parse(&bytes).unwrap();
    let ints: Vec<&str> = parsed
        .initializers
        .iter()
        .filter(|(_, t)| !t.dtype().is_float())
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(!ints.is_empty(), "multiop has an int64 reshape shape");
    let mut hooks = Naming::default();
    let rec = Recorder::new();
    tandem_onnx::import_bytes(&bytes, &rec, &mut hooks).unwrap();
    assert_eq!(
        hooks.placeholders,
        vec![("x".to_string(), vec![Some(2), Some(3), Some(8), Some(8)])]
    );
    let floats = parsed
        .initializers
        .iter()
        .filter(|(_, t)| t.dtype().is_float())
        .count();
    assert_eq!(hooks.params.len(), floats);
    assert!(hooks.params.iter().all(|p| !ints.contains(&p.as_str())));
}

#[test]
fn one_dimensional_conv_and_pool() {
    // [N=1, C=1, W=5], kernel [1, 1, 3] of ones, pads 1, stride 2; then MaxPool k=2.
    let x = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1, 1, 5]);
    let nodes = vec![
        node(
            "Conv",
            &["x", "w"],
            &["c"],
            vec![ais("pads", &[1, 1]), ais("strides", &[2])],
        ),
        node("MaxPool", &["x"], &["m"], vec![ais("kernel_shape", &[2])]),
        node(
            "AveragePool",
            &["x"],
            &["a"],
            vec![ais("kernel_shape", &[3]), ais("pads", &[1, 1])],
        ),
    ];
    let inits = [("w", Tensor::ones(&[1, 1, 3], DType::F32))];
    let bytes = model(
        13,
        &[("x", &[None, Some(1), Some(5)])],
        &inits,
        nodes,
        &["c", "m", "a"],
    );
    let o = run(&bytes, &[x]);
    assert_close(&o[0], &[3.0, 9.0, 9.0], &[1, 1, 3]);
    assert_close(&o[1], &[2.0, 3.0, 4.0, 5.0], &[1, 1, 4]);
    // count_include_pad = 0 (the default): edge windows average 2 values.
    assert_close(&o[2], &[1.5, 2.0, 3.0, 4.0, 4.5], &[1, 1, 5]);
}
