//! Graph -> ONNX: converts the part of a [`Graph`] that named outputs depend on into a
//! [`tandem_onnx::ExportGraph`] (placeholders become graph inputs, variables initializers with
//! their eager dotted names, ops nodes) and writes it.

use crate::trace::eager_name;
use std::path::Path;
use tandem_graph::{Graph, Output, Session};
use tandem_onnx::graph_bridge::subgraph_to_export;
use tandem_onnx::ExportGraph;
use tandem_tensor::Result;

/// Converts the graph's inference part into an [`ExportGraph`], with initializers named the
/// eager way (`fc1.weight`).
///
/// `inputs` names the placeholders that become ONNX inputs (`None` dims stay dynamic);
/// `outputs` names the values that become ONNX outputs. Variable values come from `session`
/// when given (e.g. after training), else from the variables' initializers. Nodes that only
/// run for their effects (assignments, optimizer updates) and placeholders not listed in
/// `inputs` are errors that name the node. This is
/// [`tandem_onnx::graph_bridge::subgraph_to_export`] with [`eager_name`] for the
/// initializers.
pub fn to_export_graph(
    graph: &Graph,
    session: Option<&Session>,
    inputs: &[(&str, &Output)],
    outputs: &[(&str, &Output)],
) -> Result<ExportGraph> {
    subgraph_to_export(graph, session, inputs, outputs, &eager_name)
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
