//! Tracing eager models into graphs: same outputs at other batch sizes, named variables,
//! further training in a Session, ONNX export and re-import.

mod common;

use common::{assert_close, batch, LeNet, Mlp};
use tandem_eager::nn::Module;
use tandem_eager::{manual_seed, DType, Tensor};
use tandem_graph::{GradientDescent, NodeKind, Optimizer, Session};
use tandem_interop::{export_onnx, run_eager, to_export_graph, trace, trace_module};
use tandem_ir::{CrossEntropyOptions, Functional};
use tandem_onnx::OnnxModel;

fn check_same_outputs(model: &dyn Module, tol: f32) {
    let traced = trace_module(model, &batch(3)).unwrap();
    let sess = Session::new(&traced.graph).unwrap();
    for n in [1, 3, 17] {
        let x = batch(n);
        let want = model.forward(&x).unwrap().to_vec::<f32>().unwrap();
        let got = run_eager(&sess, &[&traced.outputs[0]], &[(&traced.inputs[0], &x)]).unwrap();
        assert_eq!(got[0].dims(), vec![n, 10]);
        assert_close(&got[0].to_vec::<f32>().unwrap(), &want, tol);
    }
}

#[test]
fn traced_mlp_matches_eager_at_any_batch_size() {
    manual_seed(1);
    check_same_outputs(&Mlp::new().unwrap(), 1e-5);
}

#[test]
fn traced_lenet_matches_eager_at_any_batch_size() {
    manual_seed(2);
    check_same_outputs(&LeNet::new().unwrap(), 1e-4);
}

#[test]
fn placeholders_have_unknown_batch_and_variables_have_module_names() {
    manual_seed(3);
    let m = Mlp::new().unwrap();
    let t = trace_module(&m, &batch(4)).unwrap();
    assert_eq!(t.inputs[0].name(), "input");
    assert_eq!(t.inputs[0].shape(), &[None, Some(784)]);
    assert_eq!(t.outputs[0].shape(), &[None, Some(10)]);
    let names: Vec<&str> = t.params.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    assert_eq!(t.param("fc1.weight").unwrap().name(), "fc1/weight");
    // The reshape target no longer mentions the example batch.
    let reshapes: Vec<_> = t
        .graph
        .nodes()
        .unwrap()
        .into_iter()
        .filter_map(|n| match n.kind {
            NodeKind::Op(tandem_ir::Op::Reshape(t)) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(reshapes, vec![vec![-1isize, 784]]);
}

#[test]
fn trace_of_a_closure_names_unlisted_parameters() {
    let w = Tensor::ones(&[2, 2], DType::F32).requires_grad_(true);
    let c = Tensor::full(&[2], 5.0, DType::F32);
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2]).unwrap();
    let t = trace(|x| x.matmul(&w)? + &c, &x).unwrap();
    assert_eq!(t.params.len(), 1);
    assert_eq!(t.params[0].0, "param_0");
    let s = Session::new(&t.graph).unwrap();
    let xs = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 3.0], &[2, 2]).unwrap();
    let y = run_eager(&s, &[&t.outputs[0]], &[(&t.inputs[0], &xs)]).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![6.0, 6.0, 8.0, 8.0]);
}

#[test]
fn errors_inside_the_traced_function_are_returned_and_the_observer_is_removed() {
    let x = batch(2);
    let bad = Tensor::ones(&[3, 3], DType::F32);
    assert!(trace(|x| x.matmul(&bad), &x).is_err());
    // No observer is left behind: a later trace starts from a clean state.
    let t = trace(|x| x.relu(), &x).unwrap();
    assert_eq!(t.graph.nodes().unwrap().len(), 2);
}

#[test]
fn traced_graph_trains_further_in_a_session() {
    manual_seed(4);
    let m = Mlp::new().unwrap();
    let t = trace_module(&m, &batch(8)).unwrap();
    let g = &t.graph;
    let labels = g.placeholder("labels", DType::I64, &[None]).unwrap();
    let loss = g
        .cross_entropy(&t.outputs[0], &labels, CrossEntropyOptions::default())
        .unwrap();
    let step = GradientDescent::new(0.1).minimize(&loss).unwrap();
    let s = Session::new(g).unwrap();
    let x = batch(16).value();
    let y = tandem_tensor::Tensor::from_vec((0..16i64).map(|i| i % 10).collect(), &[16]).unwrap();
    let feeds = [(&t.inputs[0], &x), (&labels, &y)];
    let first = s.run(&[&loss], &feeds).unwrap()[0].item().unwrap();
    for _ in 0..60 {
        s.run(&[&step], &feeds).unwrap();
    }
    let last = s.run(&[&loss], &feeds).unwrap()[0].item().unwrap();
    assert!(last < first * 0.5, "loss {first} -> {last}");
    // The eager model is untouched (the graph's variables are its own copy-on-write values).
    let w0 = m.fc1.named_parameters()[0].1.to_vec::<f32>().unwrap();
    let wg = s
        .variable_value(t.param("fc1.weight").unwrap())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_ne!(w0, wg);
}

#[test]
fn traced_models_round_trip_through_onnx() {
    manual_seed(5);
    for (model, tol) in [
        (Box::new(Mlp::new().unwrap()) as Box<dyn Module>, 1e-5),
        (Box::new(LeNet::new().unwrap()), 1e-4),
    ] {
        let t = trace_module(model.as_ref(), &batch(2)).unwrap();
        for opset in [13, 17] {
            let eg = to_export_graph(
                &t.graph,
                None,
                &[("input", &t.inputs[0])],
                &[("logits", &t.outputs[0])],
            )
            .unwrap();
            assert_eq!(eg.inputs[0].dims, vec![None, Some(784)]);
            assert!(eg.initializers.iter().any(|(n, _)| n == "fc1.weight"));
            let bytes = tandem_onnx::export(&eg, opset).unwrap();
            let onnx = OnnxModel::from_bytes(&bytes).unwrap();
            let x = batch(5);
            let want = model.forward(&x).unwrap().to_vec::<f32>().unwrap();
            let got = onnx.run(&[x.value()]).unwrap();
            assert_close(&got[0].to_vec::<f32>().unwrap(), &want, tol);
        }
    }
}

#[test]
fn export_uses_session_values_and_rejects_training_nodes() {
    manual_seed(6);
    let m = Mlp::new().unwrap();
    let t = trace_module(&m, &batch(2)).unwrap();
    let s = Session::new(&t.graph).unwrap();
    let w = t.param("fc2.bias").unwrap();
    let new_bias = tandem_tensor::Tensor::full(&[10], 7.0, DType::F32);
    s.set_variables(&[(w, new_bias)]).unwrap();
    let eg = to_export_graph(
        &t.graph,
        Some(&s),
        &[("input", &t.inputs[0])],
        &[("logits", &t.outputs[0])],
    )
    .unwrap();
    let (_, b) = eg
        .initializers
        .iter()
        .find(|(n, _)| n == "fc2.bias")
        .unwrap();
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![7.0; 10]);

    // An assignment has no ONNX mapping: the error names the node.
    let one = t
        .graph
        .constant(tandem_tensor::Tensor::full(&[10], 1.0, DType::F32))
        .unwrap();
    let a = t.graph.assign_add(w, &one).unwrap();
    let err = to_export_graph(&t.graph, Some(&s), &[("input", &t.inputs[0])], &[("a", &a)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("assign"), "{err}");
    // A needed placeholder that is not an ONNX input is an error too.
    let err = to_export_graph(&t.graph, None, &[], &[("logits", &t.outputs[0])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("input"), "{err}");

    let dir = std::env::temp_dir().join(format!("tandem-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mlp.onnx");
    export_onnx(
        &t.graph,
        Some(&s),
        &[("input", &t.inputs[0])],
        &[("logits", &t.outputs[0])],
        17,
        &path,
    )
    .unwrap();
    let onnx = OnnxModel::load(&path).unwrap();
    assert_eq!(onnx.output_names(), ["logits"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
