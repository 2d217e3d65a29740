//! Graph -> ONNX: converts the part of a [`Graph`] that named outputs depend on into a
//! [`tandem_onnx::ExportGraph`] (placeholders become graph inputs, variables initializers with
//! their eager dotted names, ops nodes) and writes it.

use crate::trace::eager_name;
use std::collections::HashMap;
use std::path::Path;
use tandem_graph::{Graph, NodeKind, Output, Session};
use tandem_onnx::{ExportGraph, ExportInput, ExportNode, ValueRef};
use tandem_tensor::{Error, Result};

/// Converts the graph's inference part into an [`ExportGraph`].
///
/// `inputs` names the placeholders that become ONNX inputs (`None` dims stay dynamic);
/// `outputs` names the values that become ONNX outputs. Variable values come from `session`
/// when given (e.g. after training), else from the variables' initializers. Nodes that only
/// run for their effects (assignments, optimizer updates) and placeholders not listed in
/// `inputs` are errors that name the node.
pub fn to_export_graph(
    graph: &Graph,
    session: Option<&Session>,
    inputs: &[(&str, &Output)],
    outputs: &[(&str, &Output)],
) -> Result<ExportGraph> {
    for (_, o) in inputs.iter().chain(outputs) {
        if !o.graph().same(graph) {
            return Err(Error::Graph(format!(
                "`{}` belongs to another graph than the one exported",
                o.name()
            )));
        }
    }
    let nodes = graph.nodes()?;
    // Nodes the outputs depend on (data inputs only).
    let mut needed = vec![false; nodes.len()];
    let mut stack: Vec<usize> = outputs.iter().map(|(_, o)| o.id()).collect();
    while let Some(id) = stack.pop() {
        let Some(flag) = needed.get_mut(id) else {
            return Err(Error::Graph(format!("no node with id {id} in this graph")));
        };
        if *flag {
            continue;
        }
        *flag = true;
        if let Some(n) = nodes.get(id) {
            stack.extend(n.inputs.iter().copied());
        }
    }
    let mut eg = ExportGraph::default();
    let mut at: HashMap<usize, ValueRef> = HashMap::new();
    // Inputs in the order given, even when an output does not depend on one.
    for (name, o) in inputs {
        let node = graph.node(o.id())?;
        if !matches!(node.kind, NodeKind::Placeholder) {
            return Err(Error::Graph(format!(
                "ONNX input `{name}` must be a placeholder, `{}` is a {}",
                node.name,
                node.kind.name()
            )));
        }
        eg.inputs.push(ExportInput {
            name: name.to_string(),
            dtype: node.info.dtype,
            dims: node.info.shape.clone(),
        });
        at.insert(o.id(), ValueRef::Input(eg.inputs.len() - 1));
    }
    for (id, node) in nodes.iter().enumerate() {
        if !needed.get(id).copied().unwrap_or(false) || at.contains_key(&id) {
            continue;
        }
        let input_ref = |i: &usize| {
            at.get(i).copied().ok_or_else(|| {
                Error::Graph(format!("node `{}`: input {i} was not converted", node.name))
            })
        };
        let value = match &node.kind {
            NodeKind::Placeholder => {
                return Err(Error::Graph(format!(
                    "placeholder `{}` is needed by the outputs but is not one of the ONNX inputs",
                    node.name
                )));
            }
            NodeKind::Variable(def) => {
                let value = match session {
                    Some(s) => s.variable_value(&graph.get(&node.name)?)?,
                    None => def.init.value(&def.shape, def.dtype)?,
                };
                eg.initializers.push((eager_name(&node.name), value));
                ValueRef::Initializer(eg.initializers.len() - 1)
            }
            NodeKind::Identity => {
                let first = node.inputs.first().ok_or_else(|| {
                    Error::Graph(format!("identity `{}` has no input", node.name))
                })?;
                input_ref(first)?
            }
            NodeKind::Op(op) => {
                let ins = node
                    .inputs
                    .iter()
                    .map(input_ref)
                    .collect::<Result<Vec<_>>>()?;
                eg.nodes.push(ExportNode {
                    name: node.name.clone(),
                    op: op.clone(),
                    inputs: ins,
                });
                ValueRef::Node(eg.nodes.len() - 1)
            }
            other => {
                return Err(Error::Graph(format!(
                    "node `{}` ({}) has no ONNX mapping: only inference graphs can be exported",
                    node.name,
                    other.name()
                )))
            }
        };
        at.insert(id, value);
    }
    for (name, o) in outputs {
        let r = at.get(&o.id()).copied().ok_or_else(|| {
            Error::Graph(format!(
                "output `{name}` (`{}`) was not converted",
                o.name()
            ))
        })?;
        eg.outputs.push((name.to_string(), r));
    }
    Ok(eg)
}

/// Writes the graph's inference part as an ONNX file at `opset` (13 or 17); see
/// [`to_export_graph`] for the arguments.
pub fn export_onnx(
    graph: &Graph,
    session: Option<&Session>,
    inputs: &[(&str, &Output)],
    outputs: &[(&str, &Output)],
    opset: i64,
    path: impl AsRef<Path>,
) -> Result<()> {
    let eg = to_export_graph(graph, session, inputs, outputs)?;
    tandem_onnx::save(&eg, opset, path)
}
