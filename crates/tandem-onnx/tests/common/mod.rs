//! Helpers that build small ONNX models by hand for the importer tests.

#![allow(dead_code)]

use prost::Message;
use tandem_onnx::proto::*;
use tandem_onnx::tensor_proto::{dtype_to_onnx, tensor_to_proto};
use tandem_onnx::OnnxModel;
use tandem_tensor::{DType, Tensor};

pub fn node(op: &str, ins: &[&str], outs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_{}", outs.first().unwrap_or(&"")),
        op_type: op.to_string(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn ai(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INT,
        i: v,
        ..Default::default()
    }
}

pub fn af(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::FLOAT,
        f: v,
        ..Default::default()
    }
}

pub fn ais(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn astr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::STRING,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn at(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::TENSOR,
        t: Some(tensor_to_proto("", t).unwrap()),
        ..Default::default()
    }
}

pub fn vinfo(name: &str, dtype: DType, dims: &[Option<usize>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: dtype_to_onnx(dtype),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(n) => DimValue::DimValue(*n as i64),
                                None => DimValue::DimParam("N".into()),
                            }),
                        })
                        .collect(),
                }),
            }),
        }),
        ..Default::default()
    }
}

/// A model with f32 inputs of the given dims.
pub fn model(
    opset: i64,
    inputs: &[(&str, &[Option<usize>])],
    inits: &[(&str, Tensor)],
    nodes: Vec<NodeProto>,
    outputs: &[&str],
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "test".into(),
            initializer: inits
                .iter()
                .map(|(n, t)| tensor_to_proto(n, t).unwrap())
                .collect(),
            input: inputs
                .iter()
                .map(|(n, d)| vinfo(n, DType::F32, d))
                .collect(),
            output: outputs
                .iter()
                .map(|n| ValueInfoProto {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

pub fn f32s(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

pub fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

pub fn arange(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(0.0, n as f64, 1.0, DType::F32)
        .unwrap()
        .reshape(&shape.iter().map(|&d| d as isize).collect::<Vec<_>>())
        .unwrap()
}

pub fn assert_close(got: &Tensor, want: &[f64], shape: &[usize]) {
    assert_eq!(got.shape(), shape);
    let g = got.to_f64_vec().unwrap();
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-5 + 1e-5 * b.abs(), "[{i}]: {a} vs {b}");
    }
}

/// Runs a model's bytes on `inputs` with [`tandem_onnx::OnnxModel`] (panics on errors).
pub fn run(bytes: &[u8], inputs: &[Tensor]) -> Vec<Tensor> {
    OnnxModel::from_bytes(bytes).unwrap().run(inputs).unwrap()
}

pub fn run_err(bytes: &[u8], inputs: &[Tensor]) -> String {
    match OnnxModel::from_bytes(bytes).and_then(|m| m.run(inputs)) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// A single-node model with one f32 input `x` of `dims` and output `y`.
pub fn unary_model(
    opset: i64,
    op: &str,
    dims: &[Option<usize>],
    inits: &[(&str, Tensor)],
    extra_inputs: &[&str],
    attrs: Vec<tandem_onnx::proto::AttributeProto>,
) -> Vec<u8> {
    let mut ins = vec!["x"];
    ins.extend_from_slice(extra_inputs);
    model(
        opset,
        &[("x", dims)],
        inits,
        vec![node(op, &ins, &["y"], attrs)],
        &["y"],
    )
}
