//! ONNX <-> graph mode: fixtures imported as graphs reproduce their expected outputs, an
//! imported MLP fine-tunes with graph Adam, a graph exports to ONNX (opset 13 and 17) and
//! re-imports to the same outputs, and export errors name the node.

use std::path::PathBuf;
use tandem_graph::{Adam, Graph, Optimizer, Output, Session};
use tandem_ir::{Distribution, EmitExt, Functional, Reduction};
use tandem_onnx::graph_bridge::{
    export_onnx, graph_signature, import_graph, output_node_name, to_export_graph,
};
use tandem_onnx::OnnxModel;
use tandem_tensor::random::Rng;
use tandem_tensor::{io::npy, Conv2dParams, DType, Pool2dParams, Tensor};

fn rnd(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, &mut Rng::new(seed)).unwrap()
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/onnx")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn fixtures_import_as_graphs() {
    for (model, n_out) in [
        ("mlp_opset13", 1),
        ("mlp_opset17", 1),
        ("lenet5", 1),
        ("keras_dense", 1),
        ("multiop", 2),
    ] {
        let (g, inputs, outputs) = import_graph(dir().join(format!("{model}.onnx"))).unwrap();
        assert_eq!(inputs.len(), 1, "{model}");
        assert_eq!(inputs[0].shape()[0], None, "{model}: batch dim is dynamic");
        assert_eq!(outputs.len(), n_out, "{model}");
        let x = npy::read(dir().join(format!("{model}.input0.npy"))).unwrap();
        let s = Session::new(&g).unwrap();
        let fetches: Vec<&Output> = outputs.iter().map(|(_, o)| o).collect();
        let got = s.run(&fetches, &[(&inputs[0], &x)]).unwrap();
        for (k, t) in got.iter().enumerate() {
            let want = npy::read(dir().join(format!("{model}.output{k}.npy"))).unwrap();
            let d = max_diff(t, &want);
            assert!(d < 1e-4, "{model} output {k}: max diff {d}");
        }
        // The outputs are recoverable from the graph alone.
        let (si, so) = graph_signature(&g).unwrap();
        assert_eq!(si.len(), 1);
        let names: Vec<&str> = so.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, want);
        assert_eq!(so[0].1.name(), output_node_name(&outputs[0].0));
    }
}

#[test]
fn imported_mlp_fine_tunes_with_adam() {
    let (g, inputs, outputs) = import_graph(dir().join("mlp_opset13.onnx")).unwrap();
    assert!(!g.trainable_variables().unwrap().is_empty());
    let x = npy::read(dir().join("mlp_opset13.input0.npy")).unwrap();
    let n = x.shape()[0];
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, &[n]).unwrap();
    let target = g.placeholder("target", DType::I64, &[None]).unwrap();
    let loss = g
        .cross_entropy(&outputs[0].1, &target, Default::default())
        .unwrap();
    let train = Adam::new(1e-3).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let feeds = [(&inputs[0], &x), (&target, &y)];
    let first = s.run(&[&loss], &feeds).unwrap()[0].item().unwrap();
    for _ in 0..20 {
        s.run(&[&train], &feeds).unwrap();
    }
    let last = s.run(&[&loss], &feeds).unwrap()[0].item().unwrap();
    assert!(last < first * 0.5, "loss {first} -> {last}");

    // The tuned model exports with its new weights and the re-import agrees with the session.
    let bytes = export_onnx(&s, &[&inputs[0]], &[("logits", &outputs[0].1)], 17).unwrap();
    let m = OnnxModel::from_bytes(&bytes).unwrap();
    let want = s.run(&[&outputs[0].1], &[(&inputs[0], &x)]).unwrap();
    let got = m.run(&[x]).unwrap();
    assert!(max_diff(&got[0], &want[0]) < 1e-5);
}

/// A small graph built by hand: conv, pool, flatten, linear, softmax.
fn hand_built() -> (Graph, Output, Output) {
    let g = Graph::new();
    let x = g
        .placeholder("image", DType::F32, &[None, Some(1), Some(6), Some(6)])
        .unwrap();
    let w = g.variable("conv/weight", rnd(&[2, 1, 3, 3], 1)).unwrap();
    let c = g
        .conv2d(
            &x,
            &w,
            None,
            Conv2dParams {
                padding: [1, 1],
                ..Default::default()
            },
        )
        .unwrap();
    let c = g.relu(&c).unwrap();
    let p = g.max_pool2d(&c, Pool2dParams::square(2, 2, 0)).unwrap();
    let f = g.flatten(&p, 1, 3).unwrap();
    let fw = g.variable("fc/weight", rnd(&[3, 18], 2)).unwrap();
    let fb = g.variable("fc/bias", rnd(&[3], 3)).unwrap();
    let y = g.linear(&f, &fw, Some(&fb)).unwrap();
    let y = g.softmax(&y, -1).unwrap();
    (g, x, y)
}

#[test]
fn graph_to_onnx_to_graph_round_trip() {
    let (g, x, y) = hand_built();
    let s = Session::new(&g).unwrap();
    let input = rnd(&[5, 1, 6, 6], 9);
    let want = s.run(&[&y], &[(&x, &input)]).unwrap();
    for opset in [13, 17] {
        let bytes = export_onnx(&s, &[&x], &[("probs", &y)], opset).unwrap();
        let parsed = tandem_onnx::parse(&bytes).unwrap();
        assert_eq!(parsed.opset, opset);
        assert_eq!(parsed.inputs[0].name, "image");
        assert_eq!(parsed.inputs[0].dims[0], None, "batch stays dynamic");
        assert_eq!(parsed.outputs, vec!["probs".to_string()]);
        let (g2, ins, outs) = tandem_onnx::graph_bridge::import_graph_model(&parsed).unwrap();
        let s2 = Session::new(&g2).unwrap();
        let got = s2.run(&[&outs[0].1], &[(&ins[0], &input)]).unwrap();
        assert!(max_diff(&got[0], &want[0]) < 1e-6, "opset {opset}");
        // The variables came back as trainable variables under their graph names.
        let names: Vec<String> = g2
            .trainable_variables()
            .unwrap()
            .iter()
            .map(|v| v.name().to_string())
            .collect();
        assert!(names.contains(&"fc/weight".to_string()), "{names:?}");
    }
}

#[test]
fn export_uses_session_values_not_initial_values() {
    let (g, x, y) = hand_built();
    let s = Session::new(&g).unwrap();
    let b = g.get("fc/bias").unwrap();
    s.set_variables(&[(&b, Tensor::from_vec(vec![5.0f32, 0.0, -5.0], &[3]).unwrap())])
        .unwrap();
    let eg = to_export_graph(&s, &[&x], &[("probs", &y)]).unwrap();
    let (_, bias) = eg
        .initializers
        .iter()
        .find(|(n, _)| n == "fc/bias")
        .unwrap();
    assert_eq!(bias.to_vec::<f32>().unwrap(), vec![5.0, 0.0, -5.0]);
}

#[test]
fn export_errors_name_the_node() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(4)]).unwrap();
    let t = g.placeholder("t", DType::F32, &[None, Some(4)]).unwrap();
    let w = g.variable("w", Tensor::ones(&[4], DType::F32)).unwrap();
    let y = g.mul(&x, &w).unwrap();
    let loss = g.mse_loss(&y, &t, Reduction::Mean).unwrap();
    let s = Session::new(&g).unwrap();

    // A placeholder the outputs need but that is not an input.
    let e = to_export_graph(&s, &[&x], &[("loss", &loss)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`t`"), "{e}");

    // An assign has no ONNX form.
    let a = g.assign(&w, &g.mul(&w, &w).unwrap()).unwrap();
    let s = Session::new(&g).unwrap();
    let e = to_export_graph(&s, &[&x], &[("a", &a)])
        .unwrap_err()
        .to_string();
    assert!(e.contains(a.name()) && e.contains("no ONNX mapping"), "{e}");

    // An op without a mapping (random) is reported with its node name.
    let r = g
        .random_like(
            &w,
            Distribution::Uniform {
                low: 0.0,
                high: 1.0,
            },
        )
        .unwrap();
    let z = g.add(&x, &g.sum(&r, &[], false).unwrap()).unwrap();
    let s = Session::new(&g).unwrap();
    let e = export_onnx(&s, &[&x], &[("z", &z)], 17)
        .unwrap_err()
        .to_string();
    assert!(e.contains(r.name()), "{e}");
}

#[test]
fn unsupported_onnx_ops_fail_the_graph_import() {
    let bytes = std::fs::read(dir().join("mlp_opset13.onnx")).unwrap();
    let mut m = <tandem_onnx::proto::ModelProto as prost::Message>::decode(&bytes[..]).unwrap();
    let graph = m.graph.as_mut().unwrap();
    graph.node[0].op_type = "FancyOp".into();
    let bytes = prost::Message::encode_to_vec(&m);
    let parsed = tandem_onnx::parse(&bytes).unwrap();
    let e = tandem_onnx::graph_bridge::import_graph_model(&parsed)
        .unwrap_err()
        .to_string();
    assert!(e.contains("FancyOp"), "{e}");
}

#[test]
fn new_op_fixtures_run_as_graphs_with_any_batch() {
    // ConvTranspose's output shape and Resize's `Shape`-built sizes must follow a batch known
    // only when the session runs.
    for (model, n_in) in [
        ("decoder_upsample", 2),
        ("misc_ops", 2),
        ("rnn_seq", 1),
        // The heads reshape is [seq, batch * heads, dim]: one entry computed at run time.
        ("mha_block", 1),
    ] {
        let (g, inputs, outputs) = import_graph(dir().join(format!("{model}.onnx"))).unwrap();
        assert_eq!(inputs.len(), n_in, "{model}");
        let xs: Vec<Tensor> = (0..n_in)
            .map(|i| npy::read(dir().join(format!("{model}.input{i}.npy"))).unwrap())
            .collect();
        let s = Session::new(&g).unwrap();
        let fetches: Vec<&Output> = outputs.iter().map(|(_, o)| o).collect();
        for batch in [2usize, 1] {
            let fed: Vec<Tensor> = xs.iter().map(|x| x.narrow(0, 0, batch).unwrap()).collect();
            let feeds: Vec<_> = inputs.iter().zip(&fed).collect();
            let got = s.run(&fetches, &feeds).unwrap();
            for (k, t) in got.iter().enumerate() {
                let want = npy::read(dir().join(format!("{model}.output{k}.npy"))).unwrap();
                // The GRU's h_n is [directions, batch, hidden].
                let axis = if model == "rnn_seq" && k == 1 { 1 } else { 0 };
                let want = want.narrow(axis, 0, batch).unwrap();
                let d = max_diff(t, &want);
                assert!(d < 1e-4, "{model} output {k} batch {batch}: max diff {d}");
            }
        }
    }
}
