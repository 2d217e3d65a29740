//! Import: an `.onnx` model applied through any [`Emit`] (graph mode, eager mode, or
//! [`tandem_ir::Eval`] for plain inference).
//!
//! [`parse`] decodes and validates a model once ([`ParsedModel`]: inputs, outputs, initializers
//! as tensors, nodes); [`import`] then maps every node to Tandem ops through an emitter. The
//! emitter's owner decides what graph inputs and initializers become through
//! [`ImportHooks`]: a graph-mode importer makes placeholders and trainable variables, the
//! evaluator used by [`crate::OnnxModel`] feeds tensors and constants.
//!
//! Values computed only from constants (shape arithmetic such as `Shape -> Gather -> Concat ->
//! Reshape`, common in PyTorch exports) are evaluated at import time. Where a shape depends on
//! a dimension unknown until run time (the batch), the importer tracks the shape vector with
//! that entry unknown and turns it into a `-1` when it reaches a `Reshape`.

mod node;
mod ops_convt;
mod ops_einsum;
mod ops_extra;
mod ops_math;
mod ops_nn;
mod ops_pad;
mod ops_resize;
mod ops_rnn;
mod ops_shape;

use crate::proto::{DimValue, GraphProto, ModelProto, NodeProto, ValueInfoProto};
use crate::tensor_proto::{dtype_from_onnx, onnx_type_name, tensor_from_proto};
use node::{apply_node, Arg, Known, NodeCtx, PDim};
use prost::Message;
use std::collections::{HashMap, HashSet};
use tandem_ir::{Dim, Emit, Eval};
use tandem_tensor::{DType, Error, Result, Tensor};

/// Oldest and newest default-domain opsets the importer accepts.
pub const OPSET_RANGE: (i64, i64) = (7, 21);

/// A graph input of a model: name, element type and dims (`None` where symbolic or unknown,
/// with the symbolic name in `dim_names`).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphInput {
    /// The input's name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dims; `None` where dynamic.
    pub dims: Vec<Dim>,
    /// The symbolic name of each dynamic dim (`"batch"`, `"N"`), `None` for numeric dims.
    pub dim_names: Vec<Option<String>>,
}

/// A decoded and validated ONNX model, ready to be imported any number of times.
#[derive(Clone, Debug)]
pub struct ParsedModel {
    /// IR version declared by the file.
    pub ir_version: i64,
    /// Version of the default (`ai.onnx`) operator set.
    pub opset: i64,
    /// Producer name and version (`pytorch 2.x`, `tf2onnx ...`).
    pub producer: String,
    /// Graph inputs that are not initializers, in order.
    pub inputs: Vec<GraphInput>,
    /// Names of the graph outputs, in order.
    pub outputs: Vec<String>,
    /// Initializers (weights), in file order.
    pub initializers: Vec<(String, Tensor)>,
    /// The nodes, in file order (ONNX requires topological order).
    pub nodes: Vec<NodeProto>,
}

/// What an import produced: the graph's outputs as values of the emitter.
#[derive(Clone, Debug)]
pub struct Imported<V> {
    /// The graph inputs (placeholders), in order.
    pub inputs: Vec<GraphInput>,
    /// The graph outputs by name, in order.
    pub outputs: Vec<(String, V)>,
}

/// Decides what graph inputs and initializers become in the emitter's world.
pub trait ImportHooks<E: Emit> {
    /// A value for graph input `name` of element type `dtype` and dims `dims` (`None` =
    /// dynamic): a placeholder in graph mode, the fed tensor in evaluation.
    fn placeholder(
        &mut self,
        emitter: &E,
        name: &str,
        dtype: DType,
        dims: &[Dim],
    ) -> Result<E::Value>;

    /// A value for the float initializer `name` (a parameter): a trainable variable in graph
    /// mode, a constant in evaluation. Integer and bool initializers (shapes, axes, indices)
    /// are not parameters: they become constants of the emitter where a node needs them.
    fn initializer(&mut self, emitter: &E, name: &str, tensor: &Tensor) -> Result<E::Value>;
}

fn fmt_err(msg: impl Into<String>) -> Error {
    Error::format("onnx", msg)
}

/// Decodes an ONNX model from bytes and checks its structure: a truncated or corrupt file, a
/// missing graph or opset, external tensor data, or an unsupported element type is an
/// [`Error::Format`], never a panic.
pub fn parse(bytes: &[u8]) -> Result<ParsedModel> {
    let model = ModelProto::decode(bytes).map_err(|e| {
        fmt_err(format!(
            "cannot decode the model ({e}); the file is truncated, corrupt or not ONNX"
        ))
    })?;
    from_proto(model)
}

/// Reads and [`parse`]s an `.onnx` file; errors carry the path.
pub fn parse_file(path: impl AsRef<std::path::Path>) -> Result<ParsedModel> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&bytes).map_err(|e| match e {
        Error::Format { format, msg, .. } => Error::Format {
            format,
            path: Some(path.display().to_string()),
            msg,
        },
        e => e.context(path.display().to_string()),
    })
}

fn default_opset(model: &ModelProto) -> Result<i64> {
    let v = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| fmt_err("the model declares no opset for the default domain"))?;
    if v < OPSET_RANGE.0 || v > OPSET_RANGE.1 {
        return Err(fmt_err(format!(
            "opset {v} is not supported (supported: {} to {})",
            OPSET_RANGE.0, OPSET_RANGE.1
        )));
    }
    Ok(v)
}

fn graph_input(v: &ValueInfoProto) -> Result<GraphInput> {
    let tt = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| fmt_err(format!("graph input '{}' is not a tensor", v.name)))?;
    let dtype = dtype_from_onnx(tt.elem_type).ok_or_else(|| {
        fmt_err(format!(
            "graph input '{}' has unsupported element type {}",
            v.name,
            onnx_type_name(tt.elem_type)
        ))
    })?;
    let shape = tt.shape.as_ref().ok_or_else(|| {
        fmt_err(format!(
            "graph input '{}' has no shape (rank unknown)",
            v.name
        ))
    })?;
    if shape.dim.len() > crate::tensor_proto::MAX_RANK {
        return Err(fmt_err(format!(
            "graph input '{}' has too many dims",
            v.name
        )));
    }
    let mut dims = Vec::new();
    let mut names = Vec::new();
    for d in &shape.dim {
        match &d.value {
            Some(DimValue::DimValue(n)) if *n >= 0 => {
                dims.push(Some(*n as usize));
                names.push(None);
            }
            Some(DimValue::DimParam(p)) => {
                dims.push(None);
                names.push(Some(p.clone()));
            }
            _ => {
                dims.push(None);
                names.push(None);
            }
        }
    }
    Ok(GraphInput {
        name: v.name.clone(),
        dtype,
        dims,
        dim_names: names,
    })
}

fn from_proto(model: ModelProto) -> Result<ParsedModel> {
    let opset = default_opset(&model)?;
    let producer = format!("{} {}", model.producer_name, model.producer_version)
        .trim()
        .to_string();
    let ir_version = model.ir_version;
    let graph: GraphProto = model
        .graph
        .ok_or_else(|| fmt_err("the model has no graph"))?;
    let mut initializers = Vec::with_capacity(graph.initializer.len());
    let mut init_names = HashSet::new();
    for t in &graph.initializer {
        if !init_names.insert(t.name.clone()) {
            return Err(fmt_err(format!(
                "initializer '{}' is defined twice",
                t.name
            )));
        }
        initializers.push((t.name.clone(), tensor_from_proto(t)?));
    }
    let inputs = graph
        .input
        .iter()
        .filter(|v| !init_names.contains(&v.name))
        .map(graph_input)
        .collect::<Result<Vec<_>>>()?;
    if graph.output.is_empty() {
        return Err(fmt_err("the graph has no outputs"));
    }
    Ok(ParsedModel {
        ir_version,
        opset,
        producer,
        inputs,
        outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
        initializers,
        nodes: graph.node,
    })
}

impl ParsedModel {
    /// The nodes whose op the importer does not support, as `(node name, op_type)`.
    pub fn unsupported_ops(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !is_supported(n))
            .map(|(i, n)| (node_label(n, i), qualified_op(n)))
            .collect()
    }

    /// How many nodes of each op type the model has, sorted by op type.
    pub fn op_counts(&self) -> Vec<(String, usize)> {
        let mut m: std::collections::BTreeMap<String, usize> = Default::default();
        for n in &self.nodes {
            *m.entry(qualified_op(n)).or_default() += 1;
        }
        m.into_iter().collect()
    }

    /// Total number of elements over all initializers.
    pub fn parameter_count(&self) -> usize {
        self.initializers.iter().map(|(_, t)| t.numel()).sum()
    }
}

fn qualified_op(n: &NodeProto) -> String {
    if n.domain.is_empty() || n.domain == "ai.onnx" {
        n.op_type.clone()
    } else {
        format!("{}::{}", n.domain, n.op_type)
    }
}

/// The name used for a node in messages: its name, or `OpType#index` when unnamed.
pub(crate) fn node_label(n: &NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("{}#{index}", n.op_type)
    } else {
        n.name.clone()
    }
}

fn is_supported(n: &NodeProto) -> bool {
    (n.domain.is_empty() || n.domain == "ai.onnx")
        && node::SUPPORTED_OPS.contains(&n.op_type.as_str())
}

struct Entry<V> {
    value: Option<V>,
    known: Option<Known>,
    /// A float initializer: never folded into constants, so that it stays a variable.
    trainable: bool,
}

/// [`parse`]s `bytes` and [`import`]s the model through `emitter`.
pub fn import_bytes<E: Emit, H: ImportHooks<E>>(
    bytes: &[u8],
    emitter: &E,
    hooks: &mut H,
) -> Result<Imported<E::Value>> {
    import(&parse(bytes)?, emitter, hooks)
}

/// Imports a parsed model through `emitter`: graph inputs become values through
/// `hooks.placeholder`, initializers through `hooks.initializer`, every node is mapped to
/// Tandem ops, and the graph outputs are returned by name.
///
/// All unsupported ops of the model are reported at once (node names and op types), before
/// anything is emitted. An error inside a node names the node and its op type.
pub fn import<E: Emit, H: ImportHooks<E>>(
    model: &ParsedModel,
    emitter: &E,
    hooks: &mut H,
) -> Result<Imported<E::Value>> {
    let unsupported = model.unsupported_ops();
    if !unsupported.is_empty() {
        let list: Vec<String> = unsupported
            .iter()
            .map(|(n, op)| format!("'{n}' ({op})"))
            .collect();
        return Err(fmt_err(format!(
            "{} unsupported op(s) at opset {}: {}",
            list.len(),
            model.opset,
            list.join(", ")
        )));
    }
    let mut env: HashMap<String, Entry<E::Value>> = HashMap::new();
    for (name, t) in &model.initializers {
        // Float initializers are parameters; integer and bool ones (shapes, axes, indices)
        // are constants, emitted only if a node needs them at run time.
        let value = if t.dtype().is_float() {
            let v = hooks
                .initializer(emitter, name, t)
                .map_err(|e| e.context(format!("initializer '{name}'")))?;
            Some(v)
        } else {
            None
        };
        env.insert(
            name.clone(),
            Entry {
                value,
                known: Some(Known::Full(t.clone())),
                trainable: t.dtype().is_float(),
            },
        );
    }
    for inp in &model.inputs {
        let v = hooks
            .placeholder(emitter, &inp.name, inp.dtype, &inp.dims)
            .map_err(|e| e.context(format!("graph input '{}'", inp.name)))?;
        env.insert(
            inp.name.clone(),
            Entry {
                value: Some(v),
                known: None,
                trainable: false,
            },
        );
    }
    let folder = Eval::default();
    for (i, n) in model.nodes.iter().enumerate() {
        let label = node_label(n, i);
        let ctx = NodeCtx {
            proto: n,
            opset: model.opset,
        };
        run_node(&ctx, emitter, &folder, &mut env).map_err(|e| {
            e.context(format!(
                "node '{label}' ({}, opset {})",
                n.op_type, model.opset
            ))
        })?;
    }
    let mut outputs = Vec::with_capacity(model.outputs.len());
    for name in &model.outputs {
        let entry = env
            .get_mut(name)
            .ok_or_else(|| fmt_err(format!("graph output '{name}' is never computed")))?;
        outputs.push((name.clone(), materialize(emitter, entry)?));
    }
    Ok(Imported {
        inputs: model.inputs.clone(),
        outputs,
    })
}

fn materialize<E: Emit>(emitter: &E, entry: &mut Entry<E::Value>) -> Result<E::Value> {
    if let Some(v) = &entry.value {
        return Ok(v.clone());
    }
    match &entry.known {
        Some(Known::Full(t)) => {
            let v = emitter.constant(t.clone())?;
            entry.value = Some(v.clone());
            Ok(v)
        }
        _ => Err(fmt_err(
            "internal: value has neither a tensor nor an emitted value",
        )),
    }
}

fn run_node<E: Emit>(
    ctx: &NodeCtx<'_>,
    emitter: &E,
    folder: &Eval,
    env: &mut HashMap<String, Entry<E::Value>>,
) -> Result<()> {
    let n = ctx.proto;
    // Every named input must exist; empty names are absent optional inputs.
    let mut fold = true;
    for name in n.input.iter().filter(|s| !s.is_empty()) {
        let e = env
            .get(name)
            .ok_or_else(|| fmt_err(format!("input '{name}' is not defined before this node")))?;
        if e.trainable || !matches!(e.known, Some(Known::Full(_))) {
            fold = false;
        }
    }
    let outputs = if fold {
        let args: Vec<Option<Arg<Tensor>>> = n
            .input
            .iter()
            .map(|name| {
                env.get(name).and_then(|e| match &e.known {
                    Some(Known::Full(t)) => Some(Arg {
                        value: t.clone(),
                        known: e.known.clone(),
                        sources: Vec::new(),
                    }),
                    _ => None,
                })
            })
            .collect();
        apply_node(ctx, folder, &args)?
            .into_iter()
            .map(|(t, _)| Entry {
                value: None,
                known: Some(Known::Full(t)),
                trainable: false,
            })
            .collect::<Vec<_>>()
    } else {
        let mut args: Vec<Option<Arg<E::Value>>> = Vec::with_capacity(n.input.len());
        for name in &n.input {
            let Some(e) = env.get_mut(name).filter(|_| !name.is_empty()) else {
                args.push(None);
                continue;
            };
            let value = materialize(emitter, e)?;
            let known = e.known.clone();
            // The values whose run-time dims a partly known shape vector refers to.
            let mut sources: Vec<(String, E::Value)> = Vec::new();
            if let Some(Known::Partial(dims)) = &known {
                for d in dims {
                    if let PDim::Dim(of, _) = d {
                        if sources.iter().any(|(n, _)| n == of) {
                            continue;
                        }
                        if let Some(src) = env.get_mut(of) {
                            sources.push((of.clone(), materialize(emitter, src)?));
                        }
                    }
                }
            }
            args.push(Some(Arg {
                value,
                known,
                sources,
            }));
        }
        apply_node(ctx, emitter, &args)?
            .into_iter()
            .map(|(v, known)| Entry {
                value: Some(v),
                known,
                trainable: false,
            })
            .collect()
    };
    if let Some(extra) = n.output.iter().skip(outputs.len()).find(|s| !s.is_empty()) {
        return Err(fmt_err(format!(
            "output '{extra}' is requested but only the first {} output(s) are supported",
            outputs.len()
        )));
    }
    for (name, entry) in n.output.iter().zip(outputs) {
        if !name.is_empty() {
            env.insert(name.clone(), entry);
        }
    }
    Ok(())
}
