//! ONNX <-> graph mode: import an `.onnx` model as a [`tandem_graph::Graph`] (for inference
//! or fine-tuning) and export a graph (with a session's variable values) as ONNX.
//!
//! Import ([`import_graph`], [`import_graph_model`]): graph inputs become placeholders whose
//! first dim (the batch) is unknown, float initializers become trainable variables named
//! after the initializer, and every graph output becomes an `Identity` node named
//! `outputs/<name>/Identity` ([`output_node_name`]), so a saved graph file still knows its
//! outputs ([`graph_signature`]).
//!
//! Export ([`to_export_graph`], [`save_onnx`], and the general [`subgraph_to_export`] that
//! `tandem-interop` uses for traced models): the nodes of the subgraph between the given
//! placeholders and outputs become ONNX nodes, variables become initializers holding the
//! session's current values, `Identity` nodes disappear. A node that has no ONNX mapping
//! (an assign, an optimizer update, a random op, a loss) is an error naming the node.
//!
//! ```no_run
//! use tandem_onnx::graph_bridge::{import_graph, save_onnx};
//! use tandem_graph::Session;
//! let (g, inputs, outputs) = import_graph("mlp.onnx").unwrap();
//! let s = Session::new(&g).unwrap();
//! // ... fine-tune with an optimizer of tandem_graph::optim ...
//! let outs: Vec<(&str, &tandem_graph::Output)> =
//!     outputs.iter().map(|(n, o)| (n.as_str(), o)).collect();
//! save_onnx(&s, &inputs.iter().collect::<Vec<_>>(), &outs, 17, "tuned.onnx").unwrap();
//! ```

use crate::export::{ExportGraph, ExportInput, ExportNode, ValueRef};
use crate::import::{import, parse_file, ImportHooks, ParsedModel};
use std::collections::HashMap;
use tandem_graph::{Graph, NodeKind, Output, Session};
use tandem_ir::{Dim, Op};
use tandem_tensor::{DType, Error, Result, Tensor};

/// Scope under which graph outputs are named (`outputs/<name>/Identity`).
pub const OUTPUT_SCOPE: &str = "outputs";

/// The node name an imported graph gives its output `name`.
pub fn output_node_name(name: &str) -> String {
    format!("{OUTPUT_SCOPE}/{name}/Identity")
}

/// [`ImportHooks`] for graph mode: placeholders for graph inputs, trainable variables for
/// float initializers.
#[derive(Clone, Debug)]
pub struct GraphHooks {
    /// Leave the first dim of every graph input unknown (any batch size), even where the
    /// file fixes it (default true).
    pub dynamic_batch: bool,
    /// Whether initializers become trainable variables (default true).
    pub trainable: bool,
}

impl Default for GraphHooks {
    fn default() -> Self {
        GraphHooks {
            dynamic_batch: true,
            trainable: true,
        }
    }
}

impl ImportHooks<Graph> for GraphHooks {
    fn placeholder(&mut self, g: &Graph, name: &str, dtype: DType, dims: &[Dim]) -> Result<Output> {
        let mut dims = dims.to_vec();
        if self.dynamic_batch {
            if let Some(d) = dims.first_mut() {
                *d = None;
            }
        }
        let p = g.placeholder(name, dtype, &dims)?;
        check_name(&p, name)?;
        Ok(p)
    }

    fn initializer(&mut self, g: &Graph, name: &str, tensor: &Tensor) -> Result<Output> {
        let shape = tensor.shape().to_vec();
        let v = g.variable_with(
            name,
            &shape,
            tensor.dtype(),
            tandem_graph::Initializer::Constant(tensor.clone()),
            self.trainable,
        )?;
        check_name(&v, name)?;
        Ok(v)
    }
}

/// Graph node names must be the ONNX names so that feeds and checkpoints find them.
fn check_name(v: &Output, name: &str) -> Result<()> {
    if v.name() != name {
        return Err(Error::Graph(format!(
            "ONNX name '{name}' clashes with an existing graph node (it became '{}')",
            v.name()
        )));
    }
    Ok(())
}

/// Imports a parsed model into `g` with `hooks`; returns the placeholders (in graph-input
/// order) and the named outputs (each an `Identity` named by [`output_node_name`]).
pub fn import_into(
    model: &ParsedModel,
    g: &Graph,
    hooks: &mut GraphHooks,
) -> Result<(Vec<Output>, Vec<(String, Output)>)> {
    let imported = import(model, g, hooks)?;
    let mut inputs = Vec::with_capacity(imported.inputs.len());
    for i in &imported.inputs {
        inputs.push(g.get(&i.name)?);
    }
    let mut outputs = Vec::with_capacity(imported.outputs.len());
    for (name, v) in &imported.outputs {
        let id = {
            let _root = g.root_scope(OUTPUT_SCOPE);
            let _s = g.scope(name);
            g.identity(v)?
        };
        check_name(&id, &output_node_name(name))?;
        outputs.push((name.clone(), id));
    }
    Ok((inputs, outputs))
}

/// Imports an already parsed model into a new graph (see [`import_graph`]).
pub fn import_graph_model(
    model: &ParsedModel,
) -> Result<(Graph, Vec<Output>, Vec<(String, Output)>)> {
    let g = Graph::new();
    let (inputs, outputs) = import_into(model, &g, &mut GraphHooks::default())?;
    Ok((g, inputs, outputs))
}

/// Reads an `.onnx` file into a new graph: `(graph, placeholders, named outputs)`.
/// Placeholders have an unknown batch dim; float initializers are trainable variables that a
/// [`Session`] starts at the file's values. Unsupported ops are all listed in one error.
pub fn import_graph(
    path: impl AsRef<std::path::Path>,
) -> Result<(Graph, Vec<Output>, Vec<(String, Output)>)> {
    let path = path.as_ref();
    import_graph_model(&parse_file(path)?).map_err(|e| e.context(path.display().to_string()))
}

/// The inputs and outputs of a graph that was not built here (e.g. a loaded graph file):
/// every placeholder is an input (by node order); outputs are the `Identity` nodes named
/// `outputs/<name>/Identity` if there are any, otherwise every value node (op or identity)
/// that no other node uses, named after the node.
pub fn graph_signature(g: &Graph) -> Result<(Vec<Output>, Vec<(String, Output)>)> {
    let nodes = g.nodes()?;
    let mut used = vec![false; nodes.len()];
    for n in &nodes {
        for &i in n.inputs.iter().chain(&n.control_inputs) {
            if let Some(u) = used.get_mut(i) {
                *u = true;
            }
        }
    }
    let mut inputs = Vec::new();
    let mut named = Vec::new();
    let mut sinks = Vec::new();
    let prefix = format!("{OUTPUT_SCOPE}/");
    for (i, n) in nodes.iter().enumerate() {
        match &n.kind {
            NodeKind::Placeholder => inputs.push(g.get(&n.name)?),
            NodeKind::Identity => {
                if let Some(rest) = n.name.strip_prefix(&prefix) {
                    if let Some(name) = rest.strip_suffix("/Identity") {
                        named.push((name.to_string(), g.get(&n.name)?));
                        continue;
                    }
                }
                if !used[i] {
                    sinks.push((n.name.clone(), g.get(&n.name)?));
                }
            }
            NodeKind::Op(op) if !used[i] && !matches!(op, Op::Constant(_)) => {
                sinks.push((n.name.clone(), g.get(&n.name)?));
            }
            _ => {}
        }
    }
    let outputs = if named.is_empty() { sinks } else { named };
    if outputs.is_empty() {
        return Err(Error::Graph(
            "the graph has no outputs (no op or identity node is left unused)".into(),
        ));
    }
    Ok((inputs, outputs))
}

/// The [`ExportGraph`] of the subgraph of `session`'s graph that computes `outputs` from the
/// placeholders `inputs`. Variables become initializers (named after the variable) holding
/// the session's current values; `Identity` nodes are skipped; constants stay constants.
/// ONNX inputs are named after their placeholders.
///
/// Errors: a placeholder the outputs need that is not in `inputs`, a value that belongs to
/// another graph, and any node with no ONNX form (assign, optimizer update, init, no-op) name
/// the node. Ops without an ONNX mapping are reported by [`crate::export`] with the node name.
pub fn to_export_graph(
    session: &Session,
    inputs: &[&Output],
    outputs: &[(&str, &Output)],
) -> Result<ExportGraph> {
    let named: Vec<(&str, &Output)> = inputs.iter().map(|o| (o.name(), *o)).collect();
    subgraph_to_export(
        session.graph(),
        Some(session),
        &named,
        outputs,
        &|name: &str| name.to_string(),
    )
}

/// The general form of [`to_export_graph`]: the subgraph of `graph` that computes `outputs`
/// (each with its ONNX name) from the placeholders `inputs` (each with its ONNX name; `None`
/// dims stay dynamic, inputs appear in the order given even when no output needs one).
///
/// Variable values come from `session` when given (e.g. after training), else from the
/// variables' initializers; `initializer_name` maps a variable's node name to its ONNX
/// initializer name (e.g. `fc1/weight` -> `fc1.weight` for PyTorch-style names).
pub fn subgraph_to_export(
    graph: &Graph,
    session: Option<&Session>,
    inputs: &[(&str, &Output)],
    outputs: &[(&str, &Output)],
    initializer_name: &dyn Fn(&str) -> String,
) -> Result<ExportGraph> {
    if let Some(s) = session {
        if !s.graph().same(graph) {
            return Err(Error::Graph(
                "the session runs another graph than the one exported".into(),
            ));
        }
    }
    for (_, v) in inputs.iter().chain(outputs) {
        if !v.graph().same(graph) {
            return Err(Error::Graph(format!(
                "`{}` belongs to another graph than the one exported",
                v.name()
            )));
        }
    }
    let nodes = graph.nodes()?;
    let node = |id: usize| {
        nodes
            .get(id)
            .ok_or_else(|| Error::Graph(format!("no node with id {id} in this graph")))
    };
    let input_ids: HashMap<usize, usize> = inputs
        .iter()
        .enumerate()
        .map(|(k, (_, o))| (o.id(), k))
        .collect();
    // Nodes the outputs need (data inputs only: control dependencies order side effects,
    // which an inference graph does not have).
    let mut needed = vec![false; nodes.len()];
    let mut stack: Vec<usize> = outputs.iter().map(|(_, o)| o.id()).collect();
    while let Some(id) = stack.pop() {
        match needed.get_mut(id) {
            None => return Err(Error::Graph(format!("no node with id {id} in this graph"))),
            Some(true) => continue,
            Some(flag) => *flag = true,
        }
        if !input_ids.contains_key(&id) {
            stack.extend(node(id)?.inputs.iter().copied());
        }
    }
    let mut eg = ExportGraph::default();
    let mut refs: HashMap<usize, ValueRef> = HashMap::new();
    for (k, (name, o)) in inputs.iter().enumerate() {
        let n = node(o.id())?;
        if !matches!(n.kind, NodeKind::Placeholder) {
            return Err(Error::Graph(format!(
                "ONNX input `{name}` must be a placeholder, `{}` is a {} node",
                n.name,
                n.kind.name()
            )));
        }
        eg.inputs.push(ExportInput {
            name: name.to_string(),
            dtype: n.info.dtype,
            dims: n.info.shape.clone(),
        });
        refs.insert(o.id(), ValueRef::Input(k));
    }
    for (id, n) in nodes.iter().enumerate() {
        if !needed.get(id).copied().unwrap_or(false) || refs.contains_key(&id) {
            continue;
        }
        let arg = |k: usize| -> Result<ValueRef> {
            let src = n
                .inputs
                .get(k)
                .ok_or_else(|| Error::Graph(format!("node `{}` is missing input {k}", n.name)))?;
            refs.get(src).copied().ok_or_else(|| {
                Error::Graph(format!("node `{}` uses a value defined after it", n.name))
            })
        };
        let r = match &n.kind {
            NodeKind::Op(op) => {
                let ins = (0..n.inputs.len()).map(arg).collect::<Result<Vec<_>>>()?;
                eg.nodes.push(ExportNode {
                    name: n.name.clone(),
                    op: op.clone(),
                    inputs: ins,
                });
                ValueRef::Node(eg.nodes.len() - 1)
            }
            NodeKind::Identity => arg(0)?,
            NodeKind::Variable(def) => {
                let value = match session {
                    Some(s) => s.variable_value(&graph.get(&n.name)?)?,
                    None => def.init.value(&def.shape, def.dtype)?,
                };
                eg.initializers.push((initializer_name(&n.name), value));
                ValueRef::Initializer(eg.initializers.len() - 1)
            }
            NodeKind::Placeholder => {
                return Err(Error::Graph(format!(
                    "placeholder `{}` is needed by the outputs but is not one of the inputs",
                    n.name
                )))
            }
            other => {
                return Err(Error::invalid(
                    "onnx export",
                    format!(
                    "node `{}` ({}) has no ONNX mapping (only inference graphs can be exported)",
                    n.name,
                    other.name()
                ),
                ))
            }
        };
        refs.insert(id, r);
    }
    for (name, o) in outputs {
        let r = refs.get(&o.id()).copied().ok_or_else(|| {
            Error::Graph(format!("output `{name}` (`{}`) was not reached", o.name()))
        })?;
        eg.outputs.push((name.to_string(), r));
    }
    Ok(eg)
}

/// The ONNX bytes of the subgraph (see [`to_export_graph`]) at `opset` (13 or 17).
pub fn export_onnx(
    session: &Session,
    inputs: &[&Output],
    outputs: &[(&str, &Output)],
    opset: i64,
) -> Result<Vec<u8>> {
    crate::export(&to_export_graph(session, inputs, outputs)?, opset)
}

/// Writes the subgraph (see [`to_export_graph`]) as an `.onnx` file at `opset` (13 or 17),
/// atomically.
pub fn save_onnx(
    session: &Session,
    inputs: &[&Output],
    outputs: &[(&str, &Output)],
    opset: i64,
    path: impl AsRef<std::path::Path>,
) -> Result<()> {
    crate::save(&to_export_graph(session, inputs, outputs)?, opset, path)
}
