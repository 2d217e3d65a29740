//! Writing an [`ExportGraph`] as an ONNX `ModelProto`: value naming, shape inference, graph
//! inputs and outputs with a symbolic batch dim, and the atomic file writer.

use super::lower::lower;
use super::{ExportGraph, ValueRef};
use crate::proto::{
    attr_type, AttributeProto, DimValue, Dimension, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};
use crate::tensor_proto::{dtype_to_onnx, tensor_to_proto};
use prost::Message;
use std::collections::{HashMap, HashSet};
use tandem_ir::{infer, Op, ValueInfo};
use tandem_tensor::{DType, Error, Result, Tensor};

/// Opsets [`export`] writes.
pub const EXPORT_OPSETS: [i64; 2] = [13, 17];

fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "v".to_string()
    } else {
        t
    }
}

/// Accumulates ONNX nodes and initializers with unique, deterministic value names.
pub(super) struct Builder {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    names: HashSet<String>,
    pub opset: i64,
}

impl Builder {
    fn claim(&mut self, name: &str) -> bool {
        self.names.insert(name.to_string())
    }

    /// A fresh unique name derived from `base`.
    pub fn fresh(&mut self, base: &str) -> String {
        let base = sanitize(base);
        if self.claim(&base) {
            return base;
        }
        let mut k = 1usize;
        loop {
            let cand = format!("{base}_{k}");
            if self.claim(&cand) {
                return cand;
            }
            k += 1;
        }
    }

    /// Appends a node writing value `output`.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        output: &str,
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op_type.to_string(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Appends a node writing a fresh value derived from `base`; returns its name.
    pub fn tmp(
        &mut self,
        base: &str,
        op_type: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = self.fresh(&format!("{base}/{op_type}"));
        self.node(op_type, inputs, &out, attrs);
        out
    }

    /// An initializer holding `t`, named from `base`.
    pub fn constant(&mut self, base: &str, t: &Tensor) -> Result<String> {
        let name = self.fresh(base);
        self.inits.push(tensor_to_proto(&name, t)?);
        Ok(name)
    }

    /// A 1-D int64 initializer.
    pub fn ints(&mut self, base: &str, v: &[i64]) -> Result<String> {
        self.constant(base, &Tensor::from_vec(v.to_vec(), &[v.len()])?)
    }

    /// A 0-d initializer of `dtype`.
    pub fn scalar(&mut self, base: &str, value: f64, dtype: DType) -> Result<String> {
        self.constant(base, &Tensor::full(&[], value, dtype))
    }
}

/// An int attribute.
pub(super) fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INT,
        i: v,
        ..Default::default()
    }
}

/// An ints attribute.
pub(super) fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A tensor attribute.
pub(super) fn a_tensor(name: &str, t: &Tensor) -> Result<AttributeProto> {
    Ok(AttributeProto {
        name: name.into(),
        r#type: attr_type::TENSOR,
        t: Some(tensor_to_proto("", t)?),
        ..Default::default()
    })
}

fn value_info(name: &str, info: &ValueInfo) -> ValueInfoProto {
    let dim = info
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| Dimension {
            value: Some(match d {
                Some(n) => DimValue::DimValue(*n as i64),
                None if i == 0 => DimValue::DimParam("N".into()),
                None => DimValue::DimParam(format!("{}_dim{i}", sanitize(name))),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: dtype_to_onnx(info.dtype),
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        ..Default::default()
    }
}

fn export_err(msg: impl Into<String>) -> Error {
    Error::invalid("onnx export", msg)
}

/// Builds the ONNX model of `g` at `opset` (13 or 17; IR version 7 or 8).
///
/// Nodes that no graph output depends on, and initializers that no remaining node or output
/// uses, are left out of the file.
/// Graph inputs and outputs keep their names; dynamic dims are symbolic (`N` for the first
/// dim, the batch). A node whose op has no ONNX mapping (random ops, gradient-only ops,
/// losses) is an error naming the node.
pub fn to_model_proto(g: &ExportGraph, opset: i64) -> Result<ModelProto> {
    if !EXPORT_OPSETS.contains(&opset) {
        return Err(export_err(format!(
            "opset {opset} is not supported (13 or 17)"
        )));
    }
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        names: HashSet::new(),
        opset,
    };
    for name in g
        .inputs
        .iter()
        .map(|i| &i.name)
        .chain(g.initializers.iter().map(|(n, _)| n))
        .chain(g.outputs.iter().map(|(n, _)| n))
    {
        if name.is_empty() || !b.claim(name) {
            return Err(export_err(format!(
                "graph input, initializer and output names must be unique and non-empty: '{name}'"
            )));
        }
    }
    // Nodes no output depends on, and initializers no such node or output uses (e.g. shape
    // tensors folded away at import), are left out.
    let mut live = vec![false; g.nodes.len()];
    for (_, r) in &g.outputs {
        if let ValueRef::Node(i) = r {
            if let Some(l) = live.get_mut(*i) {
                *l = true;
            }
        }
    }
    for i in (0..g.nodes.len()).rev() {
        if live[i] {
            for r in &g.nodes[i].inputs {
                if let ValueRef::Node(j) = r {
                    if let Some(l) = live.get_mut(*j) {
                        *l = true;
                    }
                }
            }
        }
    }
    let used: HashSet<usize> = g
        .nodes
        .iter()
        .zip(&live)
        .filter(|(_, l)| **l)
        .flat_map(|(n, _)| n.inputs.iter())
        .chain(g.outputs.iter().map(|(_, r)| r))
        .filter_map(|r| match r {
            ValueRef::Initializer(i) => Some(*i),
            _ => None,
        })
        .collect();
    let mut inits: Vec<TensorProto> = g
        .initializers
        .iter()
        .enumerate()
        .filter(|(i, _)| used.contains(i))
        .map(|(_, (n, t))| tensor_to_proto(n, t))
        .collect::<Result<_>>()?;
    // The first graph output naming a node's value gives that value its name.
    let mut node_out: HashMap<usize, String> = HashMap::new();
    let mut identity_outputs = Vec::new();
    for (name, r) in &g.outputs {
        match r {
            ValueRef::Node(i) if !node_out.contains_key(i) => {
                node_out.insert(*i, name.clone());
            }
            _ => identity_outputs.push((name.clone(), *r)),
        }
    }
    let input_infos: Vec<ValueInfo> = g
        .inputs
        .iter()
        .map(|i| ValueInfo {
            dtype: i.dtype,
            shape: i.dims.clone(),
        })
        .collect();
    let mut names: Vec<String> = Vec::with_capacity(g.nodes.len());
    let mut infos: Vec<ValueInfo> = Vec::with_capacity(g.nodes.len());
    let resolve = |r: &ValueRef,
                   names: &[String],
                   infos: &[ValueInfo],
                   at: usize|
     -> Result<(String, ValueInfo)> {
        let missing = || export_err(format!("node {at} refers to an undefined value {r:?}"));
        Ok(match *r {
            ValueRef::Input(i) => (
                g.inputs.get(i).ok_or_else(missing)?.name.clone(),
                input_infos.get(i).ok_or_else(missing)?.clone(),
            ),
            ValueRef::Initializer(i) => {
                let (n, t) = g.initializers.get(i).ok_or_else(missing)?;
                (n.clone(), ValueInfo::known(t.dtype(), t.shape()))
            }
            ValueRef::Node(i) => (
                names.get(i).ok_or_else(missing)?.clone(),
                infos.get(i).ok_or_else(missing)?.clone(),
            ),
        })
    };
    for (i, n) in g.nodes.iter().enumerate() {
        let ins = n
            .inputs
            .iter()
            .map(|r| resolve(r, &names, &infos, i))
            .collect::<Result<Vec<_>>>()?;
        let in_infos: Vec<ValueInfo> = ins.iter().map(|(_, v)| v.clone()).collect();
        let ctx = || format!("node '{}' ({})", n.name, n.op.name());
        let info = infer(&n.op, &in_infos).map_err(|e| e.context(ctx()))?;
        let out = match node_out.get(&i) {
            Some(name) => name.clone(),
            None => b.fresh(&n.name),
        };
        match &n.op {
            _ if !live[i] => {}
            Op::Constant(t) if !node_out.contains_key(&i) => inits.push(tensor_to_proto(&out, t)?),
            Op::Constant(t) => {
                let attr = a_tensor("value", t)?;
                b.node("Constant", vec![], &out, vec![attr]);
            }
            op => lower(&mut b, op, &ins, &out).map_err(|e| e.context(ctx()))?,
        }
        names.push(out);
        infos.push(info);
    }
    let mut outputs = Vec::with_capacity(g.outputs.len());
    for (name, r) in &g.outputs {
        let (_, info) = resolve(r, &names, &infos, g.nodes.len())?;
        outputs.push(value_info(name, &info));
    }
    for (name, r) in identity_outputs {
        let (src, _) = resolve(&r, &names, &infos, g.nodes.len())?;
        b.node("Identity", vec![src], &name, vec![]);
    }
    inits.append(&mut b.inits);
    let graph = GraphProto {
        node: b.nodes,
        name: "tandem".into(),
        initializer: inits,
        input: g
            .inputs
            .iter()
            .zip(&input_infos)
            .map(|(i, info)| value_info(&i.name, info))
            .collect(),
        output: outputs,
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: if opset >= 17 { 8 } else { 7 },
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: "tandem".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    })
}

/// The bytes of the ONNX model of `g` at `opset` (see [`to_model_proto`]).
pub fn export(g: &ExportGraph, opset: i64) -> Result<Vec<u8>> {
    Ok(to_model_proto(g, opset)?.encode_to_vec())
}

/// Writes the ONNX model of `g` to `path` atomically (a temporary file renamed into place).
pub fn save(g: &ExportGraph, opset: i64, path: impl AsRef<std::path::Path>) -> Result<()> {
    let bytes = export(g, opset)?;
    let path = path.as_ref();
    tandem_tensor::io::atomic_write(path, |w| {
        w.write_all(&bytes).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    })
}
