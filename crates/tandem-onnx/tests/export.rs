//! Recorded models exported at opset 13 and 17, re-imported, and compared with direct
//! evaluation; structural checks of the written files.

use prost::Message;
use std::collections::HashSet;
use tandem_ir::{Dim, Emit, EmitExt, Eval, Functional};
use tandem_onnx::proto::{DimValue, ModelProto};
use tandem_onnx::{export, import, save, OnnxModel, Recorder, RecorderHooks};
use tandem_tensor::random::Rng;
use tandem_tensor::{Conv2dParams, DType, Pool2dParams, Result, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    Tensor::randn(shape, 0.0, 0.5, DType::F32, &mut rng).unwrap()
}

/// A model written once over `Emit`: run directly with `Eval`, or recorded.
trait Model {
    fn input_shape(&self) -> Vec<Dim>;
    fn params(&self) -> Vec<(&'static str, Tensor)>;
    fn forward<E: Emit>(&self, e: &E, x: &E::Value, p: &[E::Value]) -> Result<E::Value>;
}

struct Mlp;

impl Model for Mlp {
    fn input_shape(&self) -> Vec<Dim> {
        vec![None, Some(784)]
    }
    fn params(&self) -> Vec<(&'static str, Tensor)> {
        vec![
            ("fc1.weight", randn(&[128, 784], 1)),
            ("fc1.bias", randn(&[128], 2)),
            ("fc2.weight", randn(&[10, 128], 3)),
            ("fc2.bias", randn(&[10], 4)),
        ]
    }
    fn forward<E: Emit>(&self, e: &E, x: &E::Value, p: &[E::Value]) -> Result<E::Value> {
        // Normalization inside the model, as the MNIST examples export it.
        let x = e.mul_scalar(&e.add_scalar(x, -0.1307)?, 1.0 / 0.3081)?;
        let h = e.relu(&e.linear(&x, &p[0], Some(&p[1]))?)?;
        e.linear(&h, &p[2], Some(&p[3]))
    }
}

struct LeNet;

impl Model for LeNet {
    fn input_shape(&self) -> Vec<Dim> {
        vec![None, Some(1), Some(28), Some(28)]
    }
    fn params(&self) -> Vec<(&'static str, Tensor)> {
        vec![
            ("conv1.weight", randn(&[6, 1, 5, 5], 5)),
            ("conv1.bias", randn(&[6], 6)),
            ("conv2.weight", randn(&[16, 6, 5, 5], 7)),
            ("conv2.bias", randn(&[16], 8)),
            ("fc1.weight", randn(&[120, 400], 9)),
            ("fc1.bias", randn(&[120], 10)),
            ("fc2.weight", randn(&[10, 120], 11)),
            ("fc2.bias", randn(&[10], 12)),
        ]
    }
    fn forward<E: Emit>(&self, e: &E, x: &E::Value, p: &[E::Value]) -> Result<E::Value> {
        let c1 = Conv2dParams {
            padding: [2, 2],
            ..Default::default()
        };
        let h = e.relu(&e.conv2d(x, &p[0], Some(&p[1]), c1)?)?;
        let h = e.max_pool2d(&h, Pool2dParams::square(2, 2, 0))?;
        let h = e.relu(&e.conv2d(&h, &p[2], Some(&p[3]), Conv2dParams::default())?)?;
        let h = e.avg_pool2d(&h, Pool2dParams::square(2, 2, 0))?;
        let h = e.flatten(&h, 1, -1)?;
        let h = e.tanh(&e.linear(&h, &p[4], Some(&p[5]))?)?;
        let y = e.linear(&h, &p[6], Some(&p[7]))?;
        e.log_softmax(&y, -1)
    }
}

/// Many vocabulary ops in one inference graph.
struct Mixed;

impl Model for Mixed {
    fn input_shape(&self) -> Vec<Dim> {
        vec![None, Some(3), Some(8), Some(8)]
    }
    fn params(&self) -> Vec<(&'static str, Tensor)> {
        vec![
            ("bn.weight", randn(&[3], 21)),
            ("bn.bias", randn(&[3], 22)),
            ("bn.mean", randn(&[3], 23)),
            (
                "bn.var",
                randn(&[3], 24)
                    .unary(tandem_tensor::UnaryOp::Abs)
                    .unwrap()
                    .scalar_op(tandem_tensor::BinaryOp::Add, 0.5, false)
                    .unwrap(),
            ),
            ("proj", randn(&[6, 4], 25)),
        ]
    }
    fn forward<E: Emit>(&self, e: &E, x: &E::Value, p: &[E::Value]) -> Result<E::Value> {
        let bn = e.batch_norm(
            x,
            Some(&p[2]),
            Some(&p[3]),
            Some(&p[0]),
            Some(&p[1]),
            false,
            0.1,
            1e-5,
        )?;
        let h = e.gelu(&bn.output, false)?;
        let h = e.leaky_relu(&h, 0.1)?;
        let pooled = e.adaptive_avg_pool2d(&h, [1, 1])?; // [N, 3, 1, 1]
        let pooled = e.squeeze(&e.squeeze(&pooled, -1)?, -1)?; // [N, 3]
        let t = e.permute(&h, &[0, 2, 3, 1])?; // [N, 8, 8, 3]
        let m = e.mean(&t, &[1, 2], false)?; // [N, 3]
        let s = e.sum(&e.slice(&t, 1, 1, 7, 2)?, &[1, 2], false)?; // [N, 3]
        let mx = e.max(&e.sigmoid(&h)?, &[2, 3], false)?; // [N, 3]
        let feats = e.concat(&[&pooled, &m], 1)?; // [N, 6]
        let y = e.matmul(&feats, &p[4])?; // [N, 4]
        let extra = e.concat(&[&s, &e.sqrt(&e.abs(&mx)?)?], 1)?; // [N, 6]
        let y = e.add(&y, &e.narrow(&extra, 1, 0, 4)?)?;
        let y = e.clamp(&y, Some(-3.0), Some(3.0))?;
        let a = e.cast(&e.argmax(&y, -1, true)?, DType::F32)?;
        let y = e.concat(
            &[
                &e.softmax(&y, 1)?,
                &a,
                &e.unsqueeze(&e.exp(&e.neg(&e.mean(&y, &[1], false)?)?)?, 1)?,
            ],
            1,
        )?;
        let mask = e.gt_scalar(&y, 0.2)?;
        e.where_(&mask, &y, &e.rsub_scalar(&y, 1.0)?)
    }
}

fn record<M: Model>(m: &M) -> tandem_onnx::ExportGraph {
    let rec = Recorder::new();
    let x = rec.input("input", DType::F32, &m.input_shape());
    let p: Vec<_> = m
        .params()
        .into_iter()
        .map(|(n, t)| rec.initializer(n, t))
        .collect();
    let y = m.forward(&rec, &x, &p).unwrap();
    rec.output("logits", &y);
    rec.finish()
}

fn direct<M: Model>(m: &M, x: &Tensor) -> Tensor {
    let e = Eval::default();
    let p: Vec<Tensor> = m.params().into_iter().map(|(_, t)| t).collect();
    m.forward(&e, x, &p).unwrap()
}

fn close(a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.to_f64_vec().unwrap().iter().zip(b.to_f64_vec().unwrap()) {
        assert!((x - y).abs() <= 1e-5 + 1e-4 * y.abs(), "{x} vs {y}");
    }
}

fn structure(bytes: &[u8], opset: i64, n_inits: usize) {
    let m = ModelProto::decode(bytes).unwrap();
    assert_eq!(m.ir_version, if opset == 13 { 7 } else { 8 });
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!(m.opset_import[0].domain, "");
    assert_eq!(m.opset_import[0].version, opset);
    let g = m.graph.unwrap();
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, "input");
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, "logits");
    for v in [&g.input[0], &g.output[0]] {
        let dims = &v
            .r#type
            .as_ref()
            .unwrap()
            .tensor_type
            .as_ref()
            .unwrap()
            .shape
            .as_ref()
            .unwrap()
            .dim;
        assert_eq!(
            dims[0].value,
            Some(DimValue::DimParam("N".into())),
            "{}",
            v.name
        );
    }
    // Every node input is defined before use, every value name is unique.
    let mut defined: HashSet<String> = g.input.iter().map(|v| v.name.clone()).collect();
    for t in &g.initializer {
        assert!(defined.insert(t.name.clone()), "duplicate {}", t.name);
    }
    assert!(g.initializer.len() >= n_inits);
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            assert!(
                defined.contains(i),
                "node {} uses {i} before it is defined",
                n.name
            );
        }
        for o in &n.output {
            assert!(defined.insert(o.clone()), "value {o} defined twice");
        }
    }
    assert!(defined.contains("logits"));
}

fn round_trip<M: Model>(m: &M, x: &Tensor, n_params: usize) {
    let g = record(m);
    let want = direct(m, x);
    for opset in [13, 17] {
        let bytes = export(&g, opset).unwrap();
        structure(&bytes, opset, n_params);
        let model = OnnxModel::from_bytes(&bytes).unwrap();
        let got = model.run(std::slice::from_ref(x)).unwrap();
        close(&got[0], &want);
        // Another batch size: the batch dim stayed dynamic.
        let x1 = x.narrow(0, 0, 1).unwrap();
        close(
            &model.run(std::slice::from_ref(&x1)).unwrap()[0],
            &direct(m, &x1),
        );
    }
}

#[test]
fn mlp_round_trips() {
    let x = randn(&[4, 784], 99)
        .unary(tandem_tensor::UnaryOp::Abs)
        .unwrap();
    round_trip(&Mlp, &x, 4);
}

#[test]
fn lenet_round_trips() {
    round_trip(&LeNet, &randn(&[3, 1, 28, 28], 98), 8);
}

#[test]
fn mixed_ops_round_trip() {
    round_trip(&Mixed, &randn(&[2, 3, 8, 8], 97), 5);
}

#[test]
fn initializers_keep_their_names_and_values() {
    let g = record(&Mlp);
    let m = ModelProto::decode(export(&g, 17).unwrap().as_slice()).unwrap();
    let graph = m.graph.unwrap();
    let w = graph
        .initializer
        .iter()
        .find(|t| t.name == "fc1.weight")
        .unwrap();
    assert_eq!(w.dims, vec![128, 784]);
    let back = tandem_onnx::tensor_proto::tensor_from_proto(w).unwrap();
    assert_eq!(
        back.to_vec::<f32>().unwrap(),
        Mlp.params()[0].1.to_vec::<f32>().unwrap()
    );
}

#[test]
fn export_is_deterministic_and_saves_atomically() {
    let a = export(&record(&LeNet), 13).unwrap();
    let b = export(&record(&LeNet), 13).unwrap();
    assert_eq!(a, b);
    let dir = std::env::temp_dir().join(format!("tandem-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lenet.onnx");
    save(&record(&LeNet), 13, &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), a);
    let model = OnnxModel::load(&path).unwrap();
    assert_eq!(model.output_names(), ["logits".to_string()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ops_without_mapping_name_the_node() {
    let rec = Recorder::new();
    let x = rec.input("input", DType::F32, &[None, Some(4)]);
    let noise = rec
        .random_like(
            &x,
            tandem_ir::Distribution::Uniform {
                low: 0.0,
                high: 1.0,
            },
        )
        .unwrap();
    rec.name_node(&noise, "noise");
    let y = rec.add(&x, &noise).unwrap();
    rec.output("out", &y);
    let g = rec.finish();
    let err = export(&g, 17).unwrap_err().to_string();
    assert!(
        err.contains("node 'noise' (random)") && err.contains("no ONNX mapping"),
        "{err}"
    );
    let bad_opset = export(&g, 11).unwrap_err().to_string();
    assert!(bad_opset.contains("opset 11"), "{bad_opset}");
}

#[test]
fn outputs_that_are_inputs_or_shared_get_identity_nodes() {
    let rec = Recorder::new();
    let x = rec.input("x", DType::F32, &[None, Some(2)]);
    let y = rec.relu(&x).unwrap();
    rec.output("a", &y);
    rec.output("b", &y);
    rec.output("c", &x);
    let bytes = export(&rec.finish(), 13).unwrap();
    let model = OnnxModel::from_bytes(&bytes).unwrap();
    let t = Tensor::from_vec(vec![-1.0f32, 2.0], &[1, 2]).unwrap();
    let out = model.run(&[t]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![0.0, 2.0]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![0.0, 2.0]);
    assert_eq!(out[2].to_vec::<f32>().unwrap(), vec![-1.0, 2.0]);
}

#[test]
fn imported_fixture_re_exports() {
    // ONNX -> Recorder -> ONNX again: the PyTorch LeNet keeps its outputs.
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/onnx");
    let parsed = tandem_onnx::parse_file(dir.join("lenet5.onnx")).unwrap();
    let rec = Recorder::new();
    let imported = import(&parsed, &rec, &mut RecorderHooks).unwrap();
    for (name, v) in &imported.outputs {
        rec.output(name, v);
    }
    let bytes = export(&rec.finish(), 17).unwrap();
    let x = tandem_tensor::io::npy::read(dir.join("lenet5.input0.npy")).unwrap();
    let want = tandem_tensor::io::npy::read(dir.join("lenet5.output0.npy")).unwrap();
    let got = OnnxModel::from_bytes(&bytes).unwrap().run(&[x]).unwrap();
    close(&got[0], &want);
}

#[test]
fn dead_nodes_and_unused_initializers_are_left_out() {
    let rec = Recorder::new();
    let x = rec.input("input", DType::F32, &[None, Some(2)]);
    let w = rec.initializer("w", Tensor::ones(&[2, 2], DType::F32));
    rec.initializer("unused", Tensor::ones(&[3], DType::F32));
    let dead_w = rec.initializer("dead_w", Tensor::ones(&[2, 2], DType::F32));
    let y = rec.matmul(&x, &w).unwrap();
    let _dead = rec.relu(&rec.matmul(&x, &dead_w).unwrap()).unwrap();
    rec.output("logits", &y);
    let m = ModelProto::decode(export(&rec.finish(), 13).unwrap().as_slice()).unwrap();
    let g = m.graph.unwrap();
    let names: Vec<String> = g.initializer.into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["w".to_string()]);
    let ops: Vec<String> = g.node.into_iter().map(|n| n.op_type).collect();
    assert_eq!(ops, vec!["MatMul".to_string()]);
}
