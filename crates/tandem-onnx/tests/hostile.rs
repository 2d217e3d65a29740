//! Bad input: corrupt, truncated and lying files, unknown ops, bad feeds. Errors, no panics.

mod common;

use common::*;
use tandem_onnx::proto::{data_type, TensorProto};
use tandem_onnx::{parse, OnnxModel};
use tandem_tensor::random::Rng;
use tandem_tensor::{DType, Tensor};

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/onnx")
        .join(name);
    std::fs::read(p).unwrap()
}

#[test]
fn truncated_files_are_errors() {
    for f in [
        "mlp_opset13.onnx",
        "lenet5.onnx",
        "multiop.onnx",
        "keras_dense.onnx",
    ] {
        let bytes = fixture(f);
        assert!(OnnxModel::from_bytes(&bytes).is_ok());
        let n = bytes.len();
        let mut cuts: Vec<usize> = (0..64).map(|k| k * n / 64).collect();
        cuts.extend([1, 2, 3, 7, 16, n - 1, n - 2, n - 100]);
        for k in cuts {
            let r = OnnxModel::from_bytes(&bytes[..k]);
            assert!(r.is_err(), "{f} cut at {k} of {n} was accepted");
        }
        let e = OnnxModel::from_bytes(&bytes[..n / 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("onnx") && e.contains("truncated"), "{e}");
    }
}

#[test]
fn garbage_is_an_error() {
    let mut rng = Rng::new(7);
    for len in [0usize, 1, 10, 1000, 100_000] {
        let t = Tensor::rand_uniform(&[len], 0.0, 255.0, DType::F32, &mut rng).unwrap();
        let bytes: Vec<u8> = t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as u8)
            .collect();
        assert!(parse(&bytes).is_err(), "{len} random bytes were accepted");
    }
    // Flipped bytes inside a valid file: never a panic.
    let good = fixture("lenet5.onnx");
    for k in (0..good.len()).step_by(good.len() / 200 + 1) {
        let mut b = good.clone();
        b[k] ^= 0xA5;
        if let Ok(m) = OnnxModel::from_bytes(&b) {
            let x = Tensor::zeros(&[1, 1, 28, 28], DType::F32);
            let _ = m.run(&[x]);
        }
    }
}

#[test]
fn unsupported_ops_are_all_listed() {
    let mut nodes = vec![
        node("FancyOp", &["x"], &["a"], vec![]),
        node("Relu", &["a"], &["b"], vec![]),
        node("Mystery", &["b"], &["y"], vec![]),
    ];
    nodes[0].name = "first".into();
    nodes[2].name = "second".into();
    let bytes = model(13, &[("x", &[Some(2)])], &[], nodes, &["y"]);
    let e = OnnxModel::from_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("2 unsupported op(s) at opset 13"), "{e}");
    assert!(
        e.contains("'first' (FancyOp)") && e.contains("'second' (Mystery)"),
        "{e}"
    );
    let parsed = parse(&bytes).unwrap();
    assert_eq!(parsed.unsupported_ops().len(), 2);
    // A custom domain is unsupported too, and named with its domain.
    let mut n = node("Relu", &["x"], &["y"], vec![]);
    n.domain = "com.example".into();
    let bytes = model(13, &[("x", &[Some(2)])], &[], vec![n], &["y"]);
    let e = OnnxModel::from_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("com.example::Relu"), "{e}");
}

#[test]
fn lying_initializer_sizes_are_errors() {
    use prost::Message;
    let add = vec![node("Add", &["x", "w"], &["y"], vec![])];
    let base = model(13, &[("x", &[Some(2)])], &[], add, &["y"]);
    let mut bytes_model = tandem_onnx::proto::ModelProto::decode(base.as_slice()).unwrap();
    let g = bytes_model.graph.as_mut().unwrap();
    g.initializer.push(TensorProto {
        name: "w".into(),
        dims: vec![1 << 31, 1 << 31, 1 << 31],
        data_type: data_type::FLOAT,
        raw_data: vec![0; 16],
        ..Default::default()
    });
    let e = OnnxModel::from_bytes(&bytes_model.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.contains("tensor 'w'"), "{e}");
}

#[test]
fn undefined_inputs_and_bad_attributes_name_the_node() {
    let bytes = model(
        13,
        &[("x", &[Some(2)])],
        &[],
        vec![node("Add", &["x", "nope"], &["y"], vec![])],
        &["y"],
    );
    let m = OnnxModel::from_bytes(&bytes).unwrap();
    let e = m.run(&[f32s(&[1.0, 2.0], &[2])]).unwrap_err().to_string();
    assert!(e.contains("Add_y") && e.contains("'nope'"), "{e}");
    // An attribute of the wrong type.
    let bytes = model(
        13,
        &[("x", &[Some(2), Some(2)])],
        &[],
        vec![node("Transpose", &["x"], &["y"], vec![af("perm", 1.0)])],
        &["y"],
    );
    let e = OnnxModel::from_bytes(&bytes)
        .unwrap()
        .run(&[arange(&[2, 2])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Transpose_y") && e.contains("perm"), "{e}");
    // A huge ConstantOfShape is refused before anything is allocated.
    let bytes = model(
        13,
        &[],
        &[("s", i64s(&[1 << 40, 1 << 40]))],
        vec![node("ConstantOfShape", &["s"], &["y"], vec![])],
        &["y"],
    );
    let e = OnnxModel::from_bytes(&bytes)
        .unwrap()
        .run(&[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("too large"), "{e}");
}

#[test]
fn bad_feeds_are_errors() {
    let m = OnnxModel::from_bytes(&fixture("mlp_opset13.onnx")).unwrap();
    let e = m.run(&[]).unwrap_err().to_string();
    assert!(e.contains("1 input(s)"), "{e}");
    let wrong_dtype = Tensor::zeros(&[2, 784], DType::F64);
    let e = m.run(&[wrong_dtype]).unwrap_err().to_string();
    assert!(e.contains("input") && e.contains("float32"), "{e}");
    let wrong_shape = Tensor::zeros(&[2, 783], DType::F32);
    let e = m.run(&[wrong_shape]).unwrap_err().to_string();
    assert!(e.contains("783"), "{e}");
}

#[test]
fn model_level_problems_are_errors() {
    use prost::Message;
    use tandem_onnx::proto::{ModelProto, OperatorSetIdProto};
    let no_graph = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        ..Default::default()
    };
    let e = parse(&no_graph.encode_to_vec()).unwrap_err().to_string();
    assert!(e.contains("no graph"), "{e}");
    let bytes = model(
        99,
        &[("x", &[Some(2)])],
        &[],
        vec![node("Relu", &["x"], &["y"], vec![])],
        &["y"],
    );
    let e = parse(&bytes).unwrap_err().to_string();
    assert!(e.contains("opset 99"), "{e}");
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    m.opset_import.clear();
    let e = parse(&m.encode_to_vec()).unwrap_err().to_string();
    assert!(e.contains("no opset"), "{e}");
}

#[test]
fn deeply_nested_subgraphs_are_an_error_not_a_stack_overflow() {
    use prost::Message;
    use tandem_onnx::proto::{
        attr_type, AttributeProto, GraphProto, ModelProto, OperatorSetIdProto,
    };
    // Nest the encoded bytes by hand (no deep recursion on our side): graph -> node ->
    // attribute -> graph -> ...
    fn wrap_field(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }
    let mut graph = GraphProto::default().encode_to_vec();
    for _ in 0..1000 {
        let mut attr = AttributeProto {
            name: "body".into(),
            r#type: attr_type::GRAPH,
            ..Default::default()
        }
        .encode_to_vec();
        attr.extend(wrap_field(6, &graph)); // AttributeProto.g
        let node = wrap_field(5, &attr); // NodeProto.attribute
        graph = wrap_field(1, &node); // GraphProto.node
    }
    let mut model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        ..Default::default()
    }
    .encode_to_vec();
    model.extend(wrap_field(7, &graph)); // ModelProto.graph
    let e = parse(&model).unwrap_err().to_string();
    assert!(e.contains("cannot decode"), "{e}");
}

#[test]
fn absurd_sizes_from_attributes_are_refused() {
    let x = || vec![Tensor::zeros(&[1, 1, 2, 2], DType::F32)];
    let dims: &[Option<usize>] = &[Some(1), Some(1), Some(2), Some(2)];
    let w = Tensor::ones(&[1, 1, 1, 1], DType::F32);
    // Conv padded by 60000 on every side: a 1.4e10-element output.
    let conv = node(
        "Conv",
        &["x", "w"],
        &["y"],
        vec![ais("pads", &[60000, 60000, 60000, 60000])],
    );
    let b = model(13, &[("x", dims)], &[("w", w)], vec![conv], &["y"]);
    let e = OnnxModel::from_bytes(&b)
        .unwrap()
        .run(&x())
        .unwrap_err()
        .to_string();
    assert!(e.contains("too large"), "{e}");
    // Pads beyond the attribute bound.
    let pool = node(
        "MaxPool",
        &["x"],
        &["y"],
        vec![ais("kernel_shape", &[1 << 40, 2])],
    );
    let b = model(13, &[("x", dims)], &[], vec![pool], &["y"]);
    let e = OnnxModel::from_bytes(&b)
        .unwrap()
        .run(&x())
        .unwrap_err()
        .to_string();
    assert!(e.contains("kernel_shape"), "{e}");
    // Expand and Pad to huge shapes.
    let ex = node("Expand", &["x", "s"], &["y"], vec![]);
    let b = model(
        13,
        &[("x", dims)],
        &[("s", i64s(&[1 << 20, 1 << 20, 2, 2]))],
        vec![ex],
        &["y"],
    );
    let e = OnnxModel::from_bytes(&b)
        .unwrap()
        .run(&x())
        .unwrap_err()
        .to_string();
    assert!(e.contains("too large"), "{e}");
    let pad = node("Pad", &["x", "p"], &["y"], vec![]);
    let p = i64s(&[0, 0, 1 << 14, 1 << 14, 0, 0, 1 << 14, 1 << 14]);
    let b = model(13, &[("x", dims)], &[("p", p)], vec![pad], &["y"]);
    let e = OnnxModel::from_bytes(&b)
        .unwrap()
        .run(&x())
        .unwrap_err()
        .to_string();
    assert!(e.contains("too large"), "{e}");
    // A reshape target whose product overflows.
    let r = node("Reshape", &["x", "s"], &["y"], vec![]);
    let s = i64s(&[1 << 40, 1 << 40, -1, 0]);
    let b = model(
        13,
        &[("x", &[None, Some(1), Some(2), Some(2)])],
        &[("s", s)],
        vec![r],
        &["y"],
    );
    let e = OnnxModel::from_bytes(&b).unwrap().run(&x()).unwrap_err();
    assert!(!e.to_string().is_empty());
}

#[test]
fn absurd_ranks_are_refused() {
    let axes: Vec<i64> = (0..1000).collect();
    let un = node("Unsqueeze", &["x", "a"], &["y"], vec![]);
    let b = model(
        13,
        &[("x", &[Some(2)])],
        &[("a", i64s(&axes))],
        vec![un],
        &["y"],
    );
    let x = Tensor::zeros(&[2], DType::F32);
    let e = OnnxModel::from_bytes(&b)
        .unwrap()
        .run(&[x])
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank 1001 is above the limit"), "{e}");
}
